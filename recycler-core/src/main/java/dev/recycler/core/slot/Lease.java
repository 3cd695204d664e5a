package dev.recycler.core.slot;

import java.time.Instant;
import java.util.concurrent.CompletableFuture;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;

/**
 * One StartWorker call's claim on a slot, from the call until the wrapper reports it ended.
 *
 * <p>Concurrency: the identity fields are final; the mutable fields are written only by {@link SlotPool} under its
 * lock and are volatile so that services may read them without it. {@link #ready()} completes (outside the lock) when
 * the worker's control stream is connected, or exceptionally with a {@code RecyclerException} when the lease fails
 * before that.
 */
public final class Lease {
  private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(Lease.class);
  /**
   * Lifecycle of a lease; ENDED is terminal. Each state names the states it may become (the whole table is tested in
   * {@code LeaseStateTest}): a lease ends from any state, an announced one by way of ENDING (its wrapper still has to
   * stop the worker), one that never reached its wrapper, or whose wrapper is gone, directly.
   */
  public enum State {
    /** Queued for a free slot. */
    WAITING {
      @Override
      boolean mayBecome(State next) {
        return next == BOOTING || next == ENDED;
      }
    },
    /** Assigned a slot; the worker is being prepared, announced, started. */
    BOOTING {
      @Override
      boolean mayBecome(State next) {
        return next == ACTIVE || next == ENDING || next == ENDED;
      }
    },
    /** The worker's control stream is connected; StartWorker has returned. */
    ACTIVE {
      @Override
      boolean mayBecome(State next) {
        return next == ENDING || next == ENDED;
      }
    },
    /** The exit instruction is out; waiting for the wrapper to report the lease's processes gone. */
    ENDING {
      @Override
      boolean mayBecome(State next) {
        return next == ENDED;
      }
    },
    /** Over: recorded, its slot freed. */
    ENDED {
      @Override
      boolean mayBecome(State next) {
        return false;
      }
    };

    abstract boolean mayBecome(State next);
  }

  private final StartWorkerRequest request;
  private final String peer;
  private final long requestedNanos;
  private final Instant requestedAt;
  private final CompletableFuture<Lease> ready = new CompletableFuture<>();
  private static final java.util.concurrent.atomic.AtomicLong SEQUENCE = new java.util.concurrent.atomic.AtomicLong();
  /** Unique among the leases of this process. */
  private final long sequence = SEQUENCE.incrementAndGet();

  volatile State state = State.WAITING;
  volatile Slot slot;
  volatile long generation;
  /** The public worker id, {@code <slot>.g<generation>}: shown and logged; the credential is never part of it. */
  volatile String workerId = "";
  /** Random per lease; sent only in the Lease message. A secret: never log it or add it to views or toString. */
  volatile String credential = "";
  volatile String jobName = "";
  volatile String retrievalToken = "";
  volatile long workerPid;
  volatile long readyNanos = -1;
  volatile long assignedNanos = -1;
  volatile long exitSentNanos = -1;
  volatile Instant endedAt;
  volatile EndReason endReason;
  volatile String outcome = "";
  volatile int exitCode;
  volatile String signal = "";
  volatile String message = "";
  // Guarded by the pool lock.
  /** Whether the Lease message went to the wrapper; until then the lease can end without the wrapper. */
  boolean announced;
  ControlLink control;
  Scheduler.Cancellable waitTask;
  Scheduler.Cancellable readyTask;

  Lease(StartWorkerRequest request, String peer, long requestedNanos, Instant requestedAt) {
    this.request = request;
    this.peer = peer;
    this.requestedNanos = requestedNanos;
    this.requestedAt = requestedAt;
  }

  /** The runner's request: its worker id and per-environment endpoints. */
  public StartWorkerRequest request() {
    return request;
  }

  /** The runner's worker id (not unique across jobs). */
  public String runnerWorkerId() {
    return request.getWorkerId();
  }

  /** Address of the runner's channel that asked for this lease. */
  public String peer() {
    return peer;
  }

  /** The slot's id once assigned, else "". */
  public String slotId() {
    Slot s = slot;
    return s == null ? "" : s.id;
  }

  /** Per-slot generation once assigned, else 0. */
  public long generation() {
    return generation;
  }

  /**
   * The public worker id ({@code <slot>.g<generation>}), once assigned, else "". The inner worker's {@code --id} is this
   * plus the lease credential; see {@code LeaseCredentials}.
   */
  public String workerId() {
    return workerId;
  }

  public String jobName() {
    return jobName;
  }

  /**
   * The scope in which a runner artifact's path names one content: the job's retrieval token when the runner gave
   * one, else this lease alone. Never shared by two jobs that the runner tells apart.
   */
  public String artifactScope() {
    String token = retrievalToken;
    return token.isEmpty() ? "lease:" + sequence : "job:" + token;
  }

  public State state() {
    return state;
  }

  /** Whether provisioning and artifact calls may still be served for this lease. */
  public boolean isLive() {
    State s = state;
    return s == State.BOOTING || s == State.ACTIVE;
  }

  /**
   * Moves the lease to {@code next}. Called by the pool under its lock, the only writer of the state. Ending an ended
   * lease again is a no-op (terminal transitions are idempotent). Logged at DEBUG: the slot's own transition, logged
   * at INFO and counted, already carries every change an operator sees.
   *
   * @return whether the state changed
   * @throws IllegalStateException for a transition the table does not allow: a bug in the pool, never input
   */
  boolean transitionTo(State next) {
    State current = state;
    if (current == State.ENDED && next == State.ENDED) {
      return false;
    }
    if (!current.mayBecome(next)) {
      throw new IllegalStateException("lease " + this + " cannot go from " + current + " to " + next);
    }
    state = next;
    LOG.debug("lease transition slot={} generation={} from={} to={}", slotId(), generation, current, next);
    return true;
  }

  public CompletableFuture<Lease> ready() {
    return ready;
  }

  long requestedNanos() {
    return requestedNanos;
  }

  Instant requestedAt() {
    return requestedAt;
  }

  @Override
  public String toString() {
    return "Lease{slot=" + slotId() + ", generation=" + generation + ", worker=" + workerId + ", runnerWorker="
        + runnerWorkerId() + ", state=" + state + "}";
  }
}
