/**
 * @module raft/core
 * The Raft consensus algorithm as a pure state machine (Figure 2 of the extended paper, plus
 * pre-vote, check-quorum and ReadIndex from Ongaro's thesis).
 *
 * Events go in — `tick()`, `step(message)`, `propose(data)`, `readIndex(id)`, `campaign()`,
 * `reportUnreachable(peer)` — and effects come out in batches through `ready()` / `advance()`.
 * The core never touches a clock, a disk, a socket or `Math.random`; time is a tick count and
 * randomness is the injected `randomInt`. That is what lets `test/raft/simulation.test.ts` run
 * thousands of seeded, reproducible clusters.
 */
import { RaftLog } from "./log";
import {
  type AppendEntries,
  type AppendEntriesReply,
  type Entry,
  EntryType,
  type HardState,
  type InstallSnapshot,
  type InstallSnapshotReply,
  InvariantError,
  type Message,
  type NodeId,
  type RaftConfig,
  type Ready,
  type ReadState,
  type RecoveredState,
  type RequestVote,
  type RequestVoteReply,
  type Role,
  type SnapshotMeta,
} from "./types";

const DEFAULT_MAX_ENTRIES_PER_APPEND = 4096;
const DEFAULT_MAX_BYTES_PER_APPEND = 2 * 1024 * 1024;
const DEFAULT_MAX_INFLIGHT_APPENDS = 2;

/** What the leader knows of one follower's log (thesis §3.5 / etcd's "progress"). */
interface Progress {
  // Invariant: matchIndex < nextIndex.
  matchIndex: number;
  nextIndex: number;
  /**
   * probe: the follower's position is unknown; one append at a time until one succeeds.
   * replicate: the follower is known to match; appends are pipelined and nextIndex advances
   * optimistically, up to maxInflightAppends unanswered ones.
   * snapshot: the follower needs entries we compacted; a snapshot is on its way, wait for it.
   */
  mode: "probe" | "replicate" | "snapshot";
  probeInFlight: boolean;
  /** Last indexes of the pipelined appends not yet answered, ascending. */
  inflight: number[];
  /** Whether the follower answered since the last check-quorum round. */
  recentlyActive: boolean;
  /** The highest ReadIndex round this follower has acknowledged in the current term. */
  ackedReadRound: number;
  /** The commit index last sent, so a commit advance is propagated without waiting a heartbeat. */
  sentCommit: number;
  /** When the snapshot now awaited was asked for (in ticks), to ask again if it got lost. */
  snapshotAskedAt: number;
}

interface PendingRead {
  readonly requestId: number;
  /** Confirmed once a quorum acknowledges a heartbeat round >= this. */
  readonly round: number;
  readonly index: number;
}

export class RaftCore {
  readonly id: NodeId;
  readonly #config: Required<RaftConfig>;
  readonly #peers: NodeId[];
  readonly #log: RaftLog;

  // Persistent state (Figure 2). #hardStateDirty: changed since the last ready().
  #term: number;
  #votedFor: NodeId | null;
  #hardStateDirty = false;

  // Volatile state.
  #role: Role = "follower";
  #leaderId: NodeId | null = null;
  // Invariant: #appliedIndex <= #handedOutIndex <= #commitIndex <= log.lastIndex.
  #commitIndex: number;
  #appliedIndex: number;
  /** Committed entries up to here were given out in a Ready whose advance() is pending. */
  #handedOutIndex: number;

  // Timers, in ticks.
  #ticks = 0;
  #electionElapsed = 0;
  #randomizedElectionTimeout = 0;
  #heartbeatElapsed = 0;

  // Candidate state: who answered our (pre-)vote, and how.
  #votes = new Map<NodeId, boolean>();

  // Leader state.
  #progress = new Map<NodeId, Progress>();
  #appendsPending = false;
  #readRound = 0;
  /** The highest round a quorum has acknowledged. Invariant: <= #readRound. */
  #confirmedReadRound = 0;
  /** Reads are waiting for round #readRound + 1. */
  #readRoundRequested = false;
  #pendingReads: PendingRead[] = [];
  /** Reads that arrived before this leader committed an entry of its term (thesis §6.4 step 1). */
  #readsAwaitingCommit: number[] = [];

  // Output not yet handed out.
  #snapshotToInstall: { meta: SnapshotMeta; data: Uint8Array } | null = null;
  #compactedTo: SnapshotMeta | null = null;
  #messages: Message[] = [];
  #readStates: ReadState[] = [];

