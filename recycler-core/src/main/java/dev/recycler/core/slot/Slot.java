package dev.recycler.core.slot;

import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.proto.v1.Hello;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Mutable state of one slot. Guarded by the {@link SlotPool} lock; read outside it only through snapshots.
 *
 * <p>While a lease holds the slot, the lease drives its state ({@link Lease#transitionTo}); without one, the pool does
 * ({@link #transitionTo}: attach, detach, end of a back-off). Both go through {@link #apply}, which validates, times and
 * counts every change.
 */
final class Slot {
  private static final Logger LOG = LoggerFactory.getLogger(Slot.class);

  final String id;
  private final Scheduler scheduler;
  private final RecyclerMetrics<SlotState, EndReason> metrics;
  private SlotState state = SlotState.DETACHED;
  private long stateSinceNanos;
  Attachment attachment;
  boolean everAttached;
  long lastGeneration;
  /** Set and cleared by the lease's own transitions (assignment and end). */
  Lease lease;
  int consecutiveFailures;
  long leasesServed;
  Claim pendingClaim;
  /** The standby worker waiting for this slot's next lease, if any (see {@link Standbys}). */
  Standbys.Standby standby;
  Scheduler.Cancellable backoffTask;

  Slot(String id, Scheduler scheduler, RecyclerMetrics<SlotState, EndReason> metrics) {
    this.id = id;
    this.scheduler = scheduler;
    this.metrics = metrics;
    this.stateSinceNanos = scheduler.nanoTime();
    metrics.slotTransition(null, SlotState.DETACHED);
  }

  SlotState state() {
    return state;
  }

  long stateSinceNanos() {
    return stateSinceNanos;
  }

  /** The state a slot takes when its lease ends: gone with its wrapper, backing off after repeated failures, or free. */
  SlotState freeState() {
    if (attachment == null) {
      return SlotState.DETACHED;
    }
    return consecutiveFailures >= 2 ? SlotState.BACKOFF : SlotState.IDLE;
  }

  /** A slot transition not caused by a lease (attach, detach, end of a back-off); logged at INFO. No-op if unchanged. */
  void transitionTo(SlotState next) {
    SlotState from = state;
    if (apply(next)) {
      LOG.info("slot transition slot={} from={} to={} generation={}", id, from, next,
          lease == null ? 0 : lease.generation());
    }
  }

  /**
   * Moves to {@code next}, stamps the time and counts the change; the caller logs. Returns whether the state changed.
   *
   * @throws IllegalStateException for a transition {@link SlotState} does not allow: a bug in the pool, never input
   */
  boolean apply(SlotState next) {
    SlotState from = state;
    if (from == next) {
      return false;
    }
    if (!from.canTransitionTo(next)) {
      throw new IllegalStateException("slot " + id + " cannot go from " + from + " to " + next);
    }
    state = next;
    stateSinceNanos = scheduler.nanoTime();
    metrics.slotTransition(from, next);
    return true;
  }

  /**
   * The wrapper incarnation currently holding the slot: what its cache holds (as last reported) and which digests it
   * was asked to prefetch and has not answered for yet ({@link Prefetches}).
   */
  record Attachment(String incarnation, WrapperLink link, long wrapperPid, String version, Set<String> heldDigests,
      Set<String> prefetching) {
    /** What the wrapper reported its cache holds now (LeaseEnded, Prefetched). */
    void held(java.util.Collection<String> digests) {
      heldDigests.clear();
      heldDigests.addAll(digests);
    }
  }

  /** Another incarnation's claim on an attached slot, pending a liveness probe of the current holder. */
  static final class Claim {
    final Hello hello;
    final WrapperLink link;
    final long nonce;
    Scheduler.Cancellable timeout;

    Claim(Hello hello, WrapperLink link, long nonce) {
      this.hello = hello;
      this.link = link;
      this.nonce = nonce;
    }
  }
}
