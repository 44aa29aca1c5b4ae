/**
 * Unit tests of the Raft core with an in-memory transport and manual ticks: no sleeps, no
 * clocks. Each test builds servers by hand, delivers messages explicitly and looks at logs,
 * terms and commit indexes. Paper sections are cited where a rule comes from.
 */
import { describe, expect, test } from "bun:test";
import { RaftCore } from "../../src/raft/core";
import { type Entry, EntryType, type Message, type NodeId, type ReadState } from "../../src/raft/types";

const text = new TextEncoder();

function entry(term: number, index: number, data = `t${term}i${index}`): Entry {
  return { term, index, type: EntryType.Normal, data: text.encode(data) };
}

/** Servers wired by an in-memory network whose deliveries the test controls. */
class Net {
  readonly cores: RaftCore[];
  readonly applied: Entry[][];
  readonly reads: ReadState[][];
  /** Messages sent but not delivered yet. */
  inbox: Message[] = [];
  /** Links that lose messages: "from->to". */
  readonly cut = new Set<string>();

  constructor(logs: Entry[][], terms: number[] = logs.map((log) => log.at(-1)?.term ?? 0)) {
    this.cores = logs.map(
      (log, id) =>
        new RaftCore(
          { id, clusterSize: logs.length, electionTicks: 10, heartbeatTicks: 1, randomInt: () => id * 3 },
          { hardState: { term: terms[id]!, votedFor: null }, entries: log, appliedIndex: 0 },
        ),
    );
    this.applied = logs.map(() => []);
    this.reads = logs.map(() => []);
  }

  /** Runs every server's Ready (persist is implicit: the core's log is the disk here). */
  flush(): void {
    for (const core of this.cores) {
      while (core.hasReady()) {
        const ready = core.ready();
        for (let message of ready.messages) {
          if (message.type === "InstallSnapshot" && message.snapshot === null) {
            // The node's part: the state machine here is just the applied index.
            const index = core.appliedIndex;
            message = { ...message, snapshot: { index, term: core.termAt(index) }, data: new Uint8Array() };
          }
          if (!this.cut.has(`${message.from}->${message.to}`)) this.inbox.push(message);
        }
        this.applied[core.id]!.push(...ready.committed);
        this.reads[core.id]!.push(...ready.readStates);
        core.advance(ready);
      }
    }
  }

  /** Delivers messages until none are left. */
  settle(limit = 10_000): void {
    this.flush();
    for (let i = 0; this.inbox.length > 0; i++) {
      if (i > limit) throw new Error("network did not settle");
      const message = this.inbox.shift()!;
      this.cores[message.to]!.step(message);
      this.flush();
    }
  }

  elect(id: NodeId): RaftCore {
    this.cores[id]!.campaign();
    this.settle();
    expect(this.cores[id]!.role).toBe("leader");
    return this.cores[id]!;
  }

  isolate(id: NodeId): void {
    for (let other = 0; other < this.cores.length; other++) {
      this.cut.add(`${id}->${other}`);
      this.cut.add(`${other}->${id}`);
    }
  }

  heal(): void {
    this.cut.clear();
  }

  propose(id: NodeId, data: string): { index: number; term: number } | null {
    const placed = this.cores[id]!.propose(text.encode(data));
    this.flush();
    return placed;
  }
}

const terms = (core: RaftCore) => core.entries().map((e) => e.term);

