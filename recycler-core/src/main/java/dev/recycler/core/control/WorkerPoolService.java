package dev.recycler.core.control;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.slot.Lease;
import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.wire.CallerContext;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StopWorkerRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StopWorkerResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnExternalWorkerPoolGrpc;

/**
 * The runner-facing {@code BeamFnExternalWorkerPool}: StartWorker leases a slot and answers once the worker is
 * connected (or fails with a status saying why); StopWorker releases it. Failures are gRPC statuses; the response's
 * {@code error} field is never used.
 */
final class WorkerPoolService extends BeamFnExternalWorkerPoolGrpc.BeamFnExternalWorkerPoolImplBase {
  private final SlotPool pool;

  WorkerPoolService(SlotPool pool) {
    this.pool = pool;
  }

  @Override
  public void startWorker(StartWorkerRequest request, StreamObserver<StartWorkerResponse> responses) {
    ServerCallStreamObserver<StartWorkerResponse> call = (ServerCallStreamObserver<StartWorkerResponse>) responses;
    Lease lease;
    try {
      lease = pool.startWorker(request, CallerContext.peer());
    } catch (RecyclerException e) {
      responses.onError(e.toStatusException());
      return;
    }
    call.setOnCancelHandler(() -> pool.cancelStart(lease));
    lease.ready().whenComplete((ready, failure) -> {
      synchronized (call) {
        if (call.isCancelled()) {
          return;
        }
        if (failure != null) {
          call.onError(RecyclerException.toStatusException(failure, "StartWorker " + request.getWorkerId()));
        } else {
          call.onNext(StartWorkerResponse.getDefaultInstance());
          call.onCompleted();
        }
      }
    });
  }

  @Override
  public void stopWorker(StopWorkerRequest request, StreamObserver<StopWorkerResponse> responses) {
    try {
      pool.stopWorker(request.getWorkerId(), CallerContext.peer());
      responses.onNext(StopWorkerResponse.getDefaultInstance());
      responses.onCompleted();
    } catch (RecyclerException e) {
      responses.onError(e.toStatusException());
    }
  }
}
