/**
 * Unit tests for the linearizability checker in test/support/linearizability.ts.
 *
 * Hand-made histories pin down the semantics (including unknown outcomes); the
 * randomized tests generate histories from a real sequential execution, so they
 * are linearizable by construction, then corrupt one read in a way that is
 * guaranteed to be a violation. Times are in ms; only their order matters.
 */
import { describe, test, expect } from "bun:test";
import { checkLinearizable, type Operation } from "./support/linearizability.ts";
import { seededRandom } from "./support/random.ts";

// --- history builders -------------------------------------------------------

function put(client: number, key: string, value: string, call: number, ret: number): Operation {
  return { client, kind: "put", key, value, call, ret, ok: true };
}
function get(client: number, key: string, output: string | null, call: number, ret: number): Operation {
  return { client, kind: "get", key, output, call, ret, ok: true };
}
/** A put whose reply never arrived: it may take effect any time after `call`, or never. */
function unknownPut(client: number, key: string, value: string, call: number): Operation {
  return { client, kind: "put", key, value, call, ret: Infinity, ok: false };
}
/** A get whose reply never arrived: carries no information. */
function unknownGet(client: number, key: string, call: number): Operation {
  return { client, kind: "get", key, call, ret: Infinity, ok: false };
}

function expectLinearizable(history: Operation[]) {
  const result = checkLinearizable(history);
  if (result.linearizable !== true) throw new Error(`expected linearizable, got:\n${"explanation" in result ? result.explanation : ""}`);
  return result;
}
function expectViolation(history: Operation[]) {
  const result = checkLinearizable(history);
  if (result.linearizable !== false) throw new Error(`expected a violation, got ${JSON.stringify(result)}`);
  return result;
}

// --- hand-made histories that are linearizable ------------------------------

describe("linearizable histories", () => {
  test("an empty history is linearizable", () => {
    expect(checkLinearizable([])).toEqual({ linearizable: true, checkedOps: 0 });
  });

  test("sequential writes and reads that see the latest write are linearizable", () => {
    const result = expectLinearizable([
      put(1, "x", "a", 0, 1),
      get(2, "x", "a", 2, 3),
      put(2, "x", "b", 4, 5),
      get(1, "x", "b", 6, 7),
      get(3, "x", "b", 8, 9),
    ]);
    expect(result.checkedOps).toBe(5);
  });

  test("reads of a key that was never written return null", () => {
    expectLinearizable([get(1, "x", null, 0, 1), put(1, "y", "a", 2, 3), get(2, "x", null, 4, 5)]);
  });

  test("a read overlapping a write may see the old value", () => {
    expectLinearizable([put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 10), get(2, "x", "a", 3, 4)]);
  });

  test("a read overlapping a write may see the new value", () => {
    expectLinearizable([put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 10), get(2, "x", "b", 3, 4)]);
  });

  test("a read that starts before a write and ends after it may see the new value", () => {
    expectLinearizable([get(2, "x", "a", 0, 10), put(1, "x", "a", 2, 3)]);
  });

  test("concurrent writes may be ordered either way, but every reader must agree", () => {
    expectLinearizable([
      put(1, "x", "a", 0, 10),
      put(2, "x", "b", 0, 10),
      get(3, "x", "b", 11, 12),
      get(4, "x", "b", 13, 14),
    ]);
    expectLinearizable([
      put(1, "x", "a", 0, 10),
      put(2, "x", "b", 0, 10),
      get(3, "x", "a", 11, 12),
    ]);
  });

  test("an unknown put may take effect long after the client gave up", () => {
    expectLinearizable([
      put(1, "x", "a", 0, 1),
      unknownPut(1, "x", "b", 2), // client timed out; Raft commits it later
      get(2, "x", "a", 5, 6),
      get(2, "x", "a", 7, 8),
      get(3, "x", "b", 100, 101),
      get(2, "x", "b", 102, 103),
    ]);
  });

  test("an unknown put may never take effect", () => {
    expectLinearizable([
      put(1, "x", "a", 0, 1),
      unknownPut(1, "x", "b", 2),
      get(2, "x", "a", 5, 6),
      get(2, "x", "a", 100, 101),
    ]);
  });

  test("an unknown put whose value was read can be overwritten and later reads see the overwrite", () => {
    expectLinearizable([
      unknownPut(1, "x", "a", 0),
      get(2, "x", "a", 5, 6),
      put(3, "x", "b", 7, 8),
      get(2, "x", "b", 9, 10),
    ]);
  });

  test("a get whose outcome is unknown is ignored", () => {
    const result = expectLinearizable([put(1, "x", "a", 0, 1), unknownGet(2, "x", 2), get(2, "x", "a", 3, 4)]);
    expect(result.checkedOps).toBe(2);
  });

  test("operations whose return and call share a timestamp are treated as concurrent", () => {
    // Timer resolution cannot prove which came first, so this must not be reported.
    expectLinearizable([put(1, "x", "a", 0, 5), get(2, "x", null, 5, 6)]);
  });

  test("keys are independent registers", () => {
    expectLinearizable([
      put(1, "x", "a", 0, 1),
      put(1, "y", "b", 2, 3),
      get(2, "x", "a", 4, 5),
      get(2, "y", "b", 4, 5),
      get(3, "z", null, 4, 5),
    ]);
  });

  test("the initial register value can be configured", () => {
    expect(checkLinearizable([get(1, "x", "seed", 0, 1)], { initial: "seed" }).linearizable).toBe(true);
    expect(checkLinearizable([get(1, "x", null, 0, 1)], { initial: "seed" }).linearizable).toBe(false);
  });
});

