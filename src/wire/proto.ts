/**
 * @module wire/proto
 * The protobuf messages and gRPC service definitions of `proto/*.proto`, parsed from text that is
 * embedded in the executables at build time (no `.proto` file is read at run time).
 *
 * We use protobufjs directly with grpc-js's generic client and server, rather than
 * @grpc/proto-loader: it starts measurably faster, and `clt` start-up is part of what users feel.
 */
import type { ServiceDefinition } from "@grpc/grpc-js";
import protobuf from "protobufjs";
import kvsProtoText from "../../proto/kvs.proto" with { type: "text" };
import raftProtoText from "../../proto/raft.proto" with { type: "text" };

// Decode 64-bit integers as plain numbers: Raft indexes and terms stay far below 2^53.
protobuf.util.Long = undefined as never;
protobuf.configure();

const root = new protobuf.Root();
protobuf.parse(kvsProtoText, root, { keepCase: false });
protobuf.parse(raftProtoText, root, { keepCase: false });

/** Status values of kvs.Status. */
export const enum KvsStatus {
  OK = 0,
  NO_KEY = 1,
  ERROR = 2,
  NOT_LEADER = 3,
}

export interface PutRequest {
  key: string;
  value: string;
  clientId: string;
  sequence: number;
  ackedBelow: number;
}
export interface GetRequest {
  key: string;
}
export interface KvsReply {
  status: KvsStatus;
  value: string;
  leaderHint: string;
  error: string;
}
export interface Command {
  key: string;
  value: string;
  clientId: string;
  sequence: number;
  ackedBelow: number;
}

export interface WireEntry {
  term: number;
  index: number;
  type: number;
  data: Uint8Array;
}
export interface AppendEntriesRequestWire {
  term: number;
  leaderId: number;
  prevLogIndex: number;
  prevLogTerm: number;
  entries: WireEntry[];
  leaderCommit: number;
  from: number;
  leaderClientAddress: string;
  readRound: number;
  to: number;
  clusterSize: number;
}
export interface AppendEntriesReplyWire {
  term: number;
  success: boolean;
  from: number;
  matchIndex: number;
  conflictTerm: number;
  conflictIndex: number;
  readRound: number;
}
export interface RequestVoteRequestWire {
  term: number;
  candidateId: number;
  lastLogIndex: number;
  lastLogTerm: number;
  preVote: boolean;
  to: number;
  clusterSize: number;
}
export interface InstallSnapshotRequestWire {
  term: number;
  leaderId: number;
  lastIncludedIndex: number;
  lastIncludedTerm: number;
  data: Uint8Array;
  from: number;
  leaderClientAddress: string;
  to: number;
  clusterSize: number;
}
export interface InstallSnapshotReplyWire {
  term: number;
  from: number;
  matchIndex: number;
}
export interface StateMachineSnapshot {
  records: { key: string; value: Uint8Array }[];
}
export interface RequestVoteReplyWire {
  term: number;
  voteGranted: boolean;
  from: number;
  preVote: boolean;
}

/** Encoder/decoder pair for one message type; decode fills defaults for absent fields. */
export interface Codec<T> {
  encode(value: T): Uint8Array;
  decode(bytes: Uint8Array): T;
}

function codec<T>(name: string): Codec<T> {
  const type = root.lookupType(name);
  return {
    encode: (value) => type.encode(value as object).finish(),
    decode: (bytes) => type.toObject(type.decode(bytes), { defaults: true, arrays: true }) as T,
  };
}

export const codecs = {
  putRequest: codec<PutRequest>("kvs.PutRequest"),
  getRequest: codec<GetRequest>("kvs.GetRequest"),
  putReply: codec<KvsReply>("kvs.PutReply"),
  getReply: codec<KvsReply>("kvs.GetReply"),
  command: codec<Command>("kvs.Command"),
  logEntry: codec<WireEntry>("raft.LogEntry"),
  appendEntriesRequest: codec<AppendEntriesRequestWire>("raft.AppendEntriesRequest"),
  appendEntriesReply: codec<AppendEntriesReplyWire>("raft.AppendEntriesReply"),
  requestVoteRequest: codec<RequestVoteRequestWire>("raft.RequestVoteRequest"),
  requestVoteReply: codec<RequestVoteReplyWire>("raft.RequestVoteReply"),
  installSnapshotRequest: codec<InstallSnapshotRequestWire>("raft.InstallSnapshotRequest"),
  installSnapshotReply: codec<InstallSnapshotReplyWire>("raft.InstallSnapshotReply"),
  stateMachineSnapshot: codec<StateMachineSnapshot>("kvs.StateMachineSnapshot"),
};

function method<Req, Res>(path: string, request: Codec<Req>, reply: Codec<Res>) {
  return {
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: (value: Req) => Buffer.from(request.encode(value)),
    requestDeserialize: (bytes: Buffer) => request.decode(bytes),
    responseSerialize: (value: Res) => Buffer.from(reply.encode(value)),
    responseDeserialize: (bytes: Buffer) => reply.decode(bytes),
  };
}

export const kvsService = {
  Put: method("/kvs.KVS/Put", codecs.putRequest, codecs.putReply),
  Get: method("/kvs.KVS/Get", codecs.getRequest, codecs.getReply),
  DirectGet: method("/kvs.KVS/DirectGet", codecs.getRequest, codecs.getReply),
} satisfies ServiceDefinition;

export const raftService = {
  AppendEntries: method("/raft.Raft/AppendEntries", codecs.appendEntriesRequest, codecs.appendEntriesReply),
  RequestVote: method("/raft.Raft/RequestVote", codecs.requestVoteRequest, codecs.requestVoteReply),
  InstallSnapshot: method("/raft.Raft/InstallSnapshot", codecs.installSnapshotRequest, codecs.installSnapshotReply),
} satisfies ServiceDefinition;

/** Limits every server and client agree on. */
export const MAX_VALUE_BYTES = 1024 * 1024;
export const MAX_KEY_BYTES = 64 * 1024;
/** gRPC's 4 MiB default is too small for a catch-up batch carrying a few 1 MiB values. */
export const MAX_GRPC_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Why a key (and value, for a write) cannot be stored, or null when they can. */
export function invalidRequest(key: string, value?: string): string | null {
  if (key.length === 0) return "the key must not be empty";
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) return `the key is over ${MAX_KEY_BYTES} bytes`;
  if (value !== undefined && Buffer.byteLength(value) > MAX_VALUE_BYTES) {
    return `the value is over ${MAX_VALUE_BYTES} bytes (1 MiB)`;
  }
  return null;
}
