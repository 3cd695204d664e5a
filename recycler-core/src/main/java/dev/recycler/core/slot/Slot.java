package dev.recycler.core.slot;

import java.util.Set;

/** Mutable state of one slot. Guarded by the {@link SlotPool} lock; read outside it only through snapshots. */
final class Slot {
  final String id;
  SlotState state = SlotState.DETACHED;
  Attachment attachment;
  boolean everAttached;
  long lastGeneration;
  Lease lease;
  int consecutiveFailures;
  long leasesServed;
  long stateSinceNanos;
  Claim pendingClaim;
  Scheduler.Cancellable backoffTask;
  Scheduler.Cancellable drainTask;

  Slot(String id, long nowNanos) {
    this.id = id;
    this.stateSinceNanos = nowNanos;
  }

  /** The wrapper incarnation currently holding the slot. */
  record Attachment(String incarnation, WrapperLink link, long wrapperPid, String version, Set<String> heldDigests) {}

  /** Another incarnation's claim on an attached slot, pending a liveness probe of the current holder. */
  static final class Claim {
    final dev.recycler.proto.v1.Hello hello;
    final WrapperLink link;
    final long nonce;
    Scheduler.Cancellable timeout;

    Claim(dev.recycler.proto.v1.Hello hello, WrapperLink link, long nonce) {
      this.hello = hello;
      this.link = link;
      this.nonce = nonce;
    }
  }
}
