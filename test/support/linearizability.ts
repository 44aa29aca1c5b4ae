/**
 * Linearizability checker for a recorded key-value history.
 *
 * MODEL
 *   Every key is an independent read/write register whose initial value is
 *   `null` ("no such key"). `put(k, v)` sets the register; `get(k)` returns its
 *   current value. Linearizability is compositional (a history is linearizable
 *   iff its restriction to every object is), so each key is checked on its own.
 *   That keeps each search small: the cost is exponential only in the number of
 *   operations that overlap on the *same* key, not across the whole history.
 *
 *   A history is linearizable if every completed operation can be given a single
 *   instant between its call and its return such that, executing the operations
 *   one at a time in that order, each get returns what the register held.
 *
 * WHY UNKNOWN OUTCOMES MATTER
 *   A client that times out, gets an error, or talks to a crashing leader does
 *   not know whether its put happened. Raft may still commit it later (it sits in
 *   some log), or it may be lost forever. Treating such a put as "failed" would
 *   flag correct systems (a later read sees the value), and treating it as
 *   "succeeded at the time of the error" would flag them too (it commits after
 *   the client gave up). So a put with `ok: false` is given `ret = Infinity`: it
 *   may take effect at any point after its call, or never. A get with `ok: false`
 *   returned nothing we can check and is dropped.
 *
 *   "Never" needs no special handling: with its return at Infinity the put may be
 *   linearized after every other operation, where no read can observe it.
 *
 * ALGORITHM
 *   Wing & Gong's search with Lowe's "just-in-time linearization" and memoisation
 *   (the approach behind Knossos and Porcupine; this is an independent
 *   implementation). Call and return events are put in one time-ordered doubly
 *   linked list. Walking it from the front:
 *     - at a call event, try to linearize that operation now: apply it to the
 *       register; if the result is consistent (a get must read the current value)
 *       and the pair (set of linearized ops, register value) has not been seen
 *       before, remove the op's call and return events from the list, push it on
 *       a stack and restart from the front;
 *     - at a return event, an operation has ended without being linearized, so
 *       this branch is a dead end: pop the last linearized op, put its events back
 *       (dancing-links style, O(1)), restore the register and try the next
 *       candidate after it.
 *   The list becoming empty means every op was linearized. An empty stack at a
 *   dead end means no order exists. The memo set (a bitset of linearized ops plus
 *   the register value) is what makes this practical: two different orders that
 *   linearize the same ops and leave the same value have identical futures, so
 *   only the first is explored.
 *
 *   Two prunings keep unknown puts cheap (each pending one could otherwise
 *   double the state space): an unknown put whose value no read ever returned is
 *   dropped up front, and one whose readers have all been linearized is forced
 *   to "never". Both are safe because an unobserved write can only hide the
 *   register's real value from later reads, never help one.
 *
 * TIES
 *   When one op's return and another's call carry the same timestamp the events
 *   are ordered call-first, i.e. the ops are treated as concurrent. Timer
 *   resolution means equal stamps do not prove an order, and the checker must not
 *   report violations that did not happen.
 *
 * RESULTS
 *   { linearizable: true, checkedOps }      every key passed; checkedOps counts the
 *                                           operations actually checked (dropped
 *                                           gets and pruned puts excluded).
 *   { linearizable: false, key, explanation } some key has no valid order; the
 *                                           explanation names the op the search
 *                                           got stuck on at its furthest point.
 *   { linearizable: "unknown", key, explanation } the search of `key` explored more
 *                                           than `maxStates` states (per key) and gave
 *                                           up. This is not a verdict either way;
 *                                           callers should usually fail the test and
 *                                           shrink the history or its concurrency.
 */

export type Operation = {
  client: number; // which client issued it (a client has at most one operation open at a time)
  kind: "put" | "get";
  key: string;
  value?: string; // put: the value written
  // get: the value read: a string, or null for "no such key"; undefined when the outcome is unknown
  output?: string | null;
  call: number; // time the request was sent (monotonic ms, e.g. performance.now())
  // time the reply arrived; Infinity when the outcome is unknown (timeout / error / crash):
  // such a put may have taken effect at any time after its call, or never.
  ret: number;
  ok: boolean; // false = outcome unknown (for get: the read is simply dropped from the check)
};

