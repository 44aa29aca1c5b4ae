/**
 * @module node/errors
 * Expected failures of a client request, mapped to kvs.Status at the service boundary.
 */

/** This server does not lead; `leaderHint` is the leader's client address when known. */
export class NotLeaderError extends Error {
  override name = "NotLeaderError";
  constructor(readonly leaderHint: string) {
    super(leaderHint ? `not the leader; try ${leaderHint}` : "not the leader; no leader known");
  }
}

/** The request did not complete in time; a write may or may not have been applied. */
export class RequestTimeoutError extends Error {
  override name = "RequestTimeoutError";
}

/** Leadership changed and another entry took the proposal's place: it was not applied. */
export class ProposalDroppedError extends Error {
  override name = "ProposalDroppedError";
}
