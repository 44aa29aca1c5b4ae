/**
 * @module transport/grpc-transport
 * Raft messages over gRPC: a client per peer for our requests, and the `raft.Raft` service for
 * theirs. Replies to our requests come back as the RPC's response; replies to theirs are given
 * to the `respond` callback handed out with each incoming request.
 *
 * A peer that is down costs little: grpc-js fails calls at once while the channel is in
 * TRANSIENT_FAILURE and reconnects in the background with capped exponential backoff, so a
 * restarted peer is reached again within about a second.
 */
import * as grpc from "@grpc/grpc-js";
import type { Entry, EntryType, Message, NodeId } from "../raft/types";
import { GRPC_CHANNEL_OPTIONS as CHANNEL_OPTIONS } from "../wire/channel-options";
import {
  type AppendEntriesReplyWire,
  type AppendEntriesRequestWire,
  type InstallSnapshotReplyWire,
  type InstallSnapshotRequestWire,
  type RequestVoteReplyWire,
  type RequestVoteRequestWire,
  raftService,
} from "../wire/proto";

const APPEND_DEADLINE_MS = 2000;
const VOTE_DEADLINE_MS = 500;
/** A snapshot is the whole state machine: give it time to travel and be written. */
export const SNAPSHOT_DEADLINE_MS = 30_000;


export interface TransportHandlers {
  /** A request from a peer; `respond` must be called with the core's reply (or not at all). */
  onRequest(message: Message, respond: (reply: Message | null) => void, leaderClientAddress: string): void;
  /** A reply to one of our requests. */
  onReply(message: Message): void;
  /** A request of ours could not be delivered or answered. */
  onUnreachable(peer: NodeId, request: Message["type"]): void;
  /** A peer is configured for another cluster (its request to us, or ours to it, was refused). */
  onMisconfiguredPeer(problem: string): void;
}

type UnaryCallback<T> = (error: grpc.ServiceError | null, value?: T) => void;

export class GrpcTransport {
  readonly #id: NodeId;
  readonly #clients: (grpc.Client | null)[];
  readonly #clientAddress: string;
  readonly #clusterSize: number;
  readonly #handlers: TransportHandlers;
  #server: grpc.Server | null = null;

