/**
 * A test-owned network between raftkv servers: one small TCP proxy per ordered pair of servers,
 * so a test can cut, slow down or break the link between any two of them without root (no
 * iptables, no tc, no network namespaces), and put it back.
 *
 * TOPOLOGY
 *   For every ordered pair (i, j), i != j, a proxy listens on a free loopback port and forwards
 *   to server j's real Raft port. Server i is started with `raftListFor(i)` as its -r list: its
 *   own real port at position i (where it binds) and the i->j proxy port at position j (where it
 *   dials j). Every connection between two servers therefore crosses exactly one proxy, and that
 *   proxy knows who opened it. Restart a server with the same list: the proxies outlive it.
 *
 * WHAT "LINK i->j" MEANS (gRPC!)
 *   gRPC sends a request and its reply over the connection opened by the caller. Link i->j is
 *   therefore the set of connections server i opened to j: it carries i's AppendEntries and
 *   RequestVote to j *and j's replies to them*. j's own requests to i, and i's replies to those,
 *   travel on link j->i. So:
 *     cut(i, j)        requests from i to j fail, and so would their replies. j can still reach i
 *                      (link j->i), including i answering j. This is the "one-way" cut a test
 *                      can express; "i's packets are lost but j's arrive" on a single
 *                      connection is not (it would just stall the connection, like a full cut).
 *     cutBoth(i, j)    no RPC in either direction: a partition between the two.
 *   Cutting closes the link's open connections (a partition must not leave a live connection
 *   behind, and gRPC has no keepalive here that would notice) and then treats new ones as
 *   chosen: "blackhole" (default) accepts and silently discards, as a real partition does, so
 *   the caller's RPCs run into their deadlines; "refuse" closes them at once, like a crashed
 *   host's RST. Healing closes blackholed connections, so gRPC reconnects (within ~1 s, its
 *   reconnect backoff cap) instead of waiting on a connection that ate its bytes.
 *
 *   delay(i, j, ms)    bytes travelling from i to j are held `ms` before delivery: i's requests
 *                      on link i->j and i's replies on link j->i. Order is kept.
 *   dropRate(i, j, p)  each chunk on link i->j (either direction) breaks its connection with
 *                      probability p. TCP cannot lose a byte without corrupting HTTP/2 framing,
 *                      so loss is modelled as what sustained loss does to a TCP connection: it
 *                      dies, and gRPC fails the RPCs on it and reconnects.
 *
 * Backpressure: a relay pauses its source while the destination's socket buffer is full or
 * while more than HIGH_WATER_BYTES sit in its delay queue. Socket errors never escape: they
 * close the relay (both sockets), which is what the peers would see on a real network.
 */
import net from "node:net";

export type CutMode = "blackhole" | "refuse";

const LOOPBACK = "127.0.0.1";
/** Bytes a relay may hold in its delay queue before it stops reading from its source. */
const HIGH_WATER_BYTES = 1 << 20;
/** After one side of a relay closes cleanly, how long the other may linger before it is closed. */
const HALF_CLOSED_GRACE_MS = 5000;

/** The proxy of one ordered pair: connections opened by `from` to reach `to`. */
class Link {
  cut: CutMode | null = null;
  dropRate = 0;
  readonly relays = new Set<Relay>();
  /** Connections accepted while blackholed: read and discarded, closed on heal. */
  readonly blackholed = new Set<net.Socket>();
  accepted = 0;

  constructor(
    readonly from: number,
    readonly to: number,
    readonly server: net.Server,
    readonly port: number,
  ) {}

  closeConnections(): void {
    for (const relay of this.relays) relay.close();
    for (const socket of this.blackholed) socket.destroy();
    this.blackholed.clear();
  }
}

/**
 * Moves bytes from `source` to `sink`, each chunk held until `delayMs()` after it arrived, in
 * order, with backpressure both from the sink and from the queue.
 */
class Forwarder {
  #queue: { deliverAt: number; chunk: Buffer }[] = [];
  #queuedBytes = 0;
  #lastDeliverAt = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #sinkFull = false;
  #sourceEnded = false;
  #stopped = false;

