package dev.recycler.core.slot;

import dev.recycler.proto.v1.PreparedLease;
import java.util.concurrent.CompletableFuture;

/** Per-lease resources (runner channels, provisioning, artifact scope) hook in here. Called outside the pool lock. */
public interface LeaseListener {
  /**
   * A slot was assigned: the lease has a generation and worker id. Returns the lease's boot inputs for the wrapper;
   * the pool sends the Lease message when the future completes, with the inputs if it completed normally with
   * non-null ones, without them (the wrapper then asks itself) if it failed. The future must complete in bounded time.
   */
  CompletableFuture<PreparedLease> onAssigned(Lease lease);

  /** The lease ended; release everything it held. Called once per assigned lease. */
  void onEnded(Lease lease);

  /** Prepares nothing: every Lease goes out at once, without boot inputs. */
  LeaseListener NONE = new LeaseListener() {
    @Override
    public CompletableFuture<PreparedLease> onAssigned(Lease lease) {
      return CompletableFuture.completedFuture(null);
    }

    @Override
    public void onEnded(Lease lease) {}
  };
}