// --- hand-made histories that are not linearizable --------------------------

describe("non-linearizable histories", () => {
  test("a read that returns an older value after a completed write is not linearizable", () => {
    const result = expectViolation([put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 3), get(2, "x", "a", 4, 5)]);
    expect(result.key).toBe("x");
    // The explanation names the key and the read that could not be placed, with its times.
    expect(result.explanation).toContain('key "x"');
    expect(result.explanation).toContain('get -> "a" by client 2 [call 4.000ms, return 5.000ms]');
  });

  test("a read that misses a completed write to a missing key is not linearizable", () => {
    expectViolation([put(1, "x", "a", 0, 1), get(2, "x", null, 2, 3)]);
  });

  test("a read of a value that was never written is not linearizable", () => {
    const result = expectViolation([put(1, "x", "a", 0, 1), get(2, "x", "zzz", 2, 3)]);
    expect(result.explanation).toContain('"zzz"');
  });

  test("two sequential reads that see the new value and then the old one are not linearizable", () => {
    // The write overlaps both reads, but once a read has seen "b" no later read may see "a".
    const result = expectViolation([
      put(1, "x", "a", 0, 1),
      put(1, "x", "b", 2, 20),
      get(2, "x", "b", 3, 4),
      get(2, "x", "a", 5, 6),
    ]);
    expect(result.explanation).toContain("call 5.000ms");
  });

  test("a read that sees a write which started after the read returned is not linearizable", () => {
    expectViolation([get(2, "x", "a", 0, 1), put(1, "x", "a", 2, 3)]);
  });

  test("an unknown put cannot take effect before it was sent", () => {
    expectViolation([get(2, "x", "a", 0, 1), unknownPut(1, "x", "a", 2)]);
  });

  test("concurrent writes observed in different orders by sequential readers are not linearizable", () => {
    expectViolation([
      put(1, "x", "a", 0, 10),
      put(2, "x", "b", 0, 10),
      get(3, "x", "a", 11, 12),
      get(4, "x", "b", 13, 14),
    ]);
  });

  test("a violation on one key is reported even when other keys are fine", () => {
    const result = expectViolation([
      put(1, "good", "a", 0, 1),
      get(2, "good", "a", 2, 3),
      put(1, "bad", "a", 0, 1),
      get(2, "bad", null, 2, 3),
    ]);
    expect(result.key).toBe("bad");
  });
});

// --- search budget ------------------------------------------------------------

describe("search budget", () => {
  test("a search that exceeds maxStates reports unknown rather than a verdict", () => {
    // Many fully concurrent writes make the number of orders explode.
    const history: Operation[] = [];
    for (let c = 0; c < 12; c++) history.push(put(c, "x", `v${c}`, 0, 100));
    history.push(get(99, "x", "nope", 101, 102));
    const result = checkLinearizable(history, { maxStates: 50 });
    expect(result.linearizable).toBe("unknown");
    if (result.linearizable === "unknown") {
      expect(result.key).toBe("x");
      expect(result.explanation).toContain("50 states");
    }
  });
});

// --- randomized histories from a real sequential execution ------------------

const prng = seededRandom;

type SimulationOptions = { ops: number; keys: number; clients: number; unknownRate: number };

/**
 * Runs a real in-memory map where every operation takes effect at one random
 * instant inside its [call, ret] window, so the recorded history is linearizable
 * by construction. Each client issues one op at a time with random think time and
 * latency, so ops overlap across clients. Some ops have unknown outcomes: an
 * unknown put still takes effect (possibly after the client moved on) or never
 * does; an unknown get still happens but its output is lost.
 */
