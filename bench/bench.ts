/**
 * raftkv benchmarks: prints the figures the issues ask for. Run after `bun run build.ts`:
 *   bun run bench/bench.ts [all|clt|election|failover|catchup|throughput]
 * Every figure comes from real `svr` processes on loopback; nothing here is asserted.
 *
 *   clt         wall time of one `clt` PUT (median and p90 of 100, process start to exit)
 *   election    time from starting 3 servers (no --leader) to a leader answering (median of 5)
 *   failover    time from SIGKILL of the leader to a new leader answering (median of 10)
 *   catchup     time for a follower that missed 10,000 entries to hold the last one, from
 *               the leader's log and from a snapshot
 *   throughput  PUT and linearizable GET ops/s and latency percentiles, 3 servers
 */
import { KvsClient } from "../src/client/client";
import { KvsStatus } from "../src/wire/proto";
import { clt, requireBuild, TestCluster, waitFor } from "../test/support/cluster";

const which = process.argv[2] ?? "all";
requireBuild();

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
const ms = (value: number) => `${value.toFixed(1)} ms`;

/** Polls every server with a GET of a missing key until one answers as leader (NO_KEY). */
async function leaderAnswering(cluster: TestCluster, clients: KvsClient[], timeoutMs: number): Promise<number> {
  return waitFor(
    "a leader",
    async () => {
      const replies = await Promise.all(
        clients.map((client, id) =>
          cluster.isRunning(id) ? client.get("__bench_missing__").catch(() => null) : null,
        ),
      );
      const leader = replies.findIndex((reply) => reply?.status === KvsStatus.NO_KEY);
      return leader >= 0 ? leader : undefined;
    },
    timeoutMs,
    5,
  );
}

function expect200(reply: { status: KvsStatus; error: string }): void {
  if (reply.status !== KvsStatus.OK) throw new Error(`request failed: ${reply.error}`);
}

function singleClients(cluster: TestCluster): KvsClient[] {
  return cluster.clientPorts.map((port) => new KvsClient([`127.0.0.1:${port}`], { timeoutMs: 500, followLeader: false }));
}

async function benchClt(): Promise<void> {
  const cluster = await TestCluster.create({ size: 3, leader: 0 });
  cluster.startAll();
  try {
    const leaderPort = cluster.clientPorts[await cluster.findLeader(5000)]!;
    const times: number[] = [];
    for (let i = 0; i < 100; i++) {
      const started = performance.now();
      const result = await clt(["-p", leaderPort, "-o", "PUT", "-k", `k${i}`, "-v", `v${i}`]);
      times.push(performance.now() - started);
      if (result.code !== 0) throw new Error(`clt PUT failed: ${result.stderr}`);
    }
    console.log(`clt PUT wall time: median ${ms(percentile(times, 50))}, p90 ${ms(percentile(times, 90))} (100 runs)`);
  } finally {
    await cluster.stop();
  }
}

async function benchElection(): Promise<void> {
  const times: number[] = [];
  for (let run = 0; run < 5; run++) {
    const cluster = await TestCluster.create({ size: 3 });
    const clients = singleClients(cluster);
    const started = performance.now();
    cluster.startAll();
    try {
      await leaderAnswering(cluster, clients, 10_000);
      times.push(performance.now() - started);
    } finally {
      clients.forEach((c) => c.close());
      await cluster.stop();
    }
  }
  console.log(`first leader after start (3 servers, process start included): median ${ms(percentile(times, 50))}, max ${ms(Math.max(...times))} (5 runs)`);
}

async function benchFailover(): Promise<void> {
  const cluster = await TestCluster.create({ size: 3 });
  const clients = singleClients(cluster);
  cluster.startAll();
  const times: number[] = [];
  try {
    for (let run = 0; run < 10; run++) {
      const leader = await leaderAnswering(cluster, clients, 10_000);
      // Make sure every server is up and following before the kill.
      await Bun.sleep(300);
      const started = performance.now();
      await cluster.kill(leader, "SIGKILL");
      await leaderAnswering(cluster, clients, 10_000);
      times.push(performance.now() - started);
      cluster.start(leader);
    }
    console.log(`failover after SIGKILL of the leader: median ${ms(percentile(times, 50))}, max ${ms(Math.max(...times))} (10 runs)`);
  } finally {
    clients.forEach((c) => c.close());
    await cluster.stop();
  }
}

