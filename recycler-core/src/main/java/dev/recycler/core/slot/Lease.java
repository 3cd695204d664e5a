package dev.recycler.core.slot;

import dev.recycler.core.auth.LeaseCredentials;
import dev.recycler.proto.v1.LeaseEnded;
import dev.recycler.proto.v1.LeaseRecord;
import dev.recycler.proto.v1.Outcome;
import dev.recycler.proto.v1.PreparedLease;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;

/**
 * One StartWorker call's claim on a slot, from the call until the wrapper reports it ended; the authority on its own
 * state and on its slot's while it holds one.
 *
 * <p><b>Concurrency.</b> The identity fields are final. Everything else is written only through this class's methods,
 * by the {@code core/slot} package under the pool lock; fields that services read without the lock are volatile.
 * {@link #ready()} completes (outside the lock) when the worker's control stream is connected, or exceptionally with a
 * {@code RecyclerException} when the lease fails before that.
 *
 * <p><b>Lifecycle.</b> {@link #transitionTo} is the one writer of the state, and it moves the slot with it (see
 * {@link State#slotState}): it validates both tables before changing either, cancels the timer of the state it leaves,
 * and logs the change once. A lease holds at most one timer, the one of its current state: the wait timeout while
 * WAITING, the ready timeout while BOOTING, the drain timeout while ENDING.
 */
public final class Lease {
  private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(Lease.class);
  private static final AtomicLong SEQUENCE = new AtomicLong();

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

