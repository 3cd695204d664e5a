package dev.recycler.core.control;

import static org.assertj.core.api.Assertions.assertThat;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.api.RecyclerException.Kind;
import dev.recycler.core.slot.Lease;
import io.grpc.Status;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** A standby worker's stream, held until its lease is known, then opened on the adopting thread. */
@Timeout(10)
class HeldStreamTest {

  /** The server side of one call, as far as HeldStream uses it. */
  private static final class Call extends ServerCallStreamObserver<String> {
    volatile Runnable onCancel;
    volatile Runnable onReady;
    volatile boolean autoRequestDisabled;
    final List<String> events = new CopyOnWriteArrayList<>();

    @Override
    public boolean isCancelled() {
      return false;
    }

    @Override
    public void setOnCancelHandler(Runnable handler) {
      onCancel = handler;
    }

    @Override
    public void setCompression(String compression) {}

    @Override
    public boolean isReady() {
      return true;
    }

    @Override
    public void setOnReadyHandler(Runnable handler) {
      onReady = handler;
    }

    @Override
    public void disableAutoInboundFlowControl() {
      autoRequestDisabled = true;
    }

    @Override
    public void disableAutoRequest() {
      autoRequestDisabled = true;
    }

    @Override
    public void request(int count) {
      events.add("request " + count);
    }

    @Override
    public void setMessageCompression(boolean enable) {}

    @Override
    public void onNext(String value) {
      events.add("to worker " + value);
    }

    @Override
    public void onError(Throwable t) {
      events.add("error " + Status.fromThrowable(t).getCode());
    }

    @Override
    public void onCompleted() {
      events.add("completed");
    }
  }

  private static final class Recording implements StreamObserver<String> {
    final List<String> got = new CopyOnWriteArrayList<>();

    @Override
    public void onNext(String value) {
      got.add(value);
    }

    @Override
    public void onError(Throwable t) {
      got.add("error");
    }

    @Override
    public void onCompleted() {
      got.add("completed");
    }
  }

  @Test
  void theWorkersFirstMessageDuringTheOpeningIsDeliveredNotDropped() throws Exception {
    Call call = new Call();
    Recording opened = new Recording();
    CompletableFuture<Lease> adoption = new CompletableFuture<>();
    StreamObserver<String> held = HeldStream.hold(adoption, call, lease -> {
      // Opening requests the worker's first message; gRPC may deliver it on the call's thread at once, before the
      // opening returns (here: the answer to the runner's first instruction, while the adopter still opens).
      call.request(1);
      Thread callThread = new Thread(() -> heldOf(call).onNext("first answer"));
      callThread.start();
      // Until the call's thread has delivered (a stream that reads without the monitor drops the message: the thread
      // ends) or waits for the monitor this opening holds.
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
      while (callThread.getState() != Thread.State.BLOCKED && callThread.getState() != Thread.State.TERMINATED
          && System.nanoTime() < deadline) {
        Thread.onSpinWait();
      }
      return new HeldStream.Opened<>(opened, () -> {}, () -> {});
    });
    HELD.put(call, held);
    assertThat(call.autoRequestDisabled).isTrue();
    assertThat(call.events).as("nothing requested from a held worker").isEmpty();

    adoption.complete(null); // adopted: opened on this thread

    org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(5))
        .untilAsserted(() -> assertThat(opened.got).containsExactly("first answer"));
  }

  @Test
  void aDroppedStandbyFailsItsHeldStreamWithTheReason() {
    Call call = new Call();
    CompletableFuture<Lease> adoption = new CompletableFuture<>();
    HeldStream.hold(adoption, call, lease -> {
      throw new AssertionError("never opened");
    });

    adoption.completeExceptionally(new RecyclerException(Kind.UNAVAILABLE, "standby dropped"));

    assertThat(call.events).containsExactly("error UNAVAILABLE");
  }

  @Test
  void aWorkerThatHangsUpWhileHeldIsNeverOpened() {
    Call call = new Call();
    CompletableFuture<Lease> adoption = new CompletableFuture<>();
    StreamObserver<String> held = HeldStream.hold(adoption, call, lease -> {
      throw new AssertionError("never opened");
    });

    held.onCompleted();
    adoption.complete(null);

    assertThat(call.events).containsExactly("completed");
  }

  private static final java.util.Map<Call, StreamObserver<String>> HELD = new java.util.concurrent.ConcurrentHashMap<>();

  private static StreamObserver<String> heldOf(Call call) {
    StreamObserver<String> h = HELD.get(call);
    while (h == null) {
      Thread.onSpinWait();
      h = HELD.get(call);
    }
    return h;
  }
}
