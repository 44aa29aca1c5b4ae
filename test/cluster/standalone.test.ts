/**
 * Issue #2, point 3: the executables carry everything they need. Copied alone into an empty
 * directory (no node_modules, no proto/, repo not on the path, a bare environment), they still
 * form a working cluster.
 */
import { afterAll, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLT, freePorts, requireBuild, SVR, waitFor } from "../support/cluster";

const dir = mkdtempSync(join(tmpdir(), "raftkv-standalone-"));
const servers: ReturnType<typeof Bun.spawn>[] = [];

afterAll(async () => {
  for (const server of servers) server.kill("SIGKILL");
  await Promise.all(servers.map((server) => server.exited));
  rmSync(dir, { recursive: true, force: true });
});

test("svr and clt copied alone to an empty directory run a cluster", async () => {
  requireBuild();
  copyFileSync(SVR, join(dir, "svr"));
  copyFileSync(CLT, join(dir, "clt"));
  expect(readdirSync(dir).sort()).toEqual(["clt", "svr"]);
  // Nothing from the build machine: no PATH to the repo, no NODE_PATH, only a scratch TMPDIR.
  const env = { PATH: "/usr/bin:/bin", HOME: dir, TMPDIR: dir };
  const [r0, r1, r2, c0, c1, c2] = await freePorts(6);
  const raft = `${r0},${r1},${r2}`;
  [c0, c1, c2].forEach((port, id) => {
    const args = ["./svr", "-r", raft, "-i", String(id), "-p", String(port), ...(id === 0 ? ["--leader"] : [])];
    servers.push(Bun.spawn(args, { cwd: dir, env, stdout: "ignore", stderr: "ignore", stdin: "ignore" }));
  });
  const run = async (...args: string[]) => {
    const proc = Bun.spawn(["./clt", ...args], { cwd: dir, env, stdout: "pipe", stderr: "pipe" });
    const [stdout, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
    return { code, stdout };
  };
  await waitFor("server 0 to lead", async () => (await run("-p", String(c0), "-o", "GET", "-k", "x")).code === 3, 5000);
  expect((await run("-p", String(c0), "-o", "PUT", "-k", "where", "-v", "anywhere")).code).toBe(0);
  expect(await run("-p", String(c0), "-o", "GET", "-k", "where")).toEqual({ code: 0, stdout: "anywhere\n" });
  await waitFor(
    "the value on a follower",
    async () => (await run("-p", String(c2), "-o", "DIRECT_GET", "-k", "where")).stdout === "anywhere\n",
    2000,
  );
  // The servers made their data directories in the empty directory, named after the cluster.
  expect(readdirSync(dir).filter((name) => name.startsWith("raftkv-data-")).length).toBe(3);
});