function simulate(seed: number, opts: SimulationOptions): Operation[] {
  const random = prng(seed);
  const pick = (n: number) => Math.floor(random() * n);
  type Simulated = { op: Operation; effectAt: number };
  const simulated: Simulated[] = [];
  const clock = new Array<number>(opts.clients).fill(0);
  for (let n = 0; n < opts.ops; n++) {
    const client = n % opts.clients;
    const call = clock[client]! + random() * 2;
    const latency = 0.2 + random() * 3;
    const ret = call + latency;
    clock[client] = ret; // the client waits for the reply (or its timeout) before its next op
    const key = `k${pick(opts.keys)}`;
    const unknown = random() < opts.unknownRate;
    if (random() < 0.5) {
      const op: Operation = { client, kind: "put", key, value: `c${client}-${n}`, call, ret, ok: true };
      let effectAt = call + random() * latency;
      if (unknown) {
        op.ok = false;
        op.ret = Infinity;
        // Half never apply; the rest apply at some point, possibly well after the timeout.
        effectAt = random() < 0.5 ? Infinity : call + random() * 20;
      }
      simulated.push({ op, effectAt });
    } else {
      const op: Operation = { client, kind: "get", key, call, ret, ok: !unknown };
      if (unknown) op.ret = Infinity;
      simulated.push({ op, effectAt: call + random() * latency });
    }
  }
  const store = new Map<string, string>();
  for (const { op, effectAt } of [...simulated].sort((a, b) => a.effectAt - b.effectAt)) {
    if (effectAt === Infinity) continue;
    if (op.kind === "put") store.set(op.key, op.value!);
    else if (op.ok) op.output = store.get(op.key) ?? null;
  }
  return simulated.map((s) => s.op);
}

/**
 * Makes one completed get return a value that was definitely overwritten before
 * it started: some put P1 returned before another put P2 was called, and P2
 * returned before the get was called. Since values are unique, no order can
 * make the get see P1's value. Returns false if the history has no such triple.
 */
function corruptWithStaleRead(history: Operation[], random: () => number): boolean {
  const completedPuts = history.filter((op) => op.kind === "put" && op.ok);
  const gets = history.filter((op) => op.kind === "get" && op.ok);
  const start = Math.floor(random() * gets.length);
  for (let k = 0; k < gets.length; k++) {
    const read = gets[(start + k) % gets.length]!;
    const before = completedPuts.filter((p) => p.key === read.key && p.ret < read.call);
    for (const overwriter of before) {
      const stale = before.find((p) => p.ret < overwriter.call);
      if (stale) {
        read.output = stale.value!;
        return true;
      }
    }
  }
  return false;
}

describe("randomized histories", () => {
  const seeds = [1, 2, 3, 42, 1234, 99991];
  const shape = { ops: 300, keys: 3, clients: 4, unknownRate: 0.05 };

  for (const seed of seeds) {
    test(`a history recorded from a real sequential execution is linearizable (seed ${seed})`, () => {
      expectLinearizable(simulate(seed, shape));
    });

    test(`the same history with one read returning an overwritten value is not linearizable (seed ${seed})`, () => {
      const history = simulate(seed, shape);
      expect(corruptWithStaleRead(history, prng(seed ^ 0xabcdef))).toBe(true);
      expectViolation(history);
    });

    test(`the same history with one read returning a value never written is not linearizable (seed ${seed})`, () => {
      const history = simulate(seed, shape);
      const random = prng(seed + 7);
      const gets = history.filter((op) => op.kind === "get" && op.ok);
      gets[Math.floor(random() * gets.length)]!.output = "never-written";
      expectViolation(history);
    });
  }

  test("highly concurrent histories with many unknown outcomes are still checked correctly", () => {
    for (const seed of [5, 6, 7]) {
      const history = simulate(seed, { ops: 400, keys: 1, clients: 8, unknownRate: 0.2 });
      expectLinearizable(history);
      expect(corruptWithStaleRead(history, prng(seed))).toBe(true);
      expectViolation(history);
    }
  });
});

// --- performance sanity -------------------------------------------------------

describe("performance", () => {
  test("a 2,000-op history over 5 keys with 5 concurrent clients is checked", () => {
    const history = simulate(2024, { ops: 2000, keys: 5, clients: 5, unknownRate: 0.02 });
    const started = performance.now();
    const result = checkLinearizable(history);
    const elapsed = performance.now() - started;
    console.log(`linearizability: checked ${history.length} ops in ${elapsed.toFixed(1)}ms`);
    expect(result.linearizable).toBe(true);
  });
});
