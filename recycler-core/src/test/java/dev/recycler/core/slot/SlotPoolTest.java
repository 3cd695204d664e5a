package dev.recycler.core.slot;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.api.RecyclerException.Kind;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.core.testing.ManualScheduler;
import dev.recycler.core.testing.TestingWrapperLink;
import dev.recycler.proto.v1.BootStage;
import dev.recycler.proto.v1.ExitReason;
import dev.recycler.proto.v1.Hello;
import dev.recycler.proto.v1.LeaseEnded;
import dev.recycler.proto.v1.Outcome;
import dev.recycler.proto.v1.PreparedLease;
import dev.recycler.proto.v1.RecyclerMessage.KindCase;
import dev.recycler.proto.v1.RecyclerMessage;
import dev.recycler.proto.v1.SlotStatus;
import dev.recycler.proto.v1.WorkerStarted;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.ProvisionInfo;
import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 30, unit = TimeUnit.SECONDS)
class SlotPoolTest {
  private static final Duration WAIT = Duration.ofSeconds(10);
  private static final Duration READY = Duration.ofSeconds(20);

  private ManualScheduler time;
  private SimpleMeterRegistry registry;
  private List<String> events;
  private SlotPool pool;
  /** Per minted worker id: the boot inputs the listener hands the pool; completed at once unless autoPrepare is off. */
  private final Map<String, CompletableFuture<PreparedLease>> preparing = new HashMap<>();
  private boolean autoPrepare = true;

  @BeforeEach
  void setUp() {
    time = new ManualScheduler();
    registry = new SimpleMeterRegistry();
    events = new ArrayList<>();
    pool = newPool(2);
  }

  private SlotPool newPool(int slots) {
    return newPool(slots, 256);
  }

  private SlotPool newPool(int slots, int maxWaitingStarts) {
    RecyclerConfig config = RecyclerConfig.builder().slots(slots, "slot-").port(0).leaseWaitTimeout(WAIT)
        .readyTimeout(READY).drainTimeout(Duration.ofSeconds(30)).attachProbeTimeout(Duration.ofSeconds(2))
        .failureBackoff(Duration.ofSeconds(5), Duration.ofSeconds(40)).maxWaitingStarts(maxWaitingStarts).build();
    LeaseListener listener = new LeaseListener() {
      @Override
      public CompletableFuture<PreparedLease> prepare(Lease lease) {
        events.add("prepared " + lease.runnerWorkerId());
        return preparing.computeIfAbsent(lease.runnerWorkerId(), id -> autoPrepare
            ? CompletableFuture.completedFuture(PreparedLease.getDefaultInstance()) : new CompletableFuture<>());
      }

      @Override
      public void onEnded(Lease lease) {
        events.add("ended " + lease.runnerWorkerId() + " " + lease.workerId());
      }
    };
    return new SlotPool(config, time, new RecyclerMetrics<>(registry, SlotState.class, EndReason.class), listener,
        "test");
  }

  private static StartWorkerRequest request(String workerId) {
    return StartWorkerRequest.newBuilder().setWorkerId(workerId)
        .setControlEndpoint(ApiServiceDescriptor.newBuilder().setUrl("localhost:1"))
        .setLoggingEndpoint(ApiServiceDescriptor.newBuilder().setUrl("localhost:2"))
        .setArtifactEndpoint(ApiServiceDescriptor.newBuilder().setUrl("localhost:3"))
        .setProvisionEndpoint(ApiServiceDescriptor.newBuilder().setUrl("localhost:4"))
        .build();
  }

  private TestingWrapperLink attach(String slot, String incarnation) {
    TestingWrapperLink link = new TestingWrapperLink("wrapper-" + incarnation);
    pool.attach(Hello.newBuilder().setSlotId(slot).setIncarnationId(incarnation).setWrapperPid(100).build(), link);
    return link;
  }

  private static dev.recycler.proto.v1.Lease leaseMessage(TestingWrapperLink link) {
    List<RecyclerMessage> leases = link.sent(KindCase.LEASE);
    assertThat(leases).isNotEmpty();
    return leases.get(leases.size() - 1).getLease();
  }

