package dev.recycler.core.slot;

import static dev.recycler.core.RecyclerException.Kind.BAD_REQUEST;
import static dev.recycler.core.RecyclerException.Kind.BUSY;
import static dev.recycler.core.RecyclerException.Kind.CANCELLED;
import static dev.recycler.core.RecyclerException.Kind.CONFLICT;
import static dev.recycler.core.RecyclerException.Kind.FORBIDDEN;
import static dev.recycler.core.RecyclerException.Kind.TIMEOUT;
import static dev.recycler.core.RecyclerException.Kind.UNAUTHENTICATED;
import static dev.recycler.core.RecyclerException.Kind.UNAVAILABLE;
import static dev.recycler.core.RecyclerException.Kind.UNKNOWN_ID;
import static dev.recycler.core.RecyclerException.Kind.WRONG_STATE;

import dev.recycler.core.RecyclerConfig;
import dev.recycler.core.RecyclerException;
import dev.recycler.core.auth.LeaseCredentials;
import dev.recycler.core.auth.LeaseVerifier;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.proto.v1.Attached;
import dev.recycler.proto.v1.Exit;
import dev.recycler.proto.v1.Hello;
import dev.recycler.proto.v1.LeaseEnded;
import dev.recycler.proto.v1.LeaseRecord;
import dev.recycler.proto.v1.Ping;
import dev.recycler.proto.v1.PreparedLease;
import dev.recycler.proto.v1.RecyclerMessage;
import dev.recycler.proto.v1.SlotStatus;
import dev.recycler.proto.v1.SlotTable;
import dev.recycler.proto.v1.WorkerStarted;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.locks.ReentrantLock;
import java.util.stream.Collectors;
import javax.annotation.concurrent.GuardedBy;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The fixed set of slots and the leases on them: the recycler's state machine.
 *
 * <p><b>Concurrency.</b> One {@link ReentrantLock} guards every slot, the FIFO of waiting StartWorker calls and the
 * lease index. Methods mutate state under the lock and collect their side effects (messages to wrappers, completion of
 * runner calls, closing control streams, listener calls) as {@link Runnable}s that run after the lock is released, in
 * order, so no foreign code ever runs under the lock.
 *
 * <p><b>Lifecycle.</b> Slots move {@code DETACHED → IDLE → BOOTING → ACTIVE → DRAINING → IDLE} (see {@link
 * SlotState}); a lease moves {@code WAITING → BOOTING → ACTIVE → ENDING → ENDED}. A slot is IDLE again only after its
 * wrapper reports {@code LeaseEnded} for the current generation, i.e. when no process of the lease is alive.
 * {@link #shutdown()} is idempotent.
 *
 * <p><b>Failure handling.</b> Every wait is bounded: the queue by the lease wait timeout, booting by the ready timeout,
 * draining by the drain timeout (which re-sends the exit instruction). Reports and calls for a generation that is not the
 * slot's current one are rejected or ignored (fencing). Slots whose leases fail before the worker is ready back off
 * exponentially from their second consecutive failure.
 *
 * <p><b>Credentials.</b> Every lease gets a random credential at assignment, sent only in its {@code Lease} message;
 * lease-scoped calls are checked against it ({@link LeaseVerifier}, constant-time). Leases are indexed, shown and
 * logged by their public worker id ({@code <slot>.g<generation>}), never with the credential.
 */
public final class SlotPool implements LeaseVerifier {
  private static final Logger LOG = LoggerFactory.getLogger(SlotPool.class);
  private static final int RECENT_STOPS = 4096;

  private final RecyclerConfig config;
  private final Scheduler scheduler;
  private final RecyclerMetrics<SlotState, EndReason> metrics;
  private final LeaseListener listener;
  private final String recyclerId;
  private final SecureRandom random = new SecureRandom();

  private final ReentrantLock lock = new ReentrantLock();

  @GuardedBy("lock")
  private final Map<String, Slot> slots = new LinkedHashMap<>();

  @GuardedBy("lock")
  private final ArrayDeque<Lease> waiting = new ArrayDeque<>();

  /** Leases with a slot (BOOTING, ACTIVE, ENDING) by their minted worker id. */
  @GuardedBy("lock")
  private final Map<String, Lease> byWorkerId = new HashMap<>();

  /**
   * Runner worker ids ({@code id}) and id-with-caller ({@code id@peer}) of ended leases, so that a repeated StopWorker
   * is answered OK instead of NOT_FOUND, and never ends another job's lease that shares the id.
   */
  @GuardedBy("lock")
  private final LinkedHashSet<String> recentlyEnded = new LinkedHashSet<>();

  @GuardedBy("lock")
  private final ArrayDeque<LeaseRecord> history = new ArrayDeque<>();

  @GuardedBy("lock")
  private boolean closed;

  private final CompletableFuture<Void> drained = new CompletableFuture<>();

  public SlotPool(RecyclerConfig config, Scheduler scheduler, RecyclerMetrics<SlotState, EndReason> metrics,
      LeaseListener listener, String recyclerId) {
    this.config = config;
    this.scheduler = scheduler;
    this.metrics = metrics;
    this.listener = listener;
    this.recyclerId = recyclerId;
    long now = scheduler.nanoTime();
    for (String id : config.slotIds()) {
      slots.put(id, new Slot(id, now));
      metrics.slotTransition(null, SlotState.DETACHED);
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Wrappers

  /**
   * A wrapper's Hello. The outcome reaches the wrapper through {@code link}: an {@code Attached} message, or the link
   * closed with the reason it was refused. May complete later, when another incarnation holds the slot and is probed.
   */
  public void attach(Hello hello, WrapperLink link) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      if (hello.getSlotId().isEmpty()) {
        after.add(() -> link.close(new RecyclerException(BAD_REQUEST,
            "Hello.slot_id is empty: start the wrapper with --slot=<id>")));
        return;
      }
      if (hello.getIncarnationId().isEmpty()) {
        after.add(() -> link.close(new RecyclerException(BAD_REQUEST, "Hello.incarnation_id is empty")));
        return;
      }
      Slot slot = slots.get(hello.getSlotId());
      if (slot == null) {
        String known = String.join(", ", slots.keySet());
        after.add(() -> link.close(new RecyclerException(UNKNOWN_ID, "slot '" + hello.getSlotId()
            + "' is not configured on this recycler (configured: " + known + "); fix the wrapper's --slot")));
        return;
      }
      if (closed) {
        after.add(() -> link.close(new RecyclerException(UNAVAILABLE, "the recycler is shutting down")));
        return;
      }
      Slot.Attachment current = slot.attachment;
      if (current == null) {
        doAttach(slot, hello, link, after);
      } else if (current.incarnation().equals(hello.getIncarnationId())) {
        // The same process attached again: from its side the old stream is gone.
        LOG.info("wrapper re-attached slot={} incarnation={}", slot.id, hello.getIncarnationId());
        WrapperLink old = current.link();
        detach(slot, after);
        after.add(() -> old.close(new RecyclerException(UNAVAILABLE, "superseded by a newer stream of this wrapper")));
        doAttach(slot, hello, link, after);
      } else if (slot.pendingClaim != null) {
        after.add(() -> link.close(new RecyclerException(UNAVAILABLE, "slot '" + slot.id
            + "' is being claimed by another wrapper incarnation right now; retry")));
      } else {
        Slot.Claim claim = new Slot.Claim(hello, link, ThreadLocalRandom.current().nextLong());
        slot.pendingClaim = claim;
        claim.timeout = scheduler.schedule(config.attachProbeTimeout(), () -> claimTimedOut(slot, claim));
        LOG.info("probing current holder slot={} incarnation={} claimant={}", slot.id, current.incarnation(),
            hello.getIncarnationId());
        after.add(() -> current.link().send(RecyclerMessage.newBuilder()
            .setPing(Ping.newBuilder().setNonce(claim.nonce)).build()));
      }
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  /** The current holder answered a probe: it is alive, so the pending claim is refused. */
  public void pong(WrapperLink link, long nonce) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      for (Slot slot : slots.values()) {
        Slot.Claim claim = slot.pendingClaim;
        if (slot.attachment != null && slot.attachment.link() == link && claim != null && claim.nonce == nonce) {
          slot.pendingClaim = null;
          claim.timeout.cancel();
          Slot.Attachment a = slot.attachment;
          LOG.warn("refused duplicate wrapper slot={} holder={} claimant={}", slot.id, a.incarnation(),
              claim.hello.getIncarnationId());
          after.add(() -> claim.link.close(new RecyclerException(CONFLICT, "slot '" + slot.id
              + "' is held by a live wrapper (incarnation " + a.incarnation() + ", pid " + a.wrapperPid() + ", "
              + a.link().peer() + "); give every go-boot-wrapper its own --slot")));
        }
      }
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  private void claimTimedOut(Slot slot, Slot.Claim claim) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      if (slot.pendingClaim != claim) {
        return;
      }
      slot.pendingClaim = null;
      Slot.Attachment old = slot.attachment;
      LOG.warn("current holder did not answer, replacing slot={} old={} new={}", slot.id,
          old == null ? "" : old.incarnation(), claim.hello.getIncarnationId());
      if (old != null) {
        detach(slot, after);
        after.add(() -> old.link().close(new RecyclerException(UNAVAILABLE, "replaced by wrapper incarnation "
            + claim.hello.getIncarnationId() + " after it did not answer a ping")));
      }
      if (closed) {
        after.add(() -> claim.link.close(new RecyclerException(UNAVAILABLE, "the recycler is shutting down")));
      } else {
        doAttach(slot, claim.hello, claim.link, after);
      }
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  @GuardedBy("lock")
  private void doAttach(Slot slot, Hello hello, WrapperLink link, List<Runnable> after) {
    slot.attachment = new Slot.Attachment(hello.getIncarnationId(), link, hello.getWrapperPid(),
        hello.getWrapperVersion(), new LinkedHashSet<>(hello.getHeldDigestsList()));
    slot.everAttached = true;
    slot.consecutiveFailures = 0;
    transition(slot, SlotState.IDLE);
    LOG.info("wrapper attached slot={} incarnation={} pid={} held_digests={}", slot.id, hello.getIncarnationId(),
        hello.getWrapperPid(), hello.getHeldDigestsCount());
    long lastGeneration = slot.lastGeneration;
    after.add(() -> link.send(RecyclerMessage.newBuilder().setAttached(
        Attached.newBuilder().setRecyclerId(recyclerId).setLastGeneration(lastGeneration)).build()));
    dispatch(after);
  }

  /** The wrapper's stream failed. Any lease it held ends: its processes are the wrapper's to stop. */
  public void detached(WrapperLink link) {
    detached(link, false);
  }

  /**
   * The wrapper's stream ended: {@code clean} when the wrapper closed it (a normal shutdown), else it failed. Any lease it
   * held ends: its processes are the wrapper's to stop.
   */
  public void detached(WrapperLink link, boolean clean) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      for (Slot slot : slots.values()) {
        Slot.Claim claim = slot.pendingClaim;
        if (claim != null && claim.link == link) {
          slot.pendingClaim = null;
          claim.timeout.cancel();
        }
        if (slot.attachment != null && slot.attachment.link() == link) {
          if (clean && slot.lease == null) {
            LOG.info("wrapper detached slot={} incarnation={}", slot.id, slot.attachment.incarnation());
          } else {
            LOG.warn("wrapper detached slot={} incarnation={} clean={} leased={}", slot.id,
                slot.attachment.incarnation(), clean, slot.lease != null);
          }
          detach(slot, after);
          if (claim != null && claim.link != link && !closed) {
            slot.pendingClaim = null;
            claim.timeout.cancel();
            doAttach(slot, claim.hello, claim.link, after);
          }
        }
      }
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  @GuardedBy("lock")
  private void detach(Slot slot, List<Runnable> after) {
    Lease lease = slot.lease;
    slot.attachment = null;
    cancel(slot.backoffTask);
    if (lease != null) {
      lease.outcome = "WRAPPER_LOST";
      failIfBooting(lease, EndReason.WRAPPER_LOST, new RecyclerException(UNAVAILABLE, "the wrapper of slot '" + slot.id
          + "' disconnected before the worker was ready"), after);
      closeControl(lease, EndReason.WRAPPER_LOST, after);
      finish(slot, lease, EndReason.WRAPPER_LOST, after);
    }
    transition(slot, SlotState.DETACHED);
  }

  /** The wrapper started the inner worker of {@code generation}. Stale reports are ignored. */
  public void workerStarted(WrapperLink link, WorkerStarted started) {
    lock.lock();
    try {
      Slot slot = slotOf(link);
      Lease lease = slot == null ? null : slot.lease;
      if (lease == null || lease.generation != started.getGeneration()) {
        LOG.warn("ignoring stale WorkerStarted slot={} generation={}", slot == null ? "?" : slot.id,
            started.getGeneration());
        return;
      }
      lease.workerPid = started.getPid();
      LOG.info("worker started slot={} generation={} pid={}", slot.id, lease.generation, started.getPid());
    } finally {
      lock.unlock();
    }
  }

  /** The wrapper reports that nothing of the lease is alive any more. Stale reports are ignored. */
  public void leaseEnded(WrapperLink link, LeaseEnded ended) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      Slot slot = slotOf(link);
      if (slot == null) {
        return;
      }
      if (slot.attachment != null) {
        slot.attachment.heldDigests().clear();
        slot.attachment.heldDigests().addAll(ended.getHeldDigestsList());
      }
      Lease lease = slot.lease;
      if (lease == null || lease.generation != ended.getGeneration()) {
        LOG.warn("ignoring stale LeaseEnded slot={} generation={} current={}", slot.id, ended.getGeneration(),
            lease == null ? 0 : lease.generation);
        return;
      }
      lease.outcome = ended.getOutcome().name().replace("OUTCOME_", "");
      lease.exitCode = ended.getExitCode();
      lease.signal = ended.getSignal();
      lease.message = ended.getMessage();
      EndReason reason = lease.endReason;
      switch (lease.state) {
        case BOOTING -> {
          boolean bootFailed = ended.getOutcome() == dev.recycler.proto.v1.Outcome.OUTCOME_BOOT_FAILED;
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
          if (lease.exitSentNanos >= 0) {
            metrics.leaseDrain(Duration.ofNanos(scheduler.nanoTime() - lease.exitSentNanos));
          }
        }
        default -> throw new IllegalStateException("lease " + lease + " on a slot in state " + lease.state);
      }
      finish(slot, lease, reason, after);
      dispatch(after);
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Runner

  /**
   * Queues a StartWorker call. The returned future completes when the inner worker's control stream is connected, or
   * exceptionally with a {@link RecyclerException} saying why not.
   *
   * @throws RecyclerException BAD_REQUEST for a malformed request, UNAVAILABLE while shutting down
   */
  public Lease startWorker(StartWorkerRequest request, String peer) throws RecyclerException {
    requireField(request.getWorkerId(), "worker_id");
    requireField(request.getControlEndpoint().getUrl(), "control_endpoint.url");
    requireField(request.getProvisionEndpoint().getUrl(), "provision_endpoint.url");
    requireField(request.getArtifactEndpoint().getUrl(), "artifact_endpoint.url");
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      if (closed) {
        metrics.startFailed(EndReason.SHUTDOWN);
        throw new RecyclerException(UNAVAILABLE, "the recycler is shutting down");
      }
      if (waiting.size() >= config.maxWaitingStarts()) {
        metrics.startFailed(EndReason.QUEUE_FULL);
        LOG.warn("StartWorker refused, waiting queue full runner_worker={} waiting={}", request.getWorkerId(),
            waiting.size());
        throw new RecyclerException(BUSY, "too many StartWorker calls are waiting for a harness slot ("
            + waiting.size() + ", the limit max-waiting-starts=" + config.maxWaitingStarts()
            + "); raise max-waiting-starts, add slots, or run fewer concurrent jobs per TaskManager");
      }
      Lease lease = new Lease(request, peer, scheduler.nanoTime(), scheduler.now());
      waiting.add(lease);
      lease.waitTask = scheduler.schedule(config.leaseWaitTimeout(), () -> waitTimedOut(lease));
      dispatch(after);
      return lease;
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  private static void requireField(String value, String field) throws RecyclerException {
    if (value == null || value.isBlank()) {
      throw new RecyclerException(BAD_REQUEST, "StartWorkerRequest." + field
          + " is empty: the runner must send its worker id and control, provision and artifact endpoints");
    }
  }

  /** The runner's StartWorker call was cancelled: release whatever it holds. */
  public void cancelStart(Lease lease) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      RecyclerException why = new RecyclerException(CANCELLED, "the StartWorker call was cancelled");
      if (lease.state == Lease.State.WAITING) {
        waiting.remove(lease);
        endUnassigned(lease, EndReason.CANCELLED, why, after);
      } else if (lease.state == Lease.State.BOOTING) {
        LOG.info("StartWorker cancelled while booting slot={} generation={}", lease.slotId(), lease.generation);
        end(lease, EndReason.CANCELLED, why, after);
      }
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  /**
   * The runner's StopWorker. Idempotent: a lease that is already ending or recently ended is acknowledged.
   *
   * @throws RecyclerException BAD_REQUEST for an empty id, UNKNOWN_ID for an id never leased here
   */
  public void stopWorker(String runnerWorkerId, String peer) throws RecyclerException {
    if (runnerWorkerId == null || runnerWorkerId.isBlank()) {
      throw new RecyclerException(BAD_REQUEST, "StopWorkerRequest.worker_id is empty");
    }
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      List<Lease> candidates = new ArrayList<>();
      for (Lease l : waiting) {
        if (l.runnerWorkerId().equals(runnerWorkerId)) {
          candidates.add(l);
        }
      }
      for (Lease l : byWorkerId.values()) {
        if (l.runnerWorkerId().equals(runnerWorkerId)) {
          candidates.add(l);
        }
      }
      if (candidates.isEmpty()) {
        if (recentlyEnded.contains(runnerWorkerId)) {
          return;
        }
        throw new RecyclerException(UNKNOWN_ID, "no lease for worker_id '" + runnerWorkerId
            + "': it was never started on this recycler");
      }
      // Beam's runner reuses worker ids across jobs but sends StartWorker and StopWorker on one channel. A repeated
      // StopWorker from a channel whose lease already ended must not fall back to another job's lease with that id.
      List<Lease> samePeer = candidates.stream().filter(l -> l.peer().equals(peer)).toList();
      if (samePeer.isEmpty() && recentlyEnded.contains(runnerWorkerId + "@" + peer)) {
        return;
      }
      List<Lease> chosen = samePeer.isEmpty() ? candidates : samePeer;
      List<Lease> live = chosen.stream()
          .filter(l -> l.state != Lease.State.ENDING && l.state != Lease.State.ENDED).toList();
      if (live.size() > 1) {
        LOG.warn("StopWorker is ambiguous, ending none worker_id={} leases={}", runnerWorkerId, live.size());
        return;
      }
      for (Lease lease : live) {
        RecyclerException why = new RecyclerException(CANCELLED, "StopWorker was called before the worker was ready");
        if (lease.state == Lease.State.WAITING) {
          waiting.remove(lease);
          endUnassigned(lease, EndReason.STOP_WORKER, why, after);
        } else {
          end(lease, EndReason.STOP_WORKER, why, after);
        }
      }
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  private void waitTimedOut(Lease lease) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      if (lease.state != Lease.State.WAITING) {
        return;
      }
      waiting.remove(lease);
      endUnassigned(lease, EndReason.WAIT_TIMEOUT, noSlotError(lease), after);
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  @GuardedBy("lock")
  private RecyclerException noSlotError(Lease lease) {
    String waited = config.leaseWaitTimeout().toSeconds() + "s";
    List<String> neverAttached = new ArrayList<>();
    List<String> detached = new ArrayList<>();
    List<String> held = new ArrayList<>();
    long now = scheduler.nanoTime();
    for (Slot s : slots.values()) {
      if (s.state == SlotState.DETACHED) {
        (s.everAttached ? detached : neverAttached).add(s.id);
      } else {
        Lease l = s.lease;
        String what = s.id + " " + s.state;
        if (l != null) {
          what += " for worker " + l.runnerWorkerId() + (l.jobName.isEmpty() ? "" : " of job " + l.jobName);
        } else if (s.state == SlotState.BACKOFF) {
          what += " after " + s.consecutiveFailures + " failed leases";
        }
        what += " since " + Duration.ofNanos(now - s.stateSinceNanos).toSeconds() + "s";
        held.add(what);
      }
    }
    if (held.isEmpty()) {
      return new RecyclerException(UNAVAILABLE, "no harness slot for worker " + lease.runnerWorkerId() + " within "
          + waited + ": no go-boot-wrapper is attached"
          + (neverAttached.isEmpty() ? "" : "; never attached: " + String.join(", ", neverAttached))
          + (detached.isEmpty() ? "" : "; detached: " + String.join(", ", detached))
          + "; start one go-boot-wrapper per slot with --slot=<id> --recycler=<this endpoint>");
    }
    return new RecyclerException(BUSY, "no harness slot became free for worker " + lease.runnerWorkerId()
        + " within " + waited + ": " + String.join("; ", held)
        + (neverAttached.isEmpty() ? "" : "; never attached: " + String.join(", ", neverAttached))
        + (detached.isEmpty() ? "" : "; detached: " + String.join(", ", detached))
        + "; add slots or run fewer concurrent jobs per TaskManager");
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Inner workers (control proxy) and fenced wrapper calls

  /**
   * The lease whose inner worker uses {@code workerId}, for its control-path calls.
   *
   * @throws RecyclerException UNKNOWN_ID when no lease has that id, WRONG_STATE when it has ended
   */
  public Lease leaseForWorker(String workerId) throws RecyclerException {
    if (workerId.isEmpty()) {
      throw new RecyclerException(BAD_REQUEST, "the worker_id header is missing: start the worker with --id");
    }
    lock.lock();
    try {
      Lease lease = byWorkerId.get(workerId);
      if (lease == null) {
        throw new RecyclerException(UNKNOWN_ID, "no lease has worker id '" + workerId + "'");
      }
      if (!lease.isLive()) {
        throw new RecyclerException(WRONG_STATE, "the lease of worker '" + workerId + "' has ended");
      }
      return lease;
    } finally {
      lock.unlock();
    }
  }

  /**
   * The inner worker connected its control stream and the proxy opened the runner's side: the lease is ready and the
   * runner's StartWorker call returns.
   *
   * @throws RecyclerException when the id is unknown, the lease ended, or a control stream is already connected
   */
  public Lease controlConnected(String workerId, ControlLink link) throws RecyclerException {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      Lease lease = byWorkerId.get(workerId);
      if (lease == null) {
        throw new RecyclerException(UNKNOWN_ID, "no lease has worker id '" + workerId + "'");
      }
      if (lease.state == Lease.State.ACTIVE) {
        throw new RecyclerException(CONFLICT, "worker '" + workerId + "' already has a control connection");
      }
      if (lease.state != Lease.State.BOOTING) {
        throw new RecyclerException(WRONG_STATE, "the lease of worker '" + workerId + "' has ended");
      }
      Slot slot = lease.slot;
      lease.transitionTo(Lease.State.ACTIVE);
      lease.control = link;
      lease.readyNanos = scheduler.nanoTime();
      cancel(lease.readyTask);
      slot.consecutiveFailures = 0;
      transition(slot, SlotState.ACTIVE);
      metrics.leaseReady(Duration.ofNanos(lease.readyNanos - lease.requestedNanos()));
      after.add(() -> lease.ready().complete(lease));
      return lease;
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  /** The proxied control stream ended from the runner's or the worker's side. */
  public void controlEnded(Lease lease, EndReason reason) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      if (lease.state == Lease.State.ACTIVE || lease.state == Lease.State.BOOTING) {
        end(lease, reason, new RecyclerException(UNAVAILABLE, "the worker's control stream ended"), after);
      }
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  /**
   * The slot's current lease, for a wrapper's provision or artifact call carrying {@code generationHeader}.
   *
   * @throws RecyclerException BAD_REQUEST without a generation, UNKNOWN_ID for an unknown slot, WRONG_STATE when the
   *     generation is not the slot's live lease (fencing)
   */
  public Lease currentLease(String slotId, String generationHeader) throws RecyclerException {
    if (slotId.isEmpty()) {
      throw new RecyclerException(BAD_REQUEST, "the worker_id header is missing: wrappers send their slot id in it");
    }
    long generation;
    try {
      generation = Long.parseLong(generationHeader);
    } catch (NumberFormatException e) {
      throw new RecyclerException(BAD_REQUEST, "the recycler-generation header is missing or not a number ('"
          + generationHeader + "'): wrappers send the generation of their lease");
    }
    lock.lock();
    try {
      Slot slot = slots.get(slotId);
      if (slot == null) {
        throw new RecyclerException(UNKNOWN_ID, "slot '" + slotId + "' is not configured on this recycler");
      }
      Lease lease = slot.lease;
      if (lease == null || lease.generation != generation) {
        throw new RecyclerException(WRONG_STATE, "generation " + generation + " is not the current lease of slot '"
            + slotId + "' (current: " + (lease == null ? "none" : lease.generation) + ")");
      }
      if (!lease.isLive()) {
        throw new RecyclerException(WRONG_STATE, "the lease of slot '" + slotId + "' generation " + generation
            + " is ending");
      }
      return lease;
    } finally {
      lock.unlock();
    }
  }

  @Override
  public String verifyWorker(String presentedWorkerId) throws RecyclerException {
    LeaseCredentials.Presented presented = LeaseCredentials.split(presentedWorkerId);
    if (presented.credential().isEmpty()) {
      throw new RecyclerException(UNAUTHENTICATED, presented.publicId().isEmpty()
          ? "the worker_id header is missing: start the worker with the --id its wrapper got in the Lease"
          : "worker id " + LeaseCredentials.describe(presented.publicId()) + " carries no lease credential: start"
              + " the worker with the full --id its wrapper got in the Lease");
    }
    lock.lock();
    try {
      Lease lease = byWorkerId.get(presented.publicId());
      if (lease == null) {
        throw new RecyclerException(UNKNOWN_ID, "no lease has worker id "
            + LeaseCredentials.describe(presented.publicId()));
      }
      if (!LeaseCredentials.matches(lease.credential, presented.credential())) {
        throw new RecyclerException(FORBIDDEN, "wrong lease credential for worker '" + presented.publicId() + "'");
      }
      return presented.publicId();
    } finally {
      lock.unlock();
    }
  }

  @Override
  public void verifyWrapper(String slotId, String generationHeader, String credential) throws RecyclerException {
    if (credential.isEmpty()) {
      throw new RecyclerException(UNAUTHENTICATED, "the recycler-lease-credential header is missing: wrappers send"
          + " the credential of their Lease on every provision and artifact call");
    }
    Lease lease = currentLease(slotId, generationHeader);
    if (!LeaseCredentials.matches(lease.credential, credential)) {
      throw new RecyclerException(FORBIDDEN, "wrong lease credential for slot '" + slotId + "' generation "
          + lease.generation);
    }
  }

  /** Records the job name (from the pipeline options) for the slot table and logs. */
  public void jobName(Lease lease, String name) {
    lease.jobName = name == null ? "" : name;
  }

  /**
   * Records the job's retrieval token from the runner's provision info: the scope within which a staged artifact's
   * path may stand for its content (Beam's job server stages every job under a fresh path, but a path is never an
   * identity across jobs).
   */
  public void retrievalToken(Lease lease, String token) {
    lease.retrievalToken = token == null ? "" : token;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Transitions

  @GuardedBy("lock")
  private void dispatch(List<Runnable> after) {
    while (!waiting.isEmpty() && !closed) {
      Slot free = null;
      for (Slot s : slots.values()) {
        if (s.state == SlotState.IDLE) {
          free = s;
          break;
        }
      }
      if (free == null) {
        return;
      }
      assign(free, waiting.poll(), after);
    }
  }

  @GuardedBy("lock")
  private void assign(Slot slot, Lease lease, List<Runnable> after) {
    cancel(lease.waitTask);
    long generation = ++slot.lastGeneration;
    lease.slot = slot;
    lease.generation = generation;
    lease.assignedNanos = scheduler.nanoTime();
    lease.workerId = slot.id + ".g" + generation;
    lease.credential = LeaseCredentials.mint(random);
    lease.transitionTo(Lease.State.BOOTING);
    slot.lease = lease;
    byWorkerId.put(lease.workerId, lease);
    transition(slot, SlotState.BOOTING);
    metrics.leaseWait(Duration.ofNanos(scheduler.nanoTime() - lease.requestedNanos()));
    lease.readyTask = scheduler.schedule(config.readyTimeout(), () -> readyTimedOut(lease));
    LOG.info("lease assigned slot={} generation={} worker={} runner_worker={}", slot.id, generation, lease.workerId,
        lease.runnerWorkerId());
    after.add(() -> prepare(lease));
  }

  /**
   * Gets the lease's boot inputs from the listener (the runner's provision info and resolved artifacts), then
   * announces the lease to its wrapper with them; without them if they could not be had, and the wrapper asks itself.
   */
  private void prepare(Lease lease) {
    CompletableFuture<PreparedLease> inputs;
    try {
      inputs = listener.onAssigned(lease);
    } catch (RuntimeException e) {
      inputs = CompletableFuture.failedFuture(e);
    }
    inputs.whenComplete((prepared, failure) -> announce(lease, failure == null ? prepared : null));
  }

  private void announce(Lease lease, PreparedLease prepared) {
    lock.lock();
    try {
      if (lease.state != Lease.State.BOOTING || lease.announced) {
        return; // it ended before its wrapper heard of it; end() has freed the slot
      }
      lease.announced = true;
      dev.recycler.proto.v1.Lease.Builder message = dev.recycler.proto.v1.Lease.newBuilder()
          .setGeneration(lease.generation).setJobName(lease.jobName)
          .setWorkerId(LeaseCredentials.workerId(lease.workerId, lease.credential)).setCredential(lease.credential);
      if (prepared != null) {
        message.setPrepared(prepared);
      }
      LOG.info("lease sent slot={} generation={} prepared={} prepare_ms={}", lease.slotId(), lease.generation,
          prepared != null, (scheduler.nanoTime() - lease.assignedNanos) / 1_000_000);
      // Sent under the lock, unlike other side effects: an Exit for this lease is queued only after this point, so it
      // can never reach the wrapper before its Lease. Sending does not block (the stream buffers).
      lease.slot.attachment.link().send(RecyclerMessage.newBuilder().setLease(message).build());
    } finally {
      lock.unlock();
    }
  }

  private void readyTimedOut(Lease lease) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      if (lease.state != Lease.State.BOOTING) {
        return;
      }
      String report = lease.workerPid > 0 ? "the wrapper started it as pid " + lease.workerPid
          : "the wrapper reported no started worker";
      end(lease, EndReason.READY_TIMEOUT, new RecyclerException(TIMEOUT, "the worker of slot '" + lease.slotId()
          + "' (generation " + lease.generation + ") did not connect to its control endpoint within "
          + config.readyTimeout().toSeconds() + "s; " + report + "; see the wrapper's log"), after);
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  /** Ends a BOOTING or ACTIVE lease: fails the StartWorker call if pending, closes control, sends the exit. */
  @GuardedBy("lock")
  private void end(Lease lease, EndReason reason, RecyclerException failure, List<Runnable> after) {
    if (lease.state != Lease.State.BOOTING && lease.state != Lease.State.ACTIVE) {
      return;
    }
    Slot slot = lease.slot;
    failIfBooting(lease, reason, failure, after);
    lease.endReason = reason;
    if (!lease.announced) {
      // Its wrapper never got the Lease, so nothing of it runs: the slot is free at once, no exit instruction.
      lease.outcome = "NOT_SENT";
      finish(slot, lease, reason, after);
      dispatch(after);
      return;
    }
    lease.transitionTo(Lease.State.ENDING);
    closeControl(lease, reason, after);
    transition(slot, SlotState.DRAINING);
    sendExit(slot, lease, after);
  }

  @GuardedBy("lock")
  private void sendExit(Slot slot, Lease lease, List<Runnable> after) {
    lease.exitSentNanos = scheduler.nanoTime();
    cancel(slot.drainTask);
    slot.drainTask = scheduler.schedule(config.drainTimeout(), () -> drainTimedOut(slot, lease));
    WrapperLink link = slot.attachment.link();
    long generation = lease.generation;
    Exit exit = Exit.newBuilder().setGeneration(generation).setReason(lease.endReason.exitReason()).build();
    LOG.info("exit instruction slot={} generation={} reason={}", slot.id, generation, lease.endReason);
    after.add(() -> link.send(RecyclerMessage.newBuilder().setExit(exit).build()));
  }

  private void drainTimedOut(Slot slot, Lease lease) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      if (slot.lease != lease || lease.state != Lease.State.ENDING || slot.attachment == null) {
        return;
      }
      LOG.warn("wrapper has not reported the lease ended, re-sending exit slot={} generation={} waited={}s", slot.id,
          lease.generation, config.drainTimeout().toSeconds());
      sendExit(slot, lease, after);
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  @GuardedBy("lock")
  private void failIfBooting(Lease lease, EndReason reason, RecyclerException failure, List<Runnable> after) {
    if (lease.state == Lease.State.BOOTING || lease.state == Lease.State.WAITING) {
      cancel(lease.readyTask);
      if (reason.slotFault() && lease.slot != null) {
        lease.slot.consecutiveFailures++;
      }
      metrics.startFailed(reason);
      LOG.warn("StartWorker failed slot={} generation={} runner_worker={} reason={}: {}", lease.slotId(),
          lease.generation, lease.runnerWorkerId(), reason, failure.getMessage());
      after.add(() -> lease.ready().completeExceptionally(failure));
    }
  }

  @GuardedBy("lock")
  private void closeControl(Lease lease, EndReason reason, List<Runnable> after) {
    ControlLink control = lease.control;
    if (control != null) {
      lease.control = null;
      after.add(() -> control.close(reason));
    }
  }

  /** The lease is over and nothing of it is alive: record it and free (or back off) the slot. */
  @GuardedBy("lock")
  private void finish(Slot slot, Lease lease, EndReason reason, List<Runnable> after) {
    lease.transitionTo(Lease.State.ENDED);
    if (lease.endReason == null) {
      lease.endReason = reason;
    }
    lease.endedAt = scheduler.now();
    cancel(lease.readyTask);
    cancel(slot.drainTask);
    slot.lease = null;
    slot.leasesServed++;
    byWorkerId.remove(lease.workerId);
    rememberEnded(lease);
    metrics.leaseEnded(lease.endReason);
    LOG.info("lease ended slot={} generation={} reason={} outcome={} exit_code={}", slot.id, lease.generation,
        lease.endReason, lease.outcome, lease.exitCode);
    if (slot.attachment != null) {
      if (slot.consecutiveFailures >= 2) {
        long factor = 1L << Math.min(slot.consecutiveFailures - 2, 20);
        Duration backoff = config.failureBackoffBase().multipliedBy(factor);
        if (backoff.compareTo(config.failureBackoffMax()) > 0) {
          backoff = config.failureBackoffMax();
        }
        transition(slot, SlotState.BACKOFF);
        LOG.warn("slot backing off slot={} failures={} backoff_ms={}", slot.id, slot.consecutiveFailures,
            backoff.toMillis());
        slot.backoffTask = scheduler.schedule(backoff, () -> backoffExpired(slot));
      } else {
        transition(slot, SlotState.IDLE);
      }
    }
    after.add(() -> listener.onEnded(lease));
    checkDrained(after);
  }

  /** Ends a lease that never got a slot. */
  @GuardedBy("lock")
  private void endUnassigned(Lease lease, EndReason reason, RecyclerException failure, List<Runnable> after) {
    cancel(lease.waitTask);
    failIfBooting(lease, reason, failure, after);
    lease.transitionTo(Lease.State.ENDED);
    lease.endReason = reason;
    lease.endedAt = scheduler.now();
    rememberEnded(lease);
    metrics.leaseEnded(reason);
  }

  private void backoffExpired(Slot slot) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      if (slot.state == SlotState.BACKOFF) {
        transition(slot, SlotState.IDLE);
        dispatch(after);
      }
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  @GuardedBy("lock")
  private void transition(Slot slot, SlotState next) {
    SlotState from = slot.state;
    if (from == next) {
      return;
    }
    if (!from.canTransitionTo(next)) {
      throw new IllegalStateException("slot " + slot.id + " cannot go from " + from + " to " + next);
    }
    slot.state = next;
    slot.stateSinceNanos = scheduler.nanoTime();
    metrics.slotTransition(from, next);
    Lease l = slot.lease;
    LOG.info("slot transition slot={} from={} to={} generation={}", slot.id, from, next, l == null ? 0 : l.generation);
  }

  @GuardedBy("lock")
  private void rememberEnded(Lease lease) {
    for (String key : List.of(lease.runnerWorkerId(), lease.runnerWorkerId() + "@" + lease.peer())) {
      recentlyEnded.remove(key);
      recentlyEnded.add(key);
    }
    while (recentlyEnded.size() > RECENT_STOPS) {
      recentlyEnded.remove(recentlyEnded.iterator().next());
    }
    if (config.leaseHistorySize() > 0 && lease.generation > 0) {
      history.addLast(record(lease));
      while (history.size() > config.leaseHistorySize()) {
        history.removeFirst();
      }
    }
  }

  @GuardedBy("lock")
  private Slot slotOf(WrapperLink link) {
    for (Slot s : slots.values()) {
      if (s.attachment != null && s.attachment.link() == link) {
        return s;
      }
    }
    return null;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Shutdown and views

  /**
   * Stops taking leases, fails waiting StartWorker calls, ends every running lease with an exit instruction. The
   * returned future completes when every wrapper reported its lease ended (or detached). Idempotent.
   */
  public CompletableFuture<Void> shutdown() {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      if (!closed) {
        closed = true;
        LOG.info("slot pool shutting down, waiting={} leased={}", waiting.size(),
            slots.values().stream().filter(s -> s.lease != null).count());
        while (!waiting.isEmpty()) {
          endUnassigned(waiting.poll(), EndReason.SHUTDOWN,
              new RecyclerException(UNAVAILABLE, "the recycler is shutting down"), after);
        }
        for (Slot slot : slots.values()) {
          if (slot.lease != null) {
            end(slot.lease, EndReason.SHUTDOWN, new RecyclerException(UNAVAILABLE, "the recycler is shutting down"),
                after);
          }
        }
        checkDrained(after);
      }
    } finally {
      lock.unlock();
      runAll(after);
    }
    return drained;
  }

  @GuardedBy("lock")
  private void checkDrained(List<Runnable> after) {
    if (closed && slots.values().stream().allMatch(s -> s.lease == null)) {
      after.add(() -> drained.complete(null));
    }
  }

  /** Every wrapper link currently attached (for closing them at shutdown). */
  /** How many slots a wrapper holds, of how many, and whether the pool was shut down (for the readiness probe). */
  public record Attachment(int attached, int slots, boolean shutdown) {}

  public Attachment attachment() {
    lock.lock();
    try {
      int attached = (int) slots.values().stream().filter(s -> s.attachment != null).count();
      return new Attachment(attached, slots.size(), closed);
    } finally {
      lock.unlock();
    }
  }

  public List<WrapperLink> attachedLinks() {
    lock.lock();
    try {
      return slots.values().stream().filter(s -> s.attachment != null).map(s -> s.attachment.link())
          .collect(Collectors.toList());
    } finally {
      lock.unlock();
    }
  }

  /** A consistent snapshot of all slots and the newest {@code maxLeases} lease records (0 = all kept). */
  public SlotTable slotTable(int maxLeases) {
    lock.lock();
    try {
      SlotTable.Builder table = SlotTable.newBuilder();
      List<LeaseRecord> records = new ArrayList<>(history);
      // States are timed on the monotonic clock; the table shows wall time, so convert once per snapshot.
      long nowNanos = scheduler.nanoTime();
      long nowMillis = scheduler.now().toEpochMilli();
      for (Slot s : slots.values()) {
        SlotStatus.Builder st = SlotStatus.newBuilder().setSlotId(s.id).setState(s.state.name())
            .setGeneration(s.lastGeneration).setConsecutiveFailures(s.consecutiveFailures)
            .setLeasesServed(s.leasesServed)
            .setStateSinceUnixMillis(nowMillis - (nowNanos - s.stateSinceNanos) / 1_000_000);
        if (s.attachment != null) {
          st.setIncarnationId(s.attachment.incarnation()).setWrapperPid(s.attachment.wrapperPid())
              .setHeldDigests(s.attachment.heldDigests().size());
        }
        if (s.lease != null) {
          st.setWorkerId(s.lease.workerId).setRunnerWorkerId(s.lease.runnerWorkerId()).setJobName(s.lease.jobName)
              .setWorkerPid(s.lease.workerPid);
          records.add(record(s.lease));
        }
        table.addSlots(st);
      }
      records.sort((a, b) -> Long.compare(a.getStartUnixMillis(), b.getStartUnixMillis()));
      int from = maxLeases > 0 ? Math.max(0, records.size() - maxLeases) : 0;
      table.addAllLeases(records.subList(from, records.size()));
      return table.build();
    } finally {
      lock.unlock();
    }
  }

  private static LeaseRecord record(Lease l) {
    LeaseRecord.Builder r = LeaseRecord.newBuilder().setSlotId(l.slotId()).setGeneration(l.generation)
        .setRunnerWorkerId(l.runnerWorkerId()).setWorkerId(l.workerId).setJobName(l.jobName)
        .setWorkerPid(l.workerPid).setStartUnixMillis(l.requestedAt().toEpochMilli())
        .setReadyLatencyMillis(l.readyNanos < 0 ? -1 : (l.readyNanos - l.requestedNanos()) / 1_000_000)
        .setOutcome(l.outcome).setExitCode(l.exitCode).setSignal(l.signal).setMessage(l.message);
    if (l.state == Lease.State.ENDED && l.endedAt != null) {
      r.setEndUnixMillis(l.endedAt.toEpochMilli()).setEndReason(l.endReason.name());
    }
    return r.build();
  }

  private static String stageName(LeaseEnded e) {
    return e.getStage().name().replace("BOOT_STAGE_", "").toLowerCase(java.util.Locale.ROOT);
  }

  private static String exitText(LeaseEnded e) {
    return e.getSignal().isEmpty() ? "with code " + e.getExitCode() : "on " + e.getSignal();
  }

  private static void cancel(Scheduler.Cancellable task) {
    if (task != null) {
      task.cancel();
    }
  }

  private static void runAll(List<Runnable> actions) {
    for (Runnable r : actions) {
      try {
        r.run();
      } catch (RuntimeException e) {
        LOG.error("side effect failed", e);
      }
    }
  }
}
