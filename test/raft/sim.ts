/**
 * A deterministic simulated cluster for the Raft core: simulated clock and network, seeded
 * randomness, crashes that keep only what was persisted, and the safety properties of Figure 3
 * checked after every event. Used by simulation.test.ts and by scripts/sim.ts (replay one seed).
 */
import { RaftCore } from "../../src/raft/core";
import type { Entry, HardState, Message, NodeId, Ready, SnapshotMeta } from "../../src/raft/types";
import { seededRandom } from "../support/random";

/** What a server keeps across a crash: exactly what its Ready handling made durable. */
interface Disk {
  hardState: HardState;
  /** The log's compacted prefix, and the entries after it. */
  snapshot: SnapshotMeta;
  log: Entry[];
  appliedIndex: number;
  /** The state machine: every entry applied, in order (a snapshot carries all of them). */
  state: Entry[];
}

interface InFlight {
  deliverAt: number;
  message: Message;
}

export interface SimOptions {
  nodes: number;
  electionTicks?: number;
  heartbeatTicks?: number;
  /** Probabilities per message. */
  dropRate?: number;
  duplicateRate?: number;
  /** Extra delivery delay, in ticks, drawn from [0, maxDelay]. */
  maxDelay?: number;
  preVote?: boolean;
  checkQuorum?: boolean;
  /** Chance per tick that a server compacts its log up to about its applied index. */
  compactRate?: number;
}

export class SafetyViolation extends Error {
  override name = "SafetyViolation";
}

export class SimCluster {
  readonly random: () => number;
  readonly options: Required<SimOptions>;
  now = 0;
  readonly cores: (RaftCore | null)[] = [];
  readonly disks: Disk[] = [];
  #network: InFlight[] = [];
  /** Requests whose loss the sender will be told of (as gRPC would) once its Ready is done. */
  #failedSends: Message[] = [];
  /** blocked[a][b]: messages from a to b are lost. */
  readonly blocked: boolean[][];

  // Observations for the safety checks.
  /** term -> the one server that led in it (Election Safety). */
  readonly #leaderOfTerm = new Map<number, NodeId>();
  /** index -> the entry some server applied there (State Machine Safety). */
  readonly appliedAt = new Map<number, Entry>();
  /** index -> a term that was current when the entry was first seen applied. */
  readonly #committedSeenAtTerm = new Map<number, number>();
  #highestTermSeen = 0;
  /** Read requests in flight: id -> the highest applied index when the read was asked. */
  readonly #readsAsked = new Map<number, number>();
  #nextReadId = 1;
  readonly stats = { messages: 0, proposals: 0, readsServed: 0, readsFailed: 0, crashes: 0, snapshots: 0 };

  constructor(seed: number, options: SimOptions) {
    this.random = seededRandom(seed);
    this.options = {
      electionTicks: 10,
      heartbeatTicks: 2,
      dropRate: 0,
      duplicateRate: 0,
      maxDelay: 0,
      preVote: true,
      checkQuorum: true,
      compactRate: 0,
      ...options,
    };
    this.blocked = Array.from({ length: options.nodes }, () => new Array<boolean>(options.nodes).fill(false));
    for (let id = 0; id < options.nodes; id++) {
      this.disks.push({ hardState: { term: 0, votedFor: null }, snapshot: { index: 0, term: 0 }, log: [], appliedIndex: 0, state: [] });
      this.cores.push(null);
      this.restart(id);
    }
  }

  randomInt(n: number): number {
    return Math.floor(this.random() * n);
  }

  restart(id: NodeId): void {
    const disk = this.disks[id]!;
    this.cores[id] = new RaftCore(
      {
        id,
        clusterSize: this.options.nodes,
        electionTicks: this.options.electionTicks,
        heartbeatTicks: this.options.heartbeatTicks,
        randomInt: (n) => this.randomInt(n),
        preVote: this.options.preVote,
        checkQuorum: this.options.checkQuorum,
        maxEntriesPerAppend: 5,
        maxInflightAppends: 3,
        snapshotTimeoutTicks: 2 * this.options.electionTicks,
      },
      { hardState: disk.hardState, snapshot: disk.snapshot, entries: disk.log, appliedIndex: disk.appliedIndex },
    );
  }

  crash(id: NodeId): void {
    this.cores[id] = null;
    this.stats.crashes++;
  }

  get leaders(): RaftCore[] {
    return this.cores.filter((core): core is RaftCore => core !== null && core.role === "leader");
  }

  /** The leader of the highest term, if any. */
  currentLeader(): RaftCore | undefined {
    return this.leaders.sort((a, b) => b.term - a.term)[0];
  }

