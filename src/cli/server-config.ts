/**
 * @module cli/server-config
 * `svr` command line -> validated server configuration. Throws UsageError with a message meant
 * for a person; nothing here touches the disk or the network.
 */
import { createHash } from "node:crypto";
import { resolve } from "node:path";
import { parseArgs } from "./parse-args";
import { LOG_LEVELS, type LogLevel } from "../logger";

export class UsageError extends Error {
  override name = "UsageError";
}

export const SERVER_USAGE = `Usage: svr -r <raft0>,<raft1>,... -i <id> -p <client-port> [options]

Runs one raftkv server. Every server of a cluster gets the same -r list.

Required:
  -r, --raft <list>        Raft endpoints of servers 0..n-1, comma-separated: "port" (on
                           127.0.0.1) or "host:port"
  -i, --id <n>             this server's 0-based position in the -r list
  -p, --port <port>        port for clients (kvs.KVS gRPC service)

Options:
      --leader             campaign at start-up, so this server leads without an election wait
      --data-dir <dir>     where to keep the RocksDB store (default: ./raftkv-data-<cluster>-<id>)
      --host <addr>        address to bind both ports on (default: the host of this
                           server's -r entry, 127.0.0.1 for a bare port; 0.0.0.0 for all)
      --log-level <level>  debug, info, warn, error or silent (default warn)
      --tick-ms <ms>       length of one Raft tick (default 50)
      --election-ticks <n> base election timeout in ticks; each wait is 1-2x this (default 6)
      --heartbeat-ticks <n> ticks between leader heartbeats (default 1)
      --snapshot-entries <n> compact the Raft log once n applied entries follow the last
                           compaction, keeping the last n/4 (default 20000)
  -h, --help               show this help

Exit status: 0 after SIGTERM/SIGINT, 1 on bad arguments, 4 on a fatal error (e.g. the data
directory is in use or belongs to another cluster).`;

export interface ServerConfig {
  id: number;
  raftAddresses: string[];
  /** What identifies the cluster on disk: the normalized -r list. */
  clusterName: string;
  /** Where this server's Raft service listens. */
  raftBindAddress: string;
  /** Where the kvs.KVS service listens, and the address followers give clients as leader hint. */
  clientBindAddress: string;
  clientAddress: string;
  leader: boolean;
  dataDir: string;
  logLevel: LogLevel;
  tickMs: number;
  electionTicks: number;
  heartbeatTicks: number;
  snapshotEntries: number;
}

function parsePort(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${what}: "${text}" is not a port number`);
  const port = Number(text);
  if (port < 1 || port > 65535) throw new UsageError(`${what}: port ${port} is out of range 1-65535`);
  return port;
}

function parsePositive(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new UsageError(`${what} must be a positive integer, got "${text}"`);
  return Number(text);
}

/** Returns null when --help was asked for. */
export function parseServerArgs(argv: string[], cwd = process.cwd()): ServerConfig | null {
  let args;
  try {
    args = parseArgs(
      {
        "--raft": String,
        "--id": String,
        "--port": String,
        "--leader": Boolean,
        "--data-dir": String,
        "--host": String,
        "--log-level": String,
        "--tick-ms": String,
        "--election-ticks": String,
        "--heartbeat-ticks": String,
        "--snapshot-entries": String,
        "--help": Boolean,
        "-r": "--raft",
        "-i": "--id",
        "-p": "--port",
        "-h": "--help",
      },
      argv,
    );
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (args["--help"]) return null;
  if (args._.length > 0) throw new UsageError(`unexpected argument "${args._[0]}"`);
  if (args["--raft"] === undefined) throw new UsageError("missing -r <raft ports>");
  if (args["--id"] === undefined) throw new UsageError("missing -i <id>");
  if (args["--port"] === undefined) throw new UsageError("missing -p <client port>");

  const items = args["--raft"].split(",").map((item) => item.trim());
  const raftAddresses = items.map((item, i) => {
    const hostPort = /^(.+):(\d+)$/.exec(item);
    if (hostPort) return `${hostPort[1]}:${parsePort(hostPort[2]!, `-r entry ${i}`)}`;
    return `127.0.0.1:${parsePort(item, `-r entry ${i}`)}`;
  });
  if (new Set(raftAddresses).size !== raftAddresses.length) throw new UsageError("-r lists the same endpoint twice");
  if (!/^\d+$/.test(args["--id"])) throw new UsageError(`-i must be a number, got "${args["--id"]}"`);
  const id = Number(args["--id"]);
  if (id >= raftAddresses.length) {
    throw new UsageError(`-i ${id} is not a position in the -r list (0..${raftAddresses.length - 1})`);
  }
  const clientPort = parsePort(args["--port"], "-p");
  const [ownRaftHost, ownRaftPort] = splitHostPort(raftAddresses[id]!);
  if (clientPort === ownRaftPort) throw new UsageError(`-p ${clientPort} is also this server's Raft port`);
  const clash = raftAddresses.findIndex((address) => {
    const [host, port] = splitHostPort(address);
    return port === clientPort && host === ownRaftHost;
  });
  if (clash >= 0) throw new UsageError(`-p ${clientPort} is server ${clash}'s Raft port`);

  // Bind where peers were told to find us (our own -r entry); --host overrides, e.g. 0.0.0.0.
  const host = args["--host"] ?? ownRaftHost;
  const unspecified = host === "0.0.0.0" || host === "::" || host === "[::]";

  const logLevel = (args["--log-level"] ?? "warn") as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, got "${logLevel}"`);
  }
  const electionTicks = parsePositive(args["--election-ticks"], 6, "--election-ticks");
  const heartbeatTicks = parsePositive(args["--heartbeat-ticks"], 1, "--heartbeat-ticks");
  if (heartbeatTicks >= electionTicks) throw new UsageError("--heartbeat-ticks must be below --election-ticks");

  const clusterName = raftAddresses.join(",");
  return {
    id,
    raftAddresses,
    clusterName,
    raftBindAddress: args["--host"] === undefined ? raftAddresses[id]! : `${host}:${ownRaftPort}`,
    clientBindAddress: `${host}:${clientPort}`,
    clientAddress: `${unspecified ? ownRaftHost : host}:${clientPort}`,
    leader: args["--leader"] ?? false,
    dataDir: resolve(cwd, args["--data-dir"] ?? defaultDataDir(raftAddresses, id)),
    logLevel,
    tickMs: parsePositive(args["--tick-ms"], 50, "--tick-ms"),
    electionTicks,
    heartbeatTicks,
    snapshotEntries: parsePositive(args["--snapshot-entries"], 20_000, "--snapshot-entries"),
  };
}

function splitHostPort(address: string): [string, number] {
  const colon = address.lastIndexOf(":");
  return [address.slice(0, colon), Number(address.slice(colon + 1))];
}

/**
 * Named after the cluster and the server, so that all servers of a cluster can share one
 * working directory and a different cluster started there later gets directories of its own.
 * Built from the normalized addresses, so "7001" and "127.0.0.1:7001" name the same cluster.
 */
function defaultDataDir(raftAddresses: string[], id: number): string {
  const allLocal = raftAddresses.every((address) => address.startsWith("127.0.0.1:"));
  const readable = raftAddresses.map((address) => (allLocal ? address.slice("127.0.0.1:".length) : address)).join("-");
  const name =
    allLocal && readable.length <= 60
      ? readable
      : createHash("sha256").update(raftAddresses.join(",")).digest("hex").slice(0, 16);
  return `raftkv-data-${name}-${id}`;
}