  private static final class RecordingControl implements ControlLink {
    final List<EndReason> closes = new ArrayList<>();

    @Override
    public void close(EndReason reason) {
      closes.add(reason);
    }
  }

  private static LeaseEnded ended(long generation, Outcome outcome) {
    return LeaseEnded.newBuilder().setGeneration(generation).setOutcome(outcome).build();
  }

  private SlotState state(String slot) {
    return SlotState.valueOf(pool.slotTable(0).getSlotsList().stream().filter(s -> s.getSlotId().equals(slot))
        .findFirst().map(SlotStatus::getState).orElseThrow());
  }

  private static RecyclerException failure(CompletableFuture<?> f) {
    assertThat(f).isCompletedExceptionally();
    Throwable t = f.handle((v, e) -> e).join();
    assertThat(t).isInstanceOf(RecyclerException.class);
    return (RecyclerException) t;
  }

  @Test
  void attachAnswersAttachedAndMakesTheSlotIdle() {
    TestingWrapperLink link = attach("slot-0", "a");

    assertThat(link.sent(KindCase.ATTACHED)).hasSize(1);
    assertThat(state("slot-0")).isEqualTo(SlotState.IDLE);
    assertThat(state("slot-1")).isEqualTo(SlotState.DETACHED);
  }

  @Test
  void attachRefusesUnknownSlotAndEmptyHello() {
    TestingWrapperLink unknown = attach("slot-9", "a");
    TestingWrapperLink empty = new TestingWrapperLink("x");
    pool.attach(Hello.newBuilder().setIncarnationId("b").build(), empty);

    assertThat(unknown.closedWith().kind()).isEqualTo(Kind.UNKNOWN_ID);
    assertThat(unknown.closedWith()).hasMessageContaining("slot-0, slot-1");
    assertThat(empty.closedWith().kind()).isEqualTo(Kind.BAD_REQUEST);
  }