  isolate(id: NodeId, isolated: boolean): void {
    for (let other = 0; other < this.options.nodes; other++) {
      if (other === id) continue;
      this.blocked[id]![other] = isolated;
      this.blocked[other]![id] = isolated;
    }
  }

  healAll(): void {
    for (const row of this.blocked) row.fill(false);
  }

  propose(id: NodeId, data: Uint8Array): boolean {
    const core = this.cores[id];
    if (!core) return false;
    const result = core.propose(data);
    if (result) this.stats.proposals++;
    this.#processReady(id);
    return result !== null;
  }

  /** Asks `id` for a ReadIndex; the answer is checked against what was committed before. */
  read(id: NodeId): void {
    const core = this.cores[id];
    if (!core) return;
    const readId = this.#nextReadId++;
    // A linearizable read must reflect every write that completed before it began: anything
    // applied anywhere is complete from some client's point of view.
    let completed = 0;
    for (const index of this.appliedAt.keys()) completed = Math.max(completed, index);
    if (core.readIndex(readId)) {
      this.#readsAsked.set(readId, completed);
      this.#processReady(id);
    }
  }

  /** One tick of simulated time: every live server ticks, due messages are delivered. */
  tick(): void {
    this.now++;
    for (let id = 0; id < this.cores.length; id++) {
      const core = this.cores[id];
      if (!core) continue;
      core.tick();
      if (this.random() < this.options.compactRate) core.compact(this.disks[id]!.appliedIndex - this.randomInt(4));
      this.#processReady(id);
    }
    this.deliverDue();
  }

  deliverDue(): void {
    // Deliver in a random order among those due, which also reorders messages.
    for (;;) {
      const due = this.#network.filter((m) => m.deliverAt <= this.now);
      if (due.length === 0) return;
      const pick = due[this.randomInt(due.length)]!;
      this.#network.splice(this.#network.indexOf(pick), 1);
      this.#deliver(pick.message);
    }
  }

