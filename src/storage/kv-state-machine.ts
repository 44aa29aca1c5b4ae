/**
 * @module storage/kv-state-machine
 * The replicated key-value map, applied from committed Raft entries into RocksDB.
 *
 * Keys, all under `v:` so that one iterator reads a consistent snapshot of the whole state:
 * `v:d` + user key holds the value; `v:a` the applied index and its term; `v:s` + client id that
 * client's session (last sequence applied and the log index of its last request), for
 * exactly-once writes. Each apply is one atomic batch with the data, the sessions and the
 * applied index, so a crash never leaves an entry half-applied or applied twice.
 *
 * Applying must be deterministic: every server applies the same entries and must reach the same
 * state, so nothing here reads a clock or anything local.
 */
import { type Entry, EntryType, type SnapshotMeta } from "../raft/types";
import { codecs } from "../wire/proto";
import type { BatchOp, Rocks } from "./rocks";

const STATE_PREFIX = "v:";
const STATE_END = "v;"; // the first key after every "v:..." key
const APPLIED_KEY = "v:a";
const DATA_PREFIX = "v:d";
const SESSION_PREFIX = "v:s";
const SESSION_END = "v:t";

/**
 * A client session is forgotten once this many log entries pass without a request from it:
 * deterministic, because every server applies the same log. A client retrying a write after
 * that long is not protected against a double apply.
 */
export const SESSION_EXPIRY_ENTRIES = 100_000;
/** At most this many sessions are kept; the least recently used go first. */
export const MAX_SESSIONS = 10_000;

/**
 * One client's exactly-once state (thesis §6.3). A client may have several writes in flight, so
 * their sequences can reach the log in any order: we remember which sequences were applied at
 * or above `lowestUnanswered`; everything below it the client has given up or been answered
 * on, and will not send again.
 */
interface Session {
  lowestUnanswered: number;
  /** Applied sequences >= lowestUnanswered, ascending. */
  applied: number[];
  /** Log index of the client's last request, for expiry. */
  lastIndex: number;
}

/** A client that never reports answers could grow its session without end: cap it. */
const MAX_APPLIED_PER_SESSION = 1000;

/** The outcome of one applied entry, for the client waiting on it. */
export type ApplyResult = { ok: true; duplicate: boolean };

export class KvStateMachine {
  readonly #db: Rocks;
  #applied: SnapshotMeta = { index: 0, term: 0 };
  readonly #sessions = new Map<string, Session>();

  constructor(db: Rocks) {
    this.#db = db;
  }

  get appliedIndex(): number {
    return this.#applied.index;
  }

