package dev.recycler.core.slot;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.api.RecyclerException.Kind;
import dev.recycler.core.metrics.MetricNames;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.core.testing.ManualScheduler;
import dev.recycler.core.testing.TestingWrapperLink;
import dev.recycler.proto.v1.ExitReason;
import dev.recycler.proto.v1.Hello;
import dev.recycler.proto.v1.LeaseEnded;
import dev.recycler.proto.v1.Outcome;
import dev.recycler.proto.v1.PreparedLease;
import dev.recycler.proto.v1.RecyclerMessage;
import dev.recycler.proto.v1.RecyclerMessage.KindCase;
import dev.recycler.proto.v1.SlotStatus;
import dev.recycler.proto.v1.Standby;
import dev.recycler.proto.v1.StandbyEnded;
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
 * Standby workers at the pool: when one is offered, which lease adopts it (and gets its generation, id and
 * credential, and its held streams), and every way it is dropped without ever serving another job.
 */
class StandbyTest {
  private static final String BINARY = "sha256:" + "cd".repeat(32);
  private static final Duration TTL = Duration.ofMinutes(5);

  private ManualScheduler time;
  private SimpleMeterRegistry registry;
  private SlotPool pool;

  @BeforeEach
  void setUp() {
    time = new ManualScheduler();
    registry = new SimpleMeterRegistry();
    pool = pool(1, TTL);
  }

  /** Every lease of job X (runner worker id "X-n") has the same inputs; jobs differ in their options. */
  private SlotPool pool(int slots, Duration ttl) {
    RecyclerConfig config = RecyclerConfig.builder().slots(slots, "slot-").port(0).standbyTtl(ttl)
        .leaseWaitTimeout(Duration.ofSeconds(10)).readyTimeout(Duration.ofSeconds(20)).build();
    LeaseListener listener = new LeaseListener() {
      @Override
      public CompletableFuture<PreparedLease> prepare(Lease lease) {
        return CompletableFuture.completedFuture(inputs(lease.runnerWorkerId().split("-")[0]));
      }

      @Override
      public void onEnded(Lease lease) {}
    };
    return new SlotPool(config, time, new RecyclerMetrics<>(registry, SlotState.class, EndReason.class), listener,
        "test");
  }

  private static PreparedLease inputs(String job) {
    Struct options = Struct.newBuilder().putFields("job_name", Value.newBuilder().setStringValue(job).build()).build();
    ArtifactInformation binary = ArtifactInformation.newBuilder().setTypeUrn("beam:artifact:type:file:v1")
        .setTypePayload(ArtifactFilePayload.newBuilder().setPath("/staged/" + job + "/worker")
            .setSha256(BINARY.substring("sha256:".length())).build().toByteString())
        .build();
    return PreparedLease.newBuilder().setProvisionInfo(ProvisionInfo.newBuilder().setPipelineOptions(options)
        .setControlEndpoint(ApiServiceDescriptor.newBuilder().setUrl("recycler:1"))).addArtifacts(binary).build();
  }

  private TestingWrapperLink attach(String slot) {
    TestingWrapperLink link = new TestingWrapperLink("wrapper-" + slot);
    pool.attach(Hello.newBuilder().setSlotId(slot).setIncarnationId("inc-" + slot).addHeldDigests(BINARY).build(),
        link);
    return link;
  }

  private static StartWorkerRequest request(String id) {
    ApiServiceDescriptor e = ApiServiceDescriptor.newBuilder().setUrl("localhost:1").build();
    return StartWorkerRequest.newBuilder().setWorkerId(id).setControlEndpoint(e).setLoggingEndpoint(e)
        .setArtifactEndpoint(e).setProvisionEndpoint(e).build();
  }

  private static dev.recycler.proto.v1.Lease lastLease(TestingWrapperLink link) {
    List<RecyclerMessage> sent = link.sent(KindCase.LEASE);
    assertThat(sent).isNotEmpty();
    return sent.get(sent.size() - 1).getLease();
  }

