/**
 * @module raft/log
 * The in-memory copy of the Raft log, with the bookkeeping of which suffix is not yet durable
 * and which prefix has been compacted into a snapshot.
 */
import { type Entry, InvariantError, type SnapshotMeta } from "./types";

/** Rough wire size of an entry, for bounding AppendEntries batches. */
function entrySize(entry: Entry): number {
  return entry.data.byteLength + 24;
}

export class RaftLog {
  /** The last index and term the snapshot covers (0, 0 before any compaction). */
  #snapshot: SnapshotMeta;
  // Invariant: #entries[i].index === #snapshot.index + i + 1.
  #entries: Entry[];
  // Invariant: #snapshot.index <= #persistedIndex <= lastIndex. Entries after it must be written.
  #persistedIndex: number;

  constructor(snapshot: SnapshotMeta, recovered: readonly Entry[]) {
    recovered.forEach((entry, i) => {
      if (entry.index !== snapshot.index + i + 1) {
        throw new InvariantError(`recovered log has index ${entry.index} at position ${snapshot.index + i + 1}`);
      }
    });
    this.#snapshot = snapshot;
    this.#entries = [...recovered];
    this.#persistedIndex = this.lastIndex;
  }

  get snapshot(): SnapshotMeta {
    return this.#snapshot;
  }

  /** The first index still held as an entry. */
  get firstIndex(): number {
    return this.#snapshot.index + 1;
  }

  get lastIndex(): number {
    return this.#snapshot.index + this.#entries.length;
  }

  get lastTerm(): number {
    return this.termAt(this.lastIndex);
  }

  get persistedIndex(): number {
    return this.#persistedIndex;
  }

  /**
   * The term of the entry at `index`: 0 for index 0, the snapshot's term at its last index.
   * Throws for a compacted index or past the end: callers check first.
   */
  termAt(index: number): number {
    if (index === 0) return 0;
    if (index === this.#snapshot.index) return this.#snapshot.term;
    return this.entryAt(index).term;
  }

  entryAt(index: number): Entry {
    const entry = this.#entries[index - this.firstIndex];
    if (entry === undefined) {
      throw new InvariantError(`no entry at ${index} (log holds ${this.firstIndex}..${this.lastIndex})`);
    }
    return entry;
  }

  /** Entries [from, to], inclusive; `from` must not be compacted. */
  slice(from: number, to: number): Entry[] {
    if (from < this.firstIndex && from <= to) {
      throw new InvariantError(`slice from compacted index ${from} (first is ${this.firstIndex})`);
    }
    return this.#entries.slice(from - this.firstIndex, to - this.#snapshot.index);
  }

  /**
   * Entries from `from` on, at most `maxCount` of them and about `maxBytes` (but at least one, so
   * that a single large entry still travels).
   */
  batchFrom(from: number, maxCount: number, maxBytes: number): Entry[] {
    const batch: Entry[] = [];
    let bytes = 0;
    for (let index = from; index <= this.lastIndex && batch.length < maxCount; index++) {
      const entry = this.entryAt(index);
      bytes += entrySize(entry);
      if (batch.length > 0 && bytes > maxBytes) break;
      batch.push(entry);
    }
    return batch;
  }

  /**
   * The first index of the run of entries of `term` that contains `index` (for fast back-up);
   * the run is cut at the first entry still held.
   */
  firstIndexOfTermAt(index: number): number {
    const term = this.termAt(index);
    let first = index;
    while (first > this.firstIndex && this.termAt(first - 1) === term) first--;
    return first;
  }

  /** The last index whose entry has `term`, or 0 when the log holds no entry of that term. */
  lastIndexOfTerm(term: number): number {
    for (let index = this.lastIndex; index >= this.#snapshot.index && index > 0; index--) {
      const entryTerm = this.termAt(index);
      if (entryTerm === term) return index;
      if (entryTerm < term) return 0; // terms only grow along the log
    }
    return 0;
  }

  append(entry: Entry): void {
    if (entry.index !== this.lastIndex + 1) {
      throw new InvariantError(`append of index ${entry.index} after last ${this.lastIndex}`);
    }
    this.#entries.push(entry);
  }

  /** Drops the entries from `index` on (a conflict with the leader's log, §5.3). */
  truncateFrom(index: number): void {
    if (index <= this.#snapshot.index) throw new InvariantError(`truncate at compacted index ${index}`);
    this.#entries.length = index - this.firstIndex;
    this.#persistedIndex = Math.min(this.#persistedIndex, index - 1);
  }

  /** Entries that are not yet durable. */
  unpersisted(): Entry[] {
    return this.#entries.slice(this.#persistedIndex - this.#snapshot.index);
  }

  markPersisted(index: number): void {
    if (index > this.lastIndex) {
      throw new InvariantError(`persisted ${index} beyond last index ${this.lastIndex}`);
    }
    this.#persistedIndex = Math.max(this.#persistedIndex, index);
  }

  /** Forgets the entries up to `index`, which a snapshot of the state machine now covers. */
  compact(index: number): void {
    if (index <= this.#snapshot.index) return;
    if (index > this.#persistedIndex) throw new InvariantError(`compact to ${index} beyond persisted ${this.#persistedIndex}`);
    const term = this.termAt(index);
    this.#entries = this.#entries.slice(index - this.#snapshot.index);
    this.#snapshot = { index, term };
  }

  /**
   * Replaces the log's prefix with a snapshot received from the leader (Figure 13). If we hold
   * the snapshot's last entry, what follows it is kept; otherwise the whole log goes.
   */
  restore(snapshot: SnapshotMeta): void {
    const keepSuffix =
      snapshot.index <= this.lastIndex && snapshot.index >= this.#snapshot.index && this.termAt(snapshot.index) === snapshot.term;
    this.#entries = keepSuffix ? this.#entries.slice(snapshot.index - this.#snapshot.index) : [];
    this.#snapshot = snapshot;
    // What remains was durable before, or is nothing: the snapshot itself is persisted with it.
    this.#persistedIndex = keepSuffix ? Math.max(this.#persistedIndex, snapshot.index) : snapshot.index;
  }
}
