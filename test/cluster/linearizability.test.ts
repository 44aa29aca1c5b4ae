/**
 * Issue #4: the cluster stays linearizable under faults, and the Raft refinements that keep it
 * so (ReadIndex reads, pre-vote, check-quorum, exactly-once client sessions) do what they claim.
 *
 * Every server reaches its peers through test-owned TCP proxies (test/support/proxy.ts), so a
 * test can partition, cut one way, slow down or break any link, besides killing and pausing
 * processes. Servers run with --log-level info and their output is captured, so tests can see
 * role changes and terms ("became leader node=2 term=7"), which the client API does not expose.
 *
 * - The randomized test runs concurrent clients against a 5-server cluster while a seeded
 *   nemesis injects faults, then checks the recorded history with the linearizability checker
 *   and that every server converges to the same data. FAULT_SECONDS (default 30) and FAULT_SEED
 *   (default random, always printed) tune it; scripts/fault-test.sh runs it long.
 * - The targeted tests each pin down one scenario the randomized one may or may not hit.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { ClientError, type KvsReply, KvsClient, KvsStatus } from "../../src/client/client";
import { seededRandom } from "../support/random";
import { clt, requireBuild, TestCluster, waitFor } from "../support/cluster";
import { checkLinearizable, type Operation } from "../support/linearizability";
import { type CutMode, LinkNetwork } from "../support/proxy";

// Explicit Raft timing, so the time bounds asserted below follow from what the servers run with.
const TICK_MS = 50;
const ELECTION_TICKS = 6;
/** An election timer runs for the base timeout randomised up to twice that. */
const MAX_ELECTION_TIMEOUT_MS = 2 * ELECTION_TICKS * TICK_MS;
const SERVER_ARGS = [
  "--tick-ms", String(TICK_MS),
  "--election-ticks", String(ELECTION_TICKS),
  "--heartbeat-ticks", "1",
  "--log-level", "info",
  // Compact often, so that servers restarted or cut off catch up from snapshots mid-test too.
  "--snapshot-entries", process.env.FAULT_SNAPSHOT_ENTRIES ?? "500",
];
/** A key no test writes: a GET of it answers NO_KEY only on a leader that confirmed its lead. */
const PROBE_KEY = "__leader_probe__";

// ---------------------------------------------------------------------------------------------
// Server output: role changes and terms, parsed from the captured logs.

interface LogLine {
  server: number;
  /** Date.now() time from the line's own ISO timestamp (receipt time if it has none). */
  at: number;
  text: string;
}

interface RoleChange {
  server: number;
  at: number;
  role: string;
  term: number;
}

class ServerOutput {
  readonly lines: LogLine[] = [];

  /** Reads a started server's stdout and stderr until it exits (unread pipes would fill up). */
  watch(server: number, proc: Subprocess): void {
    for (const stream of [proc.stdout, proc.stderr]) {
      if (stream instanceof ReadableStream) void this.#drain(server, stream);
    }
  }

  roleChanges(since = 0): RoleChange[] {
    const changes: RoleChange[] = [];
    for (const line of this.lines) {
      if (line.at < since) continue;
      // "became <role> ... term=N" on a role change, "new term ... term=N role=<role>" otherwise.
      const became = / INFO became (\w+) .*\bterm=(\d+)/.exec(line.text);
      const newTerm = / INFO new term .*\bterm=(\d+) role=(\w+)/.exec(line.text);
      if (became) changes.push({ server: line.server, at: line.at, role: became[1]!, term: Number(became[2]) });
      else if (newTerm) changes.push({ server: line.server, at: line.at, role: newTerm[2]!, term: Number(newTerm[1]) });
    }
    return changes;
  }

  /** The highest term any server logged since `since`. */
  maxTerm(since = 0): number {
    let max = 0;
    for (const line of this.lines) {
      if (line.at < since) continue;
      const match = /\bterm=(\d+)/.exec(line.text);
      if (match) max = Math.max(max, Number(match[1]));
    }
    return max;
  }

  tail(server: number, count = 30): string {
    return this.lines
      .filter((line) => line.server === server)
      .slice(-count)
      .map((line) => `  [${server}] ${line.text}`)
      .join("\n");
  }

  async #drain(server: number, stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    try {
      for await (const chunk of stream) {
        partial += decoder.decode(chunk, { stream: true });
        const complete = partial.split("\n");
        partial = complete.pop()!;
        for (const text of complete) if (text) this.#add(server, text);
      }
    } catch {
      // The process died mid-read: what we have is all there is.
    }
    if (partial) this.#add(server, partial);
  }

  #add(server: number, text: string): void {
    const stamped = Date.parse(text.split(" ", 1)[0]!);
    this.lines.push({ server, at: Number.isNaN(stamped) ? Date.now() : stamped, text });
  }
}