describe("RaftCore", () => {
  describe("log replication (§5.3)", () => {
    test("a leader replicates a proposal to every follower and all apply it once committed", () => {
      const net = new Net([[], [], []]);
      const leader = net.elect(0);
      const placed = net.propose(0, "hello");
      net.settle();
      expect(placed).toEqual({ index: 2, term: 1 }); // index 1 holds the leader's no-op (§8)
      for (const core of net.cores) {
        expect(core.commitIndex).toBe(2);
        expect(net.applied[core.id]!.map((e) => new TextDecoder().decode(e.data))).toEqual(["", "hello"]);
      }
      expect(leader.role).toBe("leader");
    });

    test("a follower refuses entries whose predecessor it does not hold, and the leader backs up", () => {
      // Server 2 has only the first entry; the others have three.
      const full = [entry(1, 1), entry(1, 2), entry(1, 3)];
      const net = new Net([full, full, [entry(1, 1)]], [1, 1, 1]);
      net.elect(0);
      net.settle();
      expect(net.cores[2]!.entries()).toEqual(net.cores[0]!.entries());
      expect(net.cores[2]!.lastIndex).toBe(4);
    });

    test("conflicting follower entries are deleted and replaced by the leader's (Figure 7)", () => {
      // Server 1 holds entries of terms 2 and 3 that never committed; the leader holds term 4.
      const leaderLog = [entry(1, 1), entry(1, 2), entry(4, 3)];
      const staleLog = [entry(1, 1), entry(2, 2), entry(3, 3), entry(3, 4), entry(3, 5)];
      const net = new Net([leaderLog, staleLog, leaderLog], [4, 3, 4]);
      net.elect(0);
      net.settle();
      expect(terms(net.cores[1]!)).toEqual([1, 1, 4, 5]);
      expect(net.cores[1]!.entries()).toEqual(net.cores[0]!.entries());
    });

    test("a follower missing whole terms is repaired in one round trip per term", () => {
      // Follower 1 holds a long run of term 2 entries at indexes the leader filled in term 3.
      const common = [entry(1, 1)];
      const follower = [...common, ...Array.from({ length: 50 }, (_, i) => entry(2, i + 2))];
      const leader = [...common, ...Array.from({ length: 50 }, (_, i) => entry(3, i + 2))];
      const net = new Net([leader, follower, leader], [3, 2, 3]);
      net.elect(0);
      let rejections = 0;
      // Count the rejected AppendEntries on the way.
      for (let guard = 0; guard < 1000; guard++) {
        net.flush();
        const message = net.inbox.shift();
        if (!message) break;
        if (message.type === "AppendEntriesReply" && message.from === 1 && !message.success) rejections++;
        net.cores[message.to]!.step(message);
      }
      expect(net.cores[1]!.entries()).toEqual(net.cores[0]!.entries());
      expect(rejections).toBeLessThanOrEqual(2);
    });

    test("AppendEntries batches are bounded, and a far-behind follower still catches up", () => {
      const net = new Net([[], [], []]);
      net.elect(0);
      net.isolate(2);
      for (let i = 0; i < 10_000; i++) net.propose(0, `w${i}`);
      net.settle();
      net.heal();
      let largest = 0;
      for (let tick = 0; tick < 100 && net.cores[2]!.commitIndex < net.cores[0]!.commitIndex; tick++) {
        net.cores[0]!.tick();
        net.flush();
        for (const message of net.inbox) if (message.type === "AppendEntries") largest = Math.max(largest, message.entries.length);
        net.settle();
      }
      expect(net.cores[2]!.lastIndex).toBe(10_001);
      expect(largest).toBeLessThanOrEqual(4096);
    });
  });

  describe("commit rule (§5.4.2)", () => {
    test("an entry of an earlier term on a majority is not committed until one of the current term is (Figure 8)", () => {
      // Server 0 wrote index 2 in term 2 and now leads term 4. Its AppendEntries are lost; a
      // follower then reports holding index 2 only. Index 2 is on a majority (servers 0 and 2),
      // but it is of term 2: counting replicas must not commit it.
      const net = new Net([[entry(1, 1), entry(2, 2)], [entry(1, 1)], [entry(1, 1)]], [3, 3, 3]);
      const leader = net.cores[0]!;
      leader.campaign();
      net.flush();
      while (leader.role !== "leader") {
        const message = net.inbox.shift()!;
        net.cores[message.to]!.step(message);
        net.flush();
      }
      expect(leader.term).toBe(4);
      expect(terms(leader)).toEqual([1, 2, 4]); // the no-op of term 4 sits at index 3
      net.inbox = []; // lose the leader's AppendEntries
      const ack = (matchIndex: number): Message => ({
        type: "AppendEntriesReply", from: 2, to: 0, term: 4, success: true, matchIndex,
        conflictTerm: 0, conflictIndex: 0, readRound: 0,
      });
      leader.step(ack(2));
      net.flush();
      expect(leader.commitIndex).toBe(0);
      leader.step(ack(3));
      net.flush();
      expect(leader.commitIndex).toBe(3); // the term-4 entry commits, and index 2 with it
    });

    test("a leader counts its own entries toward a majority only once they are persisted", () => {
      const net = new Net([[], [], []]);
      const leader = net.elect(0);
      leader.propose(text.encode("x"));
      const ready = leader.ready(); // not advanced: index 3 is not durable on the leader yet
      const placed = ready.entries.at(-1)!.index;
      leader.step({
        type: "AppendEntriesReply", from: 1, to: 0, term: leader.term, success: true, matchIndex: placed,
        conflictTerm: 0, conflictIndex: 0, readRound: 0,
      });
      // Before the leader persists, only the follower's copy is durable: no majority of three.
      expect(leader.commitIndex).toBeLessThan(placed);
      leader.advance(ready);
      expect(leader.commitIndex).toBe(placed);
    });
  });

  describe("elections (§5.2, §5.4.1)", () => {
    test("a server whose log is behind cannot become leader", () => {
      const net = new Net([[entry(1, 1)], [entry(1, 1), entry(1, 2)], [entry(1, 1), entry(1, 2)]], [1, 1, 1]);
      net.cores[0]!.campaign();
      net.settle();
      expect(net.cores[0]!.role).not.toBe("leader");
      expect(net.cores.filter((c) => c.role === "leader")).toHaveLength(0);
    });

    test("each server votes once per term", () => {
      const net = new Net([[], [], []]);
      net.cores[0]!.campaign();
      net.cores[1]!.campaign();
      net.settle();
      expect(net.cores.filter((c) => c.role === "leader").length).toBeLessThanOrEqual(1);
    });

    test("a candidate steps down when a reply carries a higher term", () => {
      const core = new RaftCore(
        { id: 0, clusterSize: 3, electionTicks: 10, heartbeatTicks: 1, randomInt: () => 0, preVote: false },
        { hardState: { term: 1, votedFor: null }, entries: [], appliedIndex: 0 },
      );
      core.campaign();
      expect(core.role).toBe("candidate");
      expect(core.term).toBe(2);
      core.step({ type: "RequestVoteReply", from: 1, to: 0, term: 5, voteGranted: false, preVote: false });
      expect(core.role).toBe("follower");
      expect(core.term).toBe(5);
      expect(core.hardState).toEqual({ term: 5, votedFor: null });
    });

    test("with pre-vote, a server cut off from the others does not raise its term", () => {
      const net = new Net([[], [], []]);
      net.elect(0);
      net.isolate(1);
      // Server 1 campaigns alone: pre-vote keeps its term from rising, so nothing to disrupt.
      for (let t = 0; t < 50; t++) net.cores[1]!.tick(), net.flush();
      expect(net.cores[1]!.term).toBe(1);
      net.heal();
      net.settle();
      expect(net.cores[0]!.role).toBe("leader");
    });

    test("an isolated follower that comes back does not depose a healthy leader (pre-vote, §9.6)", () => {
      const net = new Net([[], [], []]);
      const leader = net.elect(0);
      const term = leader.term;
      net.isolate(2);
      for (let t = 0; t < 100; t++) {
        for (const core of net.cores) core.tick();
        net.settle();
      }
      net.heal();
      for (let t = 0; t < 20; t++) {
        for (const core of net.cores) core.tick();
        net.settle();
      }
      expect(leader.role).toBe("leader");
      expect(leader.term).toBe(term);
      expect(net.cores[2]!.leaderId).toBe(0);
    });

    test("a leader that hears from no majority for an election timeout steps down (check-quorum)", () => {
      const net = new Net([[], [], []]);
      const leader = net.elect(0);
      net.isolate(0);
      let ticks = 0;
      while (leader.role === "leader" && ticks < 100) {
        leader.tick();
        net.flush();
        ticks++;
      }
      expect(leader.role).toBe("follower");
      expect(ticks).toBeLessThanOrEqual(20); // two election timeouts at most
    });
  });

  describe("ReadIndex (thesis §6.4)", () => {
    test("a read is released only after a quorum acknowledges a heartbeat sent after it arrived", () => {
      const net = new Net([[], [], []]);
      const leader = net.elect(0);
      expect(leader.readIndex(7)).toBe(true);
      const first = leader.ready();
      expect(first.readStates).toEqual([]);
      const heartbeats = first.messages.filter((m) => m.type === "AppendEntries");
      expect(heartbeats.length).toBe(2);
      leader.advance(first);
      // One follower's acknowledgement makes a quorum of two with the leader.
      const hb = heartbeats[0]!;
      net.cores[hb.to]!.step(hb);
      const reply = net.cores[hb.to]!.ready();
      net.cores[hb.to]!.advance(reply);
      for (const message of reply.messages) leader.step(message);
      const second = leader.ready();
      expect(second.readStates).toEqual([{ requestId: 7, index: leader.commitIndex }]);
      leader.advance(second);
    });

    test("a deposed leader's pending reads fail rather than answer from stale state", () => {
      const net = new Net([[], [], []]);
      const leader = net.elect(0);
      net.isolate(0);
      leader.readIndex(1);
      net.flush();
      // Meanwhile the others elect a new leader and commit a write.
      for (let t = 0; t < 40 && !net.cores.slice(1).some((c) => c.role === "leader"); t++) {
        net.cores[1]!.tick();
        net.cores[2]!.tick();
        net.settle();
      }
      net.heal();
      const fresh = net.cores.find((c) => c.id !== 0 && c.role === "leader")!;
      fresh.tick();
      net.settle();
      expect(leader.role).toBe("follower");
      // The read was never confirmed: it is answered with a failure, not with an index.
      expect(net.reads[0]).toEqual([{ requestId: 1, index: null }]);
      expect(leader.readIndex(2)).toBe(false);
    });

    test("a new leader defers reads until it has committed an entry of its own term", () => {
      const net = new Net([[], [], []]);
      net.cores[0]!.campaign();
      net.flush();
      // Deliver only the vote traffic: hold back the leader's AppendEntries.
      for (let i = 0; i < 100 && net.cores[0]!.role !== "leader"; i++) {
        const message = net.inbox.shift()!;
        net.cores[message.to]!.step(message);
        net.flush();
      }
      const leader = net.cores[0]!;
      expect(leader.leaderReady).toBe(false);
      leader.readIndex(5);
      const ready = leader.ready();
      expect(ready.readStates).toEqual([]);
      leader.advance(ready);
      net.settle();
      expect(leader.leaderReady).toBe(true);
    });
  });

  describe("snapshots (Figure 13)", () => {
    /** A leader (0) that compacted its log while follower 2 was away; 2 is back. */
    function leaderWithCompactedLog() {
      const net = new Net([[], [], []]);
      const leader = net.elect(0);
      net.isolate(2);
      for (let i = 0; i < 20; i++) net.propose(0, `w${i}`);
      net.settle();
      leader.compact(leader.appliedIndex);
      net.flush();
      net.heal();
      return { net, leader };
    }

    /** Delivers everything but snapshots, which it counts and holds back (still "in flight"). */
    function deliverAllButSnapshots(net: Net): number {
      let snapshots = 0;
      net.flush();
      for (let i = 0; i < 1000 && net.inbox.length > 0; i++) {
        const message = net.inbox.shift()!;
        if (message.type === "InstallSnapshot") snapshots++;
        else net.cores[message.to]!.step(message);
        net.flush();
      }
      return snapshots;
    }

    test("a follower that needs compacted entries is sent a snapshot, once", () => {
      const { net, leader } = leaderWithCompactedLog();
      expect(leader.snapshot.index).toBe(21);
      leader.tick(); // heartbeat: follower 2 answers, the leader probes and finds it far behind
      expect(deliverAllButSnapshots(net)).toBe(1);
      // Heartbeats that fail while it installs, and heartbeats it answers, trigger no second one.
      leader.reportUnreachable(2);
      let more = 0;
      for (let t = 0; t < 5; t++) {
        leader.tick();
        more += deliverAllButSnapshots(net);
      }
      expect(more).toBe(0);
    });

    test("a snapshot that failed is sent again after the follower answers", () => {
      const { net, leader } = leaderWithCompactedLog();
      leader.tick();
      expect(deliverAllButSnapshots(net)).toBe(1); // and lost
      leader.reportSnapshotFailed(2);
      leader.tick(); // next heartbeat; its reply un-pauses the probe
      expect(deliverAllButSnapshots(net)).toBe(1);
    });

    test("once installed, the follower holds the leader's log after the snapshot and commits on", () => {
      const { net, leader } = leaderWithCompactedLog();
      leader.tick();
      net.settle(); // deliver the snapshot too
      net.propose(0, "after");
      net.settle();
      const follower = net.cores[2]!;
      expect(follower.snapshot).toEqual(leader.snapshot);
      expect(follower.entries()).toEqual(leader.entries());
      expect(follower.commitIndex).toBe(leader.commitIndex);
      expect(net.applied[2]!.at(-1)?.index).toBe(leader.lastIndex); // applied after the snapshot
    });
  });

  describe("invariants", () => {
    test("a leader that would overwrite a committed entry is an invariant violation", () => {
      const core = new RaftCore(
        { id: 1, clusterSize: 3, electionTicks: 10, heartbeatTicks: 1, randomInt: () => 0 },
        { hardState: { term: 2, votedFor: null }, entries: [entry(1, 1), entry(2, 2)], appliedIndex: 2 },
      );
      expect(() =>
        core.step({
          type: "AppendEntries",
          from: 0,
          to: 1,
          term: 3,
          prevLogIndex: 1,
          prevLogTerm: 1,
          entries: [entry(3, 2)],
          leaderCommit: 2,
          readRound: 0,
        }),
      ).toThrow(/overwrites committed index 2/);
    });
  });
});
