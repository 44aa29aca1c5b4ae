/**
 * @module raft/log
 * The in-memory copy of the Raft log, with the bookkeeping of which suffix is not yet durable.
 */
import { type Entry, InvariantError } from "./types";

/** Rough wire size of an entry, for bounding AppendEntries batches. */
export function entrySize(entry: Entry): number {
  return entry.data.byteLength + 24;
}

export class RaftLog {
  // Invariant: #entries[i].index === i + 1 (no compaction yet, so the log starts at index 1).
  // TODO(#3): the whole log stays in memory and on disk; snapshots and log compaction would bound
  // both, and a follower far behind would then catch up from a snapshot.
  readonly #entries: Entry[];
  // Invariant: 0 <= #persistedIndex <= lastIndex. Entries after it must still be written.
  #persistedIndex: number;

  constructor(recovered: readonly Entry[]) {
    recovered.forEach((entry, i) => {
      if (entry.index !== i + 1) {
        throw new InvariantError(`recovered log has index ${entry.index} at position ${i + 1}`);
      }
    });
    this.#entries = [...recovered];
    this.#persistedIndex = this.#entries.length;
  }

  get lastIndex(): number {
    return this.#entries.length;
  }

  get lastTerm(): number {
    return this.termAt(this.lastIndex);
  }

  get persistedIndex(): number {
    return this.#persistedIndex;
  }

  /** The term of the entry at `index`; 0 for index 0. Throws past the end: callers check first. */
  termAt(index: number): number {
    if (index === 0) return 0;
    const entry = this.#entries[index - 1];
    if (entry === undefined) throw new InvariantError(`no entry at ${index} (last ${this.lastIndex})`);
    return entry.term;
  }

  entryAt(index: number): Entry {
    const entry = this.#entries[index - 1];
    if (entry === undefined) throw new InvariantError(`no entry at ${index} (last ${this.lastIndex})`);
    return entry;
  }

  /** Entries [from, to], inclusive, 1-based. */
  slice(from: number, to: number): Entry[] {
    return this.#entries.slice(from - 1, to);
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

  /** The first index of the run of entries of `term` that contains `index` (for fast back-up). */
  firstIndexOfTermAt(index: number): number {
    const term = this.termAt(index);
    let first = index;
    while (first > 1 && this.termAt(first - 1) === term) first--;
    return first;
  }

  /** The last index whose entry has `term`, or 0 when the log holds no entry of that term. */
  lastIndexOfTerm(term: number): number {
    for (let index = this.lastIndex; index > 0; index--) {
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
    this.#entries.length = index - 1;
    this.#persistedIndex = Math.min(this.#persistedIndex, index - 1);
  }

  /** Entries that are not yet durable. */
  unpersisted(): Entry[] {
    return this.#entries.slice(this.#persistedIndex);
  }

  markPersisted(index: number): void {
    if (index > this.lastIndex) {
      throw new InvariantError(`persisted ${index} beyond last index ${this.lastIndex}`);
    }
    this.#persistedIndex = Math.max(this.#persistedIndex, index);
  }
}
