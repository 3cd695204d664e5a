package dev.recycler.core;

import dev.recycler.core.api.RecyclerConfig;
import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import dev.recycler.core.testing.RunnerEnvironment;
import dev.recycler.proto.v1.LeaseRecord;
import dev.recycler.proto.v1.SlotStatus;
import io.grpc.ManagedChannel;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StopWorkerRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnExternalWorkerPoolGrpc;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The recycler with the real go-boot-wrapper (one process per slot) and a real Beam Go SDK v2.70 worker binary, driven
 * by runner environments that behave like Beam's Flink TaskManager. Needs the Go binaries that {@code .ci/run} builds
 * first (system properties {@code recycler.wrapper.binary} and {@code recycler.worker.binary}).
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class GoHarnessIT {
  private static final Duration AWAIT = Duration.ofSeconds(60);

  @TempDir
  Path tmp;

  private Recycler recycler;
  private ManagedChannel channel;
  private final List<Process> wrappers = new ArrayList<>();
  private final List<RunnerEnvironment> environments = new ArrayList<>();
  private Path workerBinary;

  private Path wrapperBinary;

  @BeforeEach
  void setUp() throws Exception {
    wrapperBinary = Path.of(System.getProperty("recycler.wrapper.binary", "missing"));
    workerBinary = Path.of(System.getProperty("recycler.worker.binary", "missing"));
    assertThat(wrapperBinary).as("go-boot-wrapper binary (built by .ci/run)").isExecutable();
    assertThat(workerBinary).as("Beam Go worker binary (built by .ci/run)").isExecutable();
  }

  /** A recycler with two slots and two real wrappers; {@code localDirs} are its local artifact directories. */
  private void start(List<Path> localDirs) throws Exception {
    // The attach secret is on, as in the shipped manifests: the real wrapper must present it.
    Path secret = Files.writeString(tmp.resolve("attach-secret"), "go-harness-it-attach-secret\n");
    recycler = Recycler.start(RecyclerConfig.builder().slots(2, "slot-").port(0).cacheDirectory(tmp.resolve("cache"))
        .readyTimeout(Duration.ofSeconds(60)).leaseWaitTimeout(Duration.ofSeconds(60))
        .localArtifactDirectories(localDirs).shutdownTimeout(Duration.ofSeconds(20)).attachSecretFile(secret).build(),
        new SimpleMeterRegistry());
    channel = NettyChannelBuilder.forTarget(recycler.endpoint()).usePlaintext().build();
    for (int i = 0; i < 2; i++) {
      Path log = tmp.resolve("wrapper-" + i + ".log");
      wrappers.add(new ProcessBuilder(wrapperBinary.toString(), "--slot", "slot-" + i, "--recycler",
          recycler.endpoint(), "--work_dir", tmp.resolve("work").toString(), "--grace_period", "2s",
          "--attach_secret_file", secret.toString())
          .redirectErrorStream(true).redirectOutput(log.toFile()).start());
    }
    await().atMost(AWAIT).until(() -> slots().stream().allMatch(s -> s.getState().equals("IDLE")));
  }

  @AfterEach
  void tearDown() throws Exception {
    for (RunnerEnvironment e : environments) {
      e.close();
    }
    if (channel != null) {
      channel.shutdownNow();
    }
    if (recycler != null) {
      recycler.close();
    }
    for (Process p : wrappers) {
      p.destroy();
      if (!p.waitFor(20, TimeUnit.SECONDS)) {
        p.destroyForcibly().waitFor();
      }
    }
  }

  private List<SlotStatus> slots() {
    return recycler.slotTable().getSlotsList();
  }

  private RunnerEnvironment environment(String workerId, String job) throws IOException {
    RunnerEnvironment env = new RunnerEnvironment(workerId, workerBinary, "/staging/" + job + "/go-worker-binary");
    environments.add(env);
    return env;
  }

  private CompletableFuture<Void> startWorker(RunnerEnvironment env) {
    return CompletableFuture.runAsync(() -> BeamFnExternalWorkerPoolGrpc.newBlockingStub(channel)
        .withDeadlineAfter(90, TimeUnit.SECONDS).startWorker(env.startRequest()));
  }

  /**
   * Processes whose command line carries {@code --id=<workerId>.<lease credential>}: the inner worker of one lease
   * ({@code workerId} is the public id of the slot table).
   */
  private List<Long> processesOf(String workerId) throws IOException {
    List<Long> pids = new ArrayList<>();
    try (Stream<Path> procs = Files.list(Path.of("/proc"))) {
      for (Path p : procs.filter(p -> p.getFileName().toString().matches("\\d+")).toList()) {
        try {
          String cmd = Files.readString(p.resolve("cmdline")).replace('\0', ' ');
          // Public ids repeat across recyclers (every recycler's first lease of slot-0 is slot-0.g1): only workers
          // of this test's recycler (its endpoint is their control endpoint) count. Another test or benchmark on
          // the machine once made this check fail.
          if (cmd.contains("--id=" + workerId + ".") && cmd.contains(recycler.endpoint())) {
            pids.add(Long.parseLong(p.getFileName().toString()));
          }
        } catch (IOException gone) {
          // the process exited meanwhile
        }
      }
    }
    return pids;
  }

  /** Waits until every slot's standby worker runs (the slot table names it, and its process exists). */
  private void awaitStandbys() {
    await().atMost(AWAIT).alias("standby workers running").untilAsserted(() -> assertThat(slots())
        .allSatisfy(s -> assertThat(processesOf(s.getSlotId() + ".g" + s.getStandbyGeneration())).isNotEmpty()));
  }

  private List<String> standbyDirs() {
    return slots().stream().filter(s -> s.getStandbyGeneration() > 0)
        .map(s -> s.getSlotId() + "-g" + s.getStandbyGeneration()).toList();
  }

  private SlotStatus slot(String id) {
    return slots().stream().filter(x -> x.getSlotId().equals(id)).findFirst().orElseThrow();
  }

  private double standbys(String outcome) {
    return recycler.meterRegistry().get("recycler.standby.workers").tag("outcome", outcome).counter().count();
  }

  private void awaitIdle() {
    await().atMost(AWAIT).alias("all slots IDLE").untilAsserted(() -> assertThat(slots())
        .as("slot table %s", recycler.slotTable()).allMatch(s -> s.getState().equals("IDLE")));
  }

  @Test
  void successiveAndConcurrentLeasesRecycleSlotsWithoutRestartingWrappers() throws Exception {
    start(List.of());
    List<Long> wrapperPids = wrappers.stream().map(Process::pid).toList();

    for (int job = 1; job <= 3; job++) {
      RunnerEnvironment env = environment("1-1", "job-" + job);
      startWorker(env).get(90, TimeUnit.SECONDS);
      // StartWorker returned: the worker is connected to the proxy, whose upstream stream reaches the runner next.
      env.connected().get(10, TimeUnit.SECONDS);
      LeaseRecord live = recycler.slotTable().getLeasesList().stream().filter(r -> r.getEndUnixMillis() == 0)
          .findFirst().orElseThrow();
      assertThat(processesOf(live.getWorkerId())).isNotEmpty();

      env.closeControl();
      awaitIdle();
      assertThat(processesOf(live.getWorkerId())).as("no process of lease %s survives", live.getWorkerId()).isEmpty();
      BeamFnExternalWorkerPoolGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS)
          .stopWorker(StopWorkerRequest.newBuilder().setWorkerId("1-1").build());
    }

    RunnerEnvironment a = environment("1-1", "job-a");
    RunnerEnvironment b = environment("1-1", "job-b");
    CompletableFuture.allOf(startWorker(a), startWorker(b)).get(90, TimeUnit.SECONDS);
    assertThat(slots()).extracting(SlotStatus::getState).containsOnly("ACTIVE");
    a.closeControl();
    b.closeControl();
    awaitIdle();

    assertThat(wrappers).allMatch(Process::isAlive);
    assertThat(wrappers.stream().map(Process::pid).toList()).isEqualTo(wrapperPids);
    List<LeaseRecord> leases = recycler.slotTable().getLeasesList();
    assertThat(leases).hasSize(5).allSatisfy(r -> {
      assertThat(r.getEndReason()).isEqualTo("RUNNER_CLOSED");
      assertThat(r.getOutcome()).isEqualTo("EXITED_ON_INSTRUCTION");
      assertThat(r.getReadyLatencyMillis()).isNotNegative();
    });
    assertThat(leases).extracting(LeaseRecord::getWorkerPid).doesNotHaveDuplicates();
    // The binary reached each wrapper once: the second and later leases of a slot found it in its local cache.
    assertThat(recycler.meterRegistry().get("recycler.artifact.served").summary().count()).isEqualTo(2);
    // Every job was new, so no standby was adopted; each lease's directory is gone, and what is left is the slots'
    // standby workers' (the last job of each slot), which the slot table names.
    assertThat(recycler.meterRegistry().get("recycler.standby.workers").tag("outcome", "ADOPTED").counter().count())
        .isZero();
    awaitStandbys();
    try (Stream<Path> left = Files.list(tmp.resolve("work").resolve("leases"))) {
      assertThat(left.map(p -> p.getFileName().toString())).as("per-lease directories")
          .containsExactlyInAnyOrderElementsOf(standbyDirs());
    }
    // The wrappers' logs (with the workers' own output) name leases by public id, never with the credential.
    for (int i = 0; i < 2; i++) {
      String log = Files.readString(tmp.resolve("wrapper-" + i + ".log"));
      assertThat(log).contains("worker_id=slot-" + i + ".g1").doesNotContainPattern("\\.g\\d+\\.[0-9a-f]{32}")
          .doesNotContain("go-harness-it-attach-secret");
    }
  }

  @Test
  void workerKilledMidLeaseFailsTheRunnersStreamAndTheSlotRecovers() throws Exception {
    start(List.of());
    RunnerEnvironment env = environment("1-1", "job-kill");
    startWorker(env).get(90, TimeUnit.SECONDS);
    LeaseRecord live = recycler.slotTable().getLeasesList().get(0);

    for (long pid : processesOf(live.getWorkerId())) {
      new ProcessBuilder("kill", "-KILL", Long.toString(pid)).start().waitFor();
    }

    awaitIdle();
    // The runner is never left waiting: its next instruction is answered with an error (Beam then fails the bundle).
    InstructionResponse answer = env.send("after-kill").get(30, TimeUnit.SECONDS);
    assertThat(answer.getError()).contains(live.getSlotId()).contains("gone");
    assertThat(env.controlEnded()).as("the runner closes its stream itself").isNotDone();
    env.closeControl();
    LeaseRecord record = recycler.slotTable().getLeasesList().get(0);
    assertThat(record.getEndReason()).isIn("WORKER_LOST", "WORKER_EXITED");
    assertThat(record.getSignal()).isEqualTo("SIGKILL");

    RunnerEnvironment again = environment("1-1", "job-after-kill");
    startWorker(again).get(90, TimeUnit.SECONDS);
    again.closeControl();
    awaitIdle();
  }

  @Test
  void aStagedBinaryIsPrefetchedByBothIdleWrappersAndTheJobsLeaseFetchesNothing() throws Exception {
    Path staging = Files.createDirectories(tmp.resolve("job-server-artifacts"));
    start(List.of(staging));
    // The job server stages the job's binary at submission: a plain copy under a fresh job directory.
    Path staged = Files.createDirectories(staging.resolve("job-prefetch")).resolve("go-worker-binary");
    Files.copy(workerBinary, staged);
    long size = Files.size(staged);

    // Both idle wrappers fetch it before any lease (the staging watcher waits for 1 s of quiet first).
    await().atMost(AWAIT).until(() -> recycler.meterRegistry().get("recycler.artifact.prefetches")
        .tag("outcome", "FETCHED").counter().count() == 2);
    assertThat(recycler.meterRegistry().get("recycler.artifact.served").summary().count()).isEqualTo(2);
    assertThat(recycler.meterRegistry().get("recycler.artifact.served").summary().totalAmount())
        .isEqualTo(2.0 * size);
    assertThat(slots()).allSatisfy(s -> assertThat(s.getHeldDigests()).isEqualTo(1));

    // The job's lease (the runner names the staged path) starts from the wrapper's cache: nothing more is served.
    RunnerEnvironment env = new RunnerEnvironment("1-1", workerBinary, staged.toString());
    environments.add(env);
    startWorker(env).get(90, TimeUnit.SECONDS);
    env.connected().get(10, TimeUnit.SECONDS);
    env.closeControl();
    awaitIdle();
    assertThat(recycler.meterRegistry().get("recycler.artifact.served").summary().count()).isEqualTo(2);
    assertThat(recycler.slotTable().getLeasesList()).singleElement()
        .satisfies(r -> assertThat(r.getEndReason()).isEqualTo("RUNNER_CLOSED"));
    String log = Files.readString(tmp.resolve("wrapper-0.log")) + Files.readString(tmp.resolve("wrapper-1.log"));
    assertThat(log).contains("msg=prefetch").contains("outcome=fetched").doesNotContain("msg=\"fetched artifact\"");
  }

  @Test
  void aJobsNextEnvironmentAdoptsTheStandbyStartedWhenItsLeaseEndedAndOtherJobsNeverGetIt() throws Exception {
    start(List.of());
    RunnerEnvironment first = environment("1-1", "job-s");
    startWorker(first).get(90, TimeUnit.SECONDS);
    first.closeControl();
    awaitIdle();
    // The slot that served the lease (either: both wrappers hold nothing yet) now runs the job's next worker, held by
    // the recycler; the other slot is free.
    String s = recycler.slotTable().getLeasesList().get(0).getSlotId();
    String other = s.equals("slot-0") ? "slot-1" : "slot-0";
    await().atMost(AWAIT).until(() -> slot(s).getStandbyGeneration() == 2);
    await().atMost(AWAIT).until(() -> processesOf(s + ".g2").size() == 1);
    long standbyPid = processesOf(s + ".g2").get(0);

    // The same job's next environment (fresh endpoints, same options and binary) gets that worker.
    RunnerEnvironment second = environment("2-1", "job-s");
    startWorker(second).get(90, TimeUnit.SECONDS);
    second.connected().get(10, TimeUnit.SECONDS);
    assertThat(second.firstAnswer("first").get(10, TimeUnit.SECONDS)).isPositive();
    LeaseRecord adopted = recycler.slotTable().getLeasesList().get(1);
    assertThat(adopted.getSlotId()).isEqualTo(s);
    assertThat(adopted.getGeneration()).isEqualTo(2);
    assertThat(adopted.getWorkerPid()).isEqualTo(standbyPid);
    assertThat(adopted.getStandby()).isTrue();
    assertThat(standbys("ADOPTED")).isEqualTo(1);

    // Another job goes to the free slot; the standby the second lease leaves behind stays for its job.
    second.closeControl();
    awaitIdle();
    await().atMost(AWAIT).until(() -> slot(s).getStandbyGeneration() == 3);
    RunnerEnvironment job2 = environment("1-1", "job-t");
    startWorker(job2).get(90, TimeUnit.SECONDS);
    assertThat(recycler.slotTable().getLeasesList().get(2).getSlotId()).isEqualTo(other);
    job2.closeControl();
    awaitIdle();
    awaitStandbys();

    // A third job finds both slots holding other jobs' standbys: that of the job with fewer leases (job-t's) goes.
    await().atMost(AWAIT).until(() -> slot(other).getStandbyGeneration() == 2);
    long dropped = processesOf(other + ".g2").get(0);
    RunnerEnvironment third = environment("1-1", "job-u");
    startWorker(third).get(90, TimeUnit.SECONDS);
    LeaseRecord thirdLease = recycler.slotTable().getLeasesList().get(3);
    assertThat(thirdLease.getSlotId()).isEqualTo(other);
    assertThat(thirdLease.getGeneration()).isEqualTo(3);
    assertThat(processesOf(other + ".g2")).as("the dropped standby %d is stopped", dropped).isEmpty();
    assertThat(third.firstAnswer("third").get(10, TimeUnit.SECONDS)).isPositive();
    assertThat(processesOf(s + ".g3")).as("job-s's standby is untouched").hasSize(1);
    third.closeControl();
    awaitIdle();
    assertThat(recycler.slotTable().getLeasesList()).hasSize(4).allSatisfy(r -> {
      assertThat(r.getEndReason()).isEqualTo("RUNNER_CLOSED");
      assertThat(r.getOutcome()).isEqualTo("EXITED_ON_INSTRUCTION");
    });

    // Shutting the recycler down stops the standbys: no worker of this recycler is left, nor a lease directory.
    awaitStandbys();
    List<String> standbyIds = slots().stream().map(x -> x.getSlotId() + ".g" + x.getStandbyGeneration()).toList();
    assertThat(standbyIds).containsExactlyInAnyOrder(s + ".g3", other + ".g4");
    recycler.close();
    await().atMost(AWAIT).untilAsserted(() -> {
      for (String id : standbyIds) {
        assertThat(processesOf(id)).as("standby %s", id).isEmpty();
      }
      try (Stream<Path> left = Files.list(tmp.resolve("work").resolve("leases"))) {
        assertThat(left).as("per-lease directories").isEmpty();
      }
    });
  }

}
