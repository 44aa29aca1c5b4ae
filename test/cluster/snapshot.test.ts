/**
 * Log compaction and snapshots: servers keep a bounded log, and a follower that missed entries
 * the leader has compacted away catches up from a snapshot of the leader's state machine.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { KvsStatus } from "../../src/wire/proto";
import { requireBuild, TestCluster, waitFor } from "../support/cluster";

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

describe("snapshots", () => {
  test("a follower that missed compacted entries catches up from a snapshot, and compacted logs survive restarts", async () => {
    requireBuild();
    // Compact every 40 entries, so that 300 writes leave the leader without most of them.
    cluster = await TestCluster.create({ size: 3, leader: 0, extraArgs: ["--snapshot-entries", "40"] });
    cluster.startAll();
    await cluster.findLeader(5000);
    const client = cluster.client();
    const expected = new Map<string, string>();
    const write = async (key: string, value: string) => {
      expect((await client.put(key, value)).status).toBe(KvsStatus.OK);
      expected.set(key, value);
    };
    const holdsEverything = async (id: number) => {
      for (const [key, value] of expected) {
        const reply = await client.directGet(key, cluster!.clientAddress(id));
        if (reply.value !== value) return false;
      }
      return true;
    };
    try {
      for (let i = 0; i < 20; i++) await write(`early${i}`, `v${i}`);
      await cluster.kill(2, "SIGKILL");
      for (let i = 0; i < 300; i++) await write(`late${i % 150}`, `w${i}`);
      await write("early0", "overwritten"); // an old key changed while server 2 was away
      cluster.start(2);
      await waitFor("server 2 to catch up from a snapshot", () => holdsEverything(2), 10_000, 100);

      // Every server restarts from its compacted log plus state machine.
      await Promise.all([0, 1, 2].map((id) => cluster!.kill(id, "SIGKILL")));
      cluster.startAll();
      await cluster.findLeader(5000);
      for (let i = 0; i < 10; i++) await write(`after${i}`, `x${i}`);
      for (const id of [0, 1, 2]) {
        await waitFor(`server ${id} to hold every write`, () => holdsEverything(id), 5000, 100);
      }
      const read = await client.get("early0");
      expect(read).toMatchObject({ status: KvsStatus.OK, value: "overwritten" });
    } finally {
      client.close();
    }
  });
});