  #deliver(message: Message): void {
    const core = this.cores[message.to];
    if (!core) return;
    core.step(message);
    this.#processReady(message.to);
  }

  #send(message: Message): void {
    this.stats.messages++;
    if (message.type === "InstallSnapshot" && message.snapshot === null) {
      // The node's part: fill the snapshot from the sender's state machine as it is now.
      const disk = this.disks[message.from]!;
      const core = this.cores[message.from]!;
      const snapshot = { index: disk.appliedIndex, term: core.termAt(disk.appliedIndex) };
      const data = new TextEncoder().encode(JSON.stringify(disk.state.map((e) => [e.index, e.term, e.type, [...e.data]])));
      message = { ...message, snapshot, data };
      this.stats.snapshots++;
    }
    const lost =
      this.blocked[message.from]![message.to] ||
      this.cores[message.to] === null ||
      this.random() < this.options.dropRate;
    if (lost) {
      // gRPC tells a caller whose request failed; model that for requests, sometimes.
      const isRequest =
        message.type === "AppendEntries" || message.type === "RequestVote" || message.type === "InstallSnapshot";
      // Reported after the sender's advance(): no event may reach a core between ready() and it.
      if (isRequest && this.random() < 0.5) this.#failedSends.push(message);
      return;
    }
    const copies = this.random() < this.options.duplicateRate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      this.#network.push({ deliverAt: this.now + this.randomInt(this.options.maxDelay + 1), message });
    }
  }

  /** The node layer's job, done synchronously: persist, send, apply, advance. */
  #processReady(id: NodeId): void {
    for (;;) {
      const core = this.cores[id];
      if (!core || !core.hasReady()) break;
      const ready: Ready = core.ready();
      const disk = this.disks[id]!;
      if (ready.snapshot) this.#installSnapshot(id, ready.snapshot.meta, ready.snapshot.data);
      if (ready.hardState) disk.hardState = ready.hardState;
      if (ready.entries.length > 0) {
        const first = ready.entries[0]!.index;
        disk.log = disk.log.filter((e) => e.index < first);
        disk.log.push(...ready.entries);
      }
      disk.log = disk.log.filter((e) => e.index <= ready.lastIndex);
      if (ready.compactedTo) {
        const upTo = ready.compactedTo;
        disk.log = disk.log.filter((e) => e.index > upTo.index);
        disk.snapshot = upTo;
      }
      for (const message of ready.messages) this.#send(message);
      for (const entry of ready.committed) this.#apply(id, entry);
      for (const readState of ready.readStates) this.#answerRead(id, readState.requestId, readState.index);
      core.advance(ready);
      for (const failed of this.#failedSends.splice(0)) {
        const sender = this.cores[failed.from];
        if (failed.type === "InstallSnapshot") sender?.reportSnapshotFailed(failed.to);
        else sender?.reportUnreachable(failed.to);
      }
    }
    this.checkSafety();
  }

  #apply(id: NodeId, entry: Entry): void {
    const disk = this.disks[id]!;
    if (entry.index !== disk.appliedIndex + 1) {
      throw new SafetyViolation(`server ${id} applied ${entry.index} after ${disk.appliedIndex}`);
    }
    disk.appliedIndex = entry.index;
    disk.state.push(entry);
    const earlier = this.appliedAt.get(entry.index);
    if (earlier === undefined) {
      this.appliedAt.set(entry.index, entry);
      this.#committedSeenAtTerm.set(entry.index, this.#highestTermSeen);
    } else if (earlier.term !== entry.term || !sameBytes(earlier.data, entry.data)) {
      throw new SafetyViolation(
        `state machine safety: index ${entry.index} applied as term ${earlier.term} and, on server ${id}, term ${entry.term}`,
      );
    }
  }

  /** Replaces server `id`'s state machine with a snapshot, checking it against what others applied. */
  #installSnapshot(id: NodeId, meta: SnapshotMeta, data: Uint8Array): void {
    const disk = this.disks[id]!;
    const decoded = JSON.parse(new TextDecoder().decode(data)) as [number, number, number, number[]][];
    const state: Entry[] = decoded.map(([index, term, type, bytes]) => ({ index, term, type, data: new Uint8Array(bytes) }));
    if (state.length !== meta.index || state.some((e, i) => e.index !== i + 1)) {
      throw new SafetyViolation(`server ${id} got a snapshot of ${state.length} entries for index ${meta.index}`);
    }
    for (const entry of state) {
      const earlier = this.appliedAt.get(entry.index);
      if (earlier && (earlier.term !== entry.term || !sameBytes(earlier.data, entry.data))) {
        throw new SafetyViolation(`state machine safety: snapshot for ${id} holds term ${entry.term} at ${entry.index}, applied elsewhere as ${earlier.term}`);
      }
    }
    disk.state = state;
    disk.appliedIndex = meta.index;
    disk.snapshot = meta;
    disk.log = disk.log.filter((e) => e.index > meta.index);
  }

  #answerRead(id: NodeId, readId: number, index: number | null): void {
    const completedBefore = this.#readsAsked.get(readId);
    this.#readsAsked.delete(readId);
    if (completedBefore === undefined) throw new SafetyViolation(`server ${id} answered unknown read ${readId}`);
    if (index === null) {
      this.stats.readsFailed++;
      return;
    }
    this.stats.readsServed++;
    if (index < completedBefore) {
      throw new SafetyViolation(
        `stale read on server ${id}: read index ${index} but ${completedBefore} was applied before the read began`,
      );
    }
  }

  /** Figure 3's properties, over every live server and every observation so far. */
  checkSafety(): void {
    for (const core of this.cores) {
      if (!core) continue;
      this.#highestTermSeen = Math.max(this.#highestTermSeen, core.term);
      if (core.role !== "leader") continue;
      // Election Safety: at most one leader per term.
      const known = this.#leaderOfTerm.get(core.term);
      if (known === undefined) this.#leaderOfTerm.set(core.term, core.id);
      else if (known !== core.id) {
        throw new SafetyViolation(`election safety: ${known} and ${core.id} both led term ${core.term}`);
      }
      // Leader Completeness: a leader of a later term holds every entry committed before it.
      for (const [index, seenAt] of this.#committedSeenAtTerm) {
        if (core.term <= seenAt) continue;
        const entry = this.appliedAt.get(index)!;
        if (index <= core.snapshot.index) continue; // compacted: covered by its state machine
        const ours = index <= core.lastIndex ? core.entries(index, index)[0] : undefined;
        if (!ours || ours.term !== entry.term) {
          throw new SafetyViolation(
            `leader completeness: leader ${core.id} of term ${core.term} lacks committed index ${index} (term ${entry.term})`,
          );
        }
      }
    }
  }

  /** Log Matching, for every pair of live servers: same index and term imply same prefix. */
  checkLogMatching(): void {
    const live = this.cores.filter((core): core is RaftCore => core !== null);
    for (let a = 0; a < live.length; a++) {
      for (let b = a + 1; b < live.length; b++) {
        const x = live[a]!;
        const y = live[b]!;
        // Compare where both still hold entries; compacted prefixes are committed, checked by
        // state machine safety instead.
        const from = Math.max(x.snapshot.index, y.snapshot.index) + 1;
        const to = Math.min(x.lastIndex, y.lastIndex);
        if (from > to) continue;
        const logX = x.entries(from, to);
        const logY = y.entries(from, to);
        let last = -1;
        for (let i = logX.length - 1; i >= 0; i--) {
          if (logX[i]!.term === logY[i]!.term) {
            last = i;
            break;
          }
        }
        for (let i = 0; i <= last; i++) {
          const p = logX[i]!;
          const q = logY[i]!;
          if (p.term !== q.term || p.type !== q.type || !sameBytes(p.data, q.data)) {
            throw new SafetyViolation(
              `log matching: servers ${x.id} and ${y.id} agree at ${from + last} but differ at ${from + i}`,
            );
          }
        }
      }
    }
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * One randomized run: a period of chaos (crashes, partitions, lost, duplicated, delayed and
 * reordered messages, client writes and reads), then a quiet period in which the cluster must
 * elect a leader, commit a final write and bring every server to the same applied state.
 */
export function runRandomScenario(seed: number): SimCluster {
  const pick = seededRandom(seed ^ 0x5eed);
  const nodes = pick() < 0.5 ? 3 : 5;
  const sim = new SimCluster(seed, {
    nodes,
    dropRate: pick() * 0.2,
    duplicateRate: pick() * 0.1,
    maxDelay: Math.floor(pick() * 4),
    // Half the runs compact logs often, so that lagging and restarted servers need snapshots.
    compactRate: pick() < 0.5 ? 0 : 0.05,
    // Without check-quorum a deposed leader believes in itself much longer: ReadIndex alone
    // must still keep its reads fresh.
    checkQuorum: pick() < 0.7,
  });
  const chaosTicks = 300;
  let payload = 0;
  for (let t = 0; t < chaosTicks; t++) {
    const roll = sim.random();
    if (roll < 0.01) {
      const id = sim.randomInt(nodes);
      const down = sim.cores.filter((core) => core === null).length;
      if (sim.cores[id] && down < Math.floor((nodes - 1) / 2)) sim.crash(id);
    } else if (roll < 0.04) {
      const id = sim.randomInt(nodes);
      if (!sim.cores[id]) sim.restart(id);
    } else if (roll < 0.05) {
      sim.isolate(sim.randomInt(nodes), true);
    } else if (roll < 0.06) {
      const from = sim.randomInt(nodes);
      const to = sim.randomInt(nodes);
      if (from !== to) sim.blocked[from]![to] = true; // asymmetric
    } else if (roll < 0.1) {
      sim.healAll();
    }
    const leader = sim.currentLeader();
    // Clients write to and read from whoever leads, and sometimes from a random server.
    const target = leader && sim.random() < 0.8 ? leader.id : sim.randomInt(nodes);
    if (sim.random() < 0.5) sim.propose(target, new TextEncoder().encode(`w${payload++}`));
    if (sim.random() < 0.3) sim.read(target);
    // Every server that believes it leads is asked too: stale leaders are where stale reads hide.
    if (sim.random() < 0.3) for (const core of sim.leaders) sim.read(core.id);
    sim.tick();
    if (t % 25 === 0) sim.checkLogMatching();
  }
  // Quiet period: everyone up, network whole and reliable again.
  sim.healAll();
  sim.options.dropRate = 0;
  sim.options.duplicateRate = 0;
  for (let id = 0; id < nodes; id++) if (!sim.cores[id]) sim.restart(id);
  let committedFinal = false;
  for (let t = 0; t < 400 && !committedFinal; t++) {
    sim.tick();
    const leader = sim.currentLeader();
    if (leader && t % 10 === 0) sim.propose(leader.id, new TextEncoder().encode(`final${t}`));
    const last = Math.max(0, ...sim.appliedAt.keys());
    committedFinal =
      last > 0 &&
      sim.appliedAt.get(last)!.data.byteLength > 0 &&
      new TextDecoder().decode(sim.appliedAt.get(last)!.data).startsWith("final") &&
      sim.disks.every((disk) => disk.appliedIndex === last);
  }
  sim.checkLogMatching();
  if (!committedFinal) {
    throw new SafetyViolation(
      `liveness: no final write applied everywhere 400 ticks after healing (applied: ${sim.disks
        .map((d) => d.appliedIndex)
        .join(",")}, roles: ${sim.cores.map((c) => `${c?.role}@${c?.term}`).join(",")})`,
    );
  }
  return sim;
}