// ---------------------------------------------------------------------------------------------
// A cluster behind proxies, with the process and network controls the tests use.

class ProxiedCluster {
  readonly cluster: TestCluster;
  readonly network: LinkNetwork;
  readonly output = new ServerOutput();
  readonly #paused = new Set<number>();
  readonly #clients: KvsClient[] = [];
  /** One-server clients handed out again and again, by purpose, server and timeout. */
  readonly #reusable = new Map<string, KvsClient>();

  private constructor(cluster: TestCluster, network: LinkNetwork) {
    this.cluster = cluster;
    this.network = network;
  }

  static async start(size: number): Promise<ProxiedCluster> {
    requireBuild();
    let network: LinkNetwork | undefined;
    const cluster = await TestCluster.create({
      size,
      output: "pipe",
      extraArgs: SERVER_ARGS,
      // Called at each start, by which time the proxies exist.
      raftListFor: (id) => network!.raftListFor(id),
    });
    network = await LinkNetwork.create(size, cluster.raftPorts);
    const proxied = new ProxiedCluster(cluster, network);
    for (let id = 0; id < size; id++) proxied.start(id);
    return proxied;
  }

  get size(): number {
    return this.cluster.options.size;
  }

  get ids(): number[] {
    return Array.from({ length: this.size }, (_, id) => id);
  }

  start(id: number): void {
    this.cluster.start(id);
    this.output.watch(id, this.cluster.processes[id]!);
  }

  async kill(id: number, signal: "SIGKILL" | "SIGTERM"): Promise<void> {
    await this.cluster.kill(id, signal);
  }

  pause(id: number): void {
    this.cluster.pause(id);
    this.#paused.add(id);
  }

  resume(id: number): void {
    this.cluster.resume(id);
    this.#paused.delete(id);
  }

  /** Running and not paused: a server that can answer. */
  isAnswering(id: number): boolean {
    return this.cluster.isRunning(id) && !this.#paused.has(id);
  }

  /** A client of the whole cluster, or of the listed servers only. */
  clusterClient(timeoutMs: number, ids = this.ids, clientId?: string): KvsClient {
    const client = new KvsClient(
      ids.map((id) => this.cluster.clientAddress(id)),
      { timeoutMs, followLeader: true, clientId },
    );
    this.#clients.push(client);
    return client;
  }

  /**
   * A client of one server, which answers as that server does (NOT_LEADER included). With a
   * `purpose`, the client is kept and handed out again (for loops that would otherwise open a
   * connection per request).
   */
  serverClient(id: number, timeoutMs: number, purpose?: string): KvsClient {
    const cacheKey = purpose === undefined ? undefined : `${purpose}/${id}/${timeoutMs}`;
    const cached = cacheKey === undefined ? undefined : this.#reusable.get(cacheKey);
    if (cached) return cached;
    const client = new KvsClient([this.cluster.clientAddress(id)], { timeoutMs, followLeader: false });
    if (cacheKey === undefined) this.#clients.push(client);
    else this.#reusable.set(cacheKey, client);
    return client;
  }

  /**
   * The servers that answer a linearizable GET of a missing key with NO_KEY right now: only a
   * leader that confirmed its lead with a quorum does that.
   */
  async confirmedLeaders(timeoutMs = 400, among = this.ids): Promise<number[]> {
    const answers = await Promise.all(
      among.map(async (id) => {
        if (!this.isAnswering(id)) return null;
        try {
          return (await this.serverClient(id, timeoutMs, "probe").get(PROBE_KEY)).status;
        } catch {
          return null;
        }
      }),
    );
    return among.filter((_, i) => answers[i] === KvsStatus.NO_KEY);
  }

  /** Waits until exactly one of `among` is a confirmed leader. */
  async waitForLeader(timeoutMs: number, among = this.ids): Promise<number> {
    return waitFor(
      `one leader among servers ${among.join(",")}`,
      async () => {
        const leaders = await this.confirmedLeaders(400, among);
        return leaders.length === 1 ? leaders[0] : undefined;
      },
      timeoutMs,
      50,
    );
  }

  /** The term `id` leads in, from its last "became leader" line. */
  leaderTerm(id: number): number {
    const won = this.output.roleChanges().filter((change) => change.server === id && change.role === "leader");
    if (won.length === 0) throw new Error(`server ${id} never logged becoming leader`);
    return won.at(-1)!.term;
  }

