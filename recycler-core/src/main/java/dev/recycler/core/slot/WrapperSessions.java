package dev.recycler.core.slot;

import static dev.recycler.core.api.RecyclerException.Kind.BAD_REQUEST;
import static dev.recycler.core.api.RecyclerException.Kind.CONFLICT;
import static dev.recycler.core.api.RecyclerException.Kind.UNAVAILABLE;
import static dev.recycler.core.api.RecyclerException.Kind.UNKNOWN_ID;

import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.proto.v1.Attached;
import dev.recycler.proto.v1.Hello;
import dev.recycler.proto.v1.LeaseEnded;
import dev.recycler.proto.v1.Ping;
import dev.recycler.proto.v1.RecyclerMessage;
import dev.recycler.proto.v1.WorkerStarted;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The wrapper side of the pool: which incarnation holds each slot (attach, the liveness probe of a holder when another
 * incarnation claims its slot, detach), and the wrappers' reports, fenced by generation.
 *
 * <p><b>Concurrency.</b> Methods that take an {@code after} list run under the pool lock (the caller holds it) and add
 * their side effects to it; the probe's timeout takes the lock itself.
 */
final class WrapperSessions {
  private static final Logger LOG = LoggerFactory.getLogger(WrapperSessions.class);

  /** What attaching asks of the pool. Called under the pool lock. */
  interface Pool {
    boolean closed();

    /** Hands free slots to waiting StartWorker calls. */
    void dispatch(List<Runnable> after);
  }

  private final RecyclerConfig config;
  private final Scheduler scheduler;
  private final String recyclerId;
  private final PoolLock lock;
  private final Map<String, Slot> slots;
  private final LeaseLifecycle leases;
  private final Standbys standbys;
  private final Pool pool;

  WrapperSessions(RecyclerConfig config, Scheduler scheduler, String recyclerId, PoolLock lock, Map<String, Slot> slots,
      LeaseLifecycle leases, Standbys standbys, Pool pool) {
    this.config = config;
    this.scheduler = scheduler;
    this.recyclerId = recyclerId;
    this.lock = lock;
    this.slots = slots;
    this.leases = leases;
    this.standbys = standbys;
    this.pool = pool;
  }

  /** See {@link SlotPool#attach}. */
  void attach(Hello hello, WrapperLink link, List<Runnable> after) {
    RecyclerException refused = refusal(hello);
    if (refused != null) {
      after.add(() -> link.close(refused));
      return;
    }
    Slot slot = slots.get(hello.getSlotId());
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
  }

  /** Why {@code hello} cannot attach at all, or null. */
  private RecyclerException refusal(Hello hello) {
    if (hello.getSlotId().isEmpty()) {
      return new RecyclerException(BAD_REQUEST, "Hello.slot_id is empty: start the wrapper with --slot=<id>");
    }
    if (hello.getIncarnationId().isEmpty()) {
      return new RecyclerException(BAD_REQUEST, "Hello.incarnation_id is empty");
    }
    if (!slots.containsKey(hello.getSlotId())) {
      return new RecyclerException(UNKNOWN_ID, "slot '" + hello.getSlotId() + "' is not configured on this recycler"
          + " (configured: " + String.join(", ", slots.keySet()) + "); fix the wrapper's --slot");
    }
    return pool.closed() ? new RecyclerException(UNAVAILABLE, "the recycler is shutting down") : null;
  }

  /** See {@link SlotPool#pong}. */
  void pong(WrapperLink link, long nonce, List<Runnable> after) {
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
  }

  private void claimTimedOut(Slot slot, Slot.Claim claim) {
    lock.run(after -> {
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
      if (pool.closed()) {
        after.add(() -> claim.link.close(new RecyclerException(UNAVAILABLE, "the recycler is shutting down")));
      } else {
        doAttach(slot, claim.hello, claim.link, after);
      }
    });
  }

  private void doAttach(Slot slot, Hello hello, WrapperLink link, List<Runnable> after) {
    slot.attachment = new Slot.Attachment(hello.getIncarnationId(), link, hello.getWrapperPid(),
        hello.getWrapperVersion(), new LinkedHashSet<>(hello.getHeldDigestsList()), new LinkedHashSet<>());
    slot.everAttached = true;
    slot.consecutiveFailures = 0;
    slot.transitionTo(SlotState.IDLE);
    LOG.info("wrapper attached slot={} incarnation={} pid={} held_digests={}", slot.id, hello.getIncarnationId(),
        hello.getWrapperPid(), hello.getHeldDigestsCount());
    long lastGeneration = slot.lastGeneration;
    after.add(() -> link.send(RecyclerMessage.newBuilder().setAttached(
        Attached.newBuilder().setRecyclerId(recyclerId).setLastGeneration(lastGeneration)).build()));
    pool.dispatch(after);
  }

  /** See {@link SlotPool#detached(WrapperLink, boolean)}. */
  void detached(WrapperLink link, boolean clean, List<Runnable> after) {
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
        if (claim != null && claim.link != link && !pool.closed()) {
          slot.pendingClaim = null;
          claim.timeout.cancel();
          doAttach(slot, claim.hello, claim.link, after);
        }
      }
    }
  }

  /** Lets go of the slot's wrapper; its lease, if any, ends with it and takes the slot to DETACHED. */
  private void detach(Slot slot, List<Runnable> after) {
    Lease lease = slot.lease;
    standbys.drop(slot, "its wrapper detached (the wrapper stops it)", false, after);
    slot.attachment = null;
    if (slot.backoffTask != null) {
      slot.backoffTask.cancel();
    }
    if (lease != null) {
      leases.wrapperLost(lease, after);
    }
    slot.transitionTo(SlotState.DETACHED);
  }

  /** See {@link SlotPool#workerStarted}. */
  void workerStarted(WrapperLink link, WorkerStarted started) {
    Slot slot = slotOf(link);
    Lease lease = slot == null ? null : slot.lease;
    if (lease == null || lease.generation() != started.getGeneration()) {
      LOG.warn("ignoring stale WorkerStarted slot={} generation={}", slot == null ? "?" : slot.id,
          started.getGeneration());
      return;
    }
    lease.workerStarted(started.getPid());
    LOG.info("worker started slot={} generation={} pid={}", slot.id, lease.generation(), started.getPid());
  }

  /** See {@link SlotPool#leaseEnded}. */
  void leaseEnded(WrapperLink link, LeaseEnded ended, List<Runnable> after) {
    Slot slot = slotOf(link);
    if (slot == null) {
      return;
    }
    if (slot.attachment != null) {
      slot.attachment.held(ended.getHeldDigestsList());
    }
    Lease lease = slot.lease;
    if (lease == null || lease.generation() != ended.getGeneration()) {
      LOG.warn("ignoring stale LeaseEnded slot={} generation={} current={}", slot.id, ended.getGeneration(),
          lease == null ? 0 : lease.generation());
      return;
    }
    leases.reported(lease, ended, after);
  }

  /** The slot {@code link} holds, or null (a stale link). */
  Slot slotOf(WrapperLink link) {
    for (Slot s : slots.values()) {
      if (s.attachment != null && s.attachment.link() == link) {
        return s;
      }
    }
    return null;
  }
}
