package dev.recycler.core.slot;

import dev.recycler.proto.v1.PreparedLease;
import java.util.concurrent.CompletableFuture;

/** Per-lease resources (runner channels, provisioning, artifact scope) hook in here. Called outside the pool lock. */
public interface LeaseListener {
  /**
   * A StartWorker call arrived: the lease is WAITING, without a slot yet. Returns the lease's boot inputs for the
   * wrapper; the pool places the lease on a slot when the future completes (on the slot whose standby worker was
   * started with the same inputs, if any) and sends the Lease message with the inputs if it completed normally with
   * non-null ones, without them (the wrapper then asks itself) if it failed. The future must complete in bounded time.
   */
  CompletableFuture<PreparedLease> prepare(Lease lease);

  /**
   * The lease's boot inputs as {@link #prepare} will return them, known earlier because some artifact digests are
   * only probed, not yet verified (see the artifact package's {@code Artifacts#provisional}), to start a worker from
   * speculatively; or null when there is nothing to gain. The pool adopts such a worker only if the verified inputs
   * are byte-for-byte these. Must complete no later than {@link #prepare}'s future; never exceptionally.
   */
  default CompletableFuture<PreparedLease> provisional(Lease lease) {
    return CompletableFuture.completedFuture(null);
  }

  /** The lease ended; release everything it held. Called once per lease. */
  void onEnded(Lease lease);

  /** Prepares nothing: every Lease goes out at once, without boot inputs. */
  LeaseListener NONE = new LeaseListener() {
    @Override
    public CompletableFuture<PreparedLease> prepare(Lease lease) {
      return CompletableFuture.completedFuture(null);
    }

    @Override
    public void onEnded(Lease lease) {}
  };
}
