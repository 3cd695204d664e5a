package dev.recycler.core.control;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.slot.Lease;
import dev.recycler.core.slot.SlotPool;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.util.concurrent.CompletableFuture;
import java.util.function.Function;

/**
 * A worker's stream (control or logging) that is opened once its lease is known: at once for a lease's worker, when
 * a lease adopts it for a standby worker ({@code Standbys}), whose streams wait here meanwhile, with nothing requested
 * from the worker and nothing opened to the runner. A standby that is dropped gets the reason as the stream's error.
 *
 * <p>gRPC fixes a call's cancel and ready handlers when the service method returns, so they are set here and passed
 * on to the opened stream ({@link Opened}). Concurrency: {@link #leased} and the handlers synchronise on this object;
 * once opened, messages go straight to the opened stream, which synchronises itself.
 */
final class HeldStream<T> implements StreamObserver<T> {
  /** What the stream became once its lease was known. */
  record Opened<T>(StreamObserver<T> fromWorker, Runnable onCancel, Runnable onReady) {
    static <T> Opened<T> refused() {
      return new Opened<>(new Ignoring<>(), () -> {}, () -> {});
    }
  }

  private final ServerCallStreamObserver<?> call;
  private final Function<Lease, Opened<T>> open;
  private volatile Opened<T> opened;
  /** The worker ended the call before its lease was known. */
  private boolean ended;

  private HeldStream(ServerCallStreamObserver<?> call, Function<Lease, Opened<T>> open) {
    this.call = call;
    this.open = open;
  }

  /**
   * Called in the service method: disables automatic requests, sets the handlers and opens the stream with {@code
   * open} when the lease of {@code workerId} is known (at once unless the worker is a standby's).
   */
  static <T> StreamObserver<T> open(SlotPool pool, String workerId, ServerCallStreamObserver<?> call,
      Function<Lease, Opened<T>> open) throws RecyclerException {
    CompletableFuture<Lease> lease = pool.whenLeased(workerId);
    call.disableAutoRequest();
    HeldStream<T> held = new HeldStream<>(call, open);
    call.setOnCancelHandler(held::cancelled);
    call.setOnReadyHandler(held::ready);
    lease.whenComplete(held::leased);
    return held;
  }

  private void leased(Lease lease, Throwable failure) {
    synchronized (this) {
      if (ended) {
        return;
      }
      if (failure != null) {
        ended = true;
        call.onError(RecyclerException.toStatusException(failure, "standby"));
        return;
      }
      opened = open.apply(lease);
    }
  }

  private void cancelled() {
    Opened<T> o;
    synchronized (this) {
      o = opened;
      ended = true;
    }
    if (o != null) {
      o.onCancel().run();
    }
  }

  private void ready() {
    Opened<T> o = opened;
    if (o != null) {
      o.onReady().run();
    }
  }

  @Override
  public void onNext(T value) {
    Opened<T> o = opened;
    if (o != null) {
      o.fromWorker().onNext(value);
    }
  }

  @Override
  public void onError(Throwable t) {
    Opened<T> o;
    synchronized (this) {
      o = opened;
      ended = true;
    }
    if (o != null) {
      o.fromWorker().onError(t);
    }
  }

  @Override
  public void onCompleted() {
    Opened<T> o;
    synchronized (this) {
      o = opened;
      if (o == null && !ended) {
        call.onCompleted(); // the worker half-closed while held: finish the call
      }
      ended = true;
    }
    if (o != null) {
      o.fromWorker().onCompleted();
    }
  }
}
