package dev.recycler.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import dev.recycler.e2e.EndToEndResult.JobRun;
import dev.recycler.e2e.EndToEndResult.Scenario;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The timeline table, job-name matching and the overlap measure the end-to-end checks rely on. */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class SlotTimelineTest {
  private static final long T0 = 1_795_507_000_000L;

  @Test
  void formatsOneRowPerLeaseInStartOrderWithRelativeTimes() {
    LeaseRecord second = lease("slot-1", 1, "e2e02groupside-root-1124080132-1752fe4", 200, 5_000, 9_000,
        "RUNNER_CLOSED", "EXITED_ON_INSTRUCTION", -1, "SIGTERM");
    LeaseRecord first = lease("slot-0", 1, "e2e01wordcount-root-1124080117-2ca8e2b", 100, 1_000, 3_500,
        "WORKER_LOST", "WORKER_EXITED", -1, "SIGKILL");
    String table = SlotTimeline.format(List.of(second, first), T0);

    List<String> lines = table.lines().toList();
    assertThat(lines).hasSize(3);
    assertThat(lines.get(0)).startsWith("slot").contains("worker id", "ready", "exit reason");
    assertThat(lines.get(1)).startsWith("slot-0").contains("e2e01wordcount ", "slot-0.g1", "+1.0s", "100ms",
        "+3.5s", "2.5s", "WORKER_LOST (worker exited, SIGKILL)").doesNotContain("-root-");
    assertThat(lines.get(2)).startsWith("slot-1").contains("e2e02groupside ", "+5.0s", "200ms",
        "RUNNER_CLOSED (exited on instruction, SIGTERM)");
  }

  @Test
  void aLeaseThatAdoptedItsJobsStandbySaysSo() {
    LeaseRecord booted = lease("slot-0", 1, "job", 120, 1_000, 2_000, "RUNNER_CLOSED", "EXITED_ON_INSTRUCTION", -1,
        "SIGTERM");
    LeaseRecord adopted = new LeaseRecord("slot-0", 2, "2-1", "slot-0.g2", "job", 4002, T0 + 3_000, 12, T0 + 4_000,
        "RUNNER_CLOSED", "EXITED_ON_INSTRUCTION", -1, "SIGTERM", "", true);
    List<String> rows = SlotTimeline.format(List.of(booted, adopted), T0).lines().skip(1).toList();
    assertThat(rows.get(0)).contains("120ms").doesNotContain("standby");
    assertThat(rows.get(1)).contains("12ms (standby)");
  }

  @Test
  void runningAndNeverReadyLeasesAreShownAsSuch() {
    LeaseRecord running = lease("slot-0", 3, "job", -1, 1_000, 0, "", "", 0, "");
    String row = SlotTimeline.format(List.of(running), T0).lines().skip(1).findFirst().orElseThrow();
    assertThat(row).contains("never", "running");
  }

  @Test
  void jobNamesMatchBeamsDecoratedNamesOnly() {
    assertThat(SessionRig.matchesJob("e2e01wordcount-root-1124080117-2ca8e2b", "e2e01wordcount")).isTrue();
    assertThat(SessionRig.matchesJob("e2e01wordcount", "e2e01wordcount")).isTrue();
    assertThat(SessionRig.matchesJob("e2e010wordcount-root-1124080117-2ca8e2b", "e2e01wordcount")).isFalse();
    assertThat(SessionRig.matchesJob("", "e2e01wordcount")).isFalse();
  }

  @Test
  void maxConcurrentJobsCountsJobsHoldingALeaseAtTheSameInstant() {
    JobRun a = job("a", lease("slot-0", 1, "a", 100, 0, 10_000, "RUNNER_CLOSED", "", 0, ""));
    JobRun b = job("b", lease("slot-1", 1, "b", 100, 5_000, 12_000, "RUNNER_CLOSED", "", 0, ""));
    JobRun c = job("c", lease("slot-2", 1, "c", 100, 11_000, 13_000, "RUNNER_CLOSED", "", 0, ""));
    assertThat(EndToEndResult.maxConcurrentJobs(List.of(a, b, c))).isEqualTo(2);
    assertThat(EndToEndResult.maxConcurrentJobs(List.of(a, c))).isEqualTo(1);
  }

  private static JobRun job(String name, LeaseRecord lease) {
    return new JobRun(Scenario.CONCURRENT, name, "wordcount", 0, Duration.ofSeconds(1), true, "id", "FINISHED",
        Optional.of(lease), List.of(lease), "ok");
  }

  private static LeaseRecord lease(String slot, long gen, String job, long ready, long startOffset, long endOffset,
      String reason, String outcome, int exit, String signal) {
    return new LeaseRecord(slot, gen, "1-1", slot + ".g" + gen, job, 4000 + gen, T0 + startOffset, ready,
        endOffset == 0 ? 0 : T0 + endOffset, reason, outcome, exit, signal, "", false);
  }
}