  constructor(
    private readonly source: net.Socket,
    private readonly sink: net.Socket,
    private readonly delayMs: () => number,
    /** Called per chunk; true means "this chunk was lost": the relay is torn down. */
    private readonly loseChunk: () => boolean,
  ) {
    source.on("data", (chunk: Buffer) => this.#onData(chunk));
    source.on("end", () => {
      this.#sourceEnded = true;
      this.#endSinkWhenFlushed();
    });
    sink.on("drain", () => {
      this.#sinkFull = false;
      this.#updateFlow();
    });
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#queue = [];
    this.#queuedBytes = 0;
  }

  #onData(chunk: Buffer): void {
    if (this.#stopped) return;
    if (this.loseChunk()) return;
    const delay = this.delayMs();
    if (delay <= 0 && this.#queue.length === 0) {
      this.#write(chunk);
      return;
    }
    // Never deliver before an earlier chunk, even if the delay was lowered in between.
    const deliverAt = Math.max(performance.now() + delay, this.#lastDeliverAt);
    this.#lastDeliverAt = deliverAt;
    this.#queue.push({ deliverAt, chunk });
    this.#queuedBytes += chunk.length;
    this.#updateFlow();
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer || this.#queue.length === 0 || this.#stopped) return;
    const wait = Math.max(0, this.#queue[0]!.deliverAt - performance.now());
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#deliverDue();
    }, wait);
  }

  #deliverDue(): void {
    const now = performance.now();
    // setTimeout may fire a hair early; 1 ms of slack avoids a busy re-arm.
    while (!this.#stopped && this.#queue.length > 0 && this.#queue[0]!.deliverAt <= now + 1) {
      const { chunk } = this.#queue.shift()!;
      this.#queuedBytes -= chunk.length;
      this.#write(chunk);
    }
    this.#updateFlow();
    this.#schedule();
    this.#endSinkWhenFlushed();
  }

  #write(chunk: Buffer): void {
    if (this.sink.destroyed || !this.sink.writable) return;
    if (!this.sink.write(chunk)) this.#sinkFull = true;
    this.#updateFlow();
  }

  #updateFlow(): void {
    if (this.#stopped || this.source.destroyed) return;
    const mustWait = this.#sinkFull || this.#queuedBytes > HIGH_WATER_BYTES;
    if (mustWait && !this.source.isPaused()) this.source.pause();
    else if (!mustWait && this.source.isPaused()) this.source.resume();
  }

  #endSinkWhenFlushed(): void {
    if (this.#sourceEnded && this.#queue.length === 0 && !this.sink.destroyed) this.sink.end();
  }
}

/** One proxied connection: the caller's socket, the one we opened to the target, and the pipes. */
class Relay {
  readonly #caller: net.Socket;
  readonly #target: net.Socket;
  readonly #forwarders: Forwarder[];
  readonly #onClosed: (relay: Relay) => void;
  #closed = false;

