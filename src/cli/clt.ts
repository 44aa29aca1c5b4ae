/**
 * `clt`: the raftkv command-line client. See `clt --help` for the contract; the exit codes are
 * relied on by scripts (exit 2 from a follower is how they find the leader).
 */
import { ClientError, KvsClient, KvsStatus } from "../client/client";
import { invalidRequest } from "../wire/proto";
import { parseArgs } from "./parse-args";

const EXIT = { ok: 0, usage: 1, notLeader: 2, noKey: 3, serverError: 4 } as const;

const USAGE = `Usage: clt -p <port> -o GET|PUT|DIRECT_GET -k <key> [-v <value>] [options]

Talks to one raftkv server (or, with --servers, to a cluster).

  -p, --port <port>       the server's client port
  -o, --op <op>           GET (linearizable, leader only), PUT (leader only), or DIRECT_GET
                          (this server's local copy, no consensus, may be stale)
  -k, --key <key>         the key (UTF-8, not empty, up to 64 KiB)
  -v, --value <value>     the value for PUT (UTF-8, up to 1 MiB); accepted and ignored otherwise
      --value-file <path> read the PUT value from a file ("-" for standard input): Linux
                          limits one command-line argument to 128 KiB
      --host <host>       the server's host (default 127.0.0.1)
  -s, --servers <list>    comma-separated ports or host:port of several servers: find the leader,
                          follow redirects and retry until the timeout (PUT is applied once)
  -t, --timeout <ms>      give up after this long (default 5000)
  -h, --help              show this help

GET and DIRECT_GET print the value on stdout.
Exit status: 0 ok, 1 bad arguments, 2 server is not the leader, 3 no such key,
4 server error, unreachable server or timeout. (1 also when the output cannot be written.)`;

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

/** `--value-file`: the whole file (or standard input for "-") as UTF-8, for values too long for argv. */
async function readValueFile(path: string): Promise<string> {
  try {
    return path === "-" ? await new Response(Bun.stdin.stream()).text() : await Bun.file(path).text();
  } catch (error) {
    exit(EXIT.usage, `cannot read --value-file ${path}: ${(error as Error).message}`);
  }
}

/**
 * Writes all of `text` to stdout before we exit: process.exit() right after a write to a slow
 * pipe would cut the value short, and a value cut short with exit 0 is a lie.
 */
async function writeOut(text: string): Promise<void> {
  try {
    await new Promise<void>((resolve, reject) =>
      process.stdout.write(text, (error) => (error ? reject(error) : resolve())),
    );
  } catch (error) {
    exit(EXIT.usage, `cannot write the value to standard output: ${(error as Error).message}`);
  }
}

async function main(): Promise<never> {
  let args;
  try {
    args = parseArgs(
      {
        "--port": String,
        "--op": String,
        "--key": String,
        "--value": String,
        "--value-file": String,
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
      process.argv.slice(2),
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
  let value = args["--value"];
  const valueFile = args["--value-file"];
  if (valueFile !== undefined) {
    if (value !== undefined) exit(EXIT.usage, "give -v or --value-file, not both");
    value = await readValueFile(valueFile);
  }
  if (op === "PUT" && value === undefined) exit(EXIT.usage, "PUT needs -v <value> (or --value-file <path>)");
  const problem = invalidRequest(key, value);
  if (problem) exit(EXIT.usage, problem);
  const timeoutText = args["--timeout"] ?? "5000";
  if (!/^\d+$/.test(timeoutText) || Number(timeoutText) < 1) {
    exit(EXIT.usage, `--timeout must be a positive number of milliseconds, got "${timeoutText}"`);
  }
  if (args["--servers"] !== undefined && args["--port"] !== undefined) {
    exit(EXIT.usage, "give -p <port> or -s <list>, not both");
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
        if (op !== "PUT") await writeOut(`${reply.value}\n`);
        exit(EXIT.ok);
      case KvsStatus.NO_KEY:
        exit(EXIT.noKey, `no such key: ${key}`);
      case KvsStatus.NOT_LEADER:
        exit(
          EXIT.notLeader,
          reply.leaderHint ? `not the leader; the leader is at ${reply.leaderHint}` : "not the leader (no leader known)",
        );
      default:
        exit(EXIT.serverError, `server error: ${reply.error || "unknown"}`);
    }
  } catch (error) {
    if (error instanceof ClientError) exit(EXIT.serverError, error.message);
    exit(EXIT.serverError, `unexpected error: ${(error as Error).message}`);
  }
}

await main();
