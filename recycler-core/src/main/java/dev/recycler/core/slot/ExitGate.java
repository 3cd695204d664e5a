package dev.recycler.core.slot;

import java.util.concurrent.CompletableFuture;

/**
 * What a lease's exit instruction waits for once the pool has decided to send it: the control package's logging proxy
 * holds it until the worker's queued log entries have drained (bounded). The pool's state moves on at once; only the
 * message to the wrapper waits. Implementations never block and always complete.
 */
@FunctionalInterface
public interface ExitGate {
  /** No waiting. */
  ExitGate NONE = lease -> CompletableFuture.completedFuture(null);

  /** Completes when the exit instruction for {@code lease} may go out. */
  CompletableFuture<Void> beforeExit(Lease lease);
}