export type CheckResult =
  | { linearizable: true; checkedOps: number }
  | { linearizable: false; key: string; explanation: string }
  | { linearizable: "unknown"; key: string; explanation: string };

export type CheckOptions = {
  /** Value every register starts with; default null (key missing). */
  initial?: string | null;
  /** Give up on a key (result "unknown") after exploring this many states; default 2,000,000. */
  maxStates?: number;
};

const DEFAULT_MAX_STATES = 2_000_000;

export function checkLinearizable(history: Operation[], opts: CheckOptions = {}): CheckResult {
  const initial = opts.initial === undefined ? null : opts.initial;
  const maxStates = opts.maxStates ?? DEFAULT_MAX_STATES;

  const byKey = new Map<string, Operation[]>();
  for (const op of history) {
    validate(op);
    // An unanswered read tells us nothing about the register.
    if (op.kind === "get" && !op.ok) continue;
    let ops = byKey.get(op.key);
    if (!ops) byKey.set(op.key, (ops = []));
    ops.push(op);
  }

  let checkedOps = 0;
  // Sorted so that results (which key is reported first) do not depend on Map insertion order.
  for (const key of [...byKey.keys()].sort()) {
    const ops = relevantOps(byKey.get(key)!);
    const outcome = checkRegister(key, ops, initial, maxStates);
    if (outcome !== null) return outcome;
    checkedOps += ops.length;
  }
  return { linearizable: true, checkedOps };
}

function validate(op: Operation): void {
  const where = () => `${describeOp(op)} on key ${JSON.stringify(op.key)}`;
  if (!Number.isFinite(op.call)) throw new Error(`linearizability: call time must be finite: ${where()}`);
  if (op.ok && !Number.isFinite(op.ret)) throw new Error(`linearizability: completed op needs a finite ret: ${where()}`);
  if (op.ok && op.ret < op.call) throw new Error(`linearizability: ret before call: ${where()}`);
  if (op.kind === "put" && typeof op.value !== "string") throw new Error(`linearizability: put without a value: ${where()}`);
  if (op.kind === "get" && op.ok && op.output === undefined)
    throw new Error(`linearizability: completed get without an output (use null for a missing key): ${where()}`);
}

/**
 * Drop unknown-outcome puts whose value no completed get ever returned. Such a
 * put can always be linearized "never" without invalidating anything (nobody
 * could tell it happened), and keeping it would double the search space for
 * every one of them, which matters in histories full of timeouts.
 */
function relevantOps(ops: Operation[]): Operation[] {
  const observed = new Set<string | null>();
  for (const op of ops) if (op.kind === "get") observed.add(op.output!);
  return ops.filter((op) => op.ok || observed.has(op.value!));
}

// ---------------------------------------------------------------------------
// Per-register search

type Event = {
  isCall: boolean;
  opIndex: number;
  time: number;
  prev: Event | null;
  next: Event | null;
  /** For a call event: its matching return event. */
  returnEvent: Event | null;
};