/** Runs `total` operations with `concurrency` in flight; returns ops/s and latencies. */
async function load(
  concurrency: number,
  total: number,
  operation: (i: number) => Promise<unknown>,
): Promise<{ opsPerSecond: number; latencies: number[] }> {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const i = next++;
        const t = performance.now();
        await operation(i);
        latencies.push(performance.now() - t);
      }
    }),
  );
  return { opsPerSecond: (total / (performance.now() - started)) * 1000, latencies };
}

async function benchCatchup(): Promise<void> {
  // From the leader's log (the default keeps 20,000 entries), then from a snapshot (the leader
  // compacts every 2,000 entries, so most of the 10,000 are gone from its log).
  await catchup([], "from the log");
  await catchup(["--snapshot-entries", "2000"], "from a snapshot");
}

async function catchup(extraArgs: string[], how: string): Promise<void> {
  const cluster = await TestCluster.create({ size: 3, leader: 0, extraArgs });
  cluster.startAll();
  const client = cluster.client(30_000);
  try {
    await cluster.findLeader(5000);
    await cluster.kill(2, "SIGKILL");
    await load(64, 10_000, async (i) => expect200(await client.put(`catchup${i}`, `value${i}`)));
    // A last write after all of them: the follower applies in log order, so once it holds this
    // key it holds the 10,000 before it.
    expect200(await client.put("catchup-final", "done"));
    const started = performance.now();
    cluster.start(2);
    const follower = new KvsClient([cluster.clientAddress(2)], { timeoutMs: 1000, followLeader: false });
    await waitFor(
      "the follower to catch up",
      async () => (await follower.directGet("catchup-final").catch(() => null))?.status === KvsStatus.OK,
      60_000,
      5,
    );
    const elapsed = performance.now() - started;
    let missing = 0;
    for (let i = 0; i < 10_000; i++) {
      if ((await follower.directGet(`catchup${i}`)).status !== KvsStatus.OK) missing++;
    }
    follower.close();
    console.log(`catch-up of a follower that missed 10,000 entries, ${how}: ${ms(elapsed)} from its restart, process start included (${missing} of 10,000 keys missing afterwards)`);
  } finally {
    client.close();
    await cluster.stop();
  }
}

async function benchThroughput(): Promise<void> {
  const cluster = await TestCluster.create({ size: 3, leader: 0 });
  cluster.startAll();
  const clients = Array.from({ length: 4 }, () => cluster.client(10_000));
  try {
    await cluster.findLeader(5000);
    for (const concurrency of [1, 64]) {
      const total = concurrency === 1 ? 1000 : 20_000;
      const puts = await load(concurrency, total, (i) => clients[i % clients.length]!.put(`key${i % 1000}`, `value${i}`));
      const gets = await load(concurrency, total, (i) => clients[i % clients.length]!.get(`key${i % 1000}`));
      const line = (name: string, r: { opsPerSecond: number; latencies: number[] }) =>
        `${name}: ${r.opsPerSecond.toFixed(0)} ops/s, p50 ${ms(percentile(r.latencies, 50))}, p99 ${ms(percentile(r.latencies, 99))}`;
      console.log(`3 servers, ${concurrency} in flight: ${line("PUT", puts)}; ${line("GET (linearizable)", gets)}`);
    }
  } finally {
    clients.forEach((c) => c.close());
    await cluster.stop();
  }
}

const benches: Record<string, () => Promise<void>> = {
  clt: benchClt,
  election: benchElection,
  failover: benchFailover,
  catchup: benchCatchup,
  throughput: benchThroughput,
};
for (const [name, run] of Object.entries(benches)) {
  if (which === "all" || which === name) await run();
}
process.exit(0);
