/** `svr` argument parsing: the contract's flags, defaults and clear errors for bad input. */
import { describe, expect, test } from "bun:test";
import { parseServerArgs, UsageError } from "../../src/cli/server-config";

describe("parseServerArgs", () => {
  test("the contract's flags, with ports on 127.0.0.1 and the documented defaults", () => {
    const config = parseServerArgs(["-r", "7001,7002,7003", "-i", "1", "-p", "8002", "--leader"], "/work")!;
    expect(config).toMatchObject({
      id: 1,
      raftAddresses: ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"],
      raftBindAddress: "127.0.0.1:7002",
      clientBindAddress: "127.0.0.1:8002",
      clientAddress: "127.0.0.1:8002",
      leader: true,
      logLevel: "warn",
      tickMs: 50,
      electionTicks: 6,
      heartbeatTicks: 1,
      dataDir: "/work/raftkv-data-7001-7002-7003-1",
    });
  });

  test("servers of one cluster share a working directory; another cluster gets other directories", () => {
    const a0 = parseServerArgs(["-r", "7001,7002", "-i", "0", "-p", "8001"], "/w")!.dataDir;
    const a1 = parseServerArgs(["-r", "7001,7002", "-i", "1", "-p", "8002"], "/w")!.dataDir;
    const b0 = parseServerArgs(["-r", "7101,7102", "-i", "0", "-p", "8101"], "/w")!.dataDir;
    expect(new Set([a0, a1, b0]).size).toBe(3);
  });

  test('"7001" and "127.0.0.1:7001" name the same cluster, so a restart finds its data either way', () => {
    const short = parseServerArgs(["-r", "7001,7002", "-i", "1", "-p", "8002"], "/w")!;
    const long = parseServerArgs(["-r", "127.0.0.1:7001,127.0.0.1:7002", "-i", "1", "-p", "8002"], "/w")!;
    expect(long.dataDir).toBe(short.dataDir);
    expect(long.clusterName).toBe(short.clusterName);
  });

  test("host:port entries are kept, and long lists get a hashed directory name", () => {
    const hosts = Array.from({ length: 5 }, (_, i) => `server-${i}.example.internal:7000`);
    const config = parseServerArgs(["-r", hosts.join(","), "-i", "4", "-p", "8000"], "/w")!;
    expect(config.raftAddresses[4]).toBe("server-4.example.internal:7000");
    expect(config.dataDir).toMatch(/^\/w\/raftkv-data-[0-9a-f]{16}-4$/);
  });

  test("a server binds where its -r entry says peers will find it, unless --host says otherwise", () => {
    const list = "10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001";
    expect(parseServerArgs(["-r", list, "-i", "1", "-p", "8000"])).toMatchObject({
      raftBindAddress: "10.0.0.2:7001",
      clientBindAddress: "10.0.0.2:8000",
      clientAddress: "10.0.0.2:8000",
    });
    expect(parseServerArgs(["-r", list, "-i", "1", "-p", "8000", "--host", "0.0.0.0"])).toMatchObject({
      raftBindAddress: "0.0.0.0:7001",
      clientBindAddress: "0.0.0.0:8000",
      clientAddress: "10.0.0.2:8000", // what followers tell clients: a reachable address
    });
  });

  test("values that look like options are values", () => {
    expect(() => parseServerArgs(["-r", "7001", "-i", "-1", "-p", "8000"])).toThrow(/-i must be a number, got "-1"/);
  });

  test("--help returns null", () => {
    expect(parseServerArgs(["--help"])).toBeNull();
  });

  for (const [args, message] of [
    [["-i", "0", "-p", "8000"], /missing -r/],
    [["-r", "7001", "-p", "8000"], /missing -i/],
    [["-r", "7001", "-i", "0"], /missing -p/],
    [["-r", "7001,7002", "-i", "2", "-p", "8000"], /not a position/],
    [["-r", "7001,x", "-i", "0", "-p", "8000"], /not a port/],
    [["-r", "7001,7001", "-i", "0", "-p", "8000"], /same endpoint twice/],
    [["-r", "7001", "-i", "0", "-p", "7001"], /also this server's Raft port/],
    [["-r", "7001,7002", "-i", "0", "-p", "7002"], /server 1's Raft port/],
    [["-r", "7001", "-i", "0", "-p", "99999"], /out of range/],
    [["-r", "7001", "-i", "0", "-p", "8000", "--log-level", "loud"], /--log-level/],
    [["-r", "7001", "-i", "0", "-p", "8000", "--heartbeat-ticks", "9"], /below --election-ticks/],
    [["-r", "7001", "-i", "0", "-p", "8000", "--frobnicate"], /unknown or unexpected option/],
  ] as const) {
    test(`rejects ${args.join(" ")}`, () => {
      expect(() => parseServerArgs([...args])).toThrow(UsageError);
      expect(() => parseServerArgs([...args])).toThrow(message);
    });
  }
});
