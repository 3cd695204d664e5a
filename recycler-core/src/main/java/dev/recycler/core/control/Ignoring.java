package dev.recycler.core.control;

import io.grpc.stub.StreamObserver;

/** The request observer of a refused stream: whatever the peer still sends is dropped. */
final class Ignoring<T> implements StreamObserver<T> {
  @Override
  public void onNext(T value) {}

  @Override
  public void onError(Throwable t) {}

  @Override
  public void onCompleted() {}
}
