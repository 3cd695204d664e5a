package dev.recycler.core.wire;

import static org.assertj.core.api.Assertions.assertThat;

import io.grpc.Status;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The unary-call adapter: one outcome per call, the first signal wins, errors reach the caller unwrapped. */
@Timeout(value = 10, unit = TimeUnit.SECONDS)
class UnaryCallsTest {
  private final List<String> outcomes = new ArrayList<>();

  private String record(String response, Throwable failure) {
    String seen = failure != null ? "failed " + Status.fromThrowable(failure).getCode()
        : response != null ? "got " + response : "empty";
    outcomes.add(seen);
    return seen;
  }

  @Test
  void theResponseWinsAndALaterStatusIsIgnored() {
    CompletableFuture<String> f = UnaryCalls.<String, String>call(o -> {
      o.onNext("a");
      o.onError(Status.DEADLINE_EXCEEDED.asRuntimeException());
      o.onCompleted();
    }, this::record);

    assertThat(f).isCompletedWithValue("got a");
    assertThat(outcomes).containsExactly("got a");
  }

  @Test
  void anErrorOrACompletionWithoutResponseReachTheOutcomeOnce() {
    CompletableFuture<String> failed = UnaryCalls.<String, String>call(o -> {
      o.onError(Status.UNAVAILABLE.asRuntimeException());
      o.onCompleted();
    }, this::record);
    CompletableFuture<String> empty = UnaryCalls.<String, String>call(o -> o.onCompleted(), this::record);

    assertThat(failed).isCompletedWithValue("failed UNAVAILABLE");
    assertThat(empty).isCompletedWithValue("empty");
    assertThat(outcomes).containsExactly("failed UNAVAILABLE", "empty");
  }

  @Test
  void whatTheOutcomeThrowsFailsTheFutureUnwrapped() {
    IllegalStateException thrown = new IllegalStateException("no");
    CompletableFuture<String> f = UnaryCalls.<String, String>call(o -> o.onNext("a"), (r, t) -> {
      throw thrown;
    });

    assertThat(f).isCompletedExceptionally();
    assertThat(f.handle((v, t) -> t).join()).isSameAs(thrown);
  }

  @Test
  void aStartThatThrowsIsTheCallsError() {
    CompletableFuture<String> f = UnaryCalls.<String, String>call(o -> {
      throw Status.INTERNAL.asRuntimeException();
    }, this::record);

    assertThat(f).isCompletedWithValue("failed INTERNAL");
  }
}