/** Returns null when the register's history is linearizable, otherwise the failing result. */
function checkRegister(
  key: string,
  ops: Operation[],
  initial: string | null,
  maxStates: number,
): CheckResult | null {
  if (ops.length === 0) return null;

  // Register values are interned to small integers so states compare and hash cheaply.
  const valueIds = new Map<string | null, number>([[initial, 0]]);
  const valueOf: (string | null)[] = [initial];
  const intern = (v: string | null): number => {
    let id = valueIds.get(v);
    if (id === undefined) {
      id = valueOf.length;
      valueIds.set(v, id);
      valueOf.push(v);
    }
    return id;
  };
  const isPut = ops.map((op) => op.kind === "put");
  // For a put: the value it writes; for a get: the value it must observe.
  const operand = ops.map((op) => intern(op.kind === "put" ? op.value! : op.output!));

  const head = buildEventList(ops);

  // Zobrist hashing: each op owns a random 32-bit word and a set's hash is the
  // XOR of its members', so adding or removing an op updates the hash in O(1).
  const rng = xorshift32(0x9e3779b9);
  const zobrist = Uint32Array.from(ops, () => rng());
  const words = (ops.length + 31) >>> 5;
  const linearized = new Uint32Array(words);
  let setHash = 0;
  const seen = new Map<number, { bits: Uint32Array; state: number }[]>();

  // Records (bits, state) and reports whether it was new.
  const remember = (state: number): boolean => {
    const h = (setHash ^ Math.imul(state + 1, 0x85ebca6b)) >>> 0;
    let bucket = seen.get(h);
    if (!bucket) seen.set(h, (bucket = []));
    for (const s of bucket) if (s.state === state && sameBits(s.bits, linearized)) return false;
    bucket.push({ bits: linearized.slice(), state });
    return true;
  };
  const toggle = (i: number) => {
    linearized[i >>> 5] ^= 1 << (i & 31);
    setHash ^= zobrist[i]!;
  };

  // An unknown put is optional, but while some read of its value is still
  // unplaced we cannot tell whether it will be needed. Once every such read has
  // been linearized it is "dead": taking effect could only hide the register's
  // real value from later reads, so it is placed as a no-op ("never happened").
  // Forcing that choice, rather than also exploring "apply it now", lets the
  // applied-and-overwritten and never-applied paths meet in the memo.
  const isUnknownPut = ops.map((op) => op.kind === "put" && !op.ok);
  const unplacedReaders = new Int32Array(valueOf.length);
  ops.forEach((op, i) => {
    if (!isPut[i]) unplacedReaders[operand[i]!]++;
  });

  type Placement = { call: Event; stateBefore: number; forcedNever: boolean };
  const stack: Placement[] = [];
  let state = 0;
  let explored = 0;
  // Where the search got furthest: the op it could not place, and the context.
  let stuck: Stuck | null = null;

  const place = (call: Event, nextState: number, forcedNever: boolean) => {
    const i = call.opIndex;
    if (!isPut[i]) unplacedReaders[operand[i]!]--;
    stack.push({ call, stateBefore: state, forcedNever });
    state = nextState;
    lift(call);
  };
  // Undoes placements until one with an untried alternative (skip it, try the
  // next candidate) is found; returns where to resume, or null if none is left.
  const backtrack = (): Event | null => {
    for (;;) {
      const top = stack.pop();
      if (top === undefined) return null;
      const i = top.call.opIndex;
      unlift(top.call);
      toggle(i);
      if (!isPut[i]) unplacedReaders[operand[i]!]++;
      state = top.stateBefore;
      if (!top.forcedNever) return top.call.next!;
    }
  };
  const giveUp = (): CheckResult => ({
    linearizable: "unknown",
    key,
    explanation:
      `key ${JSON.stringify(key)}: gave up after exploring ${maxStates} states ` +
      `(${ops.length} ops on this key, ${stack.length} linearized on the current path). ` +
      `The history has too much concurrency on one key to check; shorten it or raise maxStates.`,
  });
  const fail = (): CheckResult => ({ linearizable: false, key, explanation: explainFailure(key, ops, valueOf, stuck) });

  let event: Event | null = head.next;
  while (head.next !== null) {
    if (event === null) return fail(); // unreachable: a call is always followed by its own return
    const i = event.opIndex;
    if (event.isCall && isUnknownPut[i] && unplacedReaders[operand[i]!] === 0) {
      toggle(i);
      if (remember(state)) {
        if (++explored > maxStates) return giveUp();
        place(event, state, true);
        event = head.next;
        continue;
      }
      // This exact situation was already explored (and failed) via another order.
      toggle(i);
      event = backtrack();
      if (event === null) return fail();
    } else if (event.isCall) {
      if (isPut[i] || operand[i] === state) {
        const nextState = isPut[i] ? operand[i]! : state;
        toggle(i);
        if (remember(nextState)) {
          if (++explored > maxStates) return giveUp();
          place(event, nextState, false);
          event = head.next;
          continue;
        }
        // Already explored this exact situation via another order: nothing new down here.
        toggle(i);
      }
      event = event.next;
    } else {
      // This op's return has arrived but it was never linearized: dead end.
      if (stuck === null || stack.length > stuck.depth) {
        stuck = { opIndex: i, depth: stack.length, state, lastWrite: lastRealWrite(stack, isPut) };
      }
      event = backtrack();
      if (event === null) return fail();
    }
  }
  return null;
}

