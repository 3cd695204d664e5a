package dev.recycler.core.slot;

import static dev.recycler.core.api.RecyclerException.Kind.TIMEOUT;
import static dev.recycler.core.api.RecyclerException.Kind.UNAVAILABLE;
import static dev.recycler.core.api.RecyclerException.Kind.WRONG_STATE;

import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.auth.LeaseCredentials;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.proto.v1.Exit;
import dev.recycler.proto.v1.LeaseEnded;
import dev.recycler.proto.v1.Outcome;
import dev.recycler.proto.v1.PreparedLease;
import dev.recycler.proto.v1.RecyclerMessage;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What happens to a lease once it has a slot: assignment and the Lease message, readiness, the end (exit instruction,
 * drain, record, back-off) and the timeouts on the way. The states themselves change only through {@link
 * Lease#transitionTo}, which moves the slot with the lease; this class decides when.
 *
 * <p><b>Concurrency.</b> Methods without their own lock run under the pool lock and add their side effects to the
 * caller's {@code after} list ({@link PoolLock}); timeouts and the completion of a lease's preparation take the lock
 * themselves.
 *
 * <p><b>Failure handling.</b> Every wait is bounded: booting by the ready timeout, draining by the drain timeout (which
 * re-sends the exit instruction). Slots whose leases fail before the worker is ready back off exponentially from their
 * second consecutive failure.
 */
final class LeaseLifecycle {
  private static final Logger LOG = LoggerFactory.getLogger(LeaseLifecycle.class);

  /** What the pool does when a lease's end frees its slot. */
  interface Pool {
    /** Hands free slots to waiting StartWorker calls. */
    void dispatch(List<Runnable> after);

    /** Completes the shutdown once no slot holds a lease. */
    void checkDrained(List<Runnable> after);

    /** Whether the pool is shut down (no new standbys then). */
    boolean closed();

    /** Starts the waiting, unplaced {@code lease}'s worker from {@code probed} inputs if a slot can. */
    void speculate(Lease lease, PreparedLease probed, List<Runnable> after);
  }

  private final RecyclerConfig config;
  private final Scheduler scheduler;
  private final RecyclerMetrics<SlotState, EndReason> metrics;
  private final LeaseListener listener;
  private final PoolLock lock;
  private final LeaseIndex index;
  private final Standbys standbys;
  private final Pool pool;
  private final SecureRandom random = new SecureRandom();
  /** What an exit instruction waits for before it goes out (the worker's log drain); set once at wiring. */
  private volatile ExitGate exitGate = ExitGate.NONE;

  LeaseLifecycle(RecyclerConfig config, Scheduler scheduler, RecyclerMetrics<SlotState, EndReason> metrics,
      LeaseListener listener, PoolLock lock, LeaseIndex index, Standbys standbys, Pool pool) {
    this.config = config;
    this.scheduler = scheduler;
    this.metrics = metrics;
    this.listener = listener;
    this.lock = lock;
    this.index = index;
    this.standbys = standbys;
    this.pool = pool;
  }

  void exitGate(ExitGate gate) {
    this.exitGate = java.util.Objects.requireNonNull(gate, "gate");
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Assignment and readiness

  /**
   * Gets the WAITING lease's boot inputs from the listener (the runner's provision info and resolved artifacts); once
   * they are in (or could not be had: the wrapper then asks itself), the lease can be placed on a slot. With {@code
   * speculative-start}, inputs the listener knows earlier with digests only probed start a worker on a slot meanwhile
   * ({@link Standbys#speculate}); the lease is placed only after that decision, so its verified inputs always find
   * the worker started for it (and adopt it, or stop it if they differ). Called outside the lock.
   */
  void prepare(Lease lease) {
    long started = scheduler.nanoTime();
    CompletableFuture<PreparedLease> inputs;
    CompletableFuture<PreparedLease> probed;
    try {
      inputs = listener.prepare(lease);
      probed = config.speculativeStart() ? listener.provisional(lease)
          : CompletableFuture.completedFuture(null);
    } catch (RuntimeException e) {
      inputs = CompletableFuture.failedFuture(e);
      probed = CompletableFuture.completedFuture(null);
    }
    CompletableFuture<Void> speculated = probed.handle((p, failure) -> {
      if (failure == null && p != null) {
        try {
          lock.run(after -> {
            if (lease.state() == Lease.State.WAITING && !lease.isPrepared() && !pool.closed()) {
              pool.speculate(lease, p, after);
            }
          });
        } catch (RuntimeException e) {
          // A speculative start is only ever a head start: the lease is placed as usual without it.
          LOG.warn("speculative start failed runner_worker={} lease={}", lease.runnerWorkerId(), lease.sequence(), e);
        }
      }
      return null;
    });
    inputs.handle((prepared, failure) -> failure == null ? prepared : null).thenCombine(speculated, (p, v) -> p)
        .thenAccept(prepared -> lock.run(after -> {
          if (lease.state() != Lease.State.WAITING) {
            return; // it ended while it was being prepared
          }
          lease.prepared(prepared);
          LOG.info("lease prepared runner_worker={} prepared={} prepare_ms={} lease={}", lease.runnerWorkerId(),
              lease.inputs() != null, (scheduler.nanoTime() - started) / 1_000_000, lease.sequence());
          pool.dispatch(after);
        }));
  }

  /**
   * Gives the IDLE {@code slot} to the prepared, waiting {@code lease}: as the adopter of {@code standby} (the slot's
   * matching standby worker: its reserved generation, worker id and credential), or with the next generation and a
   * fresh credential, after dropping a standby of another job the slot may hold. Then the Lease message goes out.
   */
  void assign(Slot slot, Lease lease, Standbys.Standby standby, List<Runnable> after) {
    if (standby != null) {
      lease.adopt(slot, standby, scheduler.nanoTime());
    } else {
      standbys.drop(slot, "the slot is needed for another job's lease", false, after);
      lease.assign(slot, LeaseCredentials.mint(random), scheduler.nanoTime());
    }
    index.assigned(lease);
    metrics.leaseWait(Duration.ofNanos(scheduler.nanoTime() - lease.requestedNanos()));
    lease.arm(scheduler, config.readyTimeout(), () -> readyTimedOut(lease));
    LOG.info("lease assigned slot={} generation={} worker={} runner_worker={} standby={} lease={}", slot.id,
        lease.generation(), lease.workerId(), lease.runnerWorkerId(), standby != null, lease.sequence());
    after.add(() -> announce(lease));
    if (standby != null) {
      // After the announcement: the held streams make the lease ready, and its wrapper must know the lease by then.
      standbys.adopted(standby, lease, after);
    }
  }

  private void announce(Lease lease) {
    // Sent under the lock, unlike other side effects: an Exit for this lease is queued only after this point, so it
    // can never reach the wrapper before its Lease. Sending does not block (the stream buffers).
    lock.run(after -> {
      if (!lease.announce()) {
        return; // it ended before its wrapper heard of it; end() has freed the slot
      }
      LOG.info("lease sent slot={} generation={} prepared={} standby={} prepare_ms={}", lease.slotId(),
          lease.generation(), lease.inputs() != null, lease.adopted() != null,
          (scheduler.nanoTime() - lease.assignedNanos()) / 1_000_000);
      lease.slot().attachment.link().send(RecyclerMessage.newBuilder().setLease(lease.message()).build());
    });
  }

  /** The BOOTING lease's worker connected its control stream: ACTIVE, and the runner's StartWorker call returns. */
  void connected(Lease lease, ControlLink link, List<Runnable> after) {
    long now = scheduler.nanoTime();
    lease.connected(link, now);
    lease.slot().consecutiveFailures = 0;
    metrics.leaseReady(Duration.ofNanos(now - lease.requestedNanos()));
    after.add(() -> lease.ready().complete(lease));
  }

  private void readyTimedOut(Lease lease) {
    lock.run(after -> {
      if (lease.state() != Lease.State.BOOTING) {
        return;
      }
      String report = lease.workerPid() > 0 ? "the wrapper started it as pid " + lease.workerPid()
          : "the wrapper reported no started worker";
      end(lease, EndReason.READY_TIMEOUT, new RecyclerException(TIMEOUT, "the worker of slot '" + lease.slotId()
          + "' (generation " + lease.generation() + ") did not connect to its control endpoint within "
          + config.readyTimeout().toSeconds() + "s; " + report + "; see the wrapper's log"), after);
    });
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Ending

  /**
   * Ends a BOOTING or ACTIVE lease (no-op otherwise): fails the StartWorker call if pending, closes control, sends the
   * exit. A lease its wrapper never heard of ends at once and frees its slot.
   */
  void end(Lease lease, EndReason reason, RecyclerException failure, List<Runnable> after) {
    if (!lease.isLive()) {
      return;
    }
    failIfBooting(lease, reason, failure, after);
    lease.endReason(reason);
    if (!lease.announced()) {
      // Its wrapper never got the Lease, so nothing of it runs but an adopted standby: the slot is free at once,
      // the standby is stopped as unused.
      if (lease.adopted() != null && lease.slot().attachment != null) {
        WrapperLink link = lease.slot().attachment.link();
        Exit exit = Exit.newBuilder().setGeneration(lease.generation())
            .setReason(dev.recycler.proto.v1.ExitReason.EXIT_REASON_STANDBY_UNUSED).build();
        after.add(() -> link.send(RecyclerMessage.newBuilder().setExit(exit).build()));
      }
      lease.outcome("NOT_SENT");
      finish(lease, reason, after);
      pool.dispatch(after);
      return;
    }
    lease.transitionTo(Lease.State.ENDING);
    closeControl(lease, reason, after);
    sendExit(lease, after);
  }

  private void sendExit(Lease lease, List<Runnable> after) {
    Slot slot = lease.slot();
    lease.exitSent(scheduler.nanoTime());
    lease.arm(scheduler, config.drainTimeout(), () -> drainTimedOut(lease));
    WrapperLink link = slot.attachment.link();
    Exit exit = Exit.newBuilder().setGeneration(lease.generation()).setReason(lease.endReason().exitReason()).build();
    LOG.info("exit instruction slot={} generation={} reason={}", slot.id, lease.generation(), lease.endReason());
    ExitGate gate = exitGate;
    after.add(() -> gate.beforeExit(lease).whenComplete(
        (v, t) -> link.send(RecyclerMessage.newBuilder().setExit(exit).build())));
  }

  private void drainTimedOut(Lease lease) {
    lock.run(after -> {
      Slot slot = lease.slot();
      if (slot.lease != lease || lease.state() != Lease.State.ENDING || slot.attachment == null) {
        return;
      }
      LOG.warn("wrapper has not reported the lease ended, re-sending exit slot={} generation={} waited={}s", slot.id,
          lease.generation(), config.drainTimeout().toSeconds());
      sendExit(lease, after);
    });
  }

  /** The wrapper of the lease's slot is gone, and with it every process of the lease. */
  void wrapperLost(Lease lease, List<Runnable> after) {
    lease.outcome("WRAPPER_LOST");
    failIfBooting(lease, EndReason.WRAPPER_LOST, new RecyclerException(UNAVAILABLE, "the wrapper of slot '"
        + lease.slotId() + "' disconnected before the worker was ready"), after);
    closeControl(lease, EndReason.WRAPPER_LOST, after);
    finish(lease, EndReason.WRAPPER_LOST, after);
  }

  /** The wrapper reports nothing of the lease alive any more: why it ended depends on how far it got. */
  void reported(Lease lease, LeaseEnded ended, List<Runnable> after) {
    Slot slot = lease.slot();
    lease.reported(ended);
    EndReason reason = lease.endReason();
    switch (lease.state()) {
      case BOOTING -> {
        boolean bootFailed = ended.getOutcome() == Outcome.OUTCOME_BOOT_FAILED;
        reason = bootFailed ? EndReason.BOOT_FAILED : EndReason.WORKER_EXITED;
        String why = bootFailed
            ? "slot '" + slot.id + "' could not boot the worker (" + stageName(ended) + "): " + ended.getMessage()
            : "the worker of slot '" + slot.id + "' exited " + exitText(ended) + " before connecting to its control"
                + " endpoint";
        failIfBooting(lease, reason, new RecyclerException(bootFailed ? WRONG_STATE : UNAVAILABLE, why), after);
      }
      case ACTIVE -> {
        reason = EndReason.WORKER_EXITED;
        closeControl(lease, reason, after);
      }
      case ENDING -> {
        if (lease.exitSentNanos() >= 0) {
          metrics.leaseDrain(Duration.ofNanos(scheduler.nanoTime() - lease.exitSentNanos()));
        }
      }
      default -> throw new IllegalStateException("lease " + lease + " on a slot in state " + lease.state());
    }
    finish(lease, reason, after);
    pool.dispatch(after);
    if (slot.lease == null) {
      standbys.offer(slot, lease, pool.closed());
    }
  }

  /** Fails the runner's pending StartWorker call, if the lease is not ready yet; a slot fault counts against it. */
  private void failIfBooting(Lease lease, EndReason reason, RecyclerException failure, List<Runnable> after) {
    if (lease.state() == Lease.State.BOOTING || lease.state() == Lease.State.WAITING) {
      if (reason.slotFault() && lease.slot() != null) {
        lease.slot().consecutiveFailures++;
      }
      metrics.startFailed(reason);
      LOG.warn("StartWorker failed slot={} generation={} runner_worker={} reason={}: {}", lease.slotId(),
          lease.generation(), lease.runnerWorkerId(), reason, failure.getMessage());
      after.add(() -> lease.ready().completeExceptionally(failure));
    }
  }

  private static void closeControl(Lease lease, EndReason reason, List<Runnable> after) {
    ControlLink control = lease.takeControl();
    if (control != null) {
      after.add(() -> control.close(reason));
    }
  }

  /**
   * The lease is over and nothing of it is alive: ENDED, which frees its slot (IDLE, BACKOFF or, without its wrapper,
   * DETACHED); recorded, counted, and the listener told.
   */
  private void finish(Lease lease, EndReason reason, List<Runnable> after) {
    Slot slot = lease.slot();
    lease.ended(reason, scheduler.now());
    slot.leasesServed++;
    index.ended(lease);
    metrics.leaseEnded(lease.endReason());
    LOG.info("lease ended slot={} generation={} reason={} outcome={} exit_code={}", slot.id, lease.generation(),
        lease.endReason(), lease.outcome(), lease.exitCode());
    if (slot.state() == SlotState.BACKOFF) {
      long factor = 1L << Math.min(slot.consecutiveFailures - 2, 20);
      Duration backoff = config.failureBackoffBase().multipliedBy(factor);
      if (backoff.compareTo(config.failureBackoffMax()) > 0) {
        backoff = config.failureBackoffMax();
      }
      LOG.warn("slot backing off slot={} failures={} backoff_ms={}", slot.id, slot.consecutiveFailures,
          backoff.toMillis());
      slot.backoffTask = scheduler.schedule(backoff, () -> backoffExpired(slot));
    }
    after.add(() -> listener.onEnded(lease));
    pool.checkDrained(after);
  }

  private void backoffExpired(Slot slot) {
    lock.run(after -> {
      if (slot.state() == SlotState.BACKOFF) {
        slot.transitionTo(SlotState.IDLE);
        pool.dispatch(after);
      }
    });
  }

  /** Ends a lease that never got a slot: fails its StartWorker call. */
  void endUnassigned(Lease lease, EndReason reason, RecyclerException failure, List<Runnable> after) {
    failIfBooting(lease, reason, failure, after);
    lease.ended(reason, scheduler.now());
    index.ended(lease);
    metrics.leaseEnded(reason);
    standbys.speculationDone(lease, null, "its lease ended while it waited", after);
    after.add(() -> listener.onEnded(lease)); // it may have been prepared while it waited
  }

  private static String stageName(LeaseEnded e) {
    return e.getStage().name().replace("BOOT_STAGE_", "").toLowerCase(Locale.ROOT);
  }

  private static String exitText(LeaseEnded e) {
    return e.getSignal().isEmpty() ? "with code " + e.getExitCode() : "on " + e.getSignal();
  }
}
