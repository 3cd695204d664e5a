package dev.recycler.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import dev.recycler.e2e.EndToEndResult.Check;
import dev.recycler.e2e.EndToEndResult.JobRun;
import dev.recycler.e2e.EndToEndResult.Scenario;
import dev.recycler.e2e.EndToEndResult.Transfers;
import dev.recycler.e2e.EndToEndResult.Verdict;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The end-to-end run with real parts ({@link EndToEndRun}, the same run as the README's demo): a real Flink 1.19.3
 * session cluster with the recycler plugin and 3 harness slots, 3 real go-boot-wrapper processes, Beam's Flink job
 * server, and Beam Go jobs of the sample pipelines binary. One run for the class; each test asserts one property of
 * it, on the raw figures where they exist and on the run's own verdicts otherwise.
 *
 * <p>Needs the Go binaries (built by {@code .ci/run} before Maven) and the job server jar; the system properties in
 * this module's pom point at them.
 */
@Timeout(value = 15, unit = TimeUnit.MINUTES)
class GoPipelinesE2EIT {
  private static final int SLOTS = 3;
  private static EndToEndResult result;

  @BeforeAll
  static void runEverything() throws Exception {
    Path repoRoot = Path.of(System.getProperty("recycler.e2e.repoRoot", "../..")).toAbsolutePath().normalize();
    Path work = Path.of(System.getProperty("recycler.e2e.workDir", "target/it-work")).toAbsolutePath()
        .resolve("go-pipelines-e2e");
    long t0 = System.nanoTime();
    result = EndToEndRun.settings()
        .slots(SLOTS)
        .workDirectory(work)
        .checkout(repoRoot)
        .progress(line -> System.out.printf("[%6.1fs] %s%n", (System.nanoTime() - t0) / 1e9, line))
        .build()
        .run();
    System.out.println(Demo.report(result));
  }

  @Test
  void noCheckFails() {
    assertThat(result.failedChecks()).as("checks with verdict FAIL").isEmpty();
    assertThat(result.checks()).hasSizeGreaterThanOrEqualTo(9);
  }

  @Test
  void atLeastFiveSuccessiveJobsProduceExactlyTheExpectedOutput() {
    List<JobRun> successive = jobs(Scenario.SUCCESSIVE);
    assertThat(successive).hasSizeGreaterThanOrEqualTo(5);
    assertThat(successive).allSatisfy(j -> {
      assertThat(j.exitCode()).as(j.name() + ": " + j.note()).isZero();
      assertThat(j.outputMatches()).as(j.name() + " output").isTrue();
      assertThat(j.flinkState()).isEqualTo("FINISHED");
    });
    // Every job that must succeed did, scenario by scenario.
    assertThat(result.jobs()).filteredOn(j -> j.scenario().mustSucceed())
        .allSatisfy(j -> assertThat(j.succeeded()).as(j.name() + ": " + j.note()).isTrue());
  }

  @Test
  void concurrentJobsRanAtTheSameTime() {
    List<JobRun> concurrent = jobs(Scenario.CONCURRENT);
    assertThat(concurrent).hasSizeGreaterThanOrEqualTo(2).allMatch(JobRun::succeeded);
    assertThat(EndToEndResult.maxConcurrentJobs(concurrent)).as("jobs holding a lease at the same instant")
        .isGreaterThanOrEqualTo(2);
  }

  @Test
  void wrappersKeepTheirPidsWhileEachLeaseRunsANewWorkerProcess() {
    assertThat(result.wrapperPids()).hasSize(SLOTS);
    assertThat(check("every wrapper kept its PID").verdict()).isEqualTo(Verdict.PASS);
    List<Long> workerPids = result.leases().stream().map(LeaseRecord::workerPid).filter(p -> p > 0).toList();
    assertThat(workerPids).hasSizeGreaterThanOrEqualTo(result.jobs().size() - 1).doesNotHaveDuplicates()
        .doesNotContainAnyElementsOf(result.wrapperPids().values());
    assertThat(result.leases().stream().map(LeaseRecord::workerId)).doesNotHaveDuplicates();
    assertThat(result.leases()).allSatisfy(l -> assertThat(l.workerId()).isEqualTo(l.slot() + ".g" + l.generation()));
  }

  @Test
  void workerBinaryCrossesToEachWrapperOncePerSlotAndFromTheRunnerAsMeasured() {
    Transfers x = result.transfers();
    assertThat(x.slotsLeased()).isEqualTo(SLOTS);
    assertThat(x.servedTransfers()).as("recycler -> wrapper transfers").isEqualTo(SLOTS);
    assertThat(x.servedBytes()).isEqualTo(SLOTS * x.binaryBytes());
    // Runner -> recycler: nothing. Beam's job server stages each job under a fresh path without a digest; the
    // recycler reads the staged file in place (the job server's artifacts directory), hashing it once per job and
    // copying it into its cache once per distinct content (docs/architecture.md#artifacts).
    assertThat(x.upstreamFetches()).as("artifact downloads through the runner's gRPC service").isZero();
    assertThat(x.upstreamBytes()).isZero();
    assertThat(x.localBytes()).isBetween(x.binaryBytes() * x.jobsLeased(),
        x.binaryBytes() * (x.jobsLeased() + x.distinctBinaries()));
    assertThat(check("never crossed the runner's gRPC service").verdict()).isEqualTo(Verdict.PASS);
  }

  @Test
  void slotsReturnToIdleAndNothingOfALeaseSurvives() {
    assertThat(check("all slots returned to IDLE").verdict()).as(check("all slots returned to IDLE").detail())
        .isEqualTo(Verdict.PASS);
    assertThat(result.leases()).allSatisfy(l -> assertThat(l.ended()).as(l.workerId() + " ended").isTrue());
  }

  @Test
  void failingPipelineFailsWithItsOwnErrorAndLeavesItsSlotHealthy() {
    JobRun failed = jobs(Scenario.FAILING).get(0);
    assertThat(failed.exitCode()).isEqualTo(1);
    assertThat(failed.flinkState()).isEqualTo("FAILED");
    assertThat(failed.note()).contains(EndToEndRun.FAIL_MARKER);
    JobRun next = jobs(Scenario.AFTER_FAILING).get(0);
    assertThat(next.succeeded()).isTrue();
    assertSlotServesNormallyAfter(failed);
  }

  @Test
  void jobCancelledThroughFlinkRestFreesItsSlot() {
    JobRun cancelled = jobs(Scenario.CANCELLED).get(0);
    assertThat(cancelled.flinkState()).isEqualTo("CANCELED");
    assertThat(cancelled.exitCode()).isNotZero().isNotEqualTo(-1);
    JobRun next = jobs(Scenario.AFTER_CANCELLED).get(0);
    assertThat(next.succeeded()).isTrue();
    assertSlotServesNormallyAfter(cancelled);
    assertThat(check("cancelled through Flink's REST API").verdict()).isEqualTo(Verdict.PASS);
  }

  /** Regression: the demo hung when a worker died before it opened its data stream (docs/e2e.md). */
  @Test
  void aWorkerKilledAsSoonAsItConnectedFailsTheJobWithoutHanging() {
    JobRun killed = jobs(Scenario.WORKER_KILLED_EARLY).get(0);
    assertThat(killed.exitCode()).as("launcher of the job whose worker was killed").isNotZero().isNotEqualTo(-1);
    assertThat(killed.flinkState()).isIn("FAILED", "CANCELED");
    assertThat(check("as soon as it connected").verdict()).as(check("as soon as it connected").detail())
        .isEqualTo(Verdict.PASS);
  }

  @Test
  void killedWorkerFailsTheJobWithoutHangingAndTheSlotRecovers() {
    JobRun killed = jobs(Scenario.WORKER_KILLED).get(0);
    assertThat(killed.exitCode()).as("launcher of the job whose worker was killed").isNotZero().isNotEqualTo(-1);
    assertThat(killed.flinkState()).isIn("FAILED", "CANCELED");
    JobRun next = jobs(Scenario.AFTER_WORKER_KILLED).get(0);
    assertThat(next.succeeded()).isTrue();
    assertSlotServesNormallyAfter(killed);
    assertThat(check("killed with SIGKILL").verdict()).as(check("killed with SIGKILL").detail())
        .isEqualTo(Verdict.PASS);
  }

  @Test
  void everyProcessIsStoppedAndTheTimelineListsEveryLease() {
    assertThat(check("every process the run started is stopped").verdict())
        .as(check("every process the run started is stopped").detail()).isEqualTo(Verdict.PASS);
    String timeline = result.timeline();
    Set<String> rows = new HashSet<>(timeline.lines().skip(1).toList());
    assertThat(rows).hasSize(result.leases().size());
    assertThat(result.leases()).allSatisfy(l -> assertThat(timeline).contains(l.workerId()));
    assertThat(result.total()).as("whole run").isLessThan(Duration.ofMinutes(10));
  }

  private static List<JobRun> jobs(Scenario s) {
    List<JobRun> list = result.jobs().stream().filter(j -> j.scenario() == s).toList();
    assertThat(list).as("jobs of scenario " + s).isNotEmpty();
    return list;
  }

  private static Check check(String namePart) {
    return result.checks().stream().filter(c -> c.name().contains(namePart)).findFirst()
        .orElseThrow(() -> new AssertionError("no check named like '" + namePart + "' in " + result.checks()));
  }

  /**
   * The incident's slot is healthy: its next lease (of whichever job: the job after the incident may go to a slot
   * without a standby worker) ran and ended normally.
   */
  private static void assertSlotServesNormallyAfter(JobRun incident) {
    LeaseRecord last = incident.leases().stream().max(java.util.Comparator.comparingLong(LeaseRecord::startMillis))
        .orElseThrow();
    assertThat(EndToEndResult.nextOnSlot(result.jobs(), result.leases(), last)).as("the next lease on %s after %s", last.slot(),
        last.workerId()).hasValueSatisfying(l -> assertThat(EndToEndResult.endedNormally(l)).as(l.exitDescription())
        .isTrue());
  }
}
