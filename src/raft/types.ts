/**
 * @module raft/types
 * The vocabulary of the Raft core: log entries, messages, and the Ready batch of effects that the
 * core hands to the node layer. Nothing here does I/O.
 */

/** Servers are numbered 0..n-1, in the order of the `-r` list. */
export type NodeId = number;

export const enum EntryType {
  /** A state-machine command, opaque to the core. */
  Normal = 0,
  /** Appended by every new leader at the start of its term, so earlier entries commit (§8). */
  Noop = 1,
}

/** One log entry. Indexes start at 1; index 0 is the empty prefix, whose term is 0. */
export interface Entry {
  readonly term: number;
  readonly index: number;
  readonly type: EntryType;
  readonly data: Uint8Array;
}

/** The last entry a snapshot of the state machine covers. */
export interface SnapshotMeta {
  readonly index: number;
  readonly term: number;
}

/** What must survive a crash before the server answers anything that depends on it (Figure 2). */
export interface HardState {
  readonly term: number;
  /** The candidate voted for in `term`, or null. */
  readonly votedFor: NodeId | null;
}

export type Role = "follower" | "precandidate" | "candidate" | "leader";

/**
 * `rpcId` is opaque to the core: the node puts it on an incoming request and the core copies it
 * onto the reply, so the node can answer the right gRPC call.
 */
interface Envelope {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
  readonly rpcId?: number;
}

export interface AppendEntries extends Envelope {
  readonly type: "AppendEntries";
  readonly prevLogIndex: number;
  readonly prevLogTerm: number;
  readonly entries: readonly Entry[];
  readonly leaderCommit: number;
  /** ReadIndex: the leader's heartbeat round when this was sent (echoed in the reply). */
  readonly readRound: number;
}

export interface AppendEntriesReply extends Envelope {
  readonly type: "AppendEntriesReply";
  readonly success: boolean;
  /** On success: the last index now known to match the leader's log. */
  readonly matchIndex: number;
  /** On failure: see `raft.proto` (fast back-up, one round trip per term). */
  readonly conflictTerm: number;
  readonly conflictIndex: number;
  readonly readRound: number;
}

export interface RequestVote extends Envelope {
  readonly type: "RequestVote";
  readonly lastLogIndex: number;
  readonly lastLogTerm: number;
  /** Pre-vote (thesis §9.6): nobody changes term or vote because of it. */
  readonly preVote: boolean;
}

export interface RequestVoteReply extends Envelope {
  readonly type: "RequestVoteReply";
  readonly voteGranted: boolean;
  readonly preVote: boolean;
}

/**
 * The leader sends its state machine to a follower that needs entries it has compacted
 * (Figure 13, in one piece). The core emits it with `snapshot` and `data` null: the node fills
 * them from its state machine at send time, since only it can read the state.
 */
export interface InstallSnapshot extends Envelope {
  readonly type: "InstallSnapshot";
  readonly snapshot: SnapshotMeta | null;
  readonly data: Uint8Array | null;
}

export interface InstallSnapshotReply extends Envelope {
  readonly type: "InstallSnapshotReply";
  /** The last index the follower now holds that matches the leader. */
  readonly matchIndex: number;
}

export type Message =
  | AppendEntries
  | AppendEntriesReply
  | RequestVote
  | RequestVoteReply
  | InstallSnapshot
  | InstallSnapshotReply;

/**
 * The answer to a ReadIndex request: once the state machine has applied `index`, a read of it is
 * linearizable. `index` is null when the read failed because this server lost leadership.
 */
export interface ReadState {
  readonly requestId: number;
  readonly index: number | null;
}

/**
 * A batch of effects. The node must handle them in this order (and the core assumes it did when
 * `advance` is called):
 *   0. if `snapshot` is set, replace the state machine with it and drop every stored entry up to
 *      its index (and all of them when `entries` starts after it), durably;
 *   1. persist `hardState` (if set) and `entries`, drop any stored entry after `lastIndex`, and
 *      drop stored entries up to `compactedTo` (if set), in one synced write;
 *   2. only then send `messages` (a vote or an AppendEntries success promises durability);
 *   3. apply `committed` to the state machine, in order;
 *   4. serve `readStates` once the applied index reaches theirs;
 *   5. call `advance(ready)`.
 * No other event may be given to the core between `ready()` and `advance()`.
 */
export interface Ready {
  /** A snapshot from the leader to install before anything else. */
  readonly snapshot: { readonly meta: SnapshotMeta; readonly data: Uint8Array } | null;
  /** The log was compacted up to here since the last Ready: stored entries up to it may go. */
  readonly compactedTo: SnapshotMeta | null;
  readonly hardState: HardState | null;
  /** Contiguous entries to persist; may overwrite stored entries at the same indexes. */
  readonly entries: readonly Entry[];
  /** The log's last index: stored entries after it must be deleted (a conflict truncated them). */
  readonly lastIndex: number;
  readonly messages: readonly Message[];
  readonly committed: readonly Entry[];
  readonly readStates: readonly ReadState[];
}

export interface RaftConfig {
  readonly id: NodeId;
  /** Number of servers; ids are 0..clusterSize-1. */
  readonly clusterSize: number;
  /** Base election timeout in ticks; each wait is drawn from [electionTicks, 2*electionTicks). */
  readonly electionTicks: number;
  /** A leader sends heartbeats every this many ticks; must be well below electionTicks. */
  readonly heartbeatTicks: number;
  /** Returns an integer in [0, n). Injected so simulations can seed it. */
  readonly randomInt: (n: number) => number;
  /** Pre-vote and check-quorum (thesis §9.6, §6.2); on by default. */
  readonly preVote?: boolean;
  readonly checkQuorum?: boolean;
  /** Bounds of one AppendEntries (at least one entry is always sent). */
  readonly maxEntriesPerAppend?: number;
  readonly maxBytesPerAppend?: number;
  /** Appends in flight per follower once it is known to match. */
  readonly maxInflightAppends?: number;
  /**
   * A snapshot sent but unanswered for this many ticks is taken as lost and sent again. The
   * node reports failed sends itself; this only covers a reply that vanished without an error.
   */
  readonly snapshotTimeoutTicks?: number;
}

/** What a restarted server recovered from disk. */
export interface RecoveredState {
  readonly hardState: HardState;
  /** The log's compacted prefix; `entries` start right after it. */
  readonly snapshot?: SnapshotMeta;
  readonly entries: readonly Entry[];
  /** The state machine's applied index: everything up to it is known committed. */
  readonly appliedIndex: number;
}

/** A broken invariant: storage is corrupt or the code is wrong. Never caught to carry on. */
export class InvariantError extends Error {
  override name = "InvariantError";
}
