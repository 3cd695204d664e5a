package dev.recycler.core.slot;

import static dev.recycler.core.api.RecyclerException.Kind.BAD_REQUEST;
import static dev.recycler.core.api.RecyclerException.Kind.BUSY;
import static dev.recycler.core.api.RecyclerException.Kind.CANCELLED;
import static dev.recycler.core.api.RecyclerException.Kind.FORBIDDEN;
import static dev.recycler.core.api.RecyclerException.Kind.UNAUTHENTICATED;
import static dev.recycler.core.api.RecyclerException.Kind.UNAVAILABLE;

import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.auth.LeaseCredentials;
import dev.recycler.core.auth.LeaseVerifier;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.proto.v1.Hello;
import dev.recycler.proto.v1.LeaseEnded;
import dev.recycler.proto.v1.Prefetched;
import dev.recycler.proto.v1.SlotTable;
import dev.recycler.proto.v1.StandbyEnded;
import dev.recycler.proto.v1.WorkerStarted;
import java.util.ArrayDeque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import javax.annotation.concurrent.GuardedBy;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The fixed set of slots and the leases on them: the facade of the recycler's state machine. StartWorker calls queue
 * here and free slots are dispatched to them in FIFO order; which wrapper holds a slot, and its reports, are {@link
 * WrapperSessions}'s. What happens to a lease once it has a slot (readiness, ending, fencing timers,
 * back-off) is {@link LeaseLifecycle}'s; which lease an id or a generation names, and whether a caller's credential is
 * its, is {@link LeaseIndex}'s; every state change goes through {@link Lease#transitionTo}, which moves the slot with
 * the lease.
 *
 * <p><b>Concurrency.</b> One lock ({@link PoolLock}) guards every slot, the FIFO of waiting StartWorker calls and the
 * lease index. Methods mutate state under the lock and collect their side effects (messages to wrappers, completion of
 * runner calls, closing control streams, listener calls) to run after the lock is released, in order, so no foreign
 * code ever runs under the lock.
 *
 * <p><b>Lifecycle.</b> Slots move {@code DETACHED → IDLE → BOOTING → ACTIVE → DRAINING → IDLE} (see {@link
 * SlotState}); a lease moves {@code WAITING → BOOTING → ACTIVE → ENDING → ENDED} (see {@link Lease.State}). A slot is
 * IDLE again only after its wrapper reports {@code LeaseEnded} for the current generation, i.e. when no process of the
 * lease is alive. {@link #shutdown()} is idempotent.
 *
 * <p><b>Failure handling.</b> Every wait is bounded: the queue by the lease wait timeout and {@code max-waiting-starts},
 * booting and draining by the lease's own timeouts. Reports and calls for a generation that is not the slot's current
 * one are rejected or ignored (fencing).
 *
 * <p><b>Credentials.</b> Every lease gets a random credential at assignment, sent only in its {@code Lease} message;
 * lease-scoped calls are checked against it ({@link LeaseVerifier}, constant-time). Leases are indexed, shown and
 * logged by their public worker id ({@code <slot>.g<generation>}), never with the credential.
 */
public final class SlotPool implements LeaseVerifier {
  private static final Logger LOG = LoggerFactory.getLogger(SlotPool.class);

  private final RecyclerConfig config;
  private final Scheduler scheduler;
  private final RecyclerMetrics<SlotState, EndReason> metrics;
  private final PoolLock lock = new PoolLock();

  @GuardedBy("lock")
  private final Map<String, Slot> slots = new LinkedHashMap<>();

  @GuardedBy("lock")
  private final ArrayDeque<Lease> waiting = new ArrayDeque<>();

  @GuardedBy("lock")
  private final LeaseIndex index;

  private final LeaseLifecycle leases;
  private final WrapperSessions wrappers;
  private final Prefetches prefetches;
  private final Standbys standbys;

  @GuardedBy("lock")
  private boolean closed;

  private final CompletableFuture<Void> drained = new CompletableFuture<>();

  public SlotPool(RecyclerConfig config, Scheduler scheduler, RecyclerMetrics<SlotState, EndReason> metrics,
      LeaseListener listener, String recyclerId) {
    this.config = config;
    this.scheduler = scheduler;
    this.metrics = metrics;
    this.index = new LeaseIndex(config.leaseHistorySize());
    Hooks hooks = new Hooks();
    this.standbys = new Standbys(config, scheduler, metrics, lock);
    this.leases = new LeaseLifecycle(config, scheduler, metrics, listener, lock, index, standbys, hooks);
    this.wrappers = new WrapperSessions(config, scheduler, recyclerId, lock, slots, leases, standbys, hooks);
    this.prefetches = new Prefetches(scheduler, metrics);
    for (String id : config.slotIds()) {
      slots.put(id, new Slot(id, scheduler, metrics));
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Wrappers (see WrapperSessions)

  /** Sets what every exit instruction waits for before it goes out; call once, before the first lease. */
  public void exitGate(ExitGate gate) {
    leases.exitGate(gate);
  }

  /**
   * A wrapper's Hello. The outcome reaches the wrapper through {@code link}: an {@code Attached} message, or the link
   * closed with the reason it was refused. May complete later, when another incarnation holds the slot and is probed.
   */
  public void attach(Hello hello, WrapperLink link) {
    lock.run(after -> wrappers.attach(hello, link, after));
  }

  /** The current holder answered a probe: it is alive, so the pending claim is refused. */
  public void pong(WrapperLink link, long nonce) {
    lock.run(after -> wrappers.pong(link, nonce, after));
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
    lock.run(after -> wrappers.detached(link, clean, after));
  }

  /** The wrapper started the inner worker of {@code generation}. Stale reports are ignored. */
  public void workerStarted(WrapperLink link, WorkerStarted started) {
    lock.run(after -> wrappers.workerStarted(link, started));
  }

  /** The wrapper reports that nothing of the lease is alive any more. Stale reports are ignored. */
  public void leaseEnded(WrapperLink link, LeaseEnded ended) {
    lock.run(after -> wrappers.leaseEnded(link, ended, after));
  }

  /**
   * A job staged a worker binary: asks idle slots whose wrappers lack it to fetch it now (up to {@code
   * prefetch-slots}; see {@link Prefetches}). No-op when prefetch is off or the pool is shut down.
   *
   * @param sha256 the content's digest, 64 lowercase hex digits
   * @return the slots asked
   */
  public List<String> prefetch(String sha256, long size) {
    if (config.prefetchSlots() == 0) {
      return List.of();
    }
    List<String> asked = new java.util.ArrayList<>();
    lock.run(after -> {
      if (!closed) {
        asked.addAll(prefetches.offer(slots.values(), "sha256:" + sha256, size, config.prefetchSlots(), after));
      }
    });
    return asked;
  }

  /** The wrapper reports a standby gone without a lease (declined, or exited); stale reports are ignored. */
  public void standbyEnded(WrapperLink link, StandbyEnded ended) {
    lock.run(after -> {
      Slot slot = wrappers.slotOf(link);
      if (slot != null) {
        standbys.ended(slot, ended.getGeneration(), ended.getMessage(), after);
      }
    });
  }

  /** The wrapper answered a prefetch; stale answers (a link that no longer holds a slot) are ignored. */
  public void prefetched(WrapperLink link, Prefetched answer) {
    lock.run(after -> {
      Slot slot = wrappers.slotOf(link);
      if (slot != null) {
        prefetches.answered(slot, answer);
      }
    });
  }

  /**
   * Checks a prefetch GetArtifact call's ticket (see {@link Prefetches#redeem}) and uses it up.
   *
   * @return the content digest, 64 lowercase hex digits, that the caller may fetch
   */
  @Override
  public String redeemPrefetch(String slotId, String ticket) throws RecyclerException {
    if (slotId.isEmpty()) {
      throw new RecyclerException(BAD_REQUEST, "the worker_id header is missing: wrappers send their slot id in it");
    }
    String incarnation = lock.view(() -> {
      Slot slot = slots.get(slotId);
      return slot == null || slot.attachment == null ? "" : slot.attachment.incarnation();
    });
    return prefetches.redeem(slotId, ticket, incarnation).substring("sha256:".length());
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Runner: queue and dispatch

  /**
   * Queues a StartWorker call. The returned future completes when the inner worker's control stream is connected, or
   * exceptionally with a {@link RecyclerException} saying why not.
   *
   * @throws RecyclerException BAD_REQUEST for a malformed request, UNAVAILABLE while shutting down, BUSY when {@code
   *     max-waiting-starts} calls are waiting already
   */
  public Lease startWorker(StartWorkerRequest request, String peer) throws RecyclerException {
    requireField(request.getWorkerId(), "worker_id");
    requireField(request.getControlEndpoint().getUrl(), "control_endpoint.url");
    requireField(request.getProvisionEndpoint().getUrl(), "provision_endpoint.url");
    requireField(request.getArtifactEndpoint().getUrl(), "artifact_endpoint.url");
    return lock.call(after -> {
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
      lease.arm(scheduler, config.leaseWaitTimeout(), () -> waitTimedOut(lease));
      // Placed on a slot once prepared: its boot inputs say which standby worker, if any, can serve it.
      after.add(() -> leases.prepare(lease));
      return lease;
    });
  }

  private static void requireField(String value, String field) throws RecyclerException {
    if (value == null || value.isBlank()) {
      throw new RecyclerException(BAD_REQUEST, "StartWorkerRequest." + field
          + " is empty: the runner must send its worker id and control, provision and artifact endpoints");
    }
  }

  /** The runner's StartWorker call was cancelled: release whatever it holds. */
  public void cancelStart(Lease lease) {
    lock.run(after -> {
      RecyclerException why = new RecyclerException(CANCELLED, "the StartWorker call was cancelled");
      if (lease.state() == Lease.State.WAITING) {
        waiting.remove(lease);
        leases.endUnassigned(lease, EndReason.CANCELLED, why, after);
      } else if (lease.state() == Lease.State.BOOTING) {
        LOG.info("StartWorker cancelled while booting slot={} generation={}", lease.slotId(), lease.generation());
        leases.end(lease, EndReason.CANCELLED, why, after);
      }
    });
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
    lock.call(after -> {
      for (Lease lease : index.toStop(runnerWorkerId, peer, waiting)) {
        RecyclerException why = new RecyclerException(CANCELLED, "StopWorker was called before the worker was ready");
        if (lease.state() == Lease.State.WAITING) {
          waiting.remove(lease);
          leases.endUnassigned(lease, EndReason.STOP_WORKER, why, after);
        } else {
          leases.end(lease, EndReason.STOP_WORKER, why, after);
        }
      }
      return null;
    });
  }

  private void waitTimedOut(Lease lease) {
    lock.run(after -> {
      if (lease.state() != Lease.State.WAITING) {
        return;
      }
      waiting.remove(lease);
      leases.endUnassigned(lease, EndReason.WAIT_TIMEOUT,
          SlotViews.noSlot(lease, slots.values(), config.leaseWaitTimeout(), scheduler.nanoTime()), after);
    });
  }

  /**
   * Gives IDLE slots to waiting calls whose preparation finished, first come first served; each goes to the slot
   * {@link Standbys#place} picks (the one whose standby worker matches it, if any).
   */
  @GuardedBy("lock")
  private void dispatch(List<Runnable> after) {
    for (java.util.Iterator<Lease> it = waiting.iterator(); it.hasNext() && !closed; ) {
      Lease lease = it.next();
      if (!lease.isPrepared()) {
        continue;
      }
      Standbys.Placement placement = standbys.place(lease, slots.values(), after);
      if (placement == null) {
        return;
      }
      it.remove();
      leases.assign(placement.slot(), lease, placement.standby(), after);
    }
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
    return lock.read(() -> index.live(workerId));
  }

  /**
   * The lease whose inner worker uses {@code workerId}: completed at once for a live lease; for a standby worker's id,
   * completed when a lease adopts it, or exceptionally when it is dropped ({@link Standbys}).
   *
   * @throws RecyclerException as {@link #leaseForWorker} when neither a lease nor a standby has the id
   */
  public CompletableFuture<Lease> whenLeased(String workerId) throws RecyclerException {
    if (workerId.isEmpty()) {
      throw new RecyclerException(BAD_REQUEST, "the worker_id header is missing: start the worker with --id");
    }
    return lock.call(after -> {
      try {
        return CompletableFuture.completedFuture(index.live(workerId));
      } catch (RecyclerException e) {
        CompletableFuture<Lease> held = e.kind() == RecyclerException.Kind.UNKNOWN_ID ? standbys.await(workerId) : null;
        if (held == null) {
          throw e;
        }
        return held;
      }
    });
  }

  /**
   * The inner worker connected its control stream and the proxy opened the runner's side: the lease is ready and the
   * runner's StartWorker call returns.
   *
   * @throws RecyclerException when the id is unknown, the lease ended, or a control stream is already connected
   */
  public Lease controlConnected(String workerId, ControlLink link) throws RecyclerException {
    return lock.call(after -> {
      Lease lease = index.connectable(workerId);
      leases.connected(lease, link, after);
      return lease;
    });
  }

  /** The proxied control stream ended from the runner's or the worker's side. */
  public void controlEnded(Lease lease, EndReason reason) {
    lock.run(after -> leases.end(lease, reason,
        new RecyclerException(UNAVAILABLE, "the worker's control stream ended"), after));
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
    long generation = LeaseIndex.generation(generationHeader);
    return lock.read(() -> LeaseIndex.current(slots.get(slotId), slotId, generation));
  }

  @Override
  public String verifyWorker(String presentedWorkerId) throws RecyclerException {
    LeaseCredentials.Presented presented = LeaseCredentials.split(presentedWorkerId);
    LeaseIndex.requireCredential(presented);
    return lock.read(() -> {
      try {
        return index.verifyWorker(presented);
      } catch (RecyclerException e) {
        if (e.kind() != RecyclerException.Kind.UNKNOWN_ID) {
          throw e;
        }
        standbys.verify(presented); // a standby worker's streams are held until a lease adopts it
        return presented.publicId();
      }
    });
  }

  @Override
  public void verifyWrapper(String slotId, String generationHeader, String credential) throws RecyclerException {
    if (credential.isEmpty()) {
      throw new RecyclerException(UNAUTHENTICATED, "the recycler-lease-credential header is missing: wrappers send"
          + " the credential of their Lease on every provision and artifact call");
    }
    Lease lease = currentLease(slotId, generationHeader);
    if (!LeaseCredentials.matches(lease.credential(), credential)) {
      throw new RecyclerException(FORBIDDEN, "wrong lease credential for slot '" + slotId + "' generation "
          + lease.generation());
    }
  }

  /** Records the job name (from the pipeline options) for the slot table and logs. */
  public void jobName(Lease lease, String name) {
    lease.jobName(name);
  }

  /**
   * Records the job's retrieval token from the runner's provision info: the scope within which a staged artifact's
   * path may stand for its content (Beam's job server stages every job under a fresh path, but a path is never an
   * identity across jobs).
   */
  public void retrievalToken(Lease lease, String token) {
    lease.retrievalToken(token);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Shutdown and views

  /**
   * Stops taking leases, fails waiting StartWorker calls, ends every running lease with an exit instruction. The
   * returned future completes when every wrapper reported its lease ended (or detached). Idempotent.
   */
  public CompletableFuture<Void> shutdown() {
    lock.run(after -> {
      if (closed) {
        return;
      }
      closed = true;
      LOG.info("slot pool shutting down, waiting={} leased={}", waiting.size(),
          slots.values().stream().filter(s -> s.lease != null).count());
      while (!waiting.isEmpty()) {
        leases.endUnassigned(waiting.poll(), EndReason.SHUTDOWN,
            new RecyclerException(UNAVAILABLE, "the recycler is shutting down"), after);
      }
      for (Slot slot : slots.values()) {
        standbys.drop(slot, "the recycler is shutting down", true, after);
        if (slot.lease != null) {
          leases.end(slot.lease, EndReason.SHUTDOWN, new RecyclerException(UNAVAILABLE,
              "the recycler is shutting down"), after);
        }
      }
      checkDrained(after);
    });
    return drained;
  }

  @GuardedBy("lock")
  private void checkDrained(List<Runnable> after) {
    if (closed && slots.values().stream().allMatch(s -> s.lease == null)) {
      after.add(() -> drained.complete(null));
    }
  }

  /** What the pool's parts ask of it; called under the lock. */
  private final class Hooks implements LeaseLifecycle.Pool, WrapperSessions.Pool {
    // closed() serves both interfaces.
    @Override
    public boolean closed() {
      return closed;
    }

    @Override
    public void dispatch(List<Runnable> after) {
      SlotPool.this.dispatch(after);
    }

    @Override
    public void checkDrained(List<Runnable> after) {
      SlotPool.this.checkDrained(after);
    }

    @Override
    public void speculate(Lease lease, dev.recycler.proto.v1.PreparedLease probed, List<Runnable> after) {
      standbys.speculate(lease, probed, slots.values(), after);
    }
  }

  /** How many slots a wrapper holds, of how many, and whether the pool was shut down (for the readiness probe). */
  public record Attachment(int attached, int slots, boolean shutdown) {}

  public Attachment attachment() {
    return lock.view(() -> new Attachment((int) slots.values().stream().filter(s -> s.attachment != null).count(),
        slots.size(), closed));
  }

  /** Every wrapper link currently attached (for closing them at shutdown). */
  public List<WrapperLink> attachedLinks() {
    return lock.view(() -> slots.values().stream().filter(s -> s.attachment != null).map(s -> s.attachment.link())
        .toList());
  }

  /** A consistent snapshot of all slots and the newest {@code maxLeases} lease records (0 = all kept). */
  public SlotTable slotTable(int maxLeases) {
    return lock.view(() -> SlotViews.table(slots.values(), index.history(), scheduler, maxLeases));
  }
}