  constructor(
    caller: net.Socket,
    targetPort: number,
    delayToTarget: () => number,
    delayToCaller: () => number,
    loseChunk: () => boolean,
    onClosed: (relay: Relay) => void,
  ) {
    this.#caller = caller;
    this.#onClosed = onClosed;
    this.#target = net.connect({ host: LOOPBACK, port: targetPort });
    this.#caller.setNoDelay(true);
    this.#target.setNoDelay(true);
    const lose = () => {
      if (!loseChunk()) return false;
      this.close();
      return true;
    };
    this.#forwarders = [
      new Forwarder(this.#caller, this.#target, delayToTarget, lose),
      new Forwarder(this.#target, this.#caller, delayToCaller, lose),
    ];
    for (const socket of [this.#caller, this.#target]) {
      // A refused connect (target down), a reset or any other error: the connection is gone.
      socket.on("error", () => this.close());
      socket.on("close", (hadError: boolean) => {
        if (hadError || (this.#caller.destroyed && this.#target.destroyed)) this.close();
        // A clean close of one side: the other gets its FIN through its forwarder, and should
        // follow; do not let it linger half-open forever if it does not.
        else setTimeout(() => this.close(), HALF_CLOSED_GRACE_MS).unref?.();
      });
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const forwarder of this.#forwarders) forwarder.stop();
    this.#caller.destroy();
    this.#target.destroy();
    this.#onClosed(this);
  }
}

export class LinkNetwork {
  readonly size: number;
  readonly raftPorts: readonly number[];
  /** links[i][j]: the proxy for connections i opens to j (null on the diagonal). */
  readonly #links: (Link | null)[][];
  /** delays[i][j]: ms added to bytes travelling from i to j. */
  readonly #delays: number[][];
  #closed = false;

  private constructor(size: number, raftPorts: readonly number[], links: (Link | null)[][]) {
    this.size = size;
    this.raftPorts = raftPorts;
    this.#links = links;
    this.#delays = Array.from({ length: size }, () => new Array<number>(size).fill(0));
  }

  /** Starts the size * (size - 1) proxies in front of the servers' real Raft ports. */
  static async create(size: number, raftPorts: readonly number[]): Promise<LinkNetwork> {
    if (raftPorts.length !== size) throw new Error(`LinkNetwork: ${size} servers but ${raftPorts.length} Raft ports`);
    const links: (Link | null)[][] = Array.from({ length: size }, () => new Array<Link | null>(size).fill(null));
    // The network object does not exist yet when proxies are created; connections look it up here.
    let network: LinkNetwork | undefined;
    const listening: Promise<void>[] = [];
    for (let from = 0; from < size; from++) {
      for (let to = 0; to < size; to++) {
        if (from === to) continue;
        listening.push(
          new Promise<void>((resolve, reject) => {
            const server = net.createServer({ noDelay: true }, (socket) => network?.accept(links[from]![to]!, socket));
            server.once("error", reject);
            // Port 0: the kernel picks a free port, and we hold it for the network's lifetime.
            server.listen(0, LOOPBACK, () => {
              server.off("error", reject);
              server.on("error", () => {}); // an accept error must not crash the test process
              links[from]![to] = new Link(from, to, server, (server.address() as net.AddressInfo).port);
              resolve();
            });
          }),
        );
      }
    }
    try {
      await Promise.all(listening);
    } catch (error) {
      for (const row of links) for (const link of row) link?.server.close();
      throw error;
    }
    network = new LinkNetwork(size, [...raftPorts], links);
    return network;
  }

  /** The -r list to start server `id` with: its real port at `id`, proxies everywhere else. */
  raftListFor(id: number): string {
    return this.raftPorts.map((port, peer) => (peer === id ? port : this.#link(id, peer).port)).join(",");
  }

  /** The proxy port server `from` dials to reach `to`. */
  proxyPort(from: number, to: number): number {
    return this.#link(from, to).port;
  }

  /** Requests from `from` to `to` (and their replies) fail. See the header for what that means. */
  cut(from: number, to: number, mode: CutMode = "blackhole"): void {
    const link = this.#link(from, to);
    link.cut = mode;
    link.closeConnections();
  }

  cutBoth(a: number, b: number, mode: CutMode = "blackhole"): void {
    this.cut(a, b, mode);
    this.cut(b, a, mode);
  }

  /** Lets `from` reach `to` again (new connections go through; blackholed ones are closed). */
  uncut(from: number, to: number): void {
    const link = this.#link(from, to);
    if (link.cut === null) return;
    link.cut = null;
    for (const socket of link.blackholed) socket.destroy();
    link.blackholed.clear();
  }

  /** No RPC between `id` and anyone else, in either direction. */
  isolate(id: number, mode: CutMode = "blackhole"): void {
    this.partition([id], this.#everyoneBut([id]), mode);
  }

  /** No RPC between any server of `groupA` and any of `groupB`; links inside a group are left as they are. */
  partition(groupA: readonly number[], groupB: readonly number[], mode: CutMode = "blackhole"): void {
    for (const a of groupA) for (const b of groupB) if (a !== b) this.cutBoth(a, b, mode);
  }

  delay(from: number, to: number, ms: number): void {
    this.#link(from, to); // validates the pair
    this.#delays[from]![to] = Math.max(0, ms);
  }

  dropRate(from: number, to: number, probability: number): void {
    this.#link(from, to).dropRate = Math.min(1, Math.max(0, probability));
  }

  /** Every link back to normal: no cuts, no delays, no loss. Open healthy connections are kept. */
  heal(): void {
    for (let from = 0; from < this.size; from++) {
      for (let to = 0; to < this.size; to++) {
        if (from === to) continue;
        this.uncut(from, to);
        this.#delays[from]![to] = 0;
        this.#link(from, to).dropRate = 0;
      }
    }
  }

  /** Whether any cut, delay or loss is in force (for tests that must end healed). */
  get isHealed(): boolean {
    for (let from = 0; from < this.size; from++) {
      for (let to = 0; to < this.size; to++) {
        if (from === to) continue;
        const link = this.#link(from, to);
        if (link.cut !== null || link.dropRate > 0 || this.#delays[from]![to]! > 0) return false;
      }
    }
    return true;
  }

  /** Connections accepted on link from->to so far (diagnostics). */
  acceptedConnections(from: number, to: number): number {
    return this.#link(from, to).accepted;
  }

  /** Relayed connections currently open on link from->to (diagnostics, proxy tests). */
  openConnections(from: number, to: number): number {
    return this.#link(from, to).relays.size;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closing: Promise<void>[] = [];
    for (const row of this.#links) {
      for (const link of row) {
        if (!link) continue;
        link.closeConnections();
        closing.push(new Promise<void>((resolve) => link.server.close(() => resolve())));
      }
    }
    await Promise.all(closing);
  }

  /** Called by the proxy servers for every incoming connection. */
  private accept(link: Link, socket: net.Socket): void {
    socket.on("error", () => socket.destroy());
    link.accepted++;
    if (this.#closed || link.cut === "refuse") {
      socket.destroy();
      return;
    }
    if (link.cut === "blackhole") {
      link.blackholed.add(socket);
      socket.on("data", () => {}); // read and discard, so the caller's writes do not stall on a full buffer
      socket.on("close", () => link.blackholed.delete(socket));
      return;
    }
    const relay = new Relay(
      socket,
      this.raftPorts[link.to]!,
      () => this.#delays[link.from]![link.to]!,
      () => this.#delays[link.to]![link.from]!,
      () => link.dropRate > 0 && Math.random() < link.dropRate,
      (closed) => link.relays.delete(closed),
    );
    link.relays.add(relay);
  }

  #link(from: number, to: number): Link {
    const link = this.#links[from]?.[to];
    if (!link) throw new Error(`LinkNetwork: no link ${from}->${to} in a network of ${this.size}`);
    return link;
  }

  #everyoneBut(excluded: readonly number[]): number[] {
    return Array.from({ length: this.size }, (_, id) => id).filter((id) => !excluded.includes(id));
  }
}