  private static Standby lastStandby(TestingWrapperLink link) {
    List<RecyclerMessage> sent = link.sent(KindCase.STANDBY);
    assertThat(sent).isNotEmpty();
    return sent.get(sent.size() - 1).getStandby();
  }

  /** Starts a lease, connects its worker, lets the runner close it and the wrapper report it stopped. */
  private Lease runToNormalEnd(TestingWrapperLink link, String runnerWorkerId) throws Exception {
    Lease lease = pool.startWorker(request(runnerWorkerId), "runner");
    dev.recycler.proto.v1.Lease sent = lastLease(link);
    pool.controlConnected(lease.workerId(), reason -> {});
    assertThat(lease.ready()).isCompleted();
    pool.controlEnded(lease, EndReason.RUNNER_CLOSED);
    pool.leaseEnded(link, LeaseEnded.newBuilder().setGeneration(sent.getGeneration())
        .setOutcome(Outcome.OUTCOME_EXITED_ON_INSTRUCTION).addHeldDigests(BINARY).build());
    return lease;
  }

  private SlotStatus slot(String id) {
    return pool.slotTable(0).getSlotsList().stream().filter(s -> s.getSlotId().equals(id)).findFirst().orElseThrow();
  }

  private double counted(RecyclerMetrics.Standby outcome) {
    return registry.get(MetricNames.STANDBYS).tag(MetricNames.OUTCOME, outcome.name()).counter().count();
  }

  @Test
  void aNormalEndOffersTheNextGenerationForTheSameInputs() throws Exception {
    TestingWrapperLink link = attach("slot-0");
    runToNormalEnd(link, "A-1");

    Standby standby = lastStandby(link);
    assertThat(standby.getGeneration()).isEqualTo(2);
    assertThat(standby.getCredential()).matches("[0-9a-f]{32}");
    assertThat(standby.getWorkerId()).isEqualTo("slot-0.g2." + standby.getCredential());
    assertThat(standby.getPrepared()).isEqualTo(inputs("A"));
    assertThat(slot("slot-0").getState()).isEqualTo("IDLE");
    assertThat(slot("slot-0").getStandbyGeneration()).isEqualTo(2);
    assertThat(counted(RecyclerMetrics.Standby.OFFERED)).isEqualTo(1);
  }

  @Test
  void theSameJobsNextLeaseAdoptsItAndItsHeldStreams() throws Exception {
    TestingWrapperLink link = attach("slot-0");
    runToNormalEnd(link, "A-1");
    Standby standby = lastStandby(link);
    // The standby worker's control stream arrives before any lease: it is held, not refused.
    assertThat(pool.verifyWorker(standby.getWorkerId())).isEqualTo("slot-0.g2");
    CompletableFuture<Lease> held = pool.whenLeased("slot-0.g2");
    assertThat(held).isNotDone();

    Lease next = pool.startWorker(request("A-2"), "runner");

    dev.recycler.proto.v1.Lease sent = lastLease(link);
    assertThat(sent.getAdoptStandby()).isTrue();
    assertThat(sent.getGeneration()).isEqualTo(2);
    assertThat(sent.getWorkerId()).isEqualTo(standby.getWorkerId());
    assertThat(sent.getCredential()).isEqualTo(standby.getCredential());
    assertThat(held).isCompletedWithValue(next);
    assertThat(slot("slot-0").getStandbyGeneration()).isZero();
    assertThat(counted(RecyclerMetrics.Standby.ADOPTED)).isEqualTo(1);
    // The adopted worker connects as the lease's: the lease is ready.
    pool.controlConnected("slot-0.g2", reason -> {});
    assertThat(next.ready()).isCompletedWithValue(next);
  }

