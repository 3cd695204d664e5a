package dev.recycler.core.provision;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.slot.Lease;
import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.wire.CallerContext;
import io.grpc.stub.StreamObserver;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.GetProvisionInfoRequest;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.GetProvisionInfoResponse;
import org.apache.beam.model.fnexecution.v1.ProvisionServiceGrpc;

/**
 * Wrapper-facing Beam {@code ProvisionService}: answers only for the caller's current lease ({@code worker_id} = slot
 * id, {@code recycler-generation} = the lease generation).
 */
final class ProvisionService extends ProvisionServiceGrpc.ProvisionServiceImplBase {
  private final SlotPool pool;
  private final Provisioner provisioner;

  ProvisionService(SlotPool pool, Provisioner provisioner) {
    this.pool = pool;
    this.provisioner = provisioner;
  }

  @Override
  public void getProvisionInfo(GetProvisionInfoRequest request, StreamObserver<GetProvisionInfoResponse> responses) {
    Lease lease;
    try {
      lease = pool.currentLease(CallerContext.workerId(), CallerContext.generation());
    } catch (RecyclerException e) {
      responses.onError(e.toStatusException());
      return;
    }
    provisioner.provisionInfo(lease).whenComplete((info, failure) -> {
      if (failure != null) {
        responses.onError(RecyclerException.toStatusException(failure, "GetProvisionInfo"));
      } else {
        responses.onNext(GetProvisionInfoResponse.newBuilder().setInfo(info).build());
        responses.onCompleted();
      }
    });
  }
}
