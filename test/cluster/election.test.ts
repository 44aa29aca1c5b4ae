/**
 * Issue #3: clusters with no --leader elect one by themselves, and replicate to every server.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { KvsStatus } from "../../src/wire/proto";
import { clt, randomText, requireBuild, TestCluster, waitFor } from "../support/cluster";

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

describe("leader election without --leader", () => {
  for (const size of [3, 5]) {
    test(`${size} servers elect a leader within 5 s, then replicate 100 PUTs to every server`, async () => {
      requireBuild();
      cluster = await TestCluster.create({ size });
      const started = Date.now();
      cluster.startAll();
      const leader = await cluster.findLeader(5000);
      console.log(`${size} servers: leader ${leader} found ${Date.now() - started} ms after start`);
      // Exactly one server answers as leader; every other one says "not leader".
      for (let id = 0; id < size; id++) {
        const probe = await clt(["-p", cluster.clientPorts[id]!, "-o", "GET", "-k", "missing", "-v", "0"]);
        expect(probe.code).toBe(id === leader ? 3 : 2);
      }
      const data = new Map<string, string>();
      while (data.size < 100) data.set(randomText(12), randomText(20));
      const client = cluster.client();
      try {
        for (const [key, value] of data) expect((await client.put(key, value)).status).toBe(KvsStatus.OK);
        await waitFor(
          "every key on every server",
          async () => {
            for (let id = 0; id < size; id++) {
              for (const [key, value] of data) {
                const reply = await client.directGet(key, cluster!.clientAddress(id));
                if (reply.value !== value) return false;
              }
            }
            return true;
          },
          2000,
          50,
        );
      } finally {
        client.close();
      }
    });
  }
});