  @Test
  void onlyTheLeasesCredentialPassesAndNoViewShowsIt() throws Exception {
    TestingWrapperLink link = attach("slot-0", "a");
    Lease lease = pool.startWorker(request("1-1"), "runner:1");
    dev.recycler.proto.v1.Lease msg = leaseMessage(link);
    String credential = msg.getCredential();
    String wrong = credential.equals("0".repeat(32)) ? "1".repeat(32) : "0".repeat(32);

    assertThat(pool.verifyWorker(msg.getWorkerId())).isEqualTo("slot-0.g1");
    assertThatThrownBy(() -> pool.verifyWorker("slot-0.g1"))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.UNAUTHENTICATED))
        .hasMessageContaining("carries no lease credential");
    assertThatThrownBy(() -> pool.verifyWorker(""))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.UNAUTHENTICATED));
    assertThatThrownBy(() -> pool.verifyWorker("slot-0.g1." + wrong))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.FORBIDDEN))
        .hasMessageNotContaining(wrong);
    assertThatThrownBy(() -> pool.verifyWorker("slot-1.g1." + credential))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.UNKNOWN_ID))
        .hasMessageNotContaining(credential);
    // A credential in a form the parser does not know (upper case) is not recognised, and not echoed either.
    assertThatThrownBy(() -> pool.verifyWorker("slot-0.g1." + credential.toUpperCase()))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.UNAUTHENTICATED))
        .hasMessageNotContaining(credential.toUpperCase());

    pool.verifyWrapper("slot-0", "1", credential);
    assertThatThrownBy(() -> pool.verifyWrapper("slot-0", "1", ""))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.UNAUTHENTICATED))
        .hasMessageContaining("recycler-lease-credential");
    assertThatThrownBy(() -> pool.verifyWrapper("slot-0", "1", wrong))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.FORBIDDEN));
    // Fencing still applies with the right credential: a stale generation is a wrong state, not a wrong secret.
    assertThatThrownBy(() -> pool.verifyWrapper("slot-0", "2", credential))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.WRONG_STATE));

    // Views and logs use the public id only.
    pool.controlConnected("slot-0.g1", new RecordingControl());
    assertThat(pool.slotTable(0).toString()).contains("slot-0.g1").doesNotContain(credential);
    assertThat(lease.toString()).doesNotContain(credential);
    assertThat(lease.workerId()).isEqualTo("slot-0.g1");
  }

  @Test
  void startWorkerBeyondMaxWaitingStartsFailsAtOnceNamingTheSetting() throws Exception {
    pool = newPool(1, 2);
    attach("slot-0", "a");
    pool.startWorker(request("1-1"), "runner:1"); // takes the slot
    Lease second = pool.startWorker(request("1-2"), "runner:2");
    Lease third = pool.startWorker(request("1-3"), "runner:3");

    assertThatThrownBy(() -> pool.startWorker(request("1-4"), "runner:4"))
        .isInstanceOfSatisfying(RecyclerException.class, e -> {
          assertThat(e.kind()).isEqualTo(Kind.BUSY);
          assertThat(e.toStatusException().getStatus().getCode()).isEqualTo(io.grpc.Status.Code.RESOURCE_EXHAUSTED);
        })
        .hasMessageContaining("max-waiting-starts=2");
    assertThat(second.state()).isEqualTo(Lease.State.WAITING);
    assertThat(third.state()).isEqualTo(Lease.State.WAITING);
    assertThat(registry.get("recycler.start.failures").tag("reason", "QUEUE_FULL").counter().count()).isEqualTo(1);

    // A waiting call that goes away frees its place in the queue.
    pool.cancelStart(third);
    assertThat(pool.startWorker(request("1-5"), "runner:5").state()).isEqualTo(Lease.State.WAITING);
  }

  @Test
  void fullLeaseCycleReturnsTheSlotToIdleOnlyAfterLeaseEnded() throws Exception {
    TestingWrapperLink link = attach("slot-0", "a");

    Lease lease = pool.startWorker(request("1-1"), "runner:1");
    dev.recycler.proto.v1.Lease msg = leaseMessage(link);
    assertThat(msg.getGeneration()).isEqualTo(1);
    assertThat(msg.getCredential()).matches("[0-9a-f]{32}");
    assertThat(msg.getWorkerId()).isEqualTo("slot-0.g1." + msg.getCredential());
    assertThat(state("slot-0")).isEqualTo(SlotState.BOOTING);
    assertThat(lease.ready()).isNotDone();

    RecordingControl control = new RecordingControl();
    pool.controlConnected("slot-0.g1", control);
    assertThat(lease.ready()).isCompletedWithValue(lease);
    assertThat(state("slot-0")).isEqualTo(SlotState.ACTIVE);

    pool.controlEnded(lease, EndReason.RUNNER_CLOSED);
    RecyclerMessage exit = link.last();
    assertThat(exit.getExit().getGeneration()).isEqualTo(1);
    assertThat(exit.getExit().getReason()).isEqualTo(ExitReason.EXIT_REASON_RUNNER_CLOSED);
    assertThat(control.closes).containsExactly(EndReason.RUNNER_CLOSED);
    assertThat(state("slot-0")).isEqualTo(SlotState.DRAINING);

    pool.leaseEnded(link, ended(1, Outcome.OUTCOME_EXITED_ON_INSTRUCTION));
    assertThat(state("slot-0")).isEqualTo(SlotState.IDLE);
    assertThat(events).containsExactly("prepared 1-1", "ended 1-1 slot-0.g1");
    assertThat(pool.slotTable(0).getLeasesList()).singleElement().satisfies(r -> {
      assertThat(r.getEndReason()).isEqualTo("RUNNER_CLOSED");
      assertThat(r.getReadyLatencyMillis()).isZero();
      assertThat(r.getOutcome()).isEqualTo("EXITED_ON_INSTRUCTION");
    });

    pool.startWorker(request("1-1"), "runner:2");
    assertThat(leaseMessage(link).getGeneration()).isEqualTo(2);
    assertThat(registry.get("recycler.lease.ends").tag("reason", "RUNNER_CLOSED").counter().count()).isEqualTo(1);
  }

  @Test
  void waitingIsFifoAndBoundedWithAnErrorNamingTheHolders() throws Exception {
    TestingWrapperLink link0 = attach("slot-0", "a");
    Lease first = pool.startWorker(request("1-1"), "p1");
    Lease second = pool.startWorker(request("2-1"), "p2");
    Lease third = pool.startWorker(request("3-1"), "p3");
    assertThat(second.state()).isEqualTo(Lease.State.WAITING);

    // slot-0 frees up: the earliest waiter gets it.
    pool.controlConnected(first.workerId(), new RecordingControl());
    pool.controlEnded(first, EndReason.RUNNER_CLOSED);
    time.advance(Duration.ofSeconds(3));
    pool.leaseEnded(link0, ended(1, Outcome.OUTCOME_EXITED_ON_INSTRUCTION));
    assertThat(second.state()).isEqualTo(Lease.State.BOOTING);
    assertThat(third.state()).isEqualTo(Lease.State.WAITING);

    time.advance(WAIT);
    RecyclerException e = failure(third.ready());
    assertThat(e.kind()).isEqualTo(Kind.BUSY);
    assertThat(e).hasMessageContaining("slot-0 BOOTING for worker 2-1").hasMessageContaining("never attached: slot-1");
    assertThat(third.state()).isEqualTo(Lease.State.ENDED);
  }

  @Test
  void waitingWithNoWrapperAttachedFailsUnavailableNamingTheSlots() throws Exception {
    Lease lease = pool.startWorker(request("1-1"), "p");

    time.advance(WAIT);

    RecyclerException e = failure(lease.ready());
    assertThat(e.kind()).isEqualTo(Kind.UNAVAILABLE);
    assertThat(e).hasMessageContaining("never attached: slot-0, slot-1").hasMessageContaining("--slot=");
  }

  @Test
  void malformedStartWorkerIsRejected() {
    assertThatThrownBy(() -> pool.startWorker(request(""), "p"))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.BAD_REQUEST))
        .hasMessageContaining("worker_id");
    assertThatThrownBy(() -> pool.startWorker(request("1-1").toBuilder().clearControlEndpoint().build(), "p"))
        .hasMessageContaining("control_endpoint");
    assertThatThrownBy(() -> pool.startWorker(request("1-1").toBuilder().clearProvisionEndpoint().build(), "p"))
        .hasMessageContaining("provision_endpoint");
  }

  @Test
  void cancellationWhileWaitingOrBootingReleasesTheLease() throws Exception {
    TestingWrapperLink link = attach("slot-0", "a");
    Lease booting = pool.startWorker(request("1-1"), "p1");
    Lease waitingLease = pool.startWorker(request("2-1"), "p2");

    pool.cancelStart(waitingLease);
    assertThat(waitingLease.state()).isEqualTo(Lease.State.ENDED);

    pool.cancelStart(booting);
    assertThat(link.last().getExit().getReason()).isEqualTo(ExitReason.EXIT_REASON_CANCELLED);
    assertThat(failure(booting.ready()).kind()).isEqualTo(Kind.CANCELLED);
    pool.leaseEnded(link, ended(1, Outcome.OUTCOME_EXITED_ON_INSTRUCTION));
    assertThat(state("slot-0")).isEqualTo(SlotState.IDLE);
  }

  @Test
  void aLeaseTakesItsSlotOnlyOncePreparedAndCarriesItsBootInputs() throws Exception {
    autoPrepare = false;
    TestingWrapperLink link = attach("slot-0", "a");
    pool.startWorker(request("1-1"), "p");
    assertThat(link.sent(KindCase.LEASE)).isEmpty();
    assertThat(state("slot-0")).isEqualTo(SlotState.IDLE);

    PreparedLease inputs = PreparedLease.newBuilder().setProvisionInfo(ProvisionInfo.newBuilder()
        .setControlEndpoint(ApiServiceDescriptor.newBuilder().setUrl("recycler:1"))).build();
    preparing.get("1-1").complete(inputs);

    assertThat(state("slot-0")).isEqualTo(SlotState.BOOTING);
    dev.recycler.proto.v1.Lease sent = leaseMessage(link);
    assertThat(sent.getGeneration()).isEqualTo(1);
    assertThat(sent.getWorkerId()).isEqualTo("slot-0.g1." + sent.getCredential());
    assertThat(sent.getPrepared()).isEqualTo(inputs);
  }

  @Test
  void aFailedPreparationSendsTheLeaseWithoutInputsSoTheWrapperAsksItself() throws Exception {
    autoPrepare = false;
    TestingWrapperLink link = attach("slot-0", "a");
    pool.startWorker(request("1-1"), "p");

    preparing.get("1-1").completeExceptionally(new RecyclerException(Kind.UNAVAILABLE, "runner gone"));

    assertThat(leaseMessage(link).hasPrepared()).isFalse();
    assertThat(state("slot-0")).isEqualTo(SlotState.BOOTING);
  }

  @Test
  void aLeaseStoppedWhileBeingPreparedNeverTakesASlotAndItsResourcesAreReleased() throws Exception {
    autoPrepare = false;
    TestingWrapperLink link = attach("slot-0", "a");
    Lease first = pool.startWorker(request("1-1"), "p1");
    Lease second = pool.startWorker(request("2-1"), "p2");

    pool.stopWorker("1-1", "p1");

    assertThat(failure(first.ready()).kind()).isEqualTo(Kind.CANCELLED);
    assertThat(first.state()).isEqualTo(Lease.State.ENDED);
    assertThat(first.generation()).isZero();
    assertThat(link.sent(KindCase.EXIT)).isEmpty();
    assertThat(events).contains("ended 1-1 ");
    // Its late inputs are dropped; the other lease takes the slot once its own are in.
    preparing.get("1-1").complete(PreparedLease.getDefaultInstance());
    assertThat(link.sent(KindCase.LEASE)).isEmpty();
    assertThat(state("slot-0")).isEqualTo(SlotState.IDLE);
    preparing.get("2-1").complete(PreparedLease.getDefaultInstance());
    assertThat(leaseMessage(link).getGeneration()).isEqualTo(1);
    assertThat(second.generation()).isEqualTo(1);
  }

  @Test
  void fencingRejectsOtherGenerationsAndIgnoresStaleReports() throws Exception {
    TestingWrapperLink link = attach("slot-0", "a");
    Lease one = pool.startWorker(request("1-1"), "p");
    pool.controlConnected("slot-0.g1", new RecordingControl());
    pool.controlEnded(one, EndReason.RUNNER_CLOSED);
    pool.leaseEnded(link, ended(1, Outcome.OUTCOME_EXITED_ON_INSTRUCTION));
    Lease two = pool.startWorker(request("1-1"), "p");

    assertThat(pool.currentLease("slot-0", "2")).isSameAs(two);
    assertThatThrownBy(() -> pool.currentLease("slot-0", "1"))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.WRONG_STATE))
        .hasMessageContaining("generation 1 is not the current lease");
    assertThatThrownBy(() -> pool.currentLease("slot-0", ""))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.BAD_REQUEST));
    assertThatThrownBy(() -> pool.currentLease("nope", "2"))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.UNKNOWN_ID));
    assertThatThrownBy(() -> pool.controlConnected("slot-0.g1", new RecordingControl()))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.UNKNOWN_ID));

    pool.workerStarted(link, WorkerStarted.newBuilder().setGeneration(1).setPid(5).build());
    pool.leaseEnded(link, ended(1, Outcome.OUTCOME_WORKER_EXITED));
    assertThat(two.state()).isEqualTo(Lease.State.BOOTING);
    assertThat(state("slot-0")).isEqualTo(SlotState.BOOTING);
  }

  @Test
  void duplicateAttachIsRefusedWhileTheHolderAnswersPings() {
    TestingWrapperLink holder = attach("slot-0", "a");
    TestingWrapperLink claimant = attach("slot-0", "b");

    RecyclerMessage ping = holder.last();
    assertThat(ping.hasPing()).isTrue();
    pool.pong(holder, ping.getPing().getNonce());

    assertThat(claimant.closedWith().kind()).isEqualTo(Kind.CONFLICT);
    assertThat(claimant.closedWith()).hasMessageContaining("incarnation a").hasMessageContaining("own --slot");
    assertThat(holder.closedWith()).isNull();
  }

  @Test
  void reattachOfANewIncarnationReplacesASilentHolderAndEndsItsLease() throws Exception {
    TestingWrapperLink old = attach("slot-0", "a");
    Lease lease = pool.startWorker(request("1-1"), "p");
    TestingWrapperLink fresh = attach("slot-0", "b");

    time.advance(Duration.ofSeconds(2));

    assertThat(old.closedWith().kind()).isEqualTo(Kind.UNAVAILABLE);
    assertThat(failure(lease.ready()).kind()).isEqualTo(Kind.UNAVAILABLE);
    assertThat(fresh.sent(KindCase.ATTACHED)).hasSize(1);
    assertThat(state("slot-0")).isEqualTo(SlotState.IDLE);
    assertThat(pool.slotTable(0).getSlots(0).getIncarnationId()).isEqualTo("b");
  }

  @Test
  void wrapperLossWhileActiveClosesControlAndDetachesTheSlot() throws Exception {
    TestingWrapperLink link = attach("slot-0", "a");
    Lease lease = pool.startWorker(request("1-1"), "p");
    RecordingControl control = new RecordingControl();
    pool.controlConnected("slot-0.g1", control);

    pool.detached(link);

    assertThat(control.closes).containsExactly(EndReason.WRAPPER_LOST);
    assertThat(lease.state()).isEqualTo(Lease.State.ENDED);
    assertThat(state("slot-0")).isEqualTo(SlotState.DETACHED);
    // No wrapper reported how the worker ended: the record says nothing of an exit code (never a clean 0).
    assertThat(pool.slotTable(0).getLeases(0)).satisfies(r -> {
      assertThat(r.getEndReason()).isEqualTo("WRAPPER_LOST");
      assertThat(r.hasExitCode()).isFalse();
    });
  }

  @Test
  void crashBeforeConnectAndBootFailureFailStartWorkerWithTheReason() throws Exception {
    TestingWrapperLink link = attach("slot-0", "a");
    Lease crashed = pool.startWorker(request("1-1"), "p");
    pool.leaseEnded(link, ended(1, Outcome.OUTCOME_WORKER_EXITED).toBuilder().setExitCode(2).build());

    RecyclerException crash = failure(crashed.ready());
    assertThat(crash.kind()).isEqualTo(Kind.UNAVAILABLE);
    assertThat(crash).hasMessageContaining("exited with code 2 before connecting");

    Lease broken = pool.startWorker(request("2-1"), "p");
    pool.leaseEnded(link, ended(2, Outcome.OUTCOME_BOOT_FAILED).toBuilder().setStage(BootStage.BOOT_STAGE_ARTIFACTS)
        .setMessage("no artifact has role go_worker_binary").build());
    RecyclerException boot = failure(broken.ready());
    assertThat(boot.kind()).isEqualTo(Kind.WRONG_STATE);
    assertThat(boot).hasMessageContaining("(artifacts): no artifact has role go_worker_binary");
    // The crashed worker's code is in its record; the boot failure ran no worker, so it has none.
    assertThat(pool.slotTable(0).getLeasesList()).extracting(r -> r.getEndReason() + " " + (r.hasExitCode()
        ? Integer.toString(r.getExitCode()) : "no exit code"))
        .containsExactlyInAnyOrder("WORKER_EXITED 2", "BOOT_FAILED no exit code");
  }

  @Test
  void readyTimeoutFailsStartWorkerAndSendsTheExit() throws Exception {
    TestingWrapperLink link = attach("slot-0", "a");
    Lease lease = pool.startWorker(request("1-1"), "p");
    pool.workerStarted(link, WorkerStarted.newBuilder().setGeneration(1).setPid(4242).build());

    time.advance(READY);

    RecyclerException e = failure(lease.ready());
    assertThat(e.kind()).isEqualTo(Kind.TIMEOUT);
    assertThat(e).hasMessageContaining("pid 4242");
    assertThat(link.last().getExit().getReason()).isEqualTo(ExitReason.EXIT_REASON_READY_TIMEOUT);
    assertThat(state("slot-0")).isEqualTo(SlotState.DRAINING);
  }

  @Test
  void repeatedFailuresBackOffAndLeasesGoToHealthySlots() throws Exception {
    TestingWrapperLink bad = attach("slot-0", "a");
    for (int gen = 1; gen <= 2; gen++) {
      pool.startWorker(request("x-" + gen), "p");
      pool.leaseEnded(bad, ended(gen, Outcome.OUTCOME_WORKER_EXITED).toBuilder().setExitCode(1).build());
    }
    assertThat(state("slot-0")).isEqualTo(SlotState.BACKOFF);

    TestingWrapperLink good = attach("slot-1", "b");
    Lease lease = pool.startWorker(request("y"), "p");
    assertThat(lease.slotId()).isEqualTo("slot-1");

    time.advance(Duration.ofSeconds(5));
    assertThat(state("slot-0")).isEqualTo(SlotState.IDLE);
    assertThat(good.sent(KindCase.LEASE)).hasSize(1);
  }

  /** Regression: a repeated StopWorker from job B, after B's lease ended, used to end job A's lease (same id 1-1). */
  @Test
  void stopWorkerIsIdempotentAndDisambiguatesCollidingRunnerIdsByPeer() throws Exception {
    TestingWrapperLink link0 = attach("slot-0", "a");
    TestingWrapperLink link1 = attach("slot-1", "b");
    // Two jobs, both with runner worker id 1-1 (Beam numbers per job), on different channels.
    Lease jobA = pool.startWorker(request("1-1"), "peerA");
    Lease jobB = pool.startWorker(request("1-1"), "peerB");
    pool.controlConnected(jobA.workerId(), new RecordingControl());
    pool.controlConnected(jobB.workerId(), new RecordingControl());

    pool.stopWorker("1-1", "peerB");

    assertThat(jobB.state()).isEqualTo(Lease.State.ENDING);
    assertThat(jobA.state()).isEqualTo(Lease.State.ACTIVE);
    assertThat(link1.last().getExit().getReason()).isEqualTo(ExitReason.EXIT_REASON_STOP_WORKER);
    assertThat(link0.sent(KindCase.EXIT)).isEmpty();

    pool.stopWorker("1-1", "peerB");
    pool.leaseEnded(link1, ended(1, Outcome.OUTCOME_EXITED_ON_INSTRUCTION));
    pool.stopWorker("1-1", "peerB");
    assertThat(jobA.state()).isEqualTo(Lease.State.ACTIVE);

    assertThatThrownBy(() -> pool.stopWorker("9-9", "p"))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.UNKNOWN_ID));
    assertThatThrownBy(() -> pool.stopWorker("", "p"))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.BAD_REQUEST));
  }

  @Test
  void drainTimeoutResendsTheExitInstruction() throws Exception {
    TestingWrapperLink link = attach("slot-0", "a");
    Lease lease = pool.startWorker(request("1-1"), "p");
    pool.controlConnected(lease.workerId(), new RecordingControl());
    pool.controlEnded(lease, EndReason.RUNNER_CLOSED);
    assertThat(link.sent(KindCase.EXIT)).hasSize(1);

    time.advance(Duration.ofSeconds(30));

    assertThat(link.sent(KindCase.EXIT)).hasSize(2);
    assertThat(state("slot-0")).isEqualTo(SlotState.DRAINING);
  }

  @Test
  void shutdownFailsWaitersExitsLeasesAndCompletesWhenWrappersReport() throws Exception {
    TestingWrapperLink link = attach("slot-0", "a");
    Lease running = pool.startWorker(request("1-1"), "p");
    pool.controlConnected(running.workerId(), new RecordingControl());
    Lease queued = pool.startWorker(request("2-1"), "p");

    CompletableFuture<Void> drained = pool.shutdown();

    assertThat(failure(queued.ready()).kind()).isEqualTo(Kind.UNAVAILABLE);
    assertThat(link.last().getExit().getReason()).isEqualTo(ExitReason.EXIT_REASON_SHUTDOWN);
    assertThat(drained).isNotDone();
    assertThatThrownBy(() -> pool.startWorker(request("3-1"), "p")).hasMessageContaining("shutting down");

    pool.leaseEnded(link, ended(1, Outcome.OUTCOME_EXITED_ON_INSTRUCTION));
    assertThat(drained).isCompleted();
    assertThat(pool.shutdown()).isSameAs(drained);
  }
}
