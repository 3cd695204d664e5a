package dev.recycler.core.slot;

import java.util.EnumSet;
import java.util.Set;

/** Where a slot is in its life. Each constant knows which states may follow it. */
public enum SlotState {
  /** No wrapper holds the slot (never attached, or its stream ended). */
  DETACHED {
    @Override
    Set<SlotState> next() {
      return EnumSet.of(IDLE);
    }
  },
  /** Attached and free: the next StartWorker may take it. */
  IDLE {
    @Override
    Set<SlotState> next() {
      return EnumSet.of(BOOTING, DETACHED);
    }
  },
  /** Attached, free, but not leasable until its back-off after repeated failures expires. */
  BACKOFF {
    @Override
    Set<SlotState> next() {
      return EnumSet.of(IDLE, DETACHED);
    }
  },
  /** Leased: the wrapper is booting the inner worker; the runner's StartWorker call is waiting. */
  BOOTING {
    @Override
    Set<SlotState> next() {
      return EnumSet.of(ACTIVE, DRAINING, IDLE, BACKOFF, DETACHED);
    }
  },
  /** Leased and ready: the inner worker's control stream is proxied to the runner. */
  ACTIVE {
    @Override
    Set<SlotState> next() {
      return EnumSet.of(DRAINING, IDLE, BACKOFF, DETACHED);
    }
  },
  /** Exit instruction sent; waiting for the wrapper to report that nothing of the lease is alive. */
  DRAINING {
    @Override
    Set<SlotState> next() {
      return EnumSet.of(IDLE, BACKOFF, DETACHED);
    }
  };

  abstract Set<SlotState> next();

  boolean canTransitionTo(SlotState target) {
    return next().contains(target);
  }

  /** Whether a lease (booting, running or draining) occupies the slot. */
  public boolean holdsLease() {
    return this == BOOTING || this == ACTIVE || this == DRAINING;
  }
}
