/**
 * `svr`: one raftkv server. argv -> config -> open the store -> start Raft and the client
 * service; SIGTERM/SIGINT stop it cleanly. See `svr --help`.
 */
import * as grpc from "@grpc/grpc-js";
import { mkdirSync } from "node:fs";
import { Logger } from "../logger";
import { RaftNode } from "../node/raft-node";
import { startKvsService } from "../server/kvs-service";
import { parseServerArgs, SERVER_USAGE, type ServerConfig, UsageError } from "./server-config";
import { KvStateMachine } from "../storage/kv-state-machine";
import { RaftStorage } from "../storage/raft-storage";
import { Rocks } from "../storage/rocks";

const EXIT_USAGE = 1;
const EXIT_FATAL = 4;
const CLUSTER_KEY = "c";

function fail(code: number, message: string): never {
  process.stderr.write(`svr: ${message}\n`);
  process.exit(code);
}

async function openStore(config: ServerConfig): Promise<Rocks> {
  try {
    mkdirSync(config.dataDir, { recursive: true });
  } catch (error) {
    fail(EXIT_FATAL, `cannot create data directory ${config.dataDir}: ${(error as Error).message}`);
  }
  let db: Rocks;
  try {
    db = await Rocks.open(config.dataDir);
  } catch (error) {
    const message = (error as Error).message;
    if (/lock/i.test(message)) fail(EXIT_FATAL, `data directory ${config.dataDir} is in use by another process`);
    fail(EXIT_FATAL, `cannot open data directory ${config.dataDir}: ${message}`);
  }
  // The store remembers which cluster and server it belongs to, so that a --data-dir pointed at
  // another cluster's store is refused instead of silently mixing two histories.
  const identity = `${config.clusterName}#${config.id}`;
  const stored = (await db.get(CLUSTER_KEY))?.toString("utf8");
  if (stored === undefined) await db.batch([{ type: "put", key: CLUSTER_KEY, value: identity }], true);
  else if (stored !== identity) {
    await db.close();
    fail(EXIT_FATAL, `data directory ${config.dataDir} belongs to "${stored}", not to "${identity}"`);
  }
  return db;
}

async function main(): Promise<void> {
  let config: ServerConfig | null;
  try {
    config = parseServerArgs(process.argv.slice(2));
  } catch (error) {
    if (error instanceof UsageError) fail(EXIT_USAGE, `${error.message} (see svr --help)`);
    throw error;
  }
  if (config === null) {
    process.stdout.write(`${SERVER_USAGE}\n`);
    return;
  }
  const logger = new Logger(config.logLevel, { node: config.id });
  // grpc-js writes its own errors to stderr; route them to our log at debug level, so that a
  // failure is reported once, by us, in our words.
  grpc.setLogger({ error: (...parts: unknown[]) => logger.debug("grpc", { message: parts.join(" ") }) });
  grpc.setLogVerbosity(logger.enabled("debug") ? grpc.logVerbosity.DEBUG : grpc.logVerbosity.ERROR);
  const db = await openStore(config);
  const storage = new RaftStorage(db);
  const stateMachine = new KvStateMachine(db);

  let shuttingDown = false;
  let node: RaftNode | undefined;
  let kvs: Awaited<ReturnType<typeof startKvsService>> | undefined;
  const shutdown = async (code: number): Promise<never> => {
    if (!shuttingDown) {
      shuttingDown = true;
      // Never hang on the way out: if closing stalls, exit anyway (RocksDB is crash-safe).
      setTimeout(() => process.exit(code), 2000).unref();
      kvs?.forceShutdown();
      await node?.stop().catch(() => {});
      await db.close().catch(() => {});
    }
    process.exit(code);
  };
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.on(signal, () => {
      logger.info("shutting down", { signal });
      void shutdown(0);
    });
  }

  try {
    node = await RaftNode.start(
      {
        id: config.id,
        raftAddresses: config.raftAddresses,
        raftBindAddress: config.raftBindAddress,
        clientAddress: config.clientAddress,
        tickMs: config.tickMs,
        electionTicks: config.electionTicks,
        heartbeatTicks: config.heartbeatTicks,
        campaignAtStart: config.leader,
        snapshotEntries: config.snapshotEntries,
        logger,
        onFatal: (error) => {
          process.stderr.write(`svr: fatal: ${(error as Error)?.stack ?? error}\n`);
          void shutdown(EXIT_FATAL);
        },
      },
      storage,
      stateMachine,
    );
    kvs = await startKvsService({ bindAddress: config.clientBindAddress, node, stateMachine, logger });
  } catch (error) {
    process.stderr.write(`svr: ${(error as Error).message}\n`);
    await shutdown(EXIT_FATAL);
  }
  process.stderr.write(
    `svr: server ${config.id} of ${config.raftAddresses.length} serving clients on ${config.clientBindAddress}, raft on ${config.raftBindAddress}, data in ${config.dataDir}\n`,
  );
}

await main();
