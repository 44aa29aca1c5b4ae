/**
 * RocksDB-backed storage: the Raft log and hard state survive a reopen exactly as persisted,
 * and the key-value state machine applies each entry once, with exactly-once client sessions.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Entry, EntryType, type Ready } from "../../src/raft/types";
import { KvStateMachine, MAX_SESSIONS } from "../../src/storage/kv-state-machine";
import { RaftStorage } from "../../src/storage/raft-storage";
import { Rocks } from "../../src/storage/rocks";
import { codecs } from "../../src/wire/proto";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "raftkv-storage-"));
  dirs.push(dir);
  return dir;
}

function put(index: number, key: string, value: string, clientId = "", sequence = 0, ackedBelow = 0): Entry {
  const data = codecs.command.encode({ key, value, clientId, sequence, ackedBelow });
  return { term: 1, index, type: EntryType.Normal, data };
}

function ready(fields: Partial<Ready>): Ready {
  return {
    snapshot: null,
    compactedTo: null,
    hardState: null,
    entries: [],
    lastIndex: 0,
    messages: [],
    committed: [],
    readStates: [],
    ...fields,
  };
}

describe("RaftStorage", () => {
  test("hard state and entries read back after a reopen, and a truncated suffix is gone", async () => {
    const dir = tempDir();
    let db = await Rocks.open(dir);
    let storage = new RaftStorage(db);
    expect(await storage.load()).toEqual({ hardState: { term: 0, votedFor: null }, snapshot: { index: 0, term: 0 }, entries: [] });
    const first = [1, 2, 3, 4].map((i) => ({ ...put(i, `k${i}`, "v"), term: 1 }));
    await storage.persist(ready({ hardState: { term: 1, votedFor: 2 }, entries: first, lastIndex: 4 }));
    // A conflict: index 3 is replaced by an entry of term 2 and index 4 disappears.
    const replacement = { ...put(3, "k3", "other"), term: 2 };
    await storage.persist(ready({ hardState: { term: 2, votedFor: null }, entries: [replacement], lastIndex: 3 }));
    await db.close();
    db = await Rocks.open(dir);
    storage = new RaftStorage(db);
    const loaded = await storage.load();
    expect(loaded.hardState).toEqual({ term: 2, votedFor: null });
    expect(loaded.entries.map((e) => [e.index, e.term])).toEqual([[1, 1], [2, 1], [3, 2]]);
    expect(codecs.command.decode(loaded.entries[2]!.data).value).toBe("other");
    await db.close();
  });
});

describe("RaftStorage compaction", () => {
  test("a compacted prefix is dropped from disk and the log reloads from the snapshot point", async () => {
    const dir = tempDir();
    let db = await Rocks.open(dir);
    let storage = new RaftStorage(db);
    await storage.load();
    const entries = [1, 2, 3, 4, 5].map((i) => put(i, `k${i}`, "v"));
    await storage.persist(ready({ entries, lastIndex: 5 }));
    await storage.persist(ready({ compactedTo: { index: 3, term: 1 }, lastIndex: 5 }));
    await db.close();
    db = await Rocks.open(dir);
    storage = new RaftStorage(db);
    const loaded = await storage.load();
    expect(loaded.snapshot).toEqual({ index: 3, term: 1 });
    expect(loaded.entries.map((e) => e.index)).toEqual([4, 5]);
    await db.close();
  });
});

describe("KvStateMachine", () => {
  test("a snapshot of one store restores another to the same state, sessions included", async () => {
    const source = await Rocks.open(tempDir());
    const target = await Rocks.open(tempDir());
    const from = new KvStateMachine(source);
    const to = new KvStateMachine(target);
    await from.load();
    await to.load();
    await from.apply([put(1, "a", "1", "alice", 1), put(2, "b", "2"), put(3, "a", "3")]);
    await to.apply([put(1, "stale", "x"), put(2, "b", "old")]);
    const { meta, data } = await from.snapshot();
    expect(meta).toEqual({ index: 3, term: 1 });
    const restored = await to.restoreOps(data);
    expect(restored.meta).toEqual(meta);
    await target.batch(restored.ops, true);
    await to.load();
    expect(to.appliedIndex).toBe(3);
    expect(await to.get("a")).toBe("3");
    expect(await to.get("b")).toBe("2");
    expect(await to.get("stale")).toBeUndefined(); // the old state is gone, not merged
    const retry = await to.apply([put(4, "a", "1", "alice", 1)]);
    expect(retry[0]!.duplicate).toBe(true); // alice's session came along
    await source.close();
    await target.close();
  });

  test("applies puts, records the applied index with the data, and overwrites", async () => {
    const dir = tempDir();
    let db = await Rocks.open(dir);
    let machine = new KvStateMachine(db);
    await machine.load();
    await machine.apply([put(1, "a", "1"), put(2, "b", "2"), put(3, "a", "3")]);
    await db.close();
    db = await Rocks.open(dir);
    machine = new KvStateMachine(db);
    await machine.load();
    expect(machine.appliedIndex).toBe(3);
    expect(await machine.get("a")).toBe("3");
    expect(await machine.get("missing")).toBeUndefined();
    // Applying out of order would apply something twice or skip it: refused.
    expect(machine.apply([put(3, "a", "again")])).rejects.toThrow(/after applied index 3/);
    await db.close();
  });

  test("a retried write (same client and sequence) is applied once, even across a restart", async () => {
    const dir = tempDir();
    let db = await Rocks.open(dir);
    let machine = new KvStateMachine(db);
    await machine.load();
    const results = await machine.apply([put(1, "k", "v1", "alice", 1), put(2, "k", "v2", "bob", 1)]);
    expect(results.map((r) => r.duplicate)).toEqual([false, false]);
    await db.close();
    db = await Rocks.open(dir);
    machine = new KvStateMachine(db);
    await machine.load();
    const retried = await machine.apply([put(3, "k", "v1", "alice", 1)]);
    expect(retried).toEqual([{ ok: true, duplicate: true }]);
    expect(await machine.get("k")).toBe("v2");
    await machine.apply([put(4, "k", "v3", "alice", 2)]);
    expect(await machine.get("k")).toBe("v3");
    await db.close();
  });

  test("writes of one client that reach the log out of order all apply, once each", async () => {
    const db = await Rocks.open(tempDir());
    const machine = new KvStateMachine(db);
    await machine.load();
    // Two writes in flight (sequences 1 and 2); 2 is committed first.
    const first = await machine.apply([put(1, "b", "2", "carol", 2, 1), put(2, "a", "1", "carol", 1, 1)]);
    expect(first.map((r) => r.duplicate)).toEqual([false, false]);
    expect(await machine.get("a")).toBe("1");
    // Retries of either are duplicates; once the client reports both answered, the session
    // forgets them, and older sequences stay duplicates.
    const retries = await machine.apply([put(3, "a", "x", "carol", 1, 1), put(4, "b", "x", "carol", 2, 1), put(5, "c", "3", "carol", 3, 3)]);
    expect(retries.map((r) => r.duplicate)).toEqual([true, true, false]);
    expect((await machine.apply([put(6, "a", "late", "carol", 1, 3)]))[0]!.duplicate).toBe(true);
    expect(await machine.get("a")).toBe("1");
    await db.close();
  });

  test("sessions expire entry by entry: the same state whatever the batching", async () => {
    // Server X applies a log in one batch, server Y entry by entry: they must agree.
    const dbX = await Rocks.open(tempDir());
    const dbY = await Rocks.open(tempDir());
    const x = new KvStateMachine(dbX);
    const y = new KvStateMachine(dbY);
    await x.load();
    await y.load();
    const log = Array.from({ length: MAX_SESSIONS }, (_, i) => put(i + 1, "k", `c${i}`, `client-${i}`, 1));
    log.push(put(MAX_SESSIONS + 1, "k", "newcomer", "newcomer", 1)); // pushes client-0 out
    log.push(put(MAX_SESSIONS + 2, "k", "retry of client-0", "client-0", 1));
    const resultsX = await x.apply(log);
    const resultsY: boolean[] = [];
    for (const entry of log) resultsY.push((await y.apply([entry]))[0]!.duplicate);
    expect(resultsX.map((r) => r.duplicate)).toEqual(resultsY);
    expect(await x.get("k")).toBe(await y.get("k"));
    await dbX.close();
    await dbY.close();
  });

  test("sessions beyond the cap expire oldest first, the same way after a restart", async () => {
    const dir = tempDir();
    let db = await Rocks.open(dir);
    let machine = new KvStateMachine(db);
    await machine.load();
    // Client ids whose key order differs from their recency order.
    const ids = Array.from({ length: MAX_SESSIONS }, (_, i) => `client-${String(MAX_SESSIONS - i).padStart(6, "0")}`);
    await machine.apply(ids.map((id, i) => put(i + 1, "k", id, id, 1)));
    await db.close();
    db = await Rocks.open(dir);
    machine = new KvStateMachine(db);
    await machine.load();
    // One more session pushes out the least recently used one: ids[0], not the smallest key.
    let index = MAX_SESSIONS;
    await machine.apply([put(++index, "k", "new", "newcomer", 1)]);
    const second = await machine.apply([put(++index, "k", "second again", ids[1]!, 1)]);
    const oldest = await machine.apply([put(++index, "k", "oldest again", ids[0]!, 1)]);
    expect(second[0]!.duplicate).toBe(true); // still remembered
    expect(oldest[0]!.duplicate).toBe(false); // forgotten: applied anew
    await db.close();
  });
});
