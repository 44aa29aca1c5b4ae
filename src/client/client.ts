/**
 * @module client/client
 * A raftkv client for programs and for `clt`.
 *
 * Two modes:
 * - one server (`followLeader: false`): each call goes to the first address once and returns the
 *   server's answer as is (NOT_LEADER included). `clt -p` uses this: scripts rely on its exit 2.
 * - a cluster (`followLeader: true`): calls find the leader (following `leader_hint`), retry
 *   NOT_LEADER, errors and unreachable servers with capped backoff until the overall deadline,
 *   and tag writes with a client id and sequence number so a retried PUT is applied once.
 */
import * as grpc from "@grpc/grpc-js";
import { randomUUID } from "node:crypto";
import { GRPC_CHANNEL_OPTIONS } from "../wire/channel-options";
import { invalidRequest, type KvsReply, KvsStatus, kvsService } from "../wire/proto";

export { KvsStatus, type KvsReply };

/** The request could not be completed: server unreachable, or no answer before the deadline. */
export class ClientError extends Error {
  override name = "ClientError";
}

export interface ClientOptions {
  /** Overall time a call may take, retries included. */
  timeoutMs?: number;
  followLeader?: boolean;
  /** Exactly-once session id; a random one by default. */
  clientId?: string;
}

/** The request can never succeed (empty key, value over 1 MiB...): nothing was sent. */
export class InvalidRequestError extends Error {
  override name = "InvalidRequestError";
}

function rejectInvalid(key: string, value?: string): void {
  const problem = invalidRequest(key, value);
  if (problem) throw new InvalidRequestError(problem);
}

type Method = "Put" | "Get" | "DirectGet";

const RETRY_BACKOFF_START_MS = 20;
const RETRY_BACKOFF_MAX_MS = 500;
/** In cluster mode, one attempt may take at most this long, so a dead leader is left quickly. */
const ATTEMPT_TIMEOUT_MS = 1500;

export class KvsClient {
  readonly #addresses: string[];
  readonly #channels = new Map<string, grpc.Client>();
  readonly #timeoutMs: number;
  readonly #followLeader: boolean;
  readonly clientId: string;
  #sequence = 0;
  /** Sequences of writes in flight. */
  readonly #unanswered = new Set<number>();
  #leader: string | null = null;

  constructor(addresses: string[], options: ClientOptions = {}) {
    if (addresses.length === 0) throw new Error("KvsClient needs at least one server address");
    this.#addresses = [...addresses];
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#followLeader = options.followLeader ?? addresses.length > 1;
    this.clientId = options.clientId ?? randomUUID();
  }

  /**
   * Writes `value` under `key`. In cluster mode the write carries this client's id and a
   * sequence number (pass `sequence` to retry an earlier write by hand) plus the lowest sequence
   * still awaiting its answer, so several writes may be in flight and each applies once.
   */
  async put(key: string, value: string, sequence?: number): Promise<KvsReply> {
    rejectInvalid(key, value);
    if (!this.#followLeader) return this.#call("Put", { key, value, clientId: "", sequence: 0, ackedBelow: 0 });
    const seq = sequence ?? ++this.#sequence;
    this.#unanswered.add(seq);
    try {
      const ackedBelow = Math.min(...this.#unanswered);
      return await this.#call("Put", { key, value, clientId: this.clientId, sequence: seq, ackedBelow });
    } finally {
      // Answered, or given up on: either way this client never sends `seq` again.
      this.#unanswered.delete(seq);
    }
  }

  get(key: string): Promise<KvsReply> {
    rejectInvalid(key);
    return this.#call("Get", { key });
  }

  /** Reads one server's local store, bypassing Raft (the first address, or `address`). */
  directGet(key: string, address?: string): Promise<KvsReply> {
    rejectInvalid(key);
    return this.#once(address ?? this.#addresses[0]!, "DirectGet", { key }, Date.now() + this.#timeoutMs);
  }

  close(): void {
    for (const channel of this.#channels.values()) channel.close();
    this.#channels.clear();
  }

  async #call(method: Method, request: object): Promise<KvsReply> {
    const deadline = Date.now() + this.#timeoutMs;
    if (!this.#followLeader) return this.#once(this.#addresses[0]!, method, request, deadline);

    let backoff = RETRY_BACKOFF_START_MS;
    let next = 0;
    let lastProblem = "no server answered";
    let sawNoLeader = false;
    for (;;) {
      const target = this.#leader ?? this.#addresses[next++ % this.#addresses.length]!;
      const attemptDeadline = Math.min(deadline, Date.now() + ATTEMPT_TIMEOUT_MS);
      try {
        const reply = await this.#once(target, method, request, attemptDeadline);
        if (reply.status === KvsStatus.OK || reply.status === KvsStatus.NO_KEY) {
          this.#leader = target;
          return reply;
        }
        if (reply.status === KvsStatus.NOT_LEADER) {
          sawNoLeader ||= !reply.leaderHint;
          lastProblem = `${target} is not the leader`;
          this.#leader = reply.leaderHint && reply.leaderHint !== target ? reply.leaderHint : null;
          if (this.#leader) continue; // follow the hint at once
        } else {
          lastProblem = `${target}: ${reply.error || "server error"}`;
          this.#leader = null;
        }
      } catch (error) {
        lastProblem = (error as Error).message;
        this.#leader = null;
      }
      const wait = Math.min(backoff, deadline - Date.now());
      if (wait <= 0) {
        const summary = sawNoLeader ? "no leader was elected" : "no answer";
        throw new ClientError(`${summary} within ${this.#timeoutMs} ms (last: ${lastProblem})`);
      }
      await Bun.sleep(wait);
      backoff = Math.min(backoff * 2, RETRY_BACKOFF_MAX_MS);
    }
  }

  #channel(address: string): grpc.Client {
    let channel = this.#channels.get(address);
    if (!channel) {
      channel = new grpc.Client(address, grpc.credentials.createInsecure(), GRPC_CHANNEL_OPTIONS);
      this.#channels.set(address, channel);
    }
    return channel;
  }

  #once(address: string, method: Method, request: object, deadline: number): Promise<KvsReply> {
    const definition = kvsService[method];
    return new Promise((resolve, reject) => {
      this.#channel(address).makeUnaryRequest(
        definition.path,
        definition.requestSerialize as (value: object) => Buffer,
        definition.responseDeserialize,
        request,
        { deadline },
        (error, reply) => {
          if (error || !reply) {
            const reason =
              error?.code === grpc.status.DEADLINE_EXCEEDED
                ? `no answer from ${address} before the deadline`
                : error?.code === grpc.status.UNAVAILABLE
                  ? `cannot reach server at ${address}`
                  : `${address}: ${error?.details ?? "no reply"}`;
            reject(new ClientError(reason));
          } else resolve(reply);
        },
      );
    });
  }
}