  constructor(id: NodeId, peerAddresses: readonly string[], clientAddress: string, handlers: TransportHandlers) {
    this.#id = id;
    this.#clientAddress = clientAddress;
    this.#clusterSize = peerAddresses.length;
    this.#handlers = handlers;
    this.#clients = peerAddresses.map((address, peer) =>
      peer === id ? null : new grpc.Client(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS),
    );
  }

  /** Serves the Raft service on `bindAddress` ("host:port"). */
  async listen(bindAddress: string): Promise<void> {
    const server = new grpc.Server(CHANNEL_OPTIONS);
    server.addService(raftService, {
      AppendEntries: this.#handler(
        (wire: AppendEntriesRequestWire): Message => ({
          type: "AppendEntries",
          from: wire.from,
          to: this.#id,
          term: wire.term,
          prevLogIndex: wire.prevLogIndex,
          prevLogTerm: wire.prevLogTerm,
          entries: wire.entries.map(
            (e): Entry => ({ term: e.term, index: e.index, type: e.type as EntryType, data: e.data }),
          ),
          leaderCommit: wire.leaderCommit,
          readRound: wire.readRound,
        }),
        toAppendReplyWire,
      ),
      RequestVote: this.#handler(
        (wire: RequestVoteRequestWire): Message => ({
          type: "RequestVote",
          from: wire.candidateId,
          to: this.#id,
          term: wire.term,
          lastLogIndex: wire.lastLogIndex,
          lastLogTerm: wire.lastLogTerm,
          preVote: wire.preVote,
        }),
        toVoteReplyWire,
      ),
      InstallSnapshot: this.#handler(
        (wire: InstallSnapshotRequestWire): Message => ({
          type: "InstallSnapshot",
          from: wire.from,
          to: this.#id,
          term: wire.term,
          snapshot: { index: wire.lastIncludedIndex, term: wire.lastIncludedTerm },
          data: wire.data,
        }),
        toSnapshotReplyWire,
      ),
    });
    await bind(server, bindAddress);
    this.#server = server;
  }

  /**
   * The server side of one Raft RPC: check that the sender is configured like us, hand the
   * request to the node, and answer with the core's reply (or an error if it has none).
   */
  #handler<Req extends { to: number; clusterSize: number; leaderClientAddress?: string }, Res>(
    toMessage: (wire: Req) => Message,
    toWire: (reply: Message) => Res,
  ) {
    return (call: grpc.ServerUnaryCall<Req, Res>, callback: UnaryCallback<Res>) => {
      const wire = call.request;
      const message = toMessage(wire);
      if (!this.#sameCluster(message.from, wire, callback)) return;
      this.#handlers.onRequest(message, (reply) => respondWith(callback, reply, toWire), wire.leaderClientAddress ?? "");
    };
  }

  /**
   * Whether a request comes from a server configured like us: the same number of servers, sent
   * to our id, from another valid id. A server started with a different -r list (a typo, a
   * reordered list, a duplicated -i) is refused with FAILED_PRECONDITION and reported, so that
   * two differently configured groups never exchange log entries or votes.
   */
  #sameCluster(from: number, wire: { to: number; clusterSize: number }, callback: UnaryCallback<never>): boolean {
    let problem: string | null = null;
    if (wire.clusterSize !== this.#clusterSize) {
      problem = `server ${from} believes the cluster has ${wire.clusterSize} servers; our -r list has ${this.#clusterSize}`;
    } else if (wire.to !== this.#id) {
      problem = `server ${from} believes it is talking to server ${wire.to}, but this is server ${this.#id}`;
    } else if (from === this.#id || from >= this.#clusterSize) {
      problem = `a request claims to come from server ${from}, which is this server or not in the -r list`;
    }
    if (problem === null) return true;
    this.#handlers.onMisconfiguredPeer(problem);
    callback({ code: grpc.status.FAILED_PRECONDITION, details: `cluster mismatch: ${problem}`, name: "", message: "" } as grpc.ServiceError);
    return false;
  }

  /** Sends a request (AppendEntries, RequestVote, InstallSnapshot) to its `to`; not replies. */
  send(message: Message): void {
    const client = this.#clients[message.to];
    if (!client) return;
    const peer = message.to;
    if (message.type === "AppendEntries") {
      const request: AppendEntriesRequestWire = {
        term: message.term,
        leaderId: message.from,
        prevLogIndex: message.prevLogIndex,
        prevLogTerm: message.prevLogTerm,
        entries: message.entries as Entry[],
        leaderCommit: message.leaderCommit,
        from: message.from,
        leaderClientAddress: this.#clientAddress,
        readRound: message.readRound,
        to: peer,
        clusterSize: this.#clusterSize,
      };
      this.#call(client, peer, message.type, raftService.AppendEntries, request, APPEND_DEADLINE_MS, (reply) => ({
        type: "AppendEntriesReply",
        from: peer,
        to: this.#id,
        term: reply.term,
        success: reply.success,
        matchIndex: reply.matchIndex,
        conflictTerm: reply.conflictTerm,
        conflictIndex: reply.conflictIndex,
        readRound: reply.readRound,
      }));
    } else if (message.type === "RequestVote") {
      const request: RequestVoteRequestWire = {
        term: message.term,
        candidateId: message.from,
        lastLogIndex: message.lastLogIndex,
        lastLogTerm: message.lastLogTerm,
        preVote: message.preVote,
        to: peer,
        clusterSize: this.#clusterSize,
      };
      this.#call(client, peer, message.type, raftService.RequestVote, request, VOTE_DEADLINE_MS, (reply) => ({
        type: "RequestVoteReply",
        from: peer,
        to: this.#id,
        term: reply.term,
        voteGranted: reply.voteGranted,
        preVote: reply.preVote,
      }));
    } else if (message.type === "InstallSnapshot") {
      if (message.snapshot === null || message.data === null) throw new Error("InstallSnapshot sent without its snapshot");
      const request: InstallSnapshotRequestWire = {
        term: message.term,
        leaderId: message.from,
        lastIncludedIndex: message.snapshot.index,
        lastIncludedTerm: message.snapshot.term,
        data: message.data,
        from: message.from,
        leaderClientAddress: this.#clientAddress,
        to: peer,
        clusterSize: this.#clusterSize,
      };
      this.#call(client, peer, message.type, raftService.InstallSnapshot, request, SNAPSHOT_DEADLINE_MS, (reply) => ({
        type: "InstallSnapshotReply",
        from: peer,
        to: this.#id,
        term: reply.term,
        matchIndex: reply.matchIndex,
      }));
    }
  }

  /** One unary call; its reply goes to the core as a message, a failure as "unreachable". */
  #call<Req, Res>(
    client: grpc.Client,
    peer: NodeId,
    type: Message["type"],
    method: { path: string; requestSerialize: (value: Req) => Buffer; responseDeserialize: (bytes: Buffer) => Res },
    request: Req,
    deadlineMs: number,
    toMessage: (reply: Res) => Message,
  ): void {
    client.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      { deadline: Date.now() + deadlineMs },
      (error, reply) => {
        if (error?.code === grpc.status.FAILED_PRECONDITION) {
          this.#handlers.onMisconfiguredPeer(`server ${peer} refused us: ${error.details}`);
        }
        if (error || reply === undefined) this.#handlers.onUnreachable(peer, type);
        else this.#handlers.onReply(toMessage(reply));
      },
    );
  }

  close(): void {
    for (const client of this.#clients) client?.close();
    this.#server?.forceShutdown();
  }
}

function respondWith<W>(callback: UnaryCallback<W>, reply: Message | null, toWire: (m: Message) => W): void {
  if (reply === null) {
    // The core chose not to answer (e.g. a vote request while we follow a live leader).
    callback({ code: grpc.status.UNAVAILABLE, details: "request dropped", name: "", message: "" } as grpc.ServiceError);
    return;
  }
  callback(null, toWire(reply));
}

function toAppendReplyWire(m: Message): AppendEntriesReplyWire {
  if (m.type !== "AppendEntriesReply") throw new Error(`expected AppendEntriesReply, got ${m.type}`);
  return {
    term: m.term,
    success: m.success,
    from: m.from,
    matchIndex: m.matchIndex,
    conflictTerm: m.conflictTerm,
    conflictIndex: m.conflictIndex,
    readRound: m.readRound,
  };
}

function toSnapshotReplyWire(m: Message): InstallSnapshotReplyWire {
  if (m.type !== "InstallSnapshotReply") throw new Error(`expected InstallSnapshotReply, got ${m.type}`);
  return { term: m.term, from: m.from, matchIndex: m.matchIndex };
}

function toVoteReplyWire(m: Message): RequestVoteReplyWire {
  if (m.type !== "RequestVoteReply") throw new Error(`expected RequestVoteReply, got ${m.type}`);
  return { term: m.term, voteGranted: m.voteGranted, from: m.from, preVote: m.preVote };
}

/** Binds a grpc-js server, turning its callback into a promise with a clear error. */
export function bind(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (error, port) => {
      if (error) {
        const reason = /EADDRINUSE/.test(error.message) ? "the port is already in use" : error.message;
        reject(new Error(`cannot listen on ${address}: ${reason}`));
      }
      else resolve(port);
    }),
  );
}
