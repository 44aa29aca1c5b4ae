/**
 * Issue #3: servers killed (SIGKILL or SIGTERM) and restarted at any moment, the leader too,
 * lose no acknowledged write. Servers here run with stdout and stderr piped and never read, as
 * under a parent that ignores them.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { KvsClient } from "../../src/client/client";
import { KvsStatus } from "../../src/wire/proto";
import { clt, requireBuild, SVR, TestCluster, waitFor } from "../support/cluster";

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

/** Checks that every server's local store holds every acknowledged write. */
async function expectEverywhere(cluster: TestCluster, acknowledged: Map<string, string>, timeoutMs: number) {
  const client = cluster.client();
  try {
    await waitFor(
      "every acknowledged write on every server",
      async () => {
        for (let id = 0; id < cluster.options.size; id++) {
          for (const [key, value] of acknowledged) {
            const reply = await client.directGet(key, cluster.clientAddress(id));
            if (reply.status !== KvsStatus.OK || reply.value !== value) return false;
          }
        }
        return true;
      },
      timeoutMs,
      100,
    );
  } finally {
    client.close();
  }
}

describe("crashes and restarts", () => {
  test("5 servers, 100 writes while servers (the leader too) are killed and restarted: nothing acknowledged is lost", async () => {
    requireBuild();
    cluster = await TestCluster.create({ size: 5, output: "pipe", extraArgs: ["--log-level", "info"] });
    cluster.startAll();
    await cluster.findLeader(5000);
    const acknowledged = new Map<string, string>();
    const client = cluster.client(15_000);
    let kills = 0;
    try {
      for (let op = 0; op < 100; op++) {
        if (op % 8 === 0) {
          const down = cluster.processes.flatMap((p, id) => (p ? [] : [id]));
          if (down.length < 2 && Math.random() < 0.7) {
            // Kill the leader half of the time, someone at random otherwise.
            const leader = op % 16 === 0 ? await cluster.findLeader(5000).catch(() => undefined) : undefined;
            const up = cluster.processes.flatMap((p, id) => (p ? [id] : []));
            const victim = leader ?? up[Math.floor(Math.random() * up.length)]!;
            await cluster.kill(victim, kills++ % 2 === 0 ? "SIGKILL" : "SIGTERM");
          } else if (down.length > 0) {
            cluster.start(down[Math.floor(Math.random() * down.length)]!);
          }
        }
        const key = `k${op % 37}`;
        const value = `v${op}`;
        // A majority is always up, so every write must succeed (the client follows the leader).
        const reply = await client.put(key, value);
        expect(reply.status).toBe(KvsStatus.OK);
        acknowledged.set(key, value);
      }
    } finally {
      client.close();
    }
    for (let id = 0; id < 5; id++) if (!cluster.isRunning(id)) cluster.start(id);
    await expectEverywhere(cluster, acknowledged, 10_000);
    expect(kills).toBeGreaterThan(3);
  });

  test("all servers killed at once with SIGKILL and restarted keep every acknowledged write", async () => {
    requireBuild();
    cluster = await TestCluster.create({ size: 3, output: "pipe" });
    cluster.startAll();
    await cluster.findLeader(5000);
    const acknowledged = new Map<string, string>();
    const client = cluster.client();
    try {
      for (let i = 0; i < 50; i++) {
        expect((await client.put(`key${i}`, `value${i}`)).status).toBe(KvsStatus.OK);
        acknowledged.set(`key${i}`, `value${i}`);
      }
    } finally {
      client.close();
    }
    await Promise.all([0, 1, 2].map((id) => cluster!.kill(id, "SIGKILL")));
    cluster.startAll();
    const leader = await cluster.findLeader(5000);
    // Through the leader (linearizable) and on every server's local store.
    const read = await clt(["-p", cluster.clientPorts[leader]!, "-o", "GET", "-k", "key49"]);
    expect(read).toMatchObject({ code: 0, stdout: "value49\n" });
    await expectEverywhere(cluster, acknowledged, 5000);
  });

  test("a restarted server with the same arguments finds its state; a new cluster in the same directory does not", async () => {
    requireBuild();
    cluster = await TestCluster.create({ size: 3, leader: 0 });
    cluster.startAll();
    await waitFor("server 0 to lead", async () => (await clt(["-p", cluster!.clientPorts[0]!, "-o", "GET", "-k", "x"])).code === 3, 5000);
    expect((await clt(["-p", cluster.clientPorts[0]!, "-o", "PUT", "-k", "kept", "-v", "yes"])).code).toBe(0);
    await waitFor("replication to 2", async () => (await clt(["-p", cluster!.clientPorts[2]!, "-o", "DIRECT_GET", "-k", "kept"])).code === 0, 2000);
    await cluster.kill(2, "SIGTERM");
    cluster.start(2);
    // It reads the value from its own disk as soon as it serves again.
    const reread = await waitFor(
      "server 2 to serve again",
      async () => {
        const result = await clt(["-p", cluster!.clientPorts[2]!, "-o", "DIRECT_GET", "-k", "kept"]);
        return result.code === 4 ? undefined : result; // 4: not listening yet
      },
      3000,
    );
    expect(reread).toMatchObject({ code: 0, stdout: "yes\n" });
    // Another cluster (other Raft ports) started in the same working directory starts empty.
    const other = await TestCluster.create({ size: 1 });
    try {
      const proc = Bun.spawn([SVR, ...other.argsOf(0)], { cwd: cluster.dir, stdout: "ignore", stderr: "ignore" });
      try {
        await waitFor("the one-server cluster to lead", async () => (await clt(["-p", other.clientPorts[0]!, "-o", "GET", "-k", "x"])).code === 3, 5000);
        expect((await clt(["-p", other.clientPorts[0]!, "-o", "DIRECT_GET", "-k", "kept"])).code).toBe(3);
      } finally {
        proc.kill("SIGKILL");
        await proc.exited;
      }
    } finally {
      await other.stop();
    }
  });

  test("a server whose peers are all down still starts, serves DIRECT_GET and refuses the rest", async () => {
    requireBuild();
    cluster = await TestCluster.create({ size: 3 });
    cluster.start(1);
    const port = cluster.clientPorts[1]!;
    const direct = await waitFor(
      "server 1 to serve",
      async () => {
        const result = await clt(["-p", port, "-o", "DIRECT_GET", "-k", "x"]);
        return result.code === 4 ? undefined : result;
      },
      3000,
    );
    expect(direct.code).toBe(3); // served from its (empty) local store
    // Several election timeouts later it still has no leader and says so quickly.
    await Bun.sleep(1000);
    for (const op of ["GET", "PUT"]) {
      const started = Date.now();
      const result = await clt(["-p", port, "-o", op, "-k", "x", "-v", "1", "--timeout", "3000"]);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain("not the leader");
      expect(Date.now() - started).toBeLessThan(3000);
    }
  });

  test("a leader that cannot reach a majority answers within the client's timeout, with an error", async () => {
    requireBuild();
    cluster = await TestCluster.create({ size: 3, leader: 0 });
    cluster.startAll();
    const port = cluster.clientPorts[0]!;
    await waitFor("server 0 to lead", async () => (await clt(["-p", port, "-o", "GET", "-k", "x"])).code === 3, 5000);
    await Promise.all([cluster.kill(1, "SIGKILL"), cluster.kill(2, "SIGKILL")]);
    for (const op of ["PUT", "GET"]) {
      const started = Date.now();
      const result = await clt(["-p", port, "-o", op, "-k", "x", "-v", "1", "--timeout", "1500"]);
      // Still leader and waiting (4: timeout), or already stepped down (2): never a hang or OK.
      expect([2, 4]).toContain(result.code);
      expect(result.stderr.trim()).not.toBe("");
      expect(Date.now() - started).toBeLessThan(2500);
    }
  });

  test("SIGTERM stops a server promptly and frees its ports", async () => {
    requireBuild();
    cluster = await TestCluster.create({ size: 3 });
    cluster.startAll();
    await cluster.findLeader(5000);
    const started = Date.now();
    expect(await cluster.kill(1, "SIGTERM")).toBe(0);
    expect(Date.now() - started).toBeLessThan(2000);
    // The same ports can be bound again at once.
    cluster.start(1);
    await waitFor(
      "server 1 to answer again",
      async () => (await clt(["-p", cluster!.clientPorts[1]!, "-o", "DIRECT_GET", "-k", "x"])).code === 3,
      3000,
    );
  });
});

