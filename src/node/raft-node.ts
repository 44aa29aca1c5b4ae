/**
 * @module node/raft-node
 * The thin layer that drives the pure Raft core: it owns the clock (a tick timer), the disk
 * (RocksDB) and the sockets (gRPC), and turns the core's Ready batches into I/O in the order
 * the core requires: persist (synced), then send, then apply, then advance.
 *
 * Everything that touches the core runs inside one loop, one event batch at a time: events that
 * arrive while a Ready is being persisted wait in a queue and are handled together afterwards.
 * That is what makes writes batch naturally under load: many proposals, one fsync, one
 * AppendEntries per follower.
 */
import { RaftCore } from "../raft/core";
import { type Entry, type InstallSnapshot, type Message, type NodeId, type Ready, type Role } from "../raft/types";
import type { BatchOp } from "../storage/rocks";
import type { Logger } from "../logger";
import type { ApplyResult, KvStateMachine } from "../storage/kv-state-machine";
import type { RaftStorage } from "../storage/raft-storage";
import { GrpcTransport, SNAPSHOT_DEADLINE_MS } from "../transport/grpc-transport";
import { NotLeaderError, ProposalDroppedError, RequestTimeoutError } from "./errors";

export interface RaftNodeConfig {
  id: NodeId;
  /** "host:port" of every server's Raft endpoint, by id. */
  raftAddresses: readonly string[];
  /** Where this server's Raft service listens. */
  raftBindAddress: string;
  /** This server's client (KVS) address, told to followers so they can redirect clients. */
  clientAddress: string;
  tickMs: number;
  electionTicks: number;
  heartbeatTicks: number;
  /** `--leader`: campaign at once, and keep trying every tick until some leader is known. */
  campaignAtStart: boolean;
  /** Compact the log once this many applied entries follow the last snapshot point. */
  snapshotEntries: number;
  logger: Logger;
  /** Called when the node cannot go on safely (an invariant broke, the disk failed). */
  onFatal: (error: unknown) => void;
}

interface ProposalWaiter {
  term: number;
  resolve: (result: ApplyResult) => void;
  reject: (error: Error) => void;
}

interface ReadWaiter {
  resolve: () => void;
  reject: (error: Error) => void;
}

export class RaftNode {
  readonly #config: RaftNodeConfig;
  readonly #core: RaftCore;
  readonly #storage: RaftStorage;
  readonly #stateMachine: KvStateMachine;
  readonly #transport: GrpcTransport;
  readonly #log: Logger;

  #events: (() => void)[] = [];
  #wakeLoop: (() => void) | null = null;
  #stopped = false;
  #ticker: ReturnType<typeof setInterval> | null = null;
  #loopDone: Promise<void> = Promise.resolve();

  /** Incoming RPCs waiting for the core's reply, by the rpcId given to the core. */
  #pendingRpcs = new Map<number, (reply: Message | null) => void>();
  #rpcsStepped: number[] = [];
  #nextRpcId = 1;

  #proposals = new Map<number, ProposalWaiter>();
  #reads = new Map<number, ReadWaiter>();
  /** Confirmed reads waiting for the state machine to reach their index, ascending by index. */
  #readsAwaitingApply: { index: number; waiter: ReadWaiter }[] = [];
  #nextReadId = 1;

  /** Client addresses of the other servers, learnt from their AppendEntries. */
  #clientAddresses = new Map<NodeId, string>();
  /** Snapshots being read or sent: the log is not compacted meanwhile (see #maybeCompact). */
  #snapshotsInFlight = 0;
  #misconfigurationWarnedAt = new Map<string, number>();
  #sawLeader = false;
  #lastRole: Role = "follower";
  #lastTerm = 0;
  #lastLeader: NodeId | null = null;