  @Test
  void anotherJobsLeaseNeverGetsItAndItsHeldStreamsFail() throws Exception {
    TestingWrapperLink link = attach("slot-0");
    runToNormalEnd(link, "A-1");
    CompletableFuture<Lease> held = pool.whenLeased("slot-0.g2");

    pool.startWorker(request("B-1"), "runner");

    dev.recycler.proto.v1.Lease sent = lastLease(link);
    assertThat(sent.getAdoptStandby()).isFalse();
    assertThat(sent.getGeneration()).isEqualTo(3); // above the standby's: the wrapper stops it first
    assertThat(sent.getWorkerId()).doesNotContain(lastStandby(link).getCredential());
    assertThat(held).isCompletedExceptionally();
    assertThatThrownBy(() -> pool.whenLeased("slot-0.g2")).isInstanceOf(RecyclerException.class)
        .extracting(e -> ((RecyclerException) e).kind()).isEqualTo(Kind.UNKNOWN_ID);
    assertThat(link.sent(KindCase.EXIT).stream().map(m -> m.getExit().getGeneration())).doesNotContain(2L);
    assertThat(counted(RecyclerMetrics.Standby.DROPPED)).isEqualTo(1);
  }

  @Test
  void anotherJobGoesToAFreeSlotSoTheStandbyWaitsForItsOwnJob() throws Exception {
    pool = pool(2, TTL);
    TestingWrapperLink first = attach("slot-0");
    TestingWrapperLink second = attach("slot-1");
    runToNormalEnd(first, "A-1"); // slot-0 is the first idle slot
    assertThat(slot("slot-0").getStandbyJobName()).isEmpty(); // the job name comes from the provisioner
    assertThat(slot("slot-0").getStandbyGeneration()).isEqualTo(2);

    pool.startWorker(request("B-1"), "runner");
    assertThat(lastLease(second).getAdoptStandby()).isFalse();
    assertThat(slot("slot-0").getStandbyGeneration()).isEqualTo(2);

    pool.startWorker(request("A-2"), "runner");
    assertThat(lastLease(first).getAdoptStandby()).isTrue();
  }

  @Test
  void theStandbyOfAJobWithMoreLeasesOutlivesAOneOffJobsStandby() throws Exception {
    pool = pool(2, TTL);
    TestingWrapperLink first = attach("slot-0");
    TestingWrapperLink second = attach("slot-1");
    runToNormalEnd(first, "A-1");
    runToNormalEnd(first, "A-2"); // adopted: job A has had two leases here
    assertThat(lastLease(first).getAdoptStandby()).isTrue();
    runToNormalEnd(second, "B-1"); // slot-1 was free; B's standby is newer, but B has had one lease

    pool.startWorker(request("C-1"), "runner"); // no free slot: one standby must go

    assertThat(lastLease(second).getGeneration()).isGreaterThan(lastStandby(second).getGeneration());
    assertThat(slot("slot-0").getStandbyGeneration()).isEqualTo(lastStandby(first).getGeneration());
  }

  @Test
  void anUnadoptedStandbyIsStoppedAfterItsTimeToLive() throws Exception {
    TestingWrapperLink link = attach("slot-0");
    runToNormalEnd(link, "A-1");
    CompletableFuture<Lease> held = pool.whenLeased("slot-0.g2");

    time.advance(TTL);

    RecyclerMessage exit = link.last();
    assertThat(exit.getExit().getGeneration()).isEqualTo(2);
    assertThat(exit.getExit().getReason()).isEqualTo(ExitReason.EXIT_REASON_STANDBY_UNUSED);
    assertThat(held).isCompletedExceptionally();
    // The next lease of the same job boots afresh, with a new generation and credential.
    pool.startWorker(request("A-2"), "runner");
    assertThat(lastLease(link).getAdoptStandby()).isFalse();
    assertThat(lastLease(link).getGeneration()).isEqualTo(3);
  }

