/**
 * Deterministic simulation of whole clusters with faults, checking Figure 3's safety properties
 * after every event. A failure prints its seed; replay it alone with
 *   SIM_SEED=<seed> bun test test/raft/simulation.test.ts
 * and run more seeds with SIM_SEEDS=<count> (default 1000).
 */
import { describe, expect, test } from "bun:test";
import { runRandomScenario } from "./sim";

const SEEDS = Number(process.env.SIM_SEEDS ?? 1000);
const ONLY_SEED = process.env.SIM_SEED === undefined ? undefined : Number(process.env.SIM_SEED);

describe("RaftCore under simulated faults", () => {
  test(
    `${ONLY_SEED === undefined ? SEEDS : 1} random seeds keep Figure 3's safety properties and recover once healed`,
    () => {
      const seeds = ONLY_SEED === undefined ? Array.from({ length: SEEDS }, (_, i) => i + 1) : [ONLY_SEED];
      const totals = { messages: 0, proposals: 0, readsServed: 0, readsFailed: 0, crashes: 0, snapshots: 0, applied: 0 };
      for (const seed of seeds) {
        let sim;
        try {
          sim = runRandomScenario(seed);
        } catch (error) {
          throw new Error(`seed ${seed} failed (replay: SIM_SEED=${seed} bun test ${import.meta.path}): ${error}`);
        }
        for (const key of Object.keys(sim.stats) as (keyof typeof sim.stats)[]) totals[key] += sim.stats[key];
        totals.applied += sim.appliedAt.size;
      }
      console.log(`simulation: ${seeds.length} seeds`, totals);
      // The runs must have exercised something: writes committed and reads confirmed.
      expect(totals.applied).toBeGreaterThan(seeds.length * 5);
      expect(totals.readsServed).toBeGreaterThan(0);
      if (seeds.length >= 100) expect(totals.snapshots).toBeGreaterThan(0);
    },
    600_000,
  );
});
