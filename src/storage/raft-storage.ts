/**
 * @module storage/raft-storage
 * Durable Raft state in RocksDB: the hard state (term, vote) and the log.
 *
 * Keys: `h` holds the hard state as JSON; `S` the index and term of the compacted prefix (the
 * state machine covers it); `l` + 16 hex digits of the index holds one entry as a
 * raft.LogEntry protobuf (fixed-width hex keeps RocksDB's key order equal to index order).
 */
import type { Entry, EntryType, HardState, Ready, SnapshotMeta } from "../raft/types";
import { codecs } from "../wire/proto";
import type { BatchOp, Rocks } from "./rocks";

const HARD_STATE_KEY = "h";
const SNAPSHOT_KEY = "S";
const LOG_PREFIX = "l";
const LOG_END = "m"; // the first key after every `l...` key

function logKey(index: number): string {
  return LOG_PREFIX + index.toString(16).padStart(16, "0");
}

export class RaftStorage {
  readonly #db: Rocks;
  /** The range of indexes stored as entries. */
  #storedFirstIndex = 1;
  #storedLastIndex = 0;

  constructor(db: Rocks) {
    this.#db = db;
  }

  /** Reads the hard state and the log after the snapshot, checking that it has no holes. */
  async load(): Promise<{ hardState: HardState; snapshot: SnapshotMeta; entries: Entry[] }> {
    const raw = await this.#db.get(HARD_STATE_KEY);
    const hardState: HardState = raw ? JSON.parse(raw.toString("utf8")) : { term: 0, votedFor: null };
    const rawSnapshot = await this.#db.get(SNAPSHOT_KEY);
    const snapshot: SnapshotMeta = rawSnapshot ? JSON.parse(rawSnapshot.toString("utf8")) : { index: 0, term: 0 };
    const entries: Entry[] = [];
    await this.#db.scan(logKey(snapshot.index + 1), LOG_END, (key, value) => {
      const wire = codecs.logEntry.decode(value);
      const expected = snapshot.index + entries.length + 1;
      if (wire.index !== expected || parseInt(key.slice(1), 16) !== expected) {
        throw new Error(`corrupt log: found index ${wire.index} under ${key}, expected ${expected}`);
      }
      entries.push({ term: wire.term, index: wire.index, type: wire.type as EntryType, data: wire.data });
    });
    this.#storedFirstIndex = snapshot.index + 1;
    this.#storedLastIndex = snapshot.index + entries.length;
    return { hardState, snapshot, entries };
  }

  /**
   * Makes the Ready's hard state and entries durable in one synced write, deleting stored
   * entries past `ready.lastIndex` (a truncated conflicting suffix) and up to a new snapshot or
   * compaction point in the same batch. `stateOps` (a state machine restored from a snapshot)
   * go in the same batch, so that the state and the log it replaces change together.
   */
  async persist(ready: Ready, stateOps: BatchOp[] = []): Promise<void> {
    const ops: BatchOp[] = [...stateOps];
    const newSnapshot = ready.snapshot?.meta ?? ready.compactedTo;
    if (newSnapshot) {
      ops.push({ type: "put", key: SNAPSHOT_KEY, value: JSON.stringify(newSnapshot) });
      const lastDeleted = Math.min(newSnapshot.index, this.#storedLastIndex);
      for (let index = this.#storedFirstIndex; index <= lastDeleted; index++) {
        ops.push({ type: "del", key: logKey(index) });
      }
      this.#storedFirstIndex = Math.max(this.#storedFirstIndex, newSnapshot.index + 1);
      this.#storedLastIndex = Math.max(this.#storedLastIndex, newSnapshot.index);
    }
    if (ready.hardState) {
      ops.push({ type: "put", key: HARD_STATE_KEY, value: JSON.stringify(ready.hardState) });
    }
    for (const entry of ready.entries) {
      ops.push({ type: "put", key: logKey(entry.index), value: codecs.logEntry.encode(entry) });
    }
    for (let index = ready.lastIndex + 1; index <= this.#storedLastIndex; index++) {
      ops.push({ type: "del", key: logKey(index) });
    }
    if (ops.length === 0) return;
    await this.#db.batch(ops, true);
    this.#storedLastIndex = ready.lastIndex;
  }
}