  @Test
  void theWrapperEndingItOrDetachingDropsIt() throws Exception {
    TestingWrapperLink link = attach("slot-0");
    runToNormalEnd(link, "A-1");
    CompletableFuture<Lease> held = pool.whenLeased("slot-0.g2");

    pool.standbyEnded(link, StandbyEnded.newBuilder().setGeneration(1).setMessage("stale").build());
    assertThat(held).isNotDone();
    pool.standbyEnded(link, StandbyEnded.newBuilder().setGeneration(2).setMessage("declined").build());
    assertThat(held).isCompletedExceptionally();
    assertThat(counted(RecyclerMetrics.Standby.ENDED)).isEqualTo(1);

    runToNormalEnd(link, "A-2");
    assertThat(lastStandby(link).getGeneration()).isEqualTo(4);
    CompletableFuture<Lease> heldAgain = pool.whenLeased("slot-0.g4");
    pool.detached(link);
    assertThat(heldAgain).isCompletedExceptionally();
  }

  @Test
  void onlyANormalEndWithTheBinaryHeldGetsAStandby() throws Exception {
    TestingWrapperLink link = attach("slot-0");
    Lease lease = pool.startWorker(request("A-1"), "runner");
    pool.controlConnected(lease.workerId(), reason -> {});
    // The worker exited on its own: no standby.
    pool.leaseEnded(link, LeaseEnded.newBuilder().setGeneration(1).setOutcome(Outcome.OUTCOME_WORKER_EXITED)
        .setExitCode(1).addHeldDigests(BINARY).build());
    assertThat(link.sent(KindCase.STANDBY)).isEmpty();
    // A normal end, but the wrapper no longer holds the binary: no standby (it would have to fetch).
    Lease second = pool.startWorker(request("A-2"), "runner");
    pool.controlConnected(second.workerId(), reason -> {});
    pool.controlEnded(second, EndReason.RUNNER_CLOSED);
    pool.leaseEnded(link, LeaseEnded.newBuilder().setGeneration(2).setOutcome(Outcome.OUTCOME_EXITED_ON_INSTRUCTION)
        .build());
    assertThat(link.sent(KindCase.STANDBY)).isEmpty();
    // Standbys off.
    pool = pool(1, Duration.ZERO);
    TestingWrapperLink other = attach("slot-0");
    runToNormalEnd(other, "A-3");
    assertThat(other.sent(KindCase.STANDBY)).isEmpty();
  }

  @Test
  void aStandbyIdNeedsItsCredential() throws Exception {
    TestingWrapperLink link = attach("slot-0");
    runToNormalEnd(link, "A-1");

    assertThatThrownBy(() -> pool.verifyWorker("slot-0.g2." + "0".repeat(32))).isInstanceOf(RecyclerException.class)
        .extracting(e -> ((RecyclerException) e).kind()).isEqualTo(Kind.FORBIDDEN);
    assertThatThrownBy(() -> pool.verifyWorker("slot-0.g9." + "0".repeat(32))).isInstanceOf(RecyclerException.class)
        .extracting(e -> ((RecyclerException) e).kind()).isEqualTo(Kind.UNKNOWN_ID);
  }

  @Test
  void shutdownStopsStandbys() throws Exception {
    TestingWrapperLink link = attach("slot-0");
    runToNormalEnd(link, "A-1");
    CompletableFuture<Lease> held = pool.whenLeased("slot-0.g2");

    pool.shutdown();

    assertThat(held).isCompletedExceptionally();
    assertThat(link.sent(KindCase.EXIT)).extracting(m -> m.getExit().getReason())
        .contains(ExitReason.EXIT_REASON_STANDBY_UNUSED);
  }

  @Test
  void aFreeSlotWhoseWrapperHoldsTheBinaryComesFirstThenTheOneFreedLast() throws Exception {
    pool = pool(3, TTL);
    TestingWrapperLink lacks = new TestingWrapperLink("wrapper-slot-0");
    pool.attach(Hello.newBuilder().setSlotId("slot-0").setIncarnationId("inc-slot-0").build(), lacks);
    time.advance(Duration.ofSeconds(1));
    TestingWrapperLink holds = attach("slot-1");
    time.advance(Duration.ofSeconds(1));
    TestingWrapperLink holdsToo = attach("slot-2");

    pool.startWorker(request("A-1"), "runner");

    assertThat(lacks.sent(KindCase.LEASE)).isEmpty();
    assertThat(holds.sent(KindCase.LEASE)).isEmpty();
    assertThat(lastLease(holdsToo).getGeneration()).isEqualTo(1); // holds the binary and was freed last
  }

