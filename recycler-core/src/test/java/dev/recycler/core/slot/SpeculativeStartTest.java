package dev.recycler.core.slot;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.metrics.MetricNames;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.core.testing.ManualScheduler;
import dev.recycler.core.testing.TestingWrapperLink;
import dev.recycler.proto.v1.ExitReason;
import dev.recycler.proto.v1.Hello;
import dev.recycler.proto.v1.PreparedLease;
import dev.recycler.proto.v1.RecyclerMessage;
import dev.recycler.proto.v1.RecyclerMessage.KindCase;
import dev.recycler.proto.v1.Standby;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.ProvisionInfo;
import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactFilePayload;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactInformation;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Speculative starts at the pool: a new job's worker started from the digest its staged binary's probe matched, while
 * the content is verified; adopted only if the verified inputs are the probed ones, and otherwise stopped unused, with
 * its held streams failed, before the lease boots on the verified content. The listener here hands out the probed
 * and the verified inputs when the test says, so every ordering is deterministic.
 */
class SpeculativeStartTest {
  private static final String CACHED = "cd".repeat(32);
  private static final String OTHER = "ef".repeat(32);

  private ManualScheduler time;
  private SimpleMeterRegistry registry;
  private SlotPool pool;
  private CompletableFuture<PreparedLease> probed;
  private CompletableFuture<PreparedLease> verified;

  @BeforeEach
  void setUp() {
    time = new ManualScheduler();
    registry = new SimpleMeterRegistry();
    pool = pool(true);
  }

  private SlotPool pool(boolean speculative) {
    probed = new CompletableFuture<>();
    verified = new CompletableFuture<>();
    RecyclerConfig config = RecyclerConfig.builder().slots(2, "slot-").port(0).speculativeStart(speculative)
        .leaseWaitTimeout(Duration.ofSeconds(10)).readyTimeout(Duration.ofSeconds(20)).build();
    LeaseListener listener = new LeaseListener() {
      @Override
      public CompletableFuture<PreparedLease> prepare(Lease lease) {
        return isOldJob(lease) ? CompletableFuture.completedFuture(inputs("old", CACHED)) : verified;
      }

      @Override
      public CompletableFuture<PreparedLease> provisional(Lease lease) {
        return isOldJob(lease) ? CompletableFuture.completedFuture(null) : probed;
      }

      @Override
      public void onEnded(Lease lease) {}
    };
    return new SlotPool(config, time, new RecyclerMetrics<>(registry, SlotState.class, EndReason.class), listener,
        "test");
  }

  /** Leases of job "old" (runner worker ids "old-n") are prepared at once, without a speculative start. */
  private static boolean isOldJob(Lease lease) {
    return lease.runnerWorkerId().startsWith("old-");
  }

  /** Job "new"'s inputs with its binary named by {@code sha256}. */
  private static PreparedLease inputs(String sha256) {
    return inputs("new", sha256);
  }

  private static PreparedLease inputs(String job, String sha256) {
    Struct options = Struct.newBuilder().putFields("job_name", Value.newBuilder().setStringValue(job).build())
        .build();
    ArtifactInformation binary = ArtifactInformation.newBuilder().setTypeUrn("beam:artifact:type:file:v1")
        .setTypePayload(ArtifactFilePayload.newBuilder().setPath("sha256/" + sha256).setSha256(sha256).build()
            .toByteString())
        .build();
    return PreparedLease.newBuilder().setProvisionInfo(ProvisionInfo.newBuilder().setPipelineOptions(options))
        .addArtifacts(binary).build();
  }

  private TestingWrapperLink attach(String slot, String... held) {
    TestingWrapperLink link = new TestingWrapperLink("wrapper-" + slot);
    Hello.Builder hello = Hello.newBuilder().setSlotId(slot).setIncarnationId("inc-" + slot);
    for (String h : held) {
      hello.addHeldDigests("sha256:" + h);
    }
    pool.attach(hello.build(), link);
    return link;
  }

  private static StartWorkerRequest request(String id) {
    ApiServiceDescriptor e = ApiServiceDescriptor.newBuilder().setUrl("localhost:1").build();
    return StartWorkerRequest.newBuilder().setWorkerId(id).setControlEndpoint(e).setLoggingEndpoint(e)
        .setArtifactEndpoint(e).setProvisionEndpoint(e).build();
  }

  private double counted(RecyclerMetrics.Speculative outcome) {
    return registry.get(MetricNames.SPECULATIVE_STARTS).tag(MetricNames.OUTCOME, outcome.name()).counter().count();
  }

