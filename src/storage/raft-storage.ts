/**
 * @module storage/raft-storage
 * Durable Raft state in RocksDB: the hard state (term, vote) and the log.
 *
 * Keys: `h` holds the hard state as JSON; `l` + 16 hex digits of the index holds one entry as a
 * raft.LogEntry protobuf (fixed-width hex keeps RocksDB's key order equal to index order).
 */
import type { Entry, EntryType, HardState, Ready } from "../raft/types";
import { codecs } from "../wire/proto";
import type { BatchOp, Rocks } from "./rocks";

const HARD_STATE_KEY = "h";
const LOG_PREFIX = "l";
const LOG_END = "m"; // the first key after every `l...` key

function logKey(index: number): string {
  return LOG_PREFIX + index.toString(16).padStart(16, "0");
}

export class RaftStorage {
  readonly #db: Rocks;
  /** The last index written to disk. */
  #storedLastIndex = 0;

  constructor(db: Rocks) {
    this.#db = db;
  }

  /** Reads the hard state and the whole log, checking that the log has no holes. */
  async load(): Promise<{ hardState: HardState; entries: Entry[] }> {
    const raw = await this.#db.get(HARD_STATE_KEY);
    const hardState: HardState = raw ? JSON.parse(raw.toString("utf8")) : { term: 0, votedFor: null };
    const entries: Entry[] = [];
    await this.#db.scan(LOG_PREFIX, LOG_END, (key, value) => {
      const wire = codecs.logEntry.decode(value);
      const expected = entries.length + 1;
      if (wire.index !== expected || parseInt(key.slice(1), 16) !== expected) {
        throw new Error(`corrupt log: found index ${wire.index} under ${key}, expected ${expected}`);
      }
      entries.push({ term: wire.term, index: wire.index, type: wire.type as EntryType, data: wire.data });
    });
    this.#storedLastIndex = entries.length;
    return { hardState, entries };
  }

  /**
   * Makes the Ready's hard state and entries durable in one synced write, deleting stored
   * entries past `ready.lastIndex` (a truncated conflicting suffix) in the same batch.
   */
  async persist(ready: Ready): Promise<void> {
    const ops: BatchOp[] = [];
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