type Stuck = { opIndex: number; depth: number; state: number; lastWrite: number | null };

/** The most recent put on the path that actually changed the register (for explanations). */
function lastRealWrite(stack: { call: Event; forcedNever: boolean }[], isPut: boolean[]): number | null {
  for (let k = stack.length - 1; k >= 0; k--) {
    const p = stack[k]!;
    if (isPut[p.call.opIndex] && !p.forcedNever) return p.call.opIndex;
  }
  return null;
}

/** Builds the sentinel-headed, time-ordered list of call and return events. */
function buildEventList(ops: Operation[]): Event {
  const events: Event[] = [];
  ops.forEach((op, opIndex) => {
    const ret: Event = { isCall: false, opIndex, time: op.ok ? op.ret : Infinity, prev: null, next: null, returnEvent: null };
    const call: Event = { isCall: true, opIndex, time: op.call, prev: null, next: null, returnEvent: ret };
    events.push(call, ret);
  });
  // Calls before returns at equal times (see TIES above), then by op order for determinism.
  // Explicit comparisons rather than subtraction: Infinity - Infinity is NaN.
  events.sort((a, b) => {
    if (a.time !== b.time) return a.time < b.time ? -1 : 1;
    if (a.isCall !== b.isCall) return a.isCall ? -1 : 1;
    return a.opIndex - b.opIndex;
  });
  const head: Event = { isCall: false, opIndex: -1, time: -Infinity, prev: null, next: null, returnEvent: null };
  let prev = head;
  for (const e of events) {
    prev.next = e;
    e.prev = prev;
    prev = e;
  }
  return head;
}

/** Removes an op's call and return events from the list; their own links are kept for unlift. */
function lift(call: Event): void {
  call.prev!.next = call.next;
  if (call.next) call.next.prev = call.prev;
  const ret = call.returnEvent!;
  ret.prev!.next = ret.next;
  if (ret.next) ret.next.prev = ret.prev;
}

/** Exact inverse of lift; valid because lifts and unlifts happen in stack order. */
function unlift(call: Event): void {
  const ret = call.returnEvent!;
  ret.prev!.next = ret;
  if (ret.next) ret.next.prev = ret;
  call.prev!.next = call;
  if (call.next) call.next.prev = call;
}

function sameBits(a: Uint32Array, b: Uint32Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Tiny deterministic PRNG so the Zobrist table (and thus behaviour) is reproducible. */
function xorshift32(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

// ---------------------------------------------------------------------------
// Explanations

function formatValue(v: string | null | undefined): string {
  return v === null || v === undefined ? "null (missing)" : JSON.stringify(v);
}

function formatTime(t: number): string {
  return Number.isFinite(t) ? `${t.toFixed(3)}ms` : "never (outcome unknown)";
}

function describeOp(op: Operation): string {
  const what = op.kind === "put" ? `put ${formatValue(op.value)}` : `get -> ${formatValue(op.output)}`;
  return `${what} by client ${op.client} [call ${formatTime(op.call)}, return ${formatTime(op.ok ? op.ret : Infinity)}]`;
}

function explainFailure(
  key: string,
  ops: Operation[],
  valueOf: (string | null)[],
  stuck: Stuck | null,
): string {
  if (stuck === null) return `key ${JSON.stringify(key)}: not linearizable`;
  const op = ops[stuck.opIndex]!;
  const lines = [
    `key ${JSON.stringify(key)} is not linearizable.`,
    `  Stuck on: ${describeOp(op)}`,
    op.kind === "get"
      ? `  No order of the operations lets this read return ${formatValue(op.output)} between its call and return.`
      : `  No order of the operations lets this write take effect between its call and return.`,
    `  Furthest progress: ${stuck.depth} of ${ops.length} ops on this key linearized; the register then held ${formatValue(valueOf[stuck.state])}` +
      (stuck.lastWrite === null ? " (its initial value)." : `, written by ${describeOp(ops[stuck.lastWrite]!)}.`),
  ];
  return lines.join("\n");
}
