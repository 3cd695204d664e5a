package dev.recycler.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import dev.recycler.e2e.ScaleOutRun.Job;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Scale-out on Flink ({@link ScaleOutRun}): two TaskManagers, each with its own recycler and wrappers, Beam Go jobs of
 * parallelism 2, one TaskManager SIGKILLed mid-job and restarted. One run for the class; each test asserts one
 * property on the run's raw figures or its verdicts.
 *
 * <p>Not part of the default {@code verify} (about 2 minutes on 2 cores; the pom excludes it): run it with {@code mvn
 * -B -pl recycler-flink/e2e -am verify -Dit.test=ScaleOutE2EIT -Dtest=NONE -Dsurefire.failIfNoSpecifiedTests=false},
 * or {@code bash .ci/scaleout}.
 */
@Timeout(value = 15, unit = TimeUnit.MINUTES)
class ScaleOutE2EIT {
  private static ScaleOutRun.Result result;

  @BeforeAll
  static void runEverything() throws Exception {
    Path repoRoot = Path.of(System.getProperty("recycler.e2e.repoRoot", "../..")).toAbsolutePath().normalize();
    Path work = Path.of(System.getProperty("recycler.e2e.workDir", "target/it-work")).toAbsolutePath()
        .resolve("scale-out");
    long t0 = System.nanoTime();
    result = new ScaleOutRun(repoRoot, work,
        line -> System.out.printf("[%6.1fs] %s%n", (System.nanoTime() - t0) / 1e9, line)).run();
    System.out.println(ScaleOutRun.report(result));
  }

  @Test
  void noCheckFails() {
    assertThat(result.failedChecks()).as("checks with verdict FAIL").isEmpty();
    assertThat(result.checks()).hasSizeGreaterThanOrEqualTo(10);
  }

  @Test
  void everyJobThatMustSucceedUsedBothTaskManagersAndTheirOwnRecyclers() {
    List<Job> ok = result.jobs().stream().filter(j -> !j.name().startsWith("scale03")).toList();
    assertThat(ok).hasSize(3).allSatisfy(j -> {
      assertThat(j.exitCode()).as(j.name()).isZero();
      assertThat(j.outputMatches()).as(j.name() + " output").isTrue();
      assertThat(j.flinkState()).isEqualTo("FINISHED");
      assertThat(j.flinkTaskManagers()).as(j.name() + " TaskManagers").hasSize(2);
      assertThat(j.leasesPerTm()).as(j.name() + " leases per TaskManager").containsOnlyKeys("tm-a", "tm-b")
          .allSatisfy((tm, n) -> assertThat(n).isPositive());
    });
  }

  @Test
  void eachRecyclerLeasedOnlyItsOwnSlots() {
    assertThat(result.leases().get("tm-a")).isNotEmpty().allSatisfy(l -> assertThat(l.slot()).startsWith("a-slot-"));
    assertThat(result.leases().get("tm-b")).isNotEmpty().allSatisfy(l -> assertThat(l.slot()).startsWith("b-slot-"));
  }

  @Test
  void theHeldJobWasCancelledAndTheSurvivorsLeaseWasEndedByItsOwnRunner() {
    Job killed = result.jobs().stream().filter(j -> j.name().startsWith("scale03")).findFirst().orElseThrow();
    assertThat(killed.exitCode()).as("launcher of the held job, cancelled after the kill").isNotZero();
    assertThat(result.killedTaskManager()).isIn("tm-a", "tm-b");
    String survivor = result.killedTaskManager().equals("tm-a") ? "tm-b" : "tm-a";
    assertThat(result.leases().get(survivor)).filteredOn(l -> l.jobName().startsWith("scale03"))
        .isNotEmpty().allSatisfy(l -> assertThat(l.endReason()).isIn("RUNNER_CLOSED", "STOP_WORKER", "CANCELLED"));
  }
}