  private static Standby onlyStandby(TestingWrapperLink link) {
    List<RecyclerMessage> sent = link.sent(KindCase.STANDBY);
    assertThat(sent).hasSize(1);
    return sent.get(0).getStandby();
  }

  @Test
  void aConfirmedProbeHandsTheLeaseTheWorkerAlreadyStartedAndItsHeldStreams() throws Exception {
    TestingWrapperLink holder = attach("slot-0", CACHED);
    TestingWrapperLink other = attach("slot-1");
    Lease lease = pool.startWorker(request("1-1"), "runner");
    probed.complete(inputs(CACHED));

    Standby started = onlyStandby(holder);
    assertThat(started.getPrepared()).isEqualTo(inputs(CACHED));
    assertThat(other.sent(KindCase.STANDBY)).as("only a wrapper holding the probed content can start it").isEmpty();
    assertThat(lease.state()).isEqualTo(Lease.State.WAITING);
    // The worker connects while the content is still being compared: its stream is held, the lease still waits.
    CompletableFuture<Lease> held = pool.whenLeased("slot-0.g" + started.getGeneration());
    assertThat(held).isNotDone();

    verified.complete(inputs(CACHED));

    assertThat(held).isCompletedWithValue(lease);
    dev.recycler.proto.v1.Lease sent = holder.sent(KindCase.LEASE).get(0).getLease();
    assertThat(sent.getAdoptStandby()).isTrue();
    assertThat(sent.getGeneration()).isEqualTo(started.getGeneration());
    assertThat(sent.getCredential()).isEqualTo(started.getCredential());
    assertThat(counted(RecyclerMetrics.Speculative.STARTED)).isEqualTo(1);
    assertThat(counted(RecyclerMetrics.Speculative.ADOPTED)).isEqualTo(1);
    assertThat(registry.get(MetricNames.STANDBYS).tag(MetricNames.OUTCOME, "ADOPTED").counter().count())
        .as("counted as a speculative start, not as a standby").isZero();
  }

  /** A lease on a pool whose one wrapper holds the cached content, its worker started from the probe and connected. */
  private record Speculating(TestingWrapperLink holder, Lease lease, Standby started, CompletableFuture<Lease> held) {}

  private Speculating speculating() throws Exception {
    TestingWrapperLink holder = attach("slot-0", CACHED);
    Lease lease = pool.startWorker(request("1-1"), "runner");
    probed.complete(inputs(CACHED));
    Standby started = onlyStandby(holder);
    return new Speculating(holder, lease, started, pool.whenLeased("slot-0.g" + started.getGeneration()));
  }

  @Test
  void aRefutedProbeStopsTheWorkerUnusedAndTheLeaseBootsTheVerifiedContent() throws Exception {
    Speculating s = speculating();
    TestingWrapperLink holder = s.holder();
    Lease lease = s.lease();
    Standby started = s.started();
    CompletableFuture<Lease> held = s.held();

    verified.complete(inputs(OTHER)); // same size and ends, other bytes: the comparison says so

    assertThat(held).as("the wrong worker's held streams fail; nothing was ever opened to the runner")
        .isCompletedExceptionally();
    assertThatThrownBy(held::join).hasRootCauseInstanceOf(RecyclerException.class)
        .rootCause().hasMessageContaining("speculative start refuted");
    List<RecyclerMessage> after = holder.sent();
    RecyclerMessage exit = after.stream().filter(m -> m.getKindCase() == KindCase.EXIT).findFirst().orElseThrow();
    assertThat(exit.getExit().getGeneration()).isEqualTo(started.getGeneration());
    assertThat(exit.getExit().getReason()).isEqualTo(ExitReason.EXIT_REASON_STANDBY_UNUSED);
    dev.recycler.proto.v1.Lease sent = holder.sent(KindCase.LEASE).get(0).getLease();
    assertThat(after.indexOf(exit)).as("stopped before the lease's own worker is booted")
        .isLessThan(after.indexOf(holder.sent(KindCase.LEASE).get(0)));
    assertThat(sent.getAdoptStandby()).isFalse();
    assertThat(sent.getGeneration()).isGreaterThan(started.getGeneration());
    assertThat(sent.getCredential()).isNotEqualTo(started.getCredential());
    assertThat(sent.getPrepared()).isEqualTo(inputs(OTHER));
    assertThat(lease.workerId()).isEqualTo("slot-0.g" + sent.getGeneration());
    assertThatThrownBy(() -> pool.verifyWorker(started.getWorkerId())).isInstanceOf(RecyclerException.class)
        .hasMessageContaining("no lease has worker id");
    assertThat(counted(RecyclerMetrics.Speculative.MISMATCHED)).isEqualTo(1);
    assertThat(counted(RecyclerMetrics.Speculative.ADOPTED)).isZero();
  }