  /** Runs one lease each of {@code jobs} new jobs ("J0-1", ...) on a one-slot pool; each drops the one before's standby. */
  private void oneOffJobs(TestingWrapperLink link, String prefix, int jobs) throws Exception {
    for (int i = 0; i < jobs; i++) {
      runToNormalEnd(link, prefix + i + "-1");
    }
  }

  @Test
  void oneOffJobsStopGettingStandbysButAJobThatCameBackKeepsThem() throws Exception {
    TestingWrapperLink link = attach("slot-0");
    // Until eight first leases are known, each gets a standby, and each is dropped for the next job's lease.
    oneOffJobs(link, "J", Standbys.RETURN_MIN_OBSERVED);
    assertThat(counted(RecyclerMetrics.Standby.OFFERED)).isEqualTo(Standbys.RETURN_MIN_OBSERVED);
    assertThat(counted(RecyclerMetrics.Standby.DROPPED)).isEqualTo(Standbys.RETURN_MIN_OBSERVED - 1);

    // Eight of eight were not followed by another lease of their job: a first lease gets none now.
    runToNormalEnd(link, "A-1");
    assertThat(counted(RecyclerMetrics.Standby.SKIPPED)).isEqualTo(1);
    assertThat(slot("slot-0").getStandbyGeneration()).isZero();

    // A's second lease boots (no standby), and from then on A's leases leave one.
    runToNormalEnd(link, "A-2");
    assertThat(lastLease(link).getAdoptStandby()).isFalse();
    assertThat(slot("slot-0").getStandbyGeneration()).isEqualTo(lastStandby(link).getGeneration());
    Lease third = pool.startWorker(request("A-3"), "runner");
    assertThat(lastLease(link).getAdoptStandby()).isTrue();
    assertThat(third.workerId()).isEqualTo("slot-0.g" + lastStandby(link).getGeneration());
  }

  /** Eight one-off jobs, then A's first lease (no standby), then A's second, B's first and B's second. */
  private void twoJobsComeBack(TestingWrapperLink link, Duration beforeA2) throws Exception {
    oneOffJobs(link, "J", Standbys.RETURN_MIN_OBSERVED);
    runToNormalEnd(link, "A-1");
    time.advance(beforeA2);
    runToNormalEnd(link, "A-2");
    runToNormalEnd(link, "B-1");
    runToNormalEnd(link, "B-2");
  }

  @Test
  void firstLeasesGetStandbysAgainOnceJobsComeBack() throws Exception {
    TestingWrapperLink link = attach("slot-0");
    twoJobsComeBack(link, Duration.ZERO);
    // A's first lease (9 known, none followed) and B's (10 known, A's followed) got none.
    assertThat(counted(RecyclerMetrics.Standby.SKIPPED)).isEqualTo(2);
    double offered = counted(RecyclerMetrics.Standby.OFFERED);

    runToNormalEnd(link, "C-1"); // 2 of 10 followed: at least one in eight

    assertThat(counted(RecyclerMetrics.Standby.OFFERED)).isEqualTo(offered + 1);
    assertThat(lastStandby(link).getPrepared()).isEqualTo(inputs("C"));
  }

  @Test
  void aFirstLeaseWithoutAStandbyCountsAsNotFollowedOnceTheTimeToLivePasses() throws Exception {
    TestingWrapperLink link = attach("slot-0");
    twoJobsComeBack(link, TTL); // A's second lease came too late to count

    runToNormalEnd(link, "C-1"); // 1 of 10 followed: below one in eight

    assertThat(counted(RecyclerMetrics.Standby.SKIPPED)).isEqualTo(3);
    assertThat(slot("slot-0").getStandbyGeneration()).isZero();
  }
}