  /** Servers that exited without the test killing them (a crash, an invariant broken...). */
  unexpectedExits(): string[] {
    return this.cluster.processes.flatMap((proc, id) =>
      proc && proc.exitCode !== null
        ? [`server ${id} exited on its own with code ${proc.exitCode}:\n${this.output.tail(id)}`]
        : [],
    );
  }

  /** Every server's local (DIRECT_GET) value of `key`; null for "no such key". */
  async localValues(key: string): Promise<(string | null)[]> {
    return Promise.all(
      this.ids.map(async (id) => {
        const reply = await this.serverClient(id, 2000, "local").directGet(key);
        if (reply.status === KvsStatus.OK) return reply.value;
        if (reply.status === KvsStatus.NO_KEY) return null;
        throw new Error(`DIRECT_GET ${key} on server ${id}: ${reply.error}`);
      }),
    );
  }

  async stop(): Promise<void> {
    for (const client of [...this.#clients, ...this.#reusable.values()]) client.close();
    this.#clients.length = 0;
    this.#reusable.clear();
    await this.cluster.stop();
    await this.network.close();
  }
}

let current: ProxiedCluster | undefined;
afterEach(async () => {
  await current?.stop();
  current = undefined;
});

/** What a reply said, for assertion messages. */
function describeReply(reply: KvsReply): string {
  const names: Record<number, string> = { [KvsStatus.NO_KEY]: "NO_KEY", [KvsStatus.ERROR]: "ERROR", [KvsStatus.NOT_LEADER]: "NOT_LEADER" };
  return reply.status === KvsStatus.OK ? `OK ${JSON.stringify(reply.value)}` : `${names[reply.status] ?? reply.status} ${reply.error}`;
}

/** Runs `call`; a ClientError (timeout, unreachable) becomes a string instead of a throw. */
async function replyOrClientError(call: Promise<KvsReply>): Promise<KvsReply | string> {
  try {
    return await call;
  } catch (error) {
    if (error instanceof ClientError) return `ClientError: ${error.message}`;
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// The randomized fault test.

const FAULT_SECONDS = Number(process.env.FAULT_SECONDS ?? 30);
const FAULT_SEED = process.env.FAULT_SEED ? Number(process.env.FAULT_SEED) : Math.floor(Math.random() * 2 ** 31);
/** Clients that follow the leader; one more client, the roaming reader, asks random servers. */
const CLIENT_COUNT = 4;
const KEYS = ["apple", "banana", "cherry", "damson"];
/** Short, so a client stuck on a dead leader gives up (and records an unknown outcome) quickly. */
const FAULT_CLIENT_TIMEOUT_MS = 2000;
/** At most this many servers crashed or paused at once: a majority of 5 can always come back. */
const MAX_SERVERS_DOWN = 2;

interface ActiveFault {
  description: string;
  /** Servers crashed or paused by this fault. */
  servers: number[];
  /** Servers to read from the moment the fault is undone (a resumed or reconnected ex-leader may serve stale reads). */
  probeOnUndo: number[];
  /** Whether it changed the network (only one network fault at a time: heal() undoes it). */
  network: boolean;
  undo(): Promise<void>;
}

/**
 * Seeded fault injector. Each step either undoes the oldest active fault or injects a new one,
 * so faults overlap (a partition during a crash) but none lasts: a fault stays at most a few
 * steps of 0.2-1.5 s, and `undoAll` puts everything back. The moment a fault is undone it reads
 * every key from the servers it affected, straight from them, and records those reads too: that
 * is when a paused or cut-off ex-leader may still believe it leads.
 */
class Nemesis {
  readonly injected = new Map<string, number>();
  readonly timeline: string[] = [];
  readonly #cluster: ProxiedCluster;
  readonly #random: () => number;
  readonly #history: Operation[];
  readonly #startedAt = performance.now();
  #active: ActiveFault[] = [];
  /** History client numbers for the probe reads (each read is its own client: they run in parallel). */
  #nextProbeClient = 1000;

  constructor(cluster: ProxiedCluster, random: () => number, history: Operation[]) {
    this.#cluster = cluster;
    this.#random = random;
    this.#history = history;
  }

  get totalInjected(): number {
    let total = 0;
    for (const count of this.injected.values()) total += count;
    return total;
  }

  /** Runs until `deadline` (performance.now() ms), then undoes every fault. */
  async run(deadline: number): Promise<void> {
    try {
      while (performance.now() < deadline) {
        await this.#step();
        const problems = this.#cluster.unexpectedExits();
        if (problems.length > 0) throw new Error(problems.join("\n"));
        await Bun.sleep(200 + this.#random() * 1300);
      }
    } finally {
      await this.undoAll();
    }
  }

  async undoAll(): Promise<void> {
    while (this.#active.length > 0) await this.#undo(this.#active[0]!);
    this.#cluster.network.heal();
  }

  async #step(): Promise<void> {
    const down = new Set(this.#active.flatMap((fault) => fault.servers));
    const canTouchProcess = down.size < MAX_SERVERS_DOWN;
    const canTouchNetwork = !this.#active.some((fault) => fault.network);
    if (this.#active.length > 0 && (this.#random() < 0.45 || (!canTouchProcess && !canTouchNetwork))) {
      await this.#undo(this.#active[0]!);
      return;
    }
    const kinds: [number, string][] = [];
    if (canTouchProcess) kinds.push([3, "crash"], [3, "pause"]);
    if (canTouchNetwork) kinds.push([3, "partition"], [2, "isolate leader"], [2, "one-way cuts"], [1, "slow network"]);
    const kind = this.#weighted(kinds);
    const fault = await this.#inject(kind, down);
    this.injected.set(kind, (this.injected.get(kind) ?? 0) + 1);
    this.#active.push(fault);
    this.#note(`+ ${fault.description}`);
  }

  async #inject(kind: string, down: Set<number>): Promise<ActiveFault> {
    const cluster = this.#cluster;
    const network = cluster.network;
    const leader = await this.#currentLeader();
    const cutMode: CutMode = this.#random() < 0.75 ? "blackhole" : "refuse";
    switch (kind) {
      case "crash":
      case "pause": {
        const candidates = cluster.ids.filter((id) => cluster.isAnswering(id) && !down.has(id));
        // Half of the time the leader, as it is the server whose loss matters most.
        const victim =
          leader !== undefined && !down.has(leader) && this.#random() < 0.5 ? leader : this.#pick(candidates);
        const role = victim === leader ? " (leader)" : "";
        if (kind === "pause") {
          cluster.pause(victim);
          return {
            description: `pause ${victim}${role}`,
            servers: [victim],
            probeOnUndo: [victim],
            network: false,
            undo: async () => cluster.resume(victim),
          };
        }
        const signal = this.#random() < 0.5 ? "SIGKILL" : "SIGTERM";
        await cluster.kill(victim, signal);
        return {
          description: `${signal} ${victim}${role}`,
          servers: [victim],
          probeOnUndo: [],
          network: false,
          undo: async () => cluster.start(victim),
        };
      }
      case "partition": {
        const shuffled = this.#shuffle(cluster.ids);
        const minority = shuffled.slice(0, this.#random() < 0.5 ? 1 : 2);
        const majority = shuffled.slice(minority.length);
        network.partition(minority, majority, cutMode);
        return this.#networkFault(`partition ${minority.join(",")} | ${majority.join(",")} (${cutMode}, leader was ${leader ?? "?"})`);
      }
      case "isolate leader": {
        const victim = leader ?? this.#pick(cluster.ids);
        network.isolate(victim, cutMode);
        return this.#networkFault(`isolate ${victim}${leader === undefined ? "" : " (leader)"} (${cutMode})`);
      }
      case "one-way cuts": {
        const others = (id: number) => cluster.ids.filter((other) => other !== id);
        const shape = this.#random();
        if (leader !== undefined && shape < 0.35) {
          // The leader's heartbeats are lost, but it still hears the others' (vote) requests.
          for (const peer of others(leader)) network.cut(leader, peer, cutMode);
          return this.#networkFault(`cut ${leader} (leader) -> everyone (${cutMode})`);
        }
        if (leader !== undefined && shape < 0.55) {
          // Nobody can get a request to the leader; its own requests still flow.
          for (const peer of others(leader)) network.cut(peer, leader, cutMode);
          return this.#networkFault(`cut everyone -> ${leader} (leader) (${cutMode})`);
        }
        const cuts: string[] = [];
        for (let n = 1 + Math.floor(this.#random() * 4); n > 0; n--) {
          const from = this.#pick(cluster.ids);
          const to = this.#pick(others(from));
          network.cut(from, to, cutMode);
          cuts.push(`${from}->${to}`);
        }
        return this.#networkFault(`cut ${cuts.join(" ")} (${cutMode})`);
      }
      case "slow network": {
        let delayed = 0;
        let lossy = 0;
        for (const from of cluster.ids) {
          for (const to of cluster.ids) {
            if (from === to) continue;
            if (this.#random() < 0.5) {
              network.delay(from, to, 5 + Math.floor(this.#random() * 150));
              delayed++;
            }
            if (this.#random() < 0.2) {
              network.dropRate(from, to, 0.01 + this.#random() * 0.04);
              lossy++;
            }
          }
        }
        return this.#networkFault(`slow network: ${delayed} delayed links, ${lossy} lossy links`);
      }
      default:
        throw new Error(`unknown fault kind ${kind}`);
    }
  }

  #networkFault(description: string): ActiveFault {
    const cluster = this.#cluster;
    return { description, servers: [], probeOnUndo: cluster.ids, network: true, undo: async () => cluster.network.heal() };
  }

  async #undo(fault: ActiveFault): Promise<void> {
    this.#active = this.#active.filter((active) => active !== fault);
    await fault.undo();
    this.#note(`- ${fault.description}`);
    const cluster = this.#cluster;
    await Promise.all(
      fault.probeOnUndo
        .filter((id) => cluster.isAnswering(id))
        .flatMap((id) =>
          KEYS.map((key) =>
            recordedGet(this.#history, this.#nextProbeClient++, cluster.serverClient(id, 1000, "nemesis"), key),
          ),
        ),
    );
  }

  async #currentLeader(): Promise<number | undefined> {
    const leaders = await this.#cluster.confirmedLeaders(400);
    return leaders.length === 1 ? leaders[0] : undefined;
  }

  #note(what: string): void {
    this.timeline.push(`${((performance.now() - this.#startedAt) / 1000).toFixed(1)}s ${what}`);
  }

  #pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.#random() * items.length)]!;
  }

  #shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.#random() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }

  #weighted(choices: [number, string][]): string {
    let roll = this.#random() * choices.reduce((sum, [weight]) => sum + weight, 0);
    for (const [weight, kind] of choices) {
      roll -= weight;
      if (roll < 0) return kind;
    }
    return choices.at(-1)![1];
  }
}

/** Records a PUT: acknowledged, or of unknown outcome (ret Infinity) on any failure. */
async function recordedPut(history: Operation[], clientIndex: number, client: KvsClient, key: string, value: string): Promise<void> {
  const call = performance.now();
  let acknowledged = false;
  try {
    acknowledged = (await client.put(key, value)).status === KvsStatus.OK;
  } catch (error) {
    if (!(error instanceof ClientError)) throw error;
  }
  const ret = performance.now();
  history.push({ client: clientIndex, kind: "put", key, value, call, ret: acknowledged ? ret : Infinity, ok: acknowledged });
}

/**
 * Records a GET. Only OK and NO_KEY are answers; NOT_LEADER, ERROR and timeouts are kept as
 * failed reads, which the checker drops.
 */
async function recordedGet(history: Operation[], clientIndex: number, client: KvsClient, key: string): Promise<void> {
  const call = performance.now();
  let output: string | null | undefined;
  try {
    const reply = await client.get(key);
    if (reply.status === KvsStatus.OK) output = reply.value;
    else if (reply.status === KvsStatus.NO_KEY) output = null;
  } catch (error) {
    if (!(error instanceof ClientError)) throw error;
  }
  const ret = performance.now();
  if (output === undefined) history.push({ client: clientIndex, kind: "get", key, call, ret: Infinity, ok: false });
  else history.push({ client: clientIndex, kind: "get", key, output, call, ret, ok: true });
}

/**
 * One client's workload: PUTs of values unique in the whole test, and GETs, on random keys,
 * back to back until `deadline`.
 */
async function runClient(
  clientIndex: number,
  client: KvsClient,
  random: () => number,
  deadline: number,
  history: Operation[],
): Promise<void> {
  let written = 0;
  while (performance.now() < deadline) {
    const key = KEYS[Math.floor(random() * KEYS.length)]!;
    if (random() < 0.5) await recordedPut(history, clientIndex, client, key, `c${clientIndex}-${++written}`);
    else await recordedGet(history, clientIndex, client, key);
  }
}

/**
 * A reader that asks a random server each time instead of following the leader. Clients that
 * follow the leader rarely talk to a deposed one; this one does, so a server that answers a GET
 * while it no longer leads (a stale read) gets caught.
 */
async function runRoamingReader(
  clientIndex: number,
  cluster: ProxiedCluster,
  random: () => number,
  deadline: number,
  history: Operation[],
): Promise<void> {
  while (performance.now() < deadline) {
    const server = Math.floor(random() * cluster.size);
    const key = KEYS[Math.floor(random() * KEYS.length)]!;
    if (!cluster.isAnswering(server)) {
      await Bun.sleep(10);
      continue;
    }
    await recordedGet(history, clientIndex, cluster.serverClient(server, 1000, "roaming"), key);
  }
}

describe("linearizability under faults", () => {
  test(
    `randomized faults (crashes, pauses, partitions, one-way cuts, slow links): the history stays linearizable and all servers converge`,
    async () => {
      console.log(`randomized fault test: FAULT_SEED=${FAULT_SEED} FAULT_SECONDS=${FAULT_SECONDS}`);
      const random = seededRandom(FAULT_SEED);
      current = await ProxiedCluster.start(5);
      const cluster = current;
      await cluster.waitForLeader(10_000);

      const history: Operation[] = [];
      const nemesis = new Nemesis(cluster, seededRandom(Math.floor(random() * 2 ** 31)), history);
      const clients = Array.from({ length: CLIENT_COUNT }, () => cluster.clusterClient(FAULT_CLIENT_TIMEOUT_MS));
      const deadline = performance.now() + FAULT_SECONDS * 1000;
      try {
        await Promise.all([
          nemesis.run(deadline),
          ...clients.map((client, index) =>
            runClient(index, client, seededRandom(Math.floor(random() * 2 ** 31)), deadline, history),
          ),
          runRoamingReader(CLIENT_COUNT, cluster, seededRandom(Math.floor(random() * 2 ** 31)), deadline, history),
        ]);
      } finally {
        console.log(`fault timeline (seed ${FAULT_SEED}):\n  ${nemesis.timeline.join("\n  ")}`);
      }

      // Everything is back (nemesis.run undid every fault). Final reads, recorded as one more
      // client, until every server's local copy matches what a linearizable GET returns.
      const checker = cluster.clusterClient(5000);
      const finalClient = CLIENT_COUNT + 1;
      await cluster.waitForLeader(20_000);
      const converged = await waitFor(
        "every server to hold what a linearizable GET returns, for every key",
        async () => {
          const mismatches: string[] = [];
          for (const key of KEYS) {
            const call = performance.now();
            const reply = await checker.get(key);
            const output = reply.status === KvsStatus.OK ? reply.value : null;
            history.push({ client: finalClient, kind: "get", key, output, call, ret: performance.now(), ok: true });
            const local = await cluster.localValues(key);
            if (local.some((value) => value !== output)) mismatches.push(`${key}: GET ${output}, local ${JSON.stringify(local)}`);
          }
          return mismatches.length === 0 ? true : undefined;
        },
        30_000,
        200,
      );
      expect(converged).toBe(true);
      expect(cluster.unexpectedExits()).toEqual([]);

      const puts = history.filter((op) => op.kind === "put");
      const leaderReads = history.filter((op) => op.kind === "get" && op.client !== CLIENT_COUNT && op.client < 1000);
      const directReads = history.filter((op) => op.kind === "get" && (op.client === CLIENT_COUNT || op.client >= 1000));
      const checkStarted = performance.now();
      const result = checkLinearizable(history);
      const checkMs = Math.round(performance.now() - checkStarted);
      const elections = cluster.output.roleChanges().filter((change) => change.role === "leader").length;
      console.log(
        [
          `seed ${FAULT_SEED}: ${history.length} ops recorded`,
          `  PUTs: ${puts.filter((op) => op.ok).length} acknowledged, ${puts.filter((op) => !op.ok).length} of unknown outcome`,
          `  GETs through the leader: ${leaderReads.filter((op) => op.ok).length} answered, ${leaderReads.filter((op) => !op.ok).length} timed out`,
          `  GETs straight to one server (roaming reader, probes after each undone fault): ` +
            `${directReads.filter((op) => op.ok).length} answered, ${directReads.filter((op) => !op.ok).length} refused or timed out`,
          `faults injected: ${nemesis.totalInjected} (${[...nemesis.injected].map(([kind, n]) => `${kind} ${n}`).join(", ")})`,
          `leaders elected: ${elections}, highest term ${cluster.output.maxTerm()}`,
          `snapshots installed: ${cluster.output.lines.filter((line) => line.text.includes("installed snapshot")).length}`,
          `checker: ${JSON.stringify(result.linearizable)}${result.linearizable === true ? `, ${result.checkedOps} ops checked` : ""} in ${checkMs} ms`,
        ].join("\n"),
      );
      if (result.linearizable !== true) {
        throw new Error(`history not linearizable (FAULT_SEED=${FAULT_SEED}), key ${result.key}:\n${result.explanation}`);
      }
      expect(result.checkedOps).toBeGreaterThan(0);
    },
    (FAULT_SECONDS + 90) * 1000,
  );
});

// ---------------------------------------------------------------------------------------------
// Targeted scenarios.

describe("targeted fault scenarios", () => {
  test("a paused leader, resumed after a new leader took a write, never answers a GET with the old value", async () => {
    current = await ProxiedCluster.start(5);
    const cluster = current;
    const oldLeader = await cluster.waitForLeader(10_000);
    const writer = cluster.clusterClient(10_000);
    expect((await writer.put("color", "old")).status).toBe(KvsStatus.OK);

    cluster.pause(oldLeader);
    const others = cluster.ids.filter((id) => id !== oldLeader);
    const newLeader = await cluster.waitForLeader(10_000, others);
    expect((await cluster.clusterClient(10_000, others).put("color", "new")).status).toBe(KvsStatus.OK);

    // The old leader wakes up still believing it leads; ask it before it hears from anyone.
    const reader = cluster.serverClient(oldLeader, 3000);
    cluster.resume(oldLeader);
    const answers = await Promise.all([1, 2, 3].map(() => replyOrClientError(reader.get("color"))));
    console.log(`leader ${oldLeader} paused, ${newLeader} took over; resumed ${oldLeader} answered: ${answers.map((a) => (typeof a === "string" ? a : describeReply(a))).join(" | ")}`);
    for (const answer of answers) {
      if (typeof answer === "string") continue; // no answer is fine
      expect([KvsStatus.OK, KvsStatus.NO_KEY, KvsStatus.NOT_LEADER, KvsStatus.ERROR]).toContain(answer.status);
      // A stale read would be "old" (or a missing key): only the new value may be served.
      if (answer.status === KvsStatus.OK) expect(answer.value).toBe("new");
      expect(answer.status).not.toBe(KvsStatus.NO_KEY);
    }
    // And it catches up.
    await waitFor("the old leader to apply the new value", async () => (await reader.directGet("color")).value === "new", 5000);
  });

  test("a follower isolated for several election timeouts rejoins without a new election or term", async () => {
    current = await ProxiedCluster.start(5);
    const cluster = current;
    const leader = await cluster.waitForLeader(10_000);
    const term = cluster.leaderTerm(leader);
    const follower = (leader + 1) % cluster.size;
    const writer = cluster.clusterClient(5000);
    expect((await writer.put("counter", "0")).status).toBe(KvsStatus.OK);

    const isolatedAt = Date.now();
    cluster.network.isolate(follower);
    // Writes keep succeeding while the follower's election timer fires again and again.
    let written = 0;
    const isolationEnds = performance.now() + 5 * MAX_ELECTION_TIMEOUT_MS;
    while (performance.now() < isolationEnds) {
      expect((await writer.put("counter", String(++written))).status).toBe(KvsStatus.OK);
      await Bun.sleep(50);
    }
    cluster.network.heal();
    const followerClient = cluster.serverClient(follower, 2000);
    await waitFor(
      "the isolated follower to catch up",
      async () => (await followerClient.directGet("counter")).value === String(written),
      10_000,
    );
    expect((await writer.put("counter", "after")).status).toBe(KvsStatus.OK);
    expect(await cluster.waitForLeader(5000)).toBe(leader);

    const changes = cluster.output.roleChanges(isolatedAt);
    const wentPrecandidate = changes.some((change) => change.server === follower && change.role === "precandidate");
    console.log(
      `leader ${leader} term ${term}; follower ${follower} isolated for ${5 * MAX_ELECTION_TIMEOUT_MS} ms ` +
        `(${wentPrecandidate ? "campaigned with pre-votes only" : "never campaigned"}), ${written} writes meanwhile`,
    );
    // Pre-vote kept the follower from raising its term, so nobody was deposed.
    expect(changes.filter((change) => change.role === "candidate" || change.role === "leader")).toEqual([]);
    expect(cluster.output.maxTerm(isolatedAt)).toBeLessThanOrEqual(term);
    expect(cluster.unexpectedExits()).toEqual([]);
  });

  test("a leader cut off from every other server steps down within two election timeouts", async () => {
    current = await ProxiedCluster.start(5);
    const cluster = current;
    const leader = await cluster.waitForLeader(10_000);
    expect((await cluster.clusterClient(5000).put("fruit", "fig")).status).toBe(KvsStatus.OK);

    const isolatedAt = Date.now();
    cluster.network.isolate(leader);
    const steppedDown = await waitFor(
      `leader ${leader} to step down`,
      () => cluster.output.roleChanges(isolatedAt).find((change) => change.server === leader && change.role !== "leader"),
      5000,
    );
    const stepDownMs = steppedDown.at - isolatedAt;
    // Its GETs now say NOT_LEADER at once (clt exit 2), never "no such key" (exit 3).
    const probe = await clt(["-p", cluster.cluster.clientPorts[leader]!, "-o", "GET", "-k", PROBE_KEY, "--timeout", "1000"]);
    const others = cluster.ids.filter((id) => id !== leader);
    const newLeader = await cluster.waitForLeader(10_000, others);
    console.log(`isolated leader ${leader} stepped down after ${stepDownMs} ms (became ${steppedDown.role}); clt GET exit ${probe.code}; new leader ${newLeader}`);
    expect(stepDownMs).toBeLessThanOrEqual(2 * MAX_ELECTION_TIMEOUT_MS);
    expect(probe.code).toBe(2);
    const stillIsolated = await replyOrClientError(cluster.serverClient(leader, 1000).get(PROBE_KEY));
    expect(typeof stillIsolated === "string" || stillIsolated.status === KvsStatus.NOT_LEADER).toBe(true);
  });

  test("a PUT retried with the same client id and sequence after a later write is applied only once", async () => {
    current = await ProxiedCluster.start(5);
    const cluster = current;
    await cluster.waitForLeader(10_000);
    const clientId = `client-A-${crypto.randomUUID()}`;

    const clientA = cluster.clusterClient(5000, cluster.ids, clientId);
    expect((await clientA.put("shared", "v1", 1)).status).toBe(KvsStatus.OK);
    const clientB = cluster.clusterClient(5000);
    expect((await clientB.put("shared", "v2")).status).toBe(KvsStatus.OK);
    // Client A never saw its reply (as far as it knows) and retries, from a fresh connection.
    const clientAAgain = cluster.clusterClient(5000, cluster.ids, clientId);
    const retry = await clientAAgain.put("shared", "v1", 1);
    expect(retry.status).toBe(KvsStatus.OK); // answered as the first time

    expect(await clientB.get("shared")).toMatchObject({ status: KvsStatus.OK, value: "v2" });
    await waitFor(
      "every server to hold v2",
      async () => (await cluster.localValues("shared")).every((value) => value === "v2"),
      5000,
    );
    // The session moved on: the next sequence number of client A is applied normally.
    expect((await clientAAgain.put("shared", "v3", 2)).status).toBe(KvsStatus.OK);
    expect(await clientB.get("shared")).toMatchObject({ status: KvsStatus.OK, value: "v3" });
  });

  test("a cut-off leader's uncommitted writes never become visible after a new leader commits at the same indexes", async () => {
    current = await ProxiedCluster.start(5);
    const cluster = current;
    const oldLeader = await cluster.waitForLeader(10_000);
    const others = cluster.ids.filter((id) => id !== oldLeader);
    expect((await cluster.clusterClient(5000).put("balance", "100")).status).toBe(KvsStatus.OK);

    cluster.network.isolate(oldLeader);
    // Straight to the isolated leader, before check-quorum makes it step down: it appends the
    // writes to its log but can never commit them.
    const orphanClient = cluster.serverClient(oldLeader, 1500);
    const orphans = [
      { key: "balance", value: "orphan-1" },
      { key: "balance", value: "orphan-2" },
      { key: "orphan-only", value: "orphan-3" },
    ];
    const orphanReplies = Promise.all(orphans.map(({ key, value }) => replyOrClientError(orphanClient.put(key, value))));

    // The majority elects a leader and commits more entries than the orphans occupy.
    await cluster.waitForLeader(10_000, others);
    const majority = cluster.clusterClient(10_000, others);
    const committed = ["90", "80", "70", "60", "50"];
    for (const value of committed) expect((await majority.put("balance", value)).status).toBe(KvsStatus.OK);

    const answered = await orphanReplies;
    console.log(`orphaned PUTs to isolated leader ${oldLeader}: ${answered.map((a) => (typeof a === "string" ? a : describeReply(a))).join(" | ")}`);
    for (const answer of answered) {
      if (typeof answer === "string") continue; // a timeout: outcome unknown to the client, as it should be
      // NOT_LEADER would mean the scenario did not happen (it stepped down before taking the write).
      expect(answer.status).toBe(KvsStatus.ERROR);
    }

    const orphanValues = new Set(orphans.map((orphan) => orphan.value));
    const seen: string[] = [];
    const check = async (key: string) => {
      const values = await cluster.localValues(key);
      for (const value of values) if (value !== null && orphanValues.has(value)) seen.push(`${key}=${value}`);
      return values;
    };
    // While isolated, the old leader itself never applies them either.
    expect((await check("balance"))[oldLeader]).toBe("100");

    cluster.network.heal();
    await waitFor(
      "every server, the old leader included, to converge on the majority's writes",
      async () => {
        const balance = await check("balance");
        const orphanOnly = await check("orphan-only");
        return balance.every((value) => value === committed.at(-1)) && orphanOnly.every((value) => value === null);
      },
      10_000,
      50,
    );
    const reader = cluster.clusterClient(5000);
    expect(await reader.get("balance")).toMatchObject({ status: KvsStatus.OK, value: committed.at(-1) });
    expect((await reader.get("orphan-only")).status).toBe(KvsStatus.NO_KEY);
    expect(seen).toEqual([]);
  });
});
