package dev.recycler.core.auth;

import dev.recycler.core.api.RecyclerException;

/**
 * Checks the credential of a lease-scoped call against the live lease it names. Implemented by the slot pool, which
 * holds the leases; called by {@link Authenticator} before any service code runs.
 *
 * <p>Errors: UNAUTHENTICATED when no credential was presented, PERMISSION_DENIED when it is not the lease's; otherwise
 * the same statuses the services give (NOT_FOUND unknown id, FAILED_PRECONDITION stale generation or ended lease).
 * Messages never contain the credential.
 */
public interface LeaseVerifier {
  /**
   * Checks a worker id presented by an inner worker on its control path ({@code <public id>.<credential>}).
   *
   * @return the verified public id (without the credential)
   */
  String verifyWorker(String presentedWorkerId) throws RecyclerException;

  /** Checks a wrapper's provision/artifact call: its slot id, generation header and lease credential header. */
  void verifyWrapper(String slotId, String generationHeader, String credential) throws RecyclerException;

  /**
   * Checks and uses up the ticket of a wrapper's prefetch GetArtifact call (outside any lease).
   *
   * @return the sha256 (64 lowercase hex digits) the ticket lets the slot fetch
   */
  String redeemPrefetch(String slotId, String ticket) throws RecyclerException;
}
