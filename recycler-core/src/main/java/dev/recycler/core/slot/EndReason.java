package dev.recycler.core.slot;

import dev.recycler.proto.v1.ExitReason;

/** Why a lease ended; recorded in the slot table and counted. */
public enum EndReason {
  /** The runner closed the worker's control stream: the normal end of a job's work on this TaskManager. */
  RUNNER_CLOSED(ExitReason.EXIT_REASON_RUNNER_CLOSED, false),
  /** The runner called StopWorker. */
  STOP_WORKER(ExitReason.EXIT_REASON_STOP_WORKER, false),
  /** The runner's StartWorker call was cancelled before the worker was ready. */
  CANCELLED(ExitReason.EXIT_REASON_CANCELLED, false),
  /** No slot became free within the lease wait timeout. */
  WAIT_TIMEOUT(ExitReason.EXIT_REASON_UNSPECIFIED, false),
  /** The worker did not connect within the ready timeout. */
  READY_TIMEOUT(ExitReason.EXIT_REASON_READY_TIMEOUT, true),
  /** The worker's control stream broke while the lease was running. */
  WORKER_LOST(ExitReason.EXIT_REASON_WORKER_LOST, false),
  /** The wrapper reported that the worker exited on its own. */
  WORKER_EXITED(ExitReason.EXIT_REASON_WORKER_LOST, true),
  /** The wrapper could not boot the worker (provisioning, artifacts, process start). */
  BOOT_FAILED(ExitReason.EXIT_REASON_UNSPECIFIED, true),
  /** The wrapper holding the slot disconnected or was replaced by a new incarnation. */
  WRAPPER_LOST(ExitReason.EXIT_REASON_UNSPECIFIED, false),
  /** The StartWorker call was refused because max-waiting-starts calls were already waiting for a slot. */
  QUEUE_FULL(ExitReason.EXIT_REASON_UNSPECIFIED, false),
  /** The recycler is shutting down. */
  SHUTDOWN(ExitReason.EXIT_REASON_SHUTDOWN, false);

  private final ExitReason exitReason;
  private final boolean slotFault;

  EndReason(ExitReason exitReason, boolean slotFault) {
    this.exitReason = exitReason;
    this.slotFault = slotFault;
  }

  /** The reason sent to the wrapper with the exit instruction. */
  public ExitReason exitReason() {
    return exitReason;
  }

  /** Whether this end counts as a failure of the slot when it happens before the worker was ready. */
  boolean slotFault() {
    return slotFault;
  }
}
