package dev.recycler.core.admin;

import dev.recycler.core.slot.SlotPool;
import io.grpc.BindableService;

/** The gRPC service of this package, for the server on the fixed port. */
public final class AdminServices {
  private AdminServices() {}

  /** {@code RecyclerAdmin}: the slot table, read-only. */
  public static BindableService create(SlotPool pool) {
    return new AdminService(pool);
  }
}