  constructor(config: RaftNodeConfig, storage: RaftStorage, stateMachine: KvStateMachine, core: RaftCore) {
    this.#config = config;
    this.#storage = storage;
    this.#stateMachine = stateMachine;
    this.#core = core;
    this.#log = config.logger;
    this.#lastTerm = core.term;
    this.#transport = new GrpcTransport(config.id, config.raftAddresses, config.clientAddress, {
      onRequest: (message, respond, leaderClientAddress) =>
        this.#enqueue(() => {
          if (leaderClientAddress) {
            this.#clientAddresses.set(message.from, leaderClientAddress);
          }
          const rpcId = this.#nextRpcId++;
          this.#pendingRpcs.set(rpcId, respond);
          this.#rpcsStepped.push(rpcId);
          this.#core.step({ ...message, rpcId });
        }),
      onReply: (message) =>
        this.#enqueue(() => {
          if (message.type === "InstallSnapshotReply") this.#snapshotsInFlight--;
          this.#core.step(message);
        }),
      onMisconfiguredPeer: (problem) => this.#warnMisconfigured(problem),
      onUnreachable: (peer, request) =>
        this.#enqueue(() => {
          if (request === "InstallSnapshot") {
            this.#snapshotsInFlight--;
            this.#core.reportSnapshotFailed(peer);
          } else {
            this.#core.reportUnreachable(peer);
          }
        }),
    });
  }

  /** Creates the core from what storage recovered, opens the Raft port and starts ticking. */
  static async start(config: RaftNodeConfig, storage: RaftStorage, stateMachine: KvStateMachine): Promise<RaftNode> {
    const { hardState, snapshot, entries } = await storage.load();
    await stateMachine.load();
    const core = new RaftCore(
      {
        id: config.id,
        clusterSize: config.raftAddresses.length,
        electionTicks: config.electionTicks,
        heartbeatTicks: config.heartbeatTicks,
        randomInt: (n) => Math.floor(Math.random() * n),
        // Outlast the transport's own deadline for a snapshot, which reports the failure first.
        snapshotTimeoutTicks: Math.ceil((SNAPSHOT_DEADLINE_MS * 2) / config.tickMs),
      },
      { hardState, snapshot, entries, appliedIndex: stateMachine.appliedIndex },
    );
    const node = new RaftNode(config, storage, stateMachine, core);
    await node.#transport.listen(config.raftBindAddress);
    node.#loopDone = node.#runLoop();
    node.#ticker = setInterval(() => node.#enqueue(() => node.#tick()), config.tickMs);
    if (config.campaignAtStart) node.#enqueue(() => core.campaign());
    config.logger.info("raft node started", {
      term: hardState.term,
      lastIndex: snapshot.index + entries.length,
      snapshot: snapshot.index,
      applied: stateMachine.appliedIndex,
    });
    return node;
  }

  get isLeader(): boolean {
    return this.#core.role === "leader";
  }

  /** The leader's client address when known ("" otherwise). */
  get leaderHint(): string {
    const leader = this.#core.leaderId;
    if (leader === null) return "";
    if (leader === this.#config.id) return this.#config.clientAddress;
    return this.#clientAddresses.get(leader) ?? "";
  }

  /**
   * Replicates `command` and resolves once it is applied here. Rejects with NotLeaderError when
   * this server does not lead, ProposalDroppedError when leadership changed and the entry was
   * replaced, RequestTimeoutError when `timeoutMs` passes first (outcome then unknown).
   */
  propose(command: Uint8Array, timeoutMs: number): Promise<ApplyResult> {
    return new Promise((resolve, reject) => {
      this.#enqueue(() => {
        const placed = this.#core.propose(command);
        if (!placed) return reject(new NotLeaderError(this.leaderHint));
        const timer = setTimeout(() => {
          this.#proposals.delete(placed.index);
          reject(new RequestTimeoutError(`write not committed within ${timeoutMs} ms`));
        }, timeoutMs);
        // An older proposal at the same index (from an earlier term of ours) was overwritten.
        this.#proposals.get(placed.index)?.reject(new ProposalDroppedError("leadership changed before the write committed"));
        this.#proposals.set(placed.index, {
          term: placed.term,
          resolve: (result) => {
            clearTimeout(timer);
            resolve(result);
          },
          reject: (error) => {
            clearTimeout(timer);
            reject(error);
          },
        });
      });
    });
  }

  /**
   * Resolves once a read of the local state machine is linearizable (ReadIndex): this server
   * confirmed it still leads after the call, and has applied everything committed before it.
   */
  readBarrier(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#enqueue(() => {
        const requestId = this.#nextReadId++;
        if (!this.#core.readIndex(requestId)) return reject(new NotLeaderError(this.leaderHint));
        const timer = setTimeout(() => {
          this.#reads.delete(requestId);
          reject(new RequestTimeoutError(`leadership not confirmed within ${timeoutMs} ms`));
        }, timeoutMs);
        this.#reads.set(requestId, {
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
          reject: (error) => {
            clearTimeout(timer);
            reject(error);
          },
        });
      });
    });
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#ticker) clearInterval(this.#ticker);
    this.#wakeLoop?.();
    this.#transport.close();
    await this.#loopDone;
  }

  // ---------------------------------------------------------------------------------------------

  /** Says so on stderr (the default log level shows warnings), at most every 10 s per problem. */
  #warnMisconfigured(problem: string): void {
    const now = Date.now();
    if ((this.#misconfigurationWarnedAt.get(problem) ?? 0) > now - 10_000) return;
    this.#misconfigurationWarnedAt.set(problem, now);
    this.#log.warn("cluster mismatch: check that every server has the same -r list and its own -i", { problem });
  }

  #enqueue(event: () => void): void {
    if (this.#stopped) return;
    this.#events.push(event);
    const wake = this.#wakeLoop;
    this.#wakeLoop = null;
    wake?.();
  }

  #tick(): void {
    const core = this.#core;
    if (core.leaderId !== null) this.#sawLeader = true;
    if (this.#config.campaignAtStart && !this.#sawLeader && core.role !== "candidate") {
      // `--leader` at start-up: peers may not be up yet, so keep asking each tick rather than
      // waiting out a full election timeout. Still an ordinary (pre-)election: safe in any order.
      core.campaign();
    } else {
      core.tick();
    }
  }

  async #runLoop(): Promise<void> {
    try {
      while (!this.#stopped) {
        if (this.#events.length === 0 && !this.#core.hasReady()) {
          await new Promise<void>((resolve) => (this.#wakeLoop = resolve));
          continue;
        }
        const events = this.#events;
        this.#events = [];
        for (const event of events) event();
        this.#logRoleChange();
        if (!this.#core.hasReady()) continue;
        const stepped = this.#rpcsStepped;
        this.#rpcsStepped = [];
        await this.#handleReady(this.#core.ready());
        this.#maybeCompact();
        // Every request stepped before ready() was answered in it, or was dropped on purpose.
        for (const rpcId of stepped) {
          const respond = this.#pendingRpcs.get(rpcId);
          if (respond) {
            this.#pendingRpcs.delete(rpcId);
            respond(null);
          }
        }
      }
    } catch (error) {
      this.#stopped = true;
      this.#config.onFatal(error);
    }
  }

  async #handleReady(ready: Ready): Promise<void> {
    // A leader's AppendEntries may leave before its own copy is durable (thesis §10.2.1): the
    // leader counts itself toward a majority only after the write below (see advance()), and
    // sending overlaps its fsync with the followers'. Not when the term or vote changed in this
    // batch: those must be durable before anything of the new term leaves.
    const sendEarly = ready.hardState === null && this.#core.role === "leader";
    if (sendEarly) {
      for (const message of ready.messages) if (message.type === "AppendEntries") this.#transport.send(message);
    }
    // 0. A snapshot from the leader replaces the state machine, atomically with the log.
    let stateOps: BatchOp[] = [];
    if (ready.snapshot) {
      const restored = await this.#stateMachine.restoreOps(ready.snapshot.data);
      if (restored.meta.index !== ready.snapshot.meta.index || restored.meta.term !== ready.snapshot.meta.term) {
        throw new Error(`snapshot data is at ${restored.meta.index}/${restored.meta.term}, not ${ready.snapshot.meta.index}/${ready.snapshot.meta.term}`);
      }
      stateOps = restored.ops;
    }
    // 1. Durability first: nothing may promise what the disk does not hold yet.
    await this.#storage.persist(ready, stateOps);
    if (ready.snapshot) {
      await this.#stateMachine.load();
      this.#log.info("installed snapshot", { index: ready.snapshot.meta.index, term: ready.snapshot.meta.term });
    }
    // 2. Messages.
    for (const message of ready.messages) {
      if (sendEarly && message.type === "AppendEntries") continue;
      if (message.rpcId !== undefined) {
        const respond = this.#pendingRpcs.get(message.rpcId);
        this.#pendingRpcs.delete(message.rpcId);
        respond?.(message);
      } else if (message.type === "InstallSnapshot" && message.snapshot === null) {
        this.#sendSnapshot(message);
      } else {
        this.#transport.send(message);
      }
    }
    // 3. Apply, and answer the clients whose writes these were; reads waiting for the state
    // machine may now go ahead (after applying, or after a snapshot moved it forward).
    if (ready.committed.length > 0) await this.#apply(ready.committed);
    this.#releaseReadsUpTo(this.#stateMachine.appliedIndex);
    // 4. Reads confirmed by a quorum.
    for (const { requestId, index } of ready.readStates) {
      const waiter = this.#reads.get(requestId);
      if (!waiter) continue;
      this.#reads.delete(requestId);
      if (index === null) waiter.reject(new NotLeaderError(this.leaderHint));
      else if (index <= this.#stateMachine.appliedIndex) waiter.resolve();
      else this.#readsAwaitingApply.push({ index, waiter });
    }
    // 5. Tell the core it is all done.
    this.#core.advance(ready);
  }

  /**
   * Fills the core's snapshot request from the state machine as it is now, off the loop: a large
   * store takes a while to read, and heartbeats must go on meanwhile.
   */
  #sendSnapshot(request: InstallSnapshot): void {
    this.#snapshotsInFlight++;
    this.#stateMachine.snapshot().then(
      ({ meta, data }) => {
        this.#log.info("sending snapshot", { to: request.to, index: meta.index, bytes: data.byteLength });
        this.#transport.send({ ...request, snapshot: meta, data });
      },
      (error) => {
        this.#log.warn("cannot read a snapshot", { to: request.to, error: String(error) });
        this.#enqueue(() => {
          this.#snapshotsInFlight--;
          this.#core.reportSnapshotFailed(request.to);
        });
      },
    );
  }

  /**
   * Keeps the log bounded: once `snapshotEntries` applied entries follow the last compaction
   * point, forget all but the last quarter of them (kept so that a follower slightly behind
   * catches up from the log rather than from a whole snapshot).
   */
  #maybeCompact(): void {
    const applied = this.#stateMachine.appliedIndex;
    const { snapshotEntries } = this.#config;
    // Compacting while a snapshot travels could leave its follower behind the log once more
    // when it lands, and under steady writes forever.
    if (this.#snapshotsInFlight > 0) return;
    if (applied - this.#core.snapshot.index >= snapshotEntries) {
      this.#core.compact(applied - Math.floor(snapshotEntries / 4));
    }
  }

  async #apply(entries: readonly Entry[]): Promise<void> {
    const results = await this.#stateMachine.apply(entries);
    entries.forEach((entry, i) => {
      const waiter = this.#proposals.get(entry.index);
      if (!waiter) return;
      this.#proposals.delete(entry.index);
      if (waiter.term === entry.term) waiter.resolve(results[i]!);
      else waiter.reject(new ProposalDroppedError("leadership changed before the write committed"));
    });
  }

  #releaseReadsUpTo(applied: number): void {
    if (this.#readsAwaitingApply.length === 0) return;
    const still: { index: number; waiter: ReadWaiter }[] = [];
    for (const read of this.#readsAwaitingApply) {
      if (read.index <= applied) read.waiter.resolve();
      else still.push(read);
    }
    this.#readsAwaitingApply = still;
  }

  #logRoleChange(): void {
    const { role, term, leaderId } = this.#core;
    if (role === this.#lastRole && term === this.#lastTerm && leaderId === this.#lastLeader) return;
    if (role !== this.#lastRole) {
      this.#log.info(`became ${role}`, { term, from: this.#lastRole });
    } else if (term !== this.#lastTerm) {
      this.#log.info("new term", { term, role });
    }
    if (leaderId !== this.#lastLeader && leaderId !== null && leaderId !== this.#config.id) {
      this.#log.info("following leader", { term, leader: leaderId });
    }
    this.#lastRole = role;
    this.#lastTerm = term;
    this.#lastLeader = leaderId;
  }
}