    /**
     * The state the lease's slot takes when the lease enters this state: BOOTING, ACTIVE and DRAINING follow the
     * lease; an ended lease leaves its slot {@link Slot#freeState() free}, backing off, or detached with its wrapper.
     */
    SlotState slotState(Slot slot) {
      return switch (this) {
        case WAITING -> throw new IllegalStateException("a lease never goes back to WAITING");
        case BOOTING -> SlotState.BOOTING;
        case ACTIVE -> SlotState.ACTIVE;
        case ENDING -> SlotState.DRAINING;
        case ENDED -> slot.freeState();
      };
    }
  }

  private final StartWorkerRequest request;
  private final String peer;
  private final long requestedNanos;
  private final Instant requestedAt;
  private final CompletableFuture<Lease> ready = new CompletableFuture<>();
  /** Unique among the leases of this process. */
  private final long sequence = SEQUENCE.incrementAndGet();

  private volatile State state = State.WAITING;
  private volatile Slot slot;
  private volatile long generation;
  /** The public worker id, {@code <slot>.g<generation>}: shown and logged; the credential is never part of it. */
  private volatile String workerId = "";
  /** Random per lease; sent only in the Lease message. A secret: never log it or add it to views or toString. */
  private volatile String credential = "";
  private volatile String jobName = "";
  private volatile String retrievalToken = "";
  private volatile long workerPid;
  private volatile long readyNanos = -1;
  private volatile long assignedNanos = -1;
  private volatile long exitSentNanos = -1;
  private volatile Instant endedAt;
  private volatile EndReason endReason;
  private volatile String outcome = "";
  /** The worker's exit code as its wrapper reported it; null when no worker process ran or exited. */
  private volatile Integer exitCode;
  private volatile String signal = "";
  private volatile String message = "";
  // Guarded by the pool lock.
  /** Whether the Lease message went to the wrapper; until then the lease can end without the wrapper. */
  private boolean announced;
  /** Whether the preparation finished (with or without inputs): only then is the lease placed on a slot. */
  private boolean prepared;
  /** The boot inputs for the wrapper, when the preparation got them; else null (the wrapper asks itself). */
  private PreparedLease inputs;
  /** What a standby must have been started with to serve this lease ({@link Standbys#spec}); null without inputs. */
  private String spec;
  /** Its artifacts' digests ({@link Standbys#digests}): what a wrapper must hold to run it; empty without inputs. */
  private List<String> digests = List.of();
  /** The slot's standby worker this lease took over, if any. */
  private Standbys.Standby adopted;
  private ControlLink control;
  /** The timeout of the current state, if it has one; cancelled by every transition. */
  private Scheduler.Cancellable timer;

  Lease(StartWorkerRequest request, String peer, long requestedNanos, Instant requestedAt) {
    this.request = request;
    this.peer = peer;
    this.requestedNanos = requestedNanos;
    this.requestedAt = requestedAt;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Public view

  /** The runner's request: its worker id and per-environment endpoints. */
  public StartWorkerRequest request() {
    return request;
  }

  /** Unique among the leases of this process: names a lease in logs before it has a slot. */
  public long sequence() {
    return sequence;
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
   * Whether the lease may still use its boot inputs: live, or WAITING (a lease is prepared while it waits for a
   * slot, so that it can be placed on the slot whose standby worker matches it).
   */
  public boolean isOpen() {
    State s = state;
    return s == State.WAITING || isLive();
  }

  public CompletableFuture<Lease> ready() {
    return ready;
  }

  @Override
  public String toString() {
    return "Lease{slot=" + slotId() + ", generation=" + generation + ", worker=" + workerId + ", runnerWorker="
        + runnerWorkerId() + ", state=" + state + "}";
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Transitions (under the pool lock)

  /**
   * Takes {@code target}, an IDLE slot, as the slot's next generation: mints the worker id and keeps {@code
   * credential}, then moves to BOOTING, and the slot with it.
   *
   * @throws IllegalStateException when the lease is not WAITING or the slot not IDLE; nothing changes then
   */
  void assign(Slot target, String newCredential, long nowNanos) {
    check(State.BOOTING, target);
    long next = target.lastGeneration + 1;
    target.lastGeneration = next;
    take(target, next, newCredential, nowNanos);
  }

  /**
   * Takes {@code target}, an IDLE slot, with the generation, worker id and credential reserved for its standby worker,
   * which becomes this lease's worker; then BOOTING, as {@link #assign}.
   */
  void adopt(Slot target, Standbys.Standby standby, long nowNanos) {
    check(State.BOOTING, target);
    adopted = standby;
    take(target, standby.generation(), standby.credential(), nowNanos);
  }

  private void take(Slot target, long newGeneration, String newCredential, long nowNanos) {
    target.lease = this;
    slot = target;
    generation = newGeneration;
    workerId = target.id + ".g" + newGeneration;
    credential = newCredential;
    assignedNanos = nowNanos;
    apply(State.BOOTING, target);
  }

  /** The preparation finished: {@code inputs} null when it could not get them. */
  void prepared(PreparedLease bootInputs) {
    prepared = true;
    inputs = bootInputs;
    spec = bootInputs == null ? null : Standbys.spec(bootInputs);
    digests = bootInputs == null ? List.of() : Standbys.digests(bootInputs);
  }

  boolean isPrepared() {
    return prepared;
  }

  PreparedLease inputs() {
    return inputs;
  }

  String spec() {
    return spec;
  }

  List<String> digests() {
    return digests;
  }

  /** The standby this lease took over, or null. */
  Standbys.Standby adopted() {
    return adopted;
  }

  /**
   * Moves the lease to {@code next} and its slot (if it has one) to the matching state ({@link State#slotState}).
   * Ending an ended lease again is a no-op (terminal transitions are idempotent). Both tables are checked before
   * either state changes; the change is logged once, at INFO, and the slot's change counted.
   *
   * @return whether the state changed
   * @throws IllegalStateException for a transition either table does not allow: a bug in the pool, never input
   */
  boolean transitionTo(State next) {
    if (state == State.ENDED && next == State.ENDED) {
      return false;
    }
    Slot s = slot;
    check(next, s);
    apply(next, s);
    return true;
  }

  private void check(State next, Slot target) {
    State current = state;
    if (!current.mayBecome(next)) {
      throw new IllegalStateException("lease " + this + " cannot go from " + current + " to " + next);
    }
    if (target == null && next != State.ENDED) {
      throw new IllegalStateException("lease " + this + " cannot go from " + current + " to " + next
          + " without a slot: only assign() gives it one");
    }
    // A lease always moves its slot to another state: a slot that already is where the lease would take it (say,
    // BOOTING when a lease is assigned) is held by some other lease.
    if (target != null && !target.state().canTransitionTo(next.slotState(target))) {
      throw new IllegalStateException("lease " + this + " cannot go from " + current + " to " + next + ": its slot "
          + target.id + " cannot go from " + target.state() + " to " + next.slotState(target));
    }
  }

  private void apply(State next, Slot target) {
    State from = state;
    state = next;
    cancelTimer();
    if (target == null) {
      LOG.info("lease transition slot= generation=0 runner_worker={} from={} to={}", runnerWorkerId(), from, next);
      return;
    }
    SlotState slotFrom = target.state();
    SlotState slotTo = next.slotState(target);
    target.apply(slotTo);
    if (next == State.ENDED) {
      target.lease = null;
    }
    LOG.info("lease transition slot={} generation={} from={} to={} slot_from={} slot_to={}", target.id, generation,
        from, next, slotFrom, slotTo);
  }

  /** Arms the timeout of the current state, replacing any earlier one; the next transition cancels it. */
  void arm(Scheduler scheduler, Duration delay, Runnable task) {
    cancelTimer();
    timer = scheduler.schedule(delay, task);
  }

  private void cancelTimer() {
    Scheduler.Cancellable t = timer;
    timer = null;
    if (t != null) {
      t.cancel();
    }
  }

  /** The worker's control stream connected: ACTIVE, with {@code link} to close when the lease ends. */
  void connected(ControlLink link, long nowNanos) {
    transitionTo(State.ACTIVE);
    control = link;
    readyNanos = nowNanos;
  }

  /** The control link, handed over once to be closed; null if none or already taken. */
  ControlLink takeControl() {
    ControlLink c = control;
    control = null;
    return c;
  }

  /** Marks the Lease message as going out now; false if it already did or the lease is no longer BOOTING. */
  boolean announce() {
    if (state != State.BOOTING || announced) {
      return false;
    }
    announced = true;
    return true;
  }

  boolean announced() {
    return announced;
  }

  /** The Lease message for the wrapper: with the Standby message, the only place the credential leaves the recycler. */
  dev.recycler.proto.v1.Lease message() {
    dev.recycler.proto.v1.Lease.Builder m = dev.recycler.proto.v1.Lease.newBuilder().setGeneration(generation)
        .setJobName(jobName).setWorkerId(LeaseCredentials.workerId(workerId, credential)).setCredential(credential)
        .setAdoptStandby(adopted != null);
    if (inputs != null) {
      m.setPrepared(inputs);
    }
    return m.build();
  }

  /** Records why the lease ends; the first reason stands. */
  void endReason(EndReason reason) {
    if (endReason == null) {
      endReason = reason;
    }
  }

  EndReason endReason() {
    return endReason;
  }

  /** ENDED at {@code at}, for {@code reason} unless one was recorded already. */
  void ended(EndReason reason, Instant at) {
    transitionTo(State.ENDED);
    endReason(reason);
    endedAt = at;
  }

  /** How the lease ended as the recycler saw it, when its wrapper reports nothing (e.g. NOT_SENT, WRAPPER_LOST). */
  void outcome(String value) {
    outcome = value;
  }

  /** The wrapper's report of the lease's end. */
  void reported(LeaseEnded e) {
    outcome = e.getOutcome().name().replace("OUTCOME_", "");
    boolean ran = e.getOutcome() == Outcome.OUTCOME_EXITED_ON_INSTRUCTION
        || e.getOutcome() == Outcome.OUTCOME_WORKER_EXITED;
    exitCode = ran ? e.getExitCode() : null;
    signal = e.getSignal();
    message = e.getMessage();
  }

  void workerStarted(long pid) {
    workerPid = pid;
  }

  void jobName(String name) {
    jobName = name == null ? "" : name;
  }

  void retrievalToken(String token) {
    retrievalToken = token == null ? "" : token;
  }

  /** Stamps the exit instruction's time, for the drain duration. */
  void exitSent(long nowNanos) {
    exitSentNanos = nowNanos;
  }

  long exitSentNanos() {
    return exitSentNanos;
  }

  Slot slot() {
    return slot;
  }

  String credential() {
    return credential;
  }

  long workerPid() {
    return workerPid;
  }

  /** Whether its worker connected (the lease became ACTIVE at some point). */
  boolean wasReady() {
    return readyNanos >= 0;
  }

  long assignedNanos() {
    return assignedNanos;
  }

  long requestedNanos() {
    return requestedNanos;
  }

  Instant requestedAt() {
    return requestedAt;
  }

  String outcome() {
    return outcome;
  }

  /** The worker's exit code, or "none" when no worker process ran (for logs). */
  String exitCode() {
    Integer c = exitCode;
    return c == null ? "none" : c.toString();
  }

  /** The lease's row in the slot table's history; end fields only once ENDED. */
  LeaseRecord record() {
    LeaseRecord.Builder r = LeaseRecord.newBuilder().setSlotId(slotId()).setGeneration(generation)
        .setRunnerWorkerId(runnerWorkerId()).setWorkerId(workerId).setJobName(jobName).setWorkerPid(workerPid)
        .setStartUnixMillis(requestedAt.toEpochMilli())
        .setReadyLatencyMillis(readyNanos < 0 ? -1 : (readyNanos - requestedNanos) / 1_000_000)
        .setOutcome(outcome).setSignal(signal).setMessage(message).setStandby(adopted != null);
    Integer code = exitCode;
    if (code != null) {
      r.setExitCode(code);
    }
    if (state == State.ENDED && endedAt != null) {
      r.setEndUnixMillis(endedAt.toEpochMilli()).setEndReason(endReason.name());
    }
    return r.build();
  }
}
