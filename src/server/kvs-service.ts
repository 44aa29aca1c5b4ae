/**
 * @module server/kvs-service
 * The client-facing `kvs.KVS` gRPC service. This is the one place where domain errors become
 * kvs.Status values: NotLeaderError -> NOT_LEADER with a leader hint, everything else -> ERROR
 * with a message. Input is validated here, before anything reaches the log.
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "../logger";
import { NotLeaderError } from "../node/errors";
import type { RaftNode } from "../node/raft-node";
import type { KvStateMachine } from "../storage/kv-state-machine";
import { codecs, type GetRequest, invalidRequest, type KvsReply, KvsStatus, kvsService, type PutRequest } from "../wire/proto";
import { bind } from "../transport/grpc-transport";
import { GRPC_CHANNEL_OPTIONS } from "../wire/channel-options";

/** How long a request may wait for consensus when the client set no deadline. */
const DEFAULT_REQUEST_TIMEOUT_MS = 5000;

type Callback = (error: grpc.ServiceError | null, reply?: KvsReply) => void;

export async function startKvsService(options: {
  bindAddress: string;
  node: RaftNode;
  stateMachine: KvStateMachine;
  logger: Logger;
}): Promise<grpc.Server> {
  const { node, stateMachine, logger } = options;

  const reply = (status: KvsStatus, fields: Partial<KvsReply> = {}): KvsReply => ({
    status,
    value: "",
    leaderHint: "",
    error: "",
    ...fields,
  });

  const failure = (error: unknown): KvsReply => {
    if (error instanceof NotLeaderError) {
      return reply(KvsStatus.NOT_LEADER, { leaderHint: error.leaderHint, error: error.message });
    }
    const message = error instanceof Error ? error.message : String(error);
    logger.debug("request failed", { error: message });
    return reply(KvsStatus.ERROR, { error: message, leaderHint: node.leaderHint });
  };

  const timeoutOf = (call: grpc.ServerUnaryCall<unknown, unknown>): number => {
    const deadline = call.getDeadline();
    const at = deadline instanceof Date ? deadline.getTime() : Number(deadline);
    if (!Number.isFinite(at)) return DEFAULT_REQUEST_TIMEOUT_MS;
    return Math.max(1, Math.min(at - Date.now(), 60_000));
  };

  const server = new grpc.Server(GRPC_CHANNEL_OPTIONS);
  server.addService(kvsService, {
    Put: (call: grpc.ServerUnaryCall<PutRequest, KvsReply>, callback: Callback) => {
      const { key, value, clientId, sequence, ackedBelow } = call.request;
      const problem = invalidRequest(key, value);
      if (problem) return callback(null, reply(KvsStatus.ERROR, { error: problem }));
      if (!node.isLeader) return callback(null, failure(new NotLeaderError(node.leaderHint)));
      const command = codecs.command.encode({ key, value, clientId, sequence, ackedBelow });
      node.propose(command, timeoutOf(call)).then(
        () => callback(null, reply(KvsStatus.OK)),
        (error) => callback(null, failure(error)),
      );
    },
    Get: (call: grpc.ServerUnaryCall<GetRequest, KvsReply>, callback: Callback) => {
      const { key } = call.request;
      const problem = invalidRequest(key);
      if (problem) return callback(null, reply(KvsStatus.ERROR, { error: problem }));
      if (!node.isLeader) return callback(null, failure(new NotLeaderError(node.leaderHint)));
      node
        .readBarrier(timeoutOf(call))
        .then(() => stateMachine.get(key))
        .then(
          (value) => callback(null, value === undefined ? reply(KvsStatus.NO_KEY) : reply(KvsStatus.OK, { value })),
          (error) => callback(null, failure(error)),
        );
    },
    DirectGet: (call: grpc.ServerUnaryCall<GetRequest, KvsReply>, callback: Callback) => {
      const { key } = call.request;
      const problem = invalidRequest(key);
      if (problem) return callback(null, reply(KvsStatus.ERROR, { error: problem }));
      stateMachine.get(key).then(
        (value) => callback(null, value === undefined ? reply(KvsStatus.NO_KEY) : reply(KvsStatus.OK, { value })),
        (error) => callback(null, failure(error)),
      );
    },
  });
  await bind(server, options.bindAddress);
  return server;
}
