/** gRPC channel and server options shared by every raftkv client and server. */
import type { ChannelOptions } from "@grpc/grpc-js";
import { MAX_GRPC_MESSAGE_BYTES } from "./proto";

export const GRPC_CHANNEL_OPTIONS: ChannelOptions = {
  "grpc.max_receive_message_length": MAX_GRPC_MESSAGE_BYTES,
  "grpc.max_send_message_length": MAX_GRPC_MESSAGE_BYTES,
  // Reconnect to a restarted peer within about a second, without hammering a dead one.
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 1000,
  // Retrying is our decision (Raft resends, the client library retries with sessions).
  "grpc.enable_retries": 0,
};