describe("misconfiguration", () => {
  test("a server given a different -r list is refused by the others and says why; nothing is mixed", async () => {
    requireBuild();
    const extraPort = 1; // never listened on: server 2 believes in a fourth server
    cluster = await TestCluster.create({
      size: 3,
      output: "pipe",
      raftListFor: (id, ports) => (id === 2 ? [...ports, extraPort] : ports).join(","),
    });
    cluster.startAll();
    // Read server 2's stderr as it comes, to see it report the mismatch.
    let stderr = "";
    const reading = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of cluster!.processes[2]!.stderr as ReadableStream<Uint8Array>) {
        stderr += decoder.decode(chunk);
      }
    })();
    const client = new KvsClient([cluster.clientAddress(0), cluster.clientAddress(1)], { timeoutMs: 10_000, followLeader: true });
    try {
      // Servers 0 and 1 are a majority of the real three-server cluster: they serve.
      expect((await client.put("shared", "only in the real cluster")).status).toBe(KvsStatus.OK);
      // The leader's AppendEntries to server 2 are refused, and server 2 says why...
      await waitFor("server 2 to report the mismatch", () => stderr.includes("cluster mismatch"), 5000);
      // ...and none of the real cluster's data reached it.
      expect((await client.directGet("shared", cluster.clientAddress(2))).status).toBe(KvsStatus.NO_KEY);
    } finally {
      client.close();
    }
    await cluster.kill(2, "SIGTERM");
    await reading;
    expect(stderr).toContain("4 servers");
  });
});
