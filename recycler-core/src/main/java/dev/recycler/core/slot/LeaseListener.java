package dev.recycler.core.slot;

/** Per-lease resources (runner channels, provisioning, artifact scope) hook in here. Called outside the pool lock. */
public interface LeaseListener {
  /** A slot was assigned: the lease has a generation and worker id; prefetching may start. */
  void onAssigned(Lease lease);

  /** The lease ended; release everything it held. Called once per assigned lease. */
  void onEnded(Lease lease);

  LeaseListener NONE = new LeaseListener() {
    @Override
    public void onAssigned(Lease lease) {}

    @Override
    public void onEnded(Lease lease) {}
  };
}
