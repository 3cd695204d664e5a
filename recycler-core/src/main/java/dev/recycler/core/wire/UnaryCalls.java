package dev.recycler.core.wire;

import io.grpc.stub.StreamObserver;
import java.util.concurrent.CompletableFuture;
import java.util.function.Consumer;

/**
 * The one adapter from a unary call on an async stub to a future: {@code UnaryCalls.call(observer ->
 * stub.method(request, observer), (response, failure) -> ...)}.
 *
 * <p>Contract: {@code outcome} runs exactly once, on the gRPC thread that delivers the first of: the response (then
 * {@code failure} is null; a status after it is ignored, as a unary call has nothing more to say), the call's error
 * ({@code response} is null, {@code failure} the {@code StatusRuntimeException}), or completion without a response
 * (both null). The returned future completes with what {@code outcome} returns, or exceptionally with exactly what it
 * throws (not wrapped), so callers keep their own error messages and kinds. A {@code start} that throws counts as the
 * call's error.
 */
public final class UnaryCalls {
  private UnaryCalls() {}

  /** What a call's outcome becomes; may throw to fail the returned future. */
  @FunctionalInterface
  public interface Outcome<T, R> {
    R apply(T response, Throwable failure) throws Exception;
  }

  public static <T, R> CompletableFuture<R> call(Consumer<StreamObserver<T>> start, Outcome<T, R> outcome) {
    Observer<T, R> observer = new Observer<>(outcome);
    try {
      start.accept(observer);
    } catch (RuntimeException e) {
      observer.settle(null, e);
    }
    return observer.result;
  }

  private static final class Observer<T, R> implements StreamObserver<T> {
    private final Outcome<T, R> outcome;
    private final CompletableFuture<R> result = new CompletableFuture<>();
    private boolean settled;

    Observer(Outcome<T, R> outcome) {
      this.outcome = outcome;
    }

    @Override
    public void onNext(T response) {
      settle(response, null);
    }

    @Override
    public void onError(Throwable t) {
      settle(null, t);
    }

    @Override
    public void onCompleted() {
      settle(null, null);
    }

    private void settle(T response, Throwable failure) {
      synchronized (this) {
        if (settled) {
          return;
        }
        settled = true;
      }
      try {
        result.complete(outcome.apply(response, failure));
      } catch (Exception e) {
        result.completeExceptionally(e);
      }
    }
  }
}
