package dev.recycler.core.slot;

/** The recycler's handle on a lease's proxied control stream. */
public interface ControlLink {
  /**
   * Ends both halves of the proxied stream because the lease ended: the worker's side is completed, the runner's side
   * completed or failed depending on {@code reason}. Idempotent; never throws.
   */
  void close(EndReason reason);
}
