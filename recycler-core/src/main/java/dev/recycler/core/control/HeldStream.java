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
 * on to the opened stream ({@link Opened}). Concurrency: everything synchronises on this object, messages included.
 * A standby's stream is opened on the thread that adopts it, not the call's: opening requests the worker's first
 * message, which gRPC may deliver on the call's thread before the opening has returned; that message waits for the
 * monitor and then goes to the opened stream (an unsynchronised read found nothing opened yet and dropped the worker's
 * first answer: one lease in a hundred in the benchmark, whose runner then waited for it in vain).
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
  private Opened<T> opened;
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
    return hold(pool.whenLeased(workerId), call, open);
  }

  /** {@link #open} once the lease's future is known (for tests: any future). */
  static <T> StreamObserver<T> hold(CompletableFuture<Lease> lease, ServerCallStreamObserver<?> call,
      Function<Lease, Opened<T>> open) {
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

  private synchronized void cancelled() {
    ended = true;
    if (opened != null) {
      opened.onCancel().run();
    }
  }

  private synchronized void ready() {
    if (opened != null) {
      opened.onReady().run();
    }
  }

  @Override
  public synchronized void onNext(T value) {
    if (opened != null) {
      opened.fromWorker().onNext(value);
    }
    // else: nothing was requested yet (only opening requests), so nothing can arrive
  }

  @Override
  public synchronized void onError(Throwable t) {
    ended = true;
    if (opened != null) {
      opened.fromWorker().onError(t);
    }
  }

  @Override
  public synchronized void onCompleted() {
    if (opened != null) {
      opened.fromWorker().onCompleted();
    } else if (!ended) {
      call.onCompleted(); // the worker half-closed while held: finish the call
    }
    ended = true;
  }
}
