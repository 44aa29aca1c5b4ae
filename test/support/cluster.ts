/**
 * Process-level test support: runs the compiled `build/dev/svr` executables on loopback ports
 * and drives them with `build/dev/clt` or the client library. Build first (`bun run build.ts`);
 * the README's test command does.
 */
import type { Subprocess } from "bun";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { KvsClient } from "../../src/client/client";
import { GRPC_CHANNEL_OPTIONS } from "../../src/wire/channel-options";
import { type KvsReply, kvsService } from "../../src/wire/proto";

export const BUILD_DIR = resolve(import.meta.dir, "../../build/dev");
export const SVR = join(BUILD_DIR, "svr");
export const CLT = join(BUILD_DIR, "clt");

export function requireBuild(): void {
  if (!existsSync(SVR) || !existsSync(CLT)) {
    throw new Error(`${SVR} or ${CLT} is missing: run \`bun run build.ts\` first`);
  }
}

const usedPorts = new Set<number>();

/**
 * `count` free loopback ports below the ephemeral range (32768+ here), so that the kernel never
 * hands one of them out to an outgoing connection while a server is down.
 */
export async function freePorts(count: number): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < count) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (usedPorts.has(port)) continue;
    try {
      const probe = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
      probe.stop(true);
    } catch {
      continue;
    }
    usedPorts.add(port);
    ports.push(port);
  }
  return ports;
}

export interface CltResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `clt` with `args` and waits for it. */
export async function clt(args: (string | number)[]): Promise<CltResult> {
  const proc = Bun.spawn([CLT, ...args.map(String)], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}

/** Polls `condition` every `intervalMs` until it holds; throws with `what` after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  condition: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs: number,
  intervalMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const result = await condition();
      if (result !== undefined && result !== false) return result as T;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${lastError}` : ""}`);
    }
    await Bun.sleep(intervalMs);
  }
}

export interface ClusterOptions {
  size: number;
  /** Server started with --leader, if any. */
  leader?: number;
  /** The -r list server `id` is given; by default every server gets the real Raft ports. */
  raftListFor?: (id: number, raftPorts: number[]) => string;
  /** "pipe" leaves stdout/stderr piped and never read (a parent that ignores them). */
  output?: "ignore" | "pipe" | "inherit";
  extraArgs?: string[];
}

export class TestCluster {
  readonly dir: string;
  readonly raftPorts: number[];
  readonly clientPorts: number[];
  readonly options: ClusterOptions;
  readonly processes: (Subprocess | null)[];

  private constructor(options: ClusterOptions, raftPorts: number[], clientPorts: number[]) {
    this.options = options;
    this.raftPorts = raftPorts;
    this.clientPorts = clientPorts;
    this.dir = mkdtempSync(join(tmpdir(), "raftkv-test-"));
    this.processes = new Array(options.size).fill(null);
  }

  static async create(options: ClusterOptions): Promise<TestCluster> {
    const ports = await freePorts(options.size * 2);
    return new TestCluster(options, ports.slice(0, options.size), ports.slice(options.size));
  }

  /** The server arguments of `id`, exactly as a user would type them. */
  argsOf(id: number): string[] {
    const raftList = this.options.raftListFor?.(id, this.raftPorts) ?? this.raftPorts.join(",");
    const args = ["-r", raftList, "-i", String(id), "-p", String(this.clientPorts[id])];
    if (this.options.leader === id) args.push("--leader");
    // With per-server -r lists (proxies), the default data dir names would differ per server
    // anyway; an explicit one keeps restarts simple.
    if (this.options.raftListFor) args.push("--data-dir", join(this.dir, `data-${id}`));
    return [...args, ...(this.options.extraArgs ?? [])];
  }

  start(id: number): void {
    if (this.processes[id]) throw new Error(`server ${id} is already running`);
    const output = this.options.output ?? "ignore";
    this.processes[id] = Bun.spawn([SVR, ...this.argsOf(id)], {
      cwd: this.dir,
      stdout: output,
      stderr: output,
      stdin: "ignore",
    });
  }

  startAll(): void {
    for (let id = 0; id < this.options.size; id++) this.start(id);
  }

  isRunning(id: number): boolean {
    return this.processes[id] !== null;
  }

  /** Sends `signal` and waits for the process to exit. */
  async kill(id: number, signal: "SIGKILL" | "SIGTERM" = "SIGKILL"): Promise<number> {
    const proc = this.processes[id];
    if (!proc) throw new Error(`server ${id} is not running`);
    proc.kill(signal);
    const code = await proc.exited;
    this.processes[id] = null;
    return code;
  }

  pause(id: number): void {
    this.processes[id]?.kill("SIGSTOP");
  }

  resume(id: number): void {
    this.processes[id]?.kill("SIGCONT");
  }

  clientAddress(id: number): string {
    return `127.0.0.1:${this.clientPorts[id]}`;
  }

  /** Finds the leader the way scripts do: GET of a missing key exits 3 on the leader only. */
  async findLeader(timeoutMs = 5000): Promise<number> {
    return waitFor(
      "a leader",
      async () => {
        const answers = await Promise.all(
          this.clientPorts.map((port, id) =>
            this.isRunning(id)
              ? clt(["-p", port, "-o", "GET", "-k", "__probe_missing_key__", "-v", "0", "--timeout", "1000"])
              : null,
          ),
        );
        const leaders = answers.flatMap((answer, id) => (answer?.code === 3 ? [id] : []));
        return leaders.length === 1 ? leaders[0] : undefined;
      },
      timeoutMs,
      50,
    );
  }

  /** A client of the whole cluster (finds the leader, retries, exactly-once writes). */
  client(timeoutMs = 10_000): KvsClient {
    return new KvsClient(this.clientPorts.map((port) => `127.0.0.1:${port}`), { timeoutMs, followLeader: true });
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.processes.map(async (proc, id) => {
        if (!proc) return;
        proc.kill("SIGCONT");
        proc.kill("SIGKILL");
        await proc.exited;
        this.processes[id] = null;
      }),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A random printable string, with spaces, for keys and values. */
export function randomText(length: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.é";
  let out = "";
  for (let i = 0; i < length; i++) out += alphabet[Math.floor(Math.random() * alphabet.length)];
  return out;
}

/** One Put straight through gRPC, bypassing the client library's own checks. */
export function rawPut(address: string, request: { key: string; value: string }): Promise<KvsReply> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure(), GRPC_CHANNEL_OPTIONS);
  return new Promise<KvsReply>((resolve, reject) =>
    client.makeUnaryRequest(
      kvsService.Put.path,
      kvsService.Put.requestSerialize,
      kvsService.Put.responseDeserialize,
      { ...request, clientId: "", sequence: 0, ackedBelow: 0 },
      { deadline: Date.now() + 5000 },
      (error, reply) => (error || !reply ? reject(error) : resolve(reply)),
    ),
  ).finally(() => client.close());
}
