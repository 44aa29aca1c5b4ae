/**
 * `clt`: the raftkv command-line client. See `clt --help` for the contract; the exit codes are
 * relied on by scripts (exit 2 from a follower is how they find the leader).
 */
import arg from "arg";
import { ClientError, KvsClient, KvsStatus } from "../client/client";
import { invalidRequest } from "../wire/proto";

const EXIT = { ok: 0, usage: 1, notLeader: 2, noKey: 3, serverError: 4 } as const;

const USAGE = `Usage: clt -p <port> -o GET|PUT|DIRECT_GET -k <key> [-v <value>] [options]

Talks to one raftkv server (or, with --servers, to a cluster).

  -p, --port <port>       the server's client port
  -o, --op <op>           GET (linearizable, leader only), PUT (leader only), or DIRECT_GET
                          (this server's local copy, no consensus, may be stale)
  -k, --key <key>         the key (UTF-8, not empty)
  -v, --value <value>     the value for PUT (UTF-8, up to 1 MiB); accepted and ignored otherwise
      --host <host>       the server's host (default 127.0.0.1)
  -s, --servers <list>    comma-separated ports or host:port of several servers: find the leader,
                          follow redirects and retry until the timeout (PUT is applied once)
  -t, --timeout <ms>      give up after this long (default 5000)
  -h, --help              show this help

GET and DIRECT_GET print the value on stdout.
Exit status: 0 ok, 1 bad arguments, 2 server is not the leader, 3 no such key,
4 server error, unreachable server or timeout.`;

function exit(code: number, message?: string): never {
  if (message) process.stderr.write(`clt: ${message}\n`);
  process.exit(code);
}

function toAddress(item: string, host: string): string {
  if (/^\d+$/.test(item)) {
    const port = Number(item);
    if (port < 1 || port > 65535) exit(EXIT.usage, `port ${port} is out of range 1-65535`);
    return `${host}:${port}`;
  }
  if (/^.+:\d+$/.test(item)) return item;
  exit(EXIT.usage, `"${item}" is not a port or host:port`);
}

/**
 * Keys and values may begin with "-" ("-v -1" is a fine PUT), which `arg` would take for an
 * option: glue the word after -k/-v to its flag ("--value=-1") before parsing.
 */
function glueKeyAndValue(argv: string[]): string[] {
  const glued: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const flag = { "-k": "--key", "--key": "--key", "-v": "--value", "--value": "--value" }[argv[i]!];
    if (flag && i + 1 < argv.length) glued.push(`${flag}=${argv[++i]}`);
    else glued.push(argv[i]!);
  }
  return glued;
}

async function main(): Promise<never> {
  let args;
  try {
    args = arg(
      {
        "--port": String,
        "--op": String,
        "--key": String,
        "--value": String,
        "--host": String,
        "--servers": String,
        "--timeout": String,
        "--help": Boolean,
        "-p": "--port",
        "-o": "--op",
        "-k": "--key",
        "-v": "--value",
        "-s": "--servers",
        "-t": "--timeout",
        "-h": "--help",
      },
      { argv: glueKeyAndValue(process.argv.slice(2)) },
    );
  } catch (error) {
    exit(EXIT.usage, `${(error as Error).message} (see clt --help)`);
  }
  if (args["--help"]) {
    process.stdout.write(`${USAGE}\n`);
    exit(EXIT.ok);
  }
  if (args._.length > 0) exit(EXIT.usage, `unexpected argument "${args._[0]}" (see clt --help)`);
  const op = args["--op"]?.toUpperCase();
  if (op === undefined) exit(EXIT.usage, "missing -o GET|PUT|DIRECT_GET");
  if (op !== "GET" && op !== "PUT" && op !== "DIRECT_GET") {
    exit(EXIT.usage, `unknown operation "${args["--op"]}": use GET, PUT or DIRECT_GET`);
  }
  const key = args["--key"];
  if (key === undefined) exit(EXIT.usage, "missing -k <key>");
  const value = args["--value"];
  if (op === "PUT" && value === undefined) exit(EXIT.usage, "PUT needs -v <value>");
  const problem = invalidRequest(key, value);
  if (problem) exit(EXIT.usage, problem);
  const timeoutText = args["--timeout"] ?? "5000";
  if (!/^\d+$/.test(timeoutText) || Number(timeoutText) < 1) {
    exit(EXIT.usage, `--timeout must be a positive number of milliseconds, got "${timeoutText}"`);
  }
  const host = args["--host"] ?? "127.0.0.1";
  let addresses: string[];
  if (args["--servers"] !== undefined) {
    addresses = args["--servers"].split(",").map((item) => toAddress(item.trim(), host));
  } else if (args["--port"] !== undefined) {
    addresses = [toAddress(args["--port"], host)];
  } else {
    exit(EXIT.usage, "missing -p <port> (or --servers <list>)");
  }

  const client = new KvsClient(addresses, {
    timeoutMs: Number(timeoutText),
    followLeader: args["--servers"] !== undefined,
  });
  try {
    const reply =
      op === "PUT"
        ? await client.put(key, value!)
        : op === "GET"
          ? await client.get(key)
          : await client.directGet(key);
    switch (reply.status) {
      case KvsStatus.OK:
        if (op !== "PUT") process.stdout.write(`${reply.value}\n`);
        exit(EXIT.ok);
      case KvsStatus.NO_KEY:
        exit(EXIT.noKey, `no such key: ${key}`);
      case KvsStatus.NOT_LEADER:
        exit(EXIT.notLeader, `not the leader${reply.leaderHint ? `; the leader is at ${reply.leaderHint}` : ""}`);
      default:
        exit(EXIT.serverError, `server error: ${reply.error || "unknown"}`);
    }
  } catch (error) {
    if (error instanceof ClientError) exit(EXIT.serverError, error.message);
    exit(EXIT.serverError, `unexpected error: ${(error as Error).message}`);
  }
}

await main();