  /** Reads the applied index and the sessions (at start, and after installing a snapshot). */
  async load(): Promise<void> {
    const raw = await this.#db.get(APPLIED_KEY);
    this.#applied = raw ? JSON.parse(raw.toString("utf8")) : { index: 0, term: 0 };
    const loaded: [string, Session][] = [];
    this.#sessions.clear();
    await this.#db.scan(SESSION_PREFIX, SESSION_END, (key, value) => {
      loaded.push([key.slice(SESSION_PREFIX.length), JSON.parse(value.toString("utf8"))]);
    });
    // Recency order must be the same on every server, restarted or not: rebuild it from the log
    // index of each session's last request (unique per session).
    loaded.sort((a, b) => a[1].lastIndex - b[1].lastIndex);
    for (const [clientId, session] of loaded) this.#sessions.set(clientId, session);
  }

  /** The locally applied value of `key` (no consensus involved). */
  async get(key: string): Promise<string | undefined> {
    const value = await this.#db.get(DATA_PREFIX + key);
    return value?.toString("utf8");
  }

  /**
   * Applies committed entries, in order, in one batch. Not synced: the log is durable, so a
   * batch lost in a power cut is simply applied again from it on restart.
   */
  async apply(entries: readonly Entry[]): Promise<ApplyResult[]> {
    const ops: BatchOp[] = [];
    const results: ApplyResult[] = [];
    /** Sessions created, changed or expired in this batch: written (or deleted) at the end. */
    const touched = new Set<string>();
    for (const entry of entries) {
      if (entry.index !== this.#applied.index + 1) {
        throw new Error(`apply of index ${entry.index} after applied index ${this.#applied.index}`);
      }
      this.#applied = { index: entry.index, term: entry.term };
      results.push(this.#applyEntry(entry, ops, touched));
      // Expiry is decided entry by entry, so every server reaches the same sessions whatever
      // batches it happened to apply in.
      for (const clientId of this.#expireSessions()) touched.add(clientId);
    }
    for (const clientId of touched) {
      const session = this.#sessions.get(clientId);
      if (session) ops.push({ type: "put", key: SESSION_PREFIX + clientId, value: JSON.stringify(session) });
      else ops.push({ type: "del", key: SESSION_PREFIX + clientId });
    }
    ops.push({ type: "put", key: APPLIED_KEY, value: JSON.stringify(this.#applied) });
    await this.#db.batch(ops, false);
    return results;
  }

  #applyEntry(entry: Entry, ops: BatchOp[], touched: Set<string>): ApplyResult {
    if (entry.type !== EntryType.Normal) return { ok: true, duplicate: false };
    const command = codecs.command.decode(entry.data);
    if (command.clientId !== "") {
      const { clientId, sequence, ackedBelow } = command;
      const session = this.#sessions.get(clientId) ?? { lowestUnanswered: 0, applied: [], lastIndex: 0 };
      // Re-insert: Map order is recency order, which expiry relies on.
      this.#sessions.delete(clientId);
      this.#sessions.set(clientId, session);
      touched.add(clientId);
      session.lastIndex = entry.index;
      const duplicate = sequence < session.lowestUnanswered || session.applied.includes(sequence);
      if (!duplicate) session.applied.push(sequence);
      session.lowestUnanswered = Math.max(session.lowestUnanswered, ackedBelow);
      session.applied = session.applied.filter((seq) => seq >= session.lowestUnanswered).sort((a, b) => a - b);
      if (session.applied.length > MAX_APPLIED_PER_SESSION) {
        const dropped = session.applied.splice(0, session.applied.length - MAX_APPLIED_PER_SESSION);
        session.lowestUnanswered = dropped.at(-1)! + 1;
      }
      // A retry of a write already applied: answer as before, change nothing.
      if (duplicate) return { ok: true, duplicate: true };
    }
    ops.push({ type: "put", key: DATA_PREFIX + command.key, value: command.value });
    return { ok: true, duplicate: false };
  }

  /** Drops sessions idle for too long or beyond the cap; returns their ids. */
  #expireSessions(): string[] {
    const expired: string[] = [];
    // Map iteration is in recency order (oldest first), so we can stop at the first live one.
    for (const [clientId, session] of this.#sessions) {
      const idleTooLong = this.#applied.index - session.lastIndex > SESSION_EXPIRY_ENTRIES;
      const overCap = this.#sessions.size - expired.length > MAX_SESSIONS;
      if (!idleTooLong && !overCap) break;
      expired.push(clientId);
    }
    for (const clientId of expired) this.#sessions.delete(clientId);
    return expired;
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots: the whole state, for a follower that needs entries the leader compacted.

  /**
   * A consistent copy of the whole state machine (one RocksDB iterator sees one point in time),
   * and the index and term it reflects.
   */
  async snapshot(): Promise<{ meta: SnapshotMeta; data: Uint8Array }> {
    const records: { key: string; value: Uint8Array }[] = [];
    let meta: SnapshotMeta = { index: 0, term: 0 };
    await this.#db.scan(STATE_PREFIX, STATE_END, (key, value) => {
      if (key === APPLIED_KEY) meta = JSON.parse(value.toString("utf8"));
      records.push({ key, value });
    });
    // TODO(#3): the snapshot travels as one message (64 MiB at most) and is held in memory on
    // both sides; stream it in chunks (Figure 13's offset/done) for larger stores.
    return { meta, data: codecs.stateMachineSnapshot.encode({ records }) };
  }

  /**
   * The batch operations that replace the whole state with `data` (to be written atomically
   * with the log's compaction, then `load()`), and the index and term it reflects.
   */
  async restoreOps(data: Uint8Array): Promise<{ meta: SnapshotMeta; ops: BatchOp[] }> {
    const { records } = codecs.stateMachineSnapshot.decode(data);
    const ops: BatchOp[] = [];
    const incoming = new Set(records.map((record) => record.key));
    await this.#db.scan(STATE_PREFIX, STATE_END, (key) => {
      if (!incoming.has(key)) ops.push({ type: "del", key });
    });
    let meta: SnapshotMeta = { index: 0, term: 0 };
    for (const { key, value } of records) {
      if (!key.startsWith(STATE_PREFIX)) throw new Error(`snapshot holds a foreign key ${JSON.stringify(key)}`);
      if (key === APPLIED_KEY) meta = JSON.parse(Buffer.from(value).toString("utf8"));
      ops.push({ type: "put", key, value });
    }
    return { meta, ops };
  }
}