  @Test
  void anotherJobsStandbyGivesWayExitFirstThenTheSpeculativeStart() throws Exception {
    pool = pool(true);
    TestingWrapperLink holder = attach("slot-0", CACHED);
    // Job "old" ran on the slot and ended normally: the slot holds its standby (generation 2).
    Lease old = pool.startWorker(request("old-1"), "runner");
    pool.controlConnected(old.workerId(), reason -> {});
    pool.controlEnded(old, EndReason.RUNNER_CLOSED);
    pool.leaseEnded(holder, dev.recycler.proto.v1.LeaseEnded.newBuilder().setGeneration(old.generation())
        .setOutcome(dev.recycler.proto.v1.Outcome.OUTCOME_EXITED_ON_INSTRUCTION).addHeldDigests("sha256:" + CACHED)
        .build());
    Standby oldStandby = onlyStandby(holder);
    holder.drain();

    Lease lease = pool.startWorker(request("1-1"), "runner");
    probed.complete(inputs(CACHED));

    List<RecyclerMessage> sent = holder.sent();
    assertThat(sent).extracting(RecyclerMessage::getKindCase).containsExactly(KindCase.EXIT, KindCase.STANDBY);
    assertThat(sent.get(0).getExit().getGeneration()).isEqualTo(oldStandby.getGeneration());
    Standby started = sent.get(1).getStandby();
    assertThat(started.getGeneration()).isGreaterThan(oldStandby.getGeneration());
    assertThat(started.getPrepared()).isEqualTo(inputs(CACHED));
    verified.complete(inputs(CACHED));
    assertThat(holder.sent(KindCase.LEASE)).singleElement().satisfies(m -> {
      assertThat(m.getLease().getAdoptStandby()).isTrue();
      assertThat(m.getLease().getGeneration()).isEqualTo(started.getGeneration());
    });
    assertThat(lease.workerId()).isEqualTo("slot-0.g" + started.getGeneration());
  }

  @Test
  void noIdleSlotHoldingTheProbedContentMeansNoSpeculativeStart() throws Exception {
    TestingWrapperLink link = attach("slot-0", OTHER);
    pool.startWorker(request("1-1"), "runner");
    probed.complete(inputs(CACHED));
    verified.complete(inputs(CACHED));

    assertThat(link.sent(KindCase.STANDBY)).isEmpty();
    assertThat(link.sent(KindCase.LEASE)).hasSize(1);
    assertThat(link.sent(KindCase.LEASE).get(0).getLease().getAdoptStandby()).isFalse();
    assertThat(counted(RecyclerMetrics.Speculative.NO_SLOT)).isEqualTo(1);
  }

  @Test
  void aLeaseStoppedWhileItsContentIsComparedStopsItsSpeculativeWorker() throws Exception {
    Speculating s = speculating();

    pool.stopWorker("1-1", "runner");

    assertThat(s.lease().state()).isEqualTo(Lease.State.ENDED);
    assertThat(s.held()).isCompletedExceptionally();
    assertThat(s.holder().sent(KindCase.EXIT)).singleElement().satisfies(m -> {
      assertThat(m.getExit().getGeneration()).isEqualTo(s.started().getGeneration());
      assertThat(m.getExit().getReason()).isEqualTo(ExitReason.EXIT_REASON_STANDBY_UNUSED);
    });
    verified.complete(inputs(CACHED)); // the comparison ends after all: nothing more happens
    assertThat(s.holder().sent(KindCase.LEASE)).isEmpty();
    assertThat(counted(RecyclerMetrics.Speculative.DROPPED)).isEqualTo(1);
  }

  @Test
  void offStartsNothingAheadOfTheVerifiedInputs() throws Exception {
    pool = pool(false);
    TestingWrapperLink holder = attach("slot-0", CACHED);
    pool.startWorker(request("1-1"), "runner");
    probed.complete(inputs(CACHED));
    assertThat(holder.sent()).noneMatch(m -> m.getKindCase() == KindCase.STANDBY || m.getKindCase() == KindCase.LEASE);
    verified.complete(inputs(CACHED));
    assertThat(holder.sent(KindCase.STANDBY)).isEmpty();
    assertThat(holder.sent(KindCase.LEASE)).hasSize(1);
  }
}
