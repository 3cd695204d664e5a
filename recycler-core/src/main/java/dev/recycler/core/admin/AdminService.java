package dev.recycler.core.admin;

import dev.recycler.core.slot.SlotPool;
import dev.recycler.proto.v1.GetSlotTableRequest;
import dev.recycler.proto.v1.RecyclerAdminGrpc;
import dev.recycler.proto.v1.SlotTable;
import io.grpc.stub.StreamObserver;

/** {@code RecyclerAdmin}: the slot table over gRPC. */
final class AdminService extends RecyclerAdminGrpc.RecyclerAdminImplBase {
  private final SlotPool pool;

  AdminService(SlotPool pool) {
    this.pool = pool;
  }

  @Override
  public void getSlotTable(GetSlotTableRequest request, StreamObserver<SlotTable> responses) {
    if (request.getMaxLeases() < 0) {
      responses.onError(io.grpc.Status.INVALID_ARGUMENT
          .withDescription("max_leases must be >= 0 (0 = all kept)").asException());
      return;
    }
    responses.onNext(pool.slotTable(request.getMaxLeases()));
    responses.onCompleted();
  }
}
