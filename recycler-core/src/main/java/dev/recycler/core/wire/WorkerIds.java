package dev.recycler.core.wire;

import io.grpc.Metadata;
import io.grpc.stub.AbstractStub;
import io.grpc.stub.MetadataUtils;

/** Attaches Beam's {@code worker_id} header to calls we make to the runner. */
public final class WorkerIds {
  private WorkerIds() {}

  public static <S extends AbstractStub<S>> S withWorkerId(S stub, String workerId) {
    Metadata md = new Metadata();
    md.put(Headers.WORKER_ID, workerId);
    return stub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md));
  }
}
