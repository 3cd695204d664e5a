package dev.recycler.core;

import dev.recycler.core.api.RecyclerConfig;
import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import dev.recycler.core.testing.TestingRunner;
import dev.recycler.core.testing.TestingWrapper;
import dev.recycler.proto.v1.GetSlotTableRequest;
import dev.recycler.proto.v1.RecyclerAdminGrpc;
import dev.recycler.proto.v1.RecyclerMessage.KindCase;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.Elements;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.GetProcessBundleDescriptorRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.ProcessBundleDescriptor;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.RegisterRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnControlGrpc;
import org.apache.beam.model.fnexecution.v1.BeamFnDataGrpc;
import org.apache.beam.model.fnexecution.v1.BeamFnExternalWorkerPoolGrpc;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.ProvisionInfo;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * A worker that dies at any point of a lease leaves Beam's runner able to fail the bundle at once.
 *
 * <p>Regression: the demo's worker was SIGKILLed 170 ms after its control connection, while it fetched its process
 * bundle descriptors, before it opened its data stream. The proxy answered the bundle with an error, but Beam's
 * {@code SdkHarnessClient.newBundle} first waits up to three minutes in {@code GrpcDataService.createOutboundAggregator}
 * for a data client, so the job hung. The fake runner here records data clients as Beam's data service does; each
 * case kills the worker at another point and checks that a data client reaches the runner and the bundle gets its
 * error response, in the order the runner needs them.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class WorkerLostMidBundleTest {
  private static final Duration AWAIT = Duration.ofSeconds(15);

  @TempDir
  Path cacheDir;

  private final List<AutoCloseable> closeables = new ArrayList<>();
  private Recycler recycler;
  private ManagedChannel channel;

  @AfterEach
  void tearDown() throws Exception {
    for (AutoCloseable c : closeables) {
      c.close();
    }
    if (channel != null) {
      channel.shutdownNow();
    }
    if (recycler != null) {
      recycler.close();
    }
  }

  /** Where in a lease the worker dies. */
  enum KillPoint {
    /** Connected to control, no descriptor fetched, no bundle sent yet. */
    BEFORE_DESCRIPTORS,
    /** A ProcessBundle is in flight; the worker is fetching its descriptor. */
    WHILE_FETCHING_DESCRIPTORS,
    /** The worker fetched the descriptor; it dies before it opens its data stream. */
    BEFORE_DATA_STREAM,
    /** The worker opened its data stream and is mid-bundle. */
    MID_BUNDLE
  }

  @ParameterizedTest
  @EnumSource(KillPoint.class)
  void aWorkerKilledAtAnyPointLetsTheRunnerFailItsBundle(KillPoint point) throws Exception {
    TestingRunner runner = startLease();
    TestingWrapper w = wrapper();
    String workerId = w.received(KindCase.LEASE).get(0).getLease().getWorkerId();
    w.freezeWorker(1);

    if (point == KillPoint.BEFORE_DESCRIPTORS) {
      w.reportExited(1, 137);
      awaitIdle();
      runner.controls.get("1-1").onNext(runner.processBundle("bundle-1", "stage-1"));
    } else {
      runner.controls.get("1-1").onNext(runner.processBundle("bundle-1", "stage-1"));
      await().atMost(AWAIT).until(() -> w.instructions.size() == 1);
      if (point != KillPoint.WHILE_FETCHING_DESCRIPTORS) {
        // The worker asks the proxy for the descriptor, as the Go SDK does before it runs a bundle.
        assertThat(descriptors(workerId).getProcessBundleDescriptor(GetProcessBundleDescriptorRequest.newBuilder()
            .setProcessBundleDescriptorId("stage-1").build()).getId()).isEqualTo("stage-1");
      }
      if (point == KillPoint.MID_BUNDLE) {
        // The worker opens its data stream to the runner directly (not through the recycler), then dies.
        ManagedChannel direct = TestingRunner.channel(runner.url());
        closeables.add(direct::shutdownNow);
        Metadata md = new Metadata();
        md.put(Metadata.Key.of("worker_id", Metadata.ASCII_STRING_MARSHALLER), workerId);
        BeamFnDataGrpc.newStub(direct).withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md))
            .data(new StreamObserver<>() {
              @Override
              public void onNext(Elements value) {}

              @Override
              public void onError(Throwable t) {}

              @Override
              public void onCompleted() {}
            });
        await().atMost(AWAIT).until(() -> runner.dataClients.contains(workerId));
      }
      w.reportExited(1, 137);
    }

    await().atMost(AWAIT).until(() -> runner.responses.getOrDefault("1-1", List.of()).size() == 1);
    InstructionResponse answer = runner.responses.get("1-1").get(0);
    assertThat(answer.getInstructionId()).isEqualTo("bundle-1");
    assertThat(answer.getError()).contains("slot-0").contains("gone");
    await().atMost(AWAIT).untilAsserted(() -> assertThat(runner.dataClients)
        .as("a data client in the lost worker's place, so Beam's createOutboundAggregator returns")
        .contains("1-1"));

    // The runner tears the environment down: the stand-in data stream ends with it, nothing stays open.
    runner.controls.get("1-1").onCompleted();
    await().atMost(AWAIT).untilAsserted(() -> assertThat(runner.dataStreamEnds).isNotEmpty());
  }

  /**
   * A worker that stops reading its control stream (stopped, deadlocked) must not leave the runner waiting, nor make
   * the recycler buffer the runner's instructions without bound: the proxy requests the next instruction only when
   * the worker can take it, and a worker that stays unable for the stall timeout is treated as lost.
   */
  @Test
  void aWorkerThatStopsReadingIsTreatedAsLostAfterTheStallTimeout() throws Exception {
    TestingRunner runner = startLease(Duration.ofSeconds(1));
    TestingWrapper w = new TestingWrapper("slot-0", "a", recycler.endpoint());
    closeables.add(0, w);
    w.deafWorker(1);
    w.attach();
    awaitIdle();
    BeamFnExternalWorkerPoolGrpc.newBlockingStub(channel).withDeadlineAfter(20, TimeUnit.SECONDS)
        .startWorker(runner.startRequest("1-1"));
    await().atMost(AWAIT).until(() -> runner.controls.containsKey("1-1"));

    // Instructions big enough to fill the worker's flow-control window.
    String filler = "x".repeat(256 * 1024);
    int sent = 8;
    for (int i = 0; i < sent; i++) {
      runner.controls.get("1-1").onNext(InstructionRequest.newBuilder().setInstructionId("big-" + i)
          .setRegister(RegisterRequest.newBuilder().addProcessBundleDescriptor(ProcessBundleDescriptor.newBuilder()
              .setId(filler))).build());
    }

    await().atMost(AWAIT).until(() -> runner.responses.getOrDefault("1-1", List.of()).size() == sent);
    assertThat(runner.responses.get("1-1")).allSatisfy(r -> assertThat(r.getError()).contains("stopped reading"));
    assertThat(w.instructions).as("the stalled worker read nothing").isEmpty();
    await().atMost(AWAIT).until(() -> w.received(KindCase.EXIT).size() == 1);
    // The record shows its end reason once the lease is ENDED: after the wrapper has reported the worker gone.
    await().atMost(AWAIT).until(() -> !RecyclerAdminGrpc.newBlockingStub(channel)
        .getSlotTable(GetSlotTableRequest.getDefaultInstance()).getLeases(0).getEndReason().isEmpty());
    assertThat(RecyclerAdminGrpc.newBlockingStub(channel).getSlotTable(GetSlotTableRequest.getDefaultInstance())
        .getLeases(0).getEndReason()).isEqualTo("WORKER_LOST");
  }

  @Test
  void aHealthyWorkerKeepsTheRunnersDataPathToItself() throws Exception {
    TestingRunner runner = startLease();
    TestingWrapper w = wrapper();
    runner.controls.get("1-1").onNext(runner.processBundle("bundle-1", "stage-1"));
    await().atMost(AWAIT).until(() -> runner.responses.getOrDefault("1-1", List.of()).size() == 1);
    assertThat(runner.responses.get("1-1").get(0).getError()).isEmpty();
    runner.controls.get("1-1").onCompleted();
    await().atMost(AWAIT).until(() -> w.received(KindCase.EXIT).size() == 1);
    assertThat(runner.dataClients).as("only the worker itself connects data").isEmpty();
    assertThat(runner.descriptorCallers).isEmpty();
  }

  private TestingRunner startLease() throws Exception {
    return startLease(Duration.ofSeconds(60));
  }

  private TestingRunner startLease(Duration stallTimeout) throws Exception {
    recycler = Recycler.start(RecyclerConfig.builder().slots(1, "slot-").port(0).cacheDirectory(cacheDir)
        .workerStallTimeout(stallTimeout)
        .memoryBlobMaxBytes(100_000).leaseWaitTimeout(Duration.ofSeconds(5)).readyTimeout(Duration.ofSeconds(10))
        .attachProbeTimeout(Duration.ofMillis(500)).shutdownTimeout(Duration.ofSeconds(5)).build(),
        new SimpleMeterRegistry(), TestingRunner::channel);
    channel = NettyChannelBuilder.forTarget(recycler.endpoint()).usePlaintext().build();
    TestingRunner runner = TestingRunner.builder().provisionInfo(ProvisionInfo.getDefaultInstance()).build();
    closeables.add(runner);
    return runner;
  }

  private TestingWrapper wrapper() throws Exception {
    TestingWrapper w = new TestingWrapper("slot-0", "a", recycler.endpoint());
    closeables.add(0, w);
    w.attach();
    awaitIdle();
    TestingRunner runner = (TestingRunner) closeables.get(closeables.size() - 1);
    BeamFnExternalWorkerPoolGrpc.newBlockingStub(channel).withDeadlineAfter(20, TimeUnit.SECONDS)
        .startWorker(runner.startRequest("1-1"));
    await().atMost(AWAIT).until(() -> runner.controls.containsKey("1-1"));
    return w;
  }

  private void awaitIdle() {
    await().atMost(AWAIT).until(() -> RecyclerAdminGrpc.newBlockingStub(channel)
        .getSlotTable(GetSlotTableRequest.getDefaultInstance()).getSlots(0).getState().equals("IDLE"));
  }

  private BeamFnControlGrpc.BeamFnControlBlockingStub descriptors(String workerId) {
    Metadata md = new Metadata();
    md.put(Metadata.Key.of("worker_id", Metadata.ASCII_STRING_MARSHALLER), workerId);
    return BeamFnControlGrpc.newBlockingStub(channel).withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md))
        .withDeadlineAfter(10, TimeUnit.SECONDS);
  }
}