  constructor(config: RaftConfig, recovered: RecoveredState) {
    this.#config = {
      preVote: true,
      checkQuorum: true,
      maxEntriesPerAppend: DEFAULT_MAX_ENTRIES_PER_APPEND,
      maxBytesPerAppend: DEFAULT_MAX_BYTES_PER_APPEND,
      maxInflightAppends: DEFAULT_MAX_INFLIGHT_APPENDS,
      snapshotTimeoutTicks: 20 * config.electionTicks,
      ...config,
    };
    if (config.heartbeatTicks >= config.electionTicks) {
      throw new InvariantError(
        `heartbeatTicks ${config.heartbeatTicks} must be below electionTicks ${config.electionTicks}`,
      );
    }
    this.id = config.id;
    this.#peers = [];
    for (let peer = 0; peer < config.clusterSize; peer++) if (peer !== config.id) this.#peers.push(peer);
    this.#log = new RaftLog(recovered.snapshot ?? { index: 0, term: 0 }, recovered.entries);
    this.#term = recovered.hardState.term;
    this.#votedFor = recovered.hardState.votedFor;
    if (recovered.appliedIndex > this.#log.lastIndex || recovered.appliedIndex < this.#log.snapshot.index) {
      throw new InvariantError(
        `applied index ${recovered.appliedIndex} outside the log ${this.#log.snapshot.index}..${this.#log.lastIndex}`,
      );
    }
    this.#commitIndex = recovered.appliedIndex;
    this.#appliedIndex = recovered.appliedIndex;
    this.#handedOutIndex = recovered.appliedIndex;
    this.#resetElectionTimer();
  }

  // ---------------------------------------------------------------------------------------------
  // Read-only views, for the node layer and for tests.

  get term(): number {
    return this.#term;
  }
  get role(): Role {
    return this.#role;
  }
  get leaderId(): NodeId | null {
    return this.#leaderId;
  }
  get commitIndex(): number {
    return this.#commitIndex;
  }
  get appliedIndex(): number {
    return this.#appliedIndex;
  }
  get lastIndex(): number {
    return this.#log.lastIndex;
  }
  get hardState(): HardState {
    return { term: this.#term, votedFor: this.#votedFor };
  }
  /** Entries [from, to] of the in-memory log (tests and checks); compacted ones are left out. */
  entries(from = 1, to = this.#log.lastIndex): Entry[] {
    return this.#log.slice(Math.max(from, this.#log.firstIndex), to);
  }
  /** The term of the entry at `index` (throws if compacted or beyond the log). */
  termAt(index: number): number {
    return this.#log.termAt(index);
  }
  /** The compacted prefix of the log. */
  get snapshot(): SnapshotMeta {
    return this.#log.snapshot;
  }
  /** Whether the leader has committed an entry of its own term, so reads may be served. */
  get leaderReady(): boolean {
    return this.#role === "leader" && this.#log.termAt(this.#commitIndex) === this.#term;
  }

  // ---------------------------------------------------------------------------------------------
  // Events.

  /** One unit of logical time passed. */
  tick(): void {
    this.#ticks++;
    this.#electionElapsed++;
    if (this.#role === "leader") {
      this.#tickLeader();
    } else if (this.#electionElapsed >= this.#randomizedElectionTimeout) {
      this.campaign();
    }
  }

  /**
   * Starts an election now (used at start-up by `--leader`, and when the election timer fires).
   * With pre-vote on, it first asks whether it could win, without raising anyone's term.
   */
  campaign(): void {
    if (this.#role === "leader") return;
    if (this.#config.preVote) this.#becomePreCandidate();
    else this.#becomeCandidate();
  }

  /**
   * Appends a command to the log if this server leads. Returns where it will be committed, or
   * null when this server is not the leader. The entry is only a proposal: it may still be lost
   * if leadership changes before it commits (the node learns that when another entry is applied
   * at the same index).
   */
  propose(data: Uint8Array): { index: number; term: number } | null {
    if (this.#role !== "leader") return null;
    const entry: Entry = { term: this.#term, index: this.#log.lastIndex + 1, type: EntryType.Normal, data };
    this.#log.append(entry);
    this.#appendsPending = true;
    return { index: entry.index, term: entry.term };
  }

  /**
   * Asks for a linearizable read point (ReadIndex, thesis §6.4). Returns false when this server is
   * not the leader. The answer comes later as a ReadState in a Ready: it carries the commit index
   * recorded when the read arrived, released once a quorum has acknowledged a heartbeat round that
   * started after it; reads arriving together share one round.
   */
  readIndex(requestId: number): boolean {
    if (this.#role !== "leader") return false;
    if (this.leaderReady) this.#registerRead(requestId);
    else this.#readsAwaitingCommit.push(requestId);
    return true;
  }

  /**
   * The state machine holds everything up to `index`: the log may forget it. Compaction stops
   * at what is applied and durable; followers that then need older entries get a snapshot.
   */
  compact(index: number): void {
    const upTo = Math.min(index, this.#appliedIndex, this.#log.persistedIndex);
    if (upTo <= this.#log.snapshot.index) return;
    this.#log.compact(upTo);
    this.#compactedTo = this.#log.snapshot;
  }

  /** The node could not deliver a message to `peer`: stop pipelining to it until it answers. */
  reportUnreachable(peer: NodeId): void {
    const progress = this.#progressIfLeading(peer);
    if (progress === undefined) return;
    // A follower busy installing a snapshot may miss heartbeats: that is no reason to send the
    // whole state again. Only the snapshot's own failure is (reportSnapshotFailed).
    if (progress.mode === "snapshot") return;
    this.#enterProbe(progress, progress.matchIndex + 1, true);
  }

  /** The snapshot for `peer` could not be read, sent or installed: probe again, then resend. */
  reportSnapshotFailed(peer: NodeId): void {
    const progress = this.#progressIfLeading(peer);
    if (progress === undefined || progress.mode !== "snapshot") return;
    this.#enterProbe(progress, progress.matchIndex + 1, true);
  }

  /** Handles a message from a peer (a request or a reply). */
  step(message: Message): void {
    if (message.to !== this.id) throw new InvariantError(`message for ${message.to} given to ${this.id}`);
    if (message.term > this.#term) {
      if (!this.#acceptHigherTerm(message)) return;
    } else if (message.term < this.#term) {
      this.#answerStaleTerm(message);
      return;
    }
    switch (message.type) {
      case "AppendEntries":
        this.#handleAppendEntries(message);
        break;
      case "AppendEntriesReply":
        this.#handleAppendEntriesReply(message);
        break;
      case "RequestVote":
        this.#handleRequestVote(message);
        break;
      case "RequestVoteReply":
        this.#handleRequestVoteReply(message);
        break;
      case "InstallSnapshot":
        this.#handleInstallSnapshot(message);
        break;
      case "InstallSnapshotReply":
        this.#handleInstallSnapshotReply(message);
        break;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Ready / advance.

  hasReady(): boolean {
    return (
      this.#snapshotToInstall !== null ||
      this.#compactedTo !== null ||
      this.#hardStateDirty ||
      this.#messages.length > 0 ||
      this.#readStates.length > 0 ||
      this.#log.persistedIndex < this.#log.lastIndex ||
      this.#commitIndex > this.#handedOutIndex ||
      (this.#role === "leader" && (this.#appendsPending || this.#canStartReadRound()))
    );
  }

  /** Collects the effects accumulated since the last call. See `Ready` for how to handle them. */
  ready(): Ready {
    if (this.#role === "leader") {
      if (this.#canStartReadRound()) {
        // Every read registered so far waits for this round; it starts now, after they arrived.
        this.#readRound++;
        this.#readRoundRequested = false;
        this.#broadcastHeartbeat();
      }
      if (this.#appendsPending) {
        this.#appendsPending = false;
        for (const peer of this.#peers) this.#sendAppends(peer);
      }
    }
    const ready: Ready = {
      snapshot: this.#snapshotToInstall,
      compactedTo: this.#compactedTo,
      hardState: this.#hardStateDirty ? this.hardState : null,
      entries: this.#log.unpersisted(),
      lastIndex: this.#log.lastIndex,
      messages: this.#messages,
      committed: this.#log.slice(this.#handedOutIndex + 1, this.#commitIndex),
      readStates: this.#readStates,
    };
    this.#snapshotToInstall = null;
    this.#compactedTo = null;
    this.#hardStateDirty = false;
    this.#messages = [];
    this.#readStates = [];
    this.#handedOutIndex = this.#commitIndex;
    return ready;
  }

  /** The node has persisted, sent and applied everything in `ready`. */
  advance(ready: Ready): void {
    this.#log.markPersisted(ready.lastIndex);
    const lastApplied = ready.committed.at(-1);
    if (lastApplied !== undefined) this.#appliedIndex = lastApplied.index;
    // The leader's own entries count toward a majority only once they are durable (§5.4.2 and
    // issue #3): that is now.
    if (this.#role === "leader") this.#maybeCommit();
  }

  // ---------------------------------------------------------------------------------------------
  // Role changes.

  #becomeFollower(term: number, leaderId: NodeId | null): void {
    if (term > this.#term) {
      this.#term = term;
      this.#votedFor = null;
      this.#hardStateDirty = true;
    }
    if (this.#role === "leader") this.#failPendingReads();
    this.#role = "follower";
    this.#leaderId = leaderId;
    this.#resetElectionTimer();
  }

  #becomePreCandidate(): void {
    if (this.#role === "leader") this.#failPendingReads();
    this.#role = "precandidate";
    this.#leaderId = null;
    this.#resetElectionTimer();
    this.#startVote(true);
  }

  #becomeCandidate(): void {
    if (this.#role === "leader") this.#failPendingReads();
    this.#role = "candidate";
    this.#leaderId = null;
    this.#term++;
    this.#votedFor = this.id;
    this.#hardStateDirty = true;
    this.#resetElectionTimer();
    this.#startVote(false);
  }

  #becomeLeader(): void {
    this.#role = "leader";
    this.#leaderId = this.id;
    this.#heartbeatElapsed = 0;
    this.#electionElapsed = 0;
    this.#readRound = 0;
    this.#confirmedReadRound = 0;
    this.#readRoundRequested = false;
    this.#progress.clear();
    for (const peer of this.#peers) {
      this.#progress.set(peer, {
        matchIndex: 0,
        nextIndex: this.#log.lastIndex + 1,
        mode: "probe",
        probeInFlight: false,
        inflight: [],
        recentlyActive: true,
        ackedReadRound: 0,
        sentCommit: 0,
        snapshotAskedAt: 0,
      });
    }
    // A no-op of the new term lets entries of earlier terms commit promptly (§8), and marks the
    // point from which this leader may serve reads.
    this.#log.append({ term: this.#term, index: this.#log.lastIndex + 1, type: EntryType.Noop, data: new Uint8Array() });
    this.#appendsPending = true;
    this.#maybeCommit(); // a one-server cluster commits on its own once persisted
  }

  #startVote(preVote: boolean): void {
    this.#votes = new Map([[this.id, true]]);
    if (this.#hasQuorum(1)) {
      // A one-server cluster wins at once.
      if (preVote) this.#becomeCandidate();
      else this.#becomeLeader();
      return;
    }
    for (const peer of this.#peers) {
      this.#send({
        type: "RequestVote",
        from: this.id,
        to: peer,
        // A pre-vote asks about the term we would campaign in, without moving to it.
        term: preVote ? this.#term + 1 : this.#term,
        lastLogIndex: this.#log.lastIndex,
        lastLogTerm: this.#log.lastTerm,
        preVote,
      });
    }
  }

  #resetElectionTimer(): void {
    this.#electionElapsed = 0;
    this.#heartbeatElapsed = 0;
    const base = this.#config.electionTicks;
    this.#randomizedElectionTimeout = base + this.#config.randomInt(base);
  }

  #tickLeader(): void {
    if (this.#electionElapsed >= this.#config.electionTicks) {
      this.#electionElapsed = 0;
      if (this.#config.checkQuorum && !this.#quorumRecentlyActive()) {
        // Check-quorum (thesis §6.2): a leader cut off from a majority steps down, so clients go
        // looking for the real one instead of waiting on us.
        this.#becomeFollower(this.#term, null);
        return;
      }
    }
    this.#heartbeatElapsed++;
    if (this.#heartbeatElapsed >= this.#config.heartbeatTicks) {
      this.#heartbeatElapsed = 0;
      this.#broadcastHeartbeat();
    }
    for (const progress of this.#progress.values()) {
      // A snapshot unanswered for too long was lost (the node reports failed sends, but a
      // reply can vanish too): send it again.
      if (progress.mode === "snapshot" && this.#ticks - progress.snapshotAskedAt > this.#config.snapshotTimeoutTicks) {
        this.#enterProbe(progress, progress.matchIndex + 1, false);
      }
    }
  }

  #quorumRecentlyActive(): boolean {
    let active = 1; // ourselves
    for (const progress of this.#progress.values()) {
      if (progress.recentlyActive) active++;
      progress.recentlyActive = false;
    }
    return this.#hasQuorum(active);
  }

  // ---------------------------------------------------------------------------------------------
  // Terms.

  /** A message carries a newer term. Returns whether to go on handling it. */
  #acceptHigherTerm(message: Message): boolean {
    if (message.type === "RequestVote") {
      // Thesis §4.2.3: while we hear from a live leader, a server that wants an election (it
      // was partitioned, or is being removed) must not depose it. Drop the request silently.
      if (this.#inLease()) return false;
      // A pre-vote changes nobody's term.
      if (message.preVote) return true;
      this.#becomeFollower(message.term, null);
      return true;
    }
    if (message.type === "RequestVoteReply" && message.preVote && message.voteGranted) {
      // A granted pre-vote carries the term we asked about; it is not a newer term we missed.
      return true;
    }
    const fromLeader = message.type === "AppendEntries" || message.type === "InstallSnapshot";
    this.#becomeFollower(message.term, fromLeader ? message.from : null);
    return true;
  }

  #inLease(): boolean {
    return (
      this.#config.checkQuorum &&
      this.#leaderId !== null &&
      this.#electionElapsed < this.#config.electionTicks
    );
  }

  /** A message from an older term: tell its sender our term, so it catches up or steps down. */
  #answerStaleTerm(message: Message): void {
    if (message.type === "AppendEntries") {
      this.#send(this.#appendReply(message, false, 0, 0, 0));
    } else if (message.type === "InstallSnapshot") {
      this.#send({ type: "InstallSnapshotReply", from: this.id, to: message.from, term: this.#term, matchIndex: 0, rpcId: message.rpcId });
    } else if (message.type === "RequestVote") {
      this.#send({
        type: "RequestVoteReply",
        from: this.id,
        to: message.from,
        term: this.#term,
        voteGranted: false,
        preVote: message.preVote,
        rpcId: message.rpcId,
      });
    }
    // Replies from older terms answer questions we no longer ask: ignore them.
  }

  // ---------------------------------------------------------------------------------------------
  // Elections (§5.2, §5.4.1).

  #handleRequestVote(message: RequestVote): void {
    // We may vote for the sender if we already did in this term, or have voted for nobody and
    // know no leader; a pre-vote for a later term commits us to nothing.
    const canVote =
      this.#votedFor === message.from ||
      (this.#votedFor === null && this.#leaderId === null) ||
      (message.preVote && message.term > this.#term);
    const upToDate =
      message.lastLogTerm > this.#log.lastTerm ||
      (message.lastLogTerm === this.#log.lastTerm && message.lastLogIndex >= this.#log.lastIndex);
    const grant = canVote && upToDate;
    if (grant && !message.preVote) {
      if (this.#votedFor !== message.from) {
        this.#votedFor = message.from;
        this.#hardStateDirty = true;
      }
      // Granting a vote resets our timer, so we do not start a rival election at once.
      this.#resetElectionTimer();
    }
    this.#send({
      type: "RequestVoteReply",
      from: this.id,
      to: message.from,
      // A granted pre-vote answers in the asked term; a refusal tells the asker our own.
      term: grant && message.preVote ? message.term : this.#term,
      voteGranted: grant,
      preVote: message.preVote,
      rpcId: message.rpcId,
    });
  }

  #handleRequestVoteReply(message: RequestVoteReply): void {
    const expecting = message.preVote ? "precandidate" : "candidate";
    if (this.#role !== expecting) return; // a late answer to an earlier round
    this.#votes.set(message.from, message.voteGranted);
    let granted = 0;
    for (const vote of this.#votes.values()) if (vote) granted++;
    const refused = this.#votes.size - granted;
    if (this.#hasQuorum(granted)) {
      if (message.preVote) this.#becomeCandidate();
      else this.#becomeLeader();
    } else if (this.#hasQuorum(refused)) {
      this.#becomeFollower(this.#term, null);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Log replication, follower side (§5.3).

  /** `from` leads our current term: follow it and restart the election timer. */
  #followLeaderOfThisTerm(from: NodeId): void {
    if (this.#role === "leader") {
      throw new InvariantError(`two leaders in term ${this.#term}: ${this.id} and ${from}`);
    }
    if (this.#role !== "follower") this.#becomeFollower(this.#term, from);
    this.#leaderId = from;
    this.#electionElapsed = 0;
  }

  #handleAppendEntries(message: AppendEntries): void {
    this.#followLeaderOfThisTerm(message.from);

    // Entries up to our snapshot are committed, hence the same as the leader's: skip them.
    const snapshotIndex = this.#log.snapshot.index;
    const entries = message.prevLogIndex < snapshotIndex ? message.entries.filter((e) => e.index > snapshotIndex) : message.entries;
    const prevLogIndex = Math.max(message.prevLogIndex, snapshotIndex);
    const prevLogTerm = message.prevLogIndex < snapshotIndex ? this.#log.snapshot.term : message.prevLogTerm;
    if (prevLogIndex > this.#log.lastIndex) {
      // Our log is too short: tell the leader where it ends.
      this.#send(this.#appendReply(message, false, 0, 0, this.#log.lastIndex + 1));
      return;
    }
    const ourTerm = this.#log.termAt(prevLogIndex);
    if (ourTerm !== prevLogTerm) {
      // Conflict: name the term we hold there and where it starts, so the leader skips the whole
      // term in one round trip.
      this.#send(this.#appendReply(message, false, 0, ourTerm, this.#log.firstIndexOfTermAt(prevLogIndex)));
      return;
    }
    for (const entry of entries) {
      if (entry.index <= this.#log.lastIndex) {
        if (this.#log.termAt(entry.index) === entry.term) continue; // already have it
        if (entry.index <= this.#commitIndex) {
          throw new InvariantError(
            `leader ${message.from} term ${message.term} overwrites committed index ${entry.index}`,
          );
        }
        this.#log.truncateFrom(entry.index);
      }
      this.#log.append(entry);
    }
    // Only what this request proved to match may be acknowledged or committed: anything beyond
    // it in our log may still be a stale suffix.
    const matchIndex = message.prevLogIndex + message.entries.length;
    const newCommit = Math.min(message.leaderCommit, matchIndex);
    if (newCommit > this.#commitIndex) this.#commitIndex = newCommit;
    this.#send(this.#appendReply(message, true, matchIndex, 0, 0));
  }

  #appendReply(
    request: AppendEntries,
    success: boolean,
    matchIndex: number,
    conflictTerm: number,
    conflictIndex: number,
  ): AppendEntriesReply {
    return {
      type: "AppendEntriesReply",
      from: this.id,
      to: request.from,
      term: this.#term,
      success,
      matchIndex,
      conflictTerm,
      conflictIndex,
      readRound: request.readRound,
      rpcId: request.rpcId,
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Log replication, leader side.

  #handleAppendEntriesReply(message: AppendEntriesReply): void {
    const progress = this.#progressIfLeading(message.from);
    if (progress === undefined) return;
    progress.recentlyActive = true;
    if (message.readRound > progress.ackedReadRound) {
      progress.ackedReadRound = message.readRound;
      this.#releaseConfirmedReads();
    }
    if (message.success) {
      if (message.matchIndex > progress.matchIndex) {
        progress.matchIndex = message.matchIndex;
        progress.nextIndex = Math.max(progress.nextIndex, message.matchIndex + 1);
        progress.inflight = progress.inflight.filter((last) => last > message.matchIndex);
        this.#maybeCommit();
      } else if (progress.mode === "replicate" && progress.inflight.length >= this.#config.maxInflightAppends) {
        // A heartbeat came back while every pipelined append is unanswered: they were probably
        // lost. Resend from the known match rather than wait forever.
        // TODO(#3): under load the appends may only be slow (the heartbeat overtook them), and
        // this resends them needlessly; tag heartbeats so that only a newer one triggers it.
        this.#enterProbe(progress, progress.matchIndex + 1, false);
        return;
      }
      if (progress.mode === "probe" && message.matchIndex >= progress.nextIndex - 1) {
        // The follower holds everything before nextIndex: start pipelining.
        progress.mode = "replicate";
        progress.inflight = [];
        progress.nextIndex = Math.max(progress.nextIndex, progress.matchIndex + 1);
      }
      progress.probeInFlight = false;
      this.#appendsPending = true;
      return;
    }
    // Rejected: back up nextIndex past the conflict (§5.3, with the term-skipping optimisation).
    let nextIndex = message.conflictIndex;
    if (message.conflictTerm > 0) {
      const ours = this.#log.lastIndexOfTerm(message.conflictTerm);
      if (ours > 0) nextIndex = ours + 1;
    }
    this.#enterProbe(progress, nextIndex, false);
  }

  /**
   * Stops pipelining to a follower whose position is uncertain. `paused`: wait for a heartbeat
   * reply before probing (the peer is unreachable, so retrying at once would only spin).
   */
  // ---------------------------------------------------------------------------------------------
  // Snapshots (Figure 13).

  #handleInstallSnapshot(message: InstallSnapshot): void {
    this.#followLeaderOfThisTerm(message.from);
    const { snapshot, data } = message;
    if (snapshot === null || data === null) throw new InvariantError("InstallSnapshot without its snapshot");
    if (snapshot.index > this.#commitIndex) {
      // Everything up to the snapshot is committed; our state machine jumps there.
      this.#log.restore(snapshot);
      this.#commitIndex = snapshot.index;
      this.#appliedIndex = snapshot.index;
      this.#handedOutIndex = snapshot.index;
      this.#snapshotToInstall = { meta: snapshot, data };
      this.#compactedTo = null;
    }
    // Either way we now hold, matching the leader, everything up to the larger of the two.
    this.#send({
      type: "InstallSnapshotReply",
      from: this.id,
      to: message.from,
      term: this.#term,
      matchIndex: Math.max(snapshot.index, this.#commitIndex),
      rpcId: message.rpcId,
    });
  }

  #handleInstallSnapshotReply(message: InstallSnapshotReply): void {
    const progress = this.#progressIfLeading(message.from);
    if (progress === undefined) return;
    progress.recentlyActive = true;
    if (message.matchIndex > progress.matchIndex) {
      progress.matchIndex = message.matchIndex;
      progress.nextIndex = Math.max(progress.nextIndex, message.matchIndex + 1);
      this.#maybeCommit();
    }
    if (progress.mode === "snapshot") this.#enterProbe(progress, progress.matchIndex + 1, false);
  }

  #enterProbe(progress: Progress, nextIndex: number, paused: boolean): void {
    progress.mode = "probe";
    progress.inflight = [];
    progress.probeInFlight = paused;
    progress.nextIndex = Math.max(progress.matchIndex + 1, Math.min(nextIndex, this.#log.lastIndex + 1));
    this.#appendsPending = true;
  }

  /** Sends `peer` whatever it lacks, within the batch and pipelining limits. */
  #sendAppends(peer: NodeId): void {
    const progress = this.#progress.get(peer)!;
    const { maxEntriesPerAppend, maxBytesPerAppend, maxInflightAppends } = this.#config;
    for (;;) {
      if (progress.mode === "snapshot") return; // wait for the snapshot's answer
      if (progress.nextIndex <= this.#log.snapshot.index) {
        // The follower needs entries we no longer hold: send the state machine instead.
        if (progress.mode === "probe" && progress.probeInFlight) return;
        progress.mode = "snapshot";
        progress.inflight = [];
        progress.snapshotAskedAt = this.#ticks;
        this.#send({ type: "InstallSnapshot", from: this.id, to: peer, term: this.#term, snapshot: null, data: null });
        return;
      }
      if (progress.mode === "probe" && progress.probeInFlight) return;
      if (progress.mode === "replicate" && progress.inflight.length >= maxInflightAppends) return;
      const entries = this.#log.batchFrom(progress.nextIndex, maxEntriesPerAppend, maxBytesPerAppend);
      const commitNews =
        progress.inflight.length === 0 && progress.sentCommit < Math.min(this.#commitIndex, progress.nextIndex - 1);
      if (entries.length === 0 && !commitNews) {
        // Nothing to carry. In probe mode, an empty probe still finds out where the follower is,
        // unless we already know it matches up to nextIndex - 1.
        if (progress.mode === "replicate" || progress.matchIndex === progress.nextIndex - 1) return;
      }
      const prevLogIndex = progress.nextIndex - 1;
      this.#sendAppend(peer, progress, prevLogIndex, entries);
      if (progress.mode === "probe") {
        progress.probeInFlight = true;
        return;
      }
      if (entries.length === 0) return;
      const last = entries[entries.length - 1]!.index;
      progress.nextIndex = last + 1;
      progress.inflight.push(last);
    }
  }

  #sendAppend(peer: NodeId, progress: Progress, prevLogIndex: number, entries: Entry[]): void {
    const leaderCommit = Math.min(this.#commitIndex, prevLogIndex + entries.length);
    progress.sentCommit = Math.max(progress.sentCommit, leaderCommit);
    this.#send({
      type: "AppendEntries",
      from: this.id,
      to: peer,
      term: this.#term,
      prevLogIndex,
      prevLogTerm: this.#log.termAt(prevLogIndex),
      entries,
      leaderCommit,
      readRound: this.#readRound,
    });
  }

  /**
   * A heartbeat is an empty AppendEntries anchored at the follower's known match, so its
   * consistency check passes without disturbing pipelined appends; it carries the commit index up
   * to that match and the current ReadIndex round.
   */
  #broadcastHeartbeat(): void {
    for (const peer of this.#peers) {
      const progress = this.#progress.get(peer)!;
      // Anchor at the known match; below our snapshot we cannot name its term, so anchor at 0
      // (always consistent, and it carries no commit index).
      const anchor = progress.matchIndex >= this.#log.snapshot.index ? progress.matchIndex : 0;
      this.#sendAppend(peer, progress, anchor, []);
    }
  }

  /** Commit rule (§5.3, §5.4.2): a majority stores it, and it is of the current term. */
  #maybeCommit(): void {
    const matches = [this.#log.persistedIndex];
    for (const progress of this.#progress.values()) matches.push(progress.matchIndex);
    matches.sort((a, b) => b - a);
    const quorumIndex = matches[this.#quorumSize() - 1]!;
    if (quorumIndex <= this.#commitIndex) return;
    if (this.#log.termAt(quorumIndex) !== this.#term) return;
    const wasReady = this.leaderReady;
    this.#commitIndex = quorumIndex;
    this.#appendsPending = true; // followers learn the new commit index
    if (!wasReady) {
      for (const requestId of this.#readsAwaitingCommit) this.#registerRead(requestId);
      this.#readsAwaitingCommit = [];
    }
  }

  // ---------------------------------------------------------------------------------------------
  // ReadIndex (thesis §6.4).

  #registerRead(requestId: number): void {
    this.#pendingReads.push({ requestId, round: this.#readRound + 1, index: this.#commitIndex });
    this.#readRoundRequested = true;
    if (this.#peers.length === 0) this.#releaseConfirmedReads();
  }

  /**
   * One round at a time: reads that arrive while a round is unconfirmed wait for the next one,
   * which starts as soon as the current one is confirmed. Under load, that makes one round of
   * heartbeats serve every read that arrived during the previous round trip. (A lost round is
   * not stuck: every periodic heartbeat carries the current round too.)
   */
  #canStartReadRound(): boolean {
    return this.#readRoundRequested && this.#confirmedReadRound >= this.#readRound;
  }

  #releaseConfirmedReads(): void {
    // The highest round that a quorum (counting ourselves, at the current round) acknowledged.
    const rounds = [this.#readRound + (this.#peers.length === 0 ? 1 : 0)];
    for (const progress of this.#progress.values()) rounds.push(progress.ackedReadRound);
    rounds.sort((a, b) => b - a);
    const confirmed = rounds[this.#quorumSize() - 1]!;
    this.#confirmedReadRound = Math.max(this.#confirmedReadRound, Math.min(confirmed, this.#readRound));
    let released = 0;
    while (released < this.#pendingReads.length && this.#pendingReads[released]!.round <= confirmed) {
      const read = this.#pendingReads[released]!;
      this.#readStates.push({ requestId: read.requestId, index: read.index });
      released++;
    }
    if (released > 0) this.#pendingReads.splice(0, released);
  }

  #failPendingReads(): void {
    for (const read of this.#pendingReads) this.#readStates.push({ requestId: read.requestId, index: null });
    for (const requestId of this.#readsAwaitingCommit) this.#readStates.push({ requestId, index: null });
    this.#pendingReads = [];
    this.#readsAwaitingCommit = [];
    this.#readRoundRequested = false;
  }

  // ---------------------------------------------------------------------------------------------
  // Helpers.

  /** What we know of `peer`'s log, if we lead; reports about an earlier leadership are moot. */
  #progressIfLeading(peer: NodeId): Progress | undefined {
    return this.#role === "leader" ? this.#progress.get(peer) : undefined;
  }

  #send(message: Message): void {
    this.#messages.push(message);
  }

  #quorumSize(): number {
    return Math.floor(this.#config.clusterSize / 2) + 1;
  }

  #hasQuorum(count: number): boolean {
    return count >= this.#quorumSize();
  }
}
