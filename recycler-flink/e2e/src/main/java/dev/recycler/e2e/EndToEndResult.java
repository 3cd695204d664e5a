package dev.recycler.e2e;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * What one {@link EndToEndRun} did and verified: every job, every lease record, the artifact transfer figures, the
 * checks with their verdicts, and the timings. Immutable.
 *
 * @param originMillis wall-clock time the run started (the timeline's zero)
 * @param workDirectory where the run kept its logs (Flink, job server, wrappers, launchers) and outputs
 */
public record EndToEndResult(
    int slots,
    List<JobRun> jobs,
    List<LeaseRecord> leases,
    List<Check> checks,
    Map<String, Long> wrapperPids,
    Transfers transfers,
    Duration clusterStart,
    Duration jobServerStart,
    Duration total,
    long originMillis,
    String workDirectory) {

  /**
   * The first lease on {@code after}'s slot, started after it, of a job that must succeed (not another incident of
   * the run: a failing, cancelled or killed job), as {@code leases} (the slot table's final records) show it.
   */
  public static Optional<LeaseRecord> nextOnSlot(List<JobRun> jobs, List<LeaseRecord> leases, LeaseRecord after) {
    java.util.Set<String> mustSucceed = new java.util.HashSet<>();
    jobs.stream().filter(j -> j.scenario().mustSucceed()).forEach(j -> j.leases().forEach(l -> mustSucceed.add(
        l.workerId())));
    return leases.stream().filter(l -> mustSucceed.contains(l.workerId()) && l.slot().equals(after.slot())
        && l.startMillis() > after.startMillis()).min(java.util.Comparator.comparingLong(LeaseRecord::startMillis));
  }

  /** Whether a lease's worker became ready and stopped on the exit instruction after the runner closed or stopped it. */
  public static boolean endedNormally(LeaseRecord l) {
    return l.readyLatencyMillis() >= 0 && (l.endReason().equals("RUNNER_CLOSED") || l.endReason().equals("STOP_WORKER"))
        && l.outcome().contains("EXITED_ON_INSTRUCTION");
  }

  /** The scenario a job belongs to. */
  public enum Scenario {
    SUCCESSIVE, CONCURRENT, FAILING, AFTER_FAILING, CANCELLED, AFTER_CANCELLED, WORKER_KILLED_EARLY, WORKER_KILLED,
    AFTER_WORKER_KILLED;

    /** Jobs of this scenario must succeed with exactly the expected output. */
    public boolean mustSucceed() {
      return this != FAILING && this != CANCELLED && this != WORKER_KILLED && this != WORKER_KILLED_EARLY;
    }
  }

  /**
   * One launcher run.
   *
   * @param exitCode of the launcher: 0 success, 1 failed/cancelled, -1 killed by the run after its timeout
   * @param outputMatches the output file equals the expected text exactly (false if there is none)
   * @param flinkState the Flink job's final state (FINISHED, FAILED, CANCELED), or "?" if it was not found
   * @param lease the recycler's first lease record of this job, if any
   * @param leases all its lease records: Beam's Flink runner starts a new environment (StartWorker) for each batch
   *     stage that runs after the previous one released its environment, so a job may have several
   * @param note what happened, in words (for the display and failures)
   */
  public record JobRun(Scenario scenario, String name, String pipeline, int exitCode, Duration wallTime,
      boolean outputMatches, String flinkJobId, String flinkState, Optional<LeaseRecord> lease,
      List<LeaseRecord> leases, String note) {
    public boolean succeeded() {
      return exitCode == 0 && outputMatches;
    }
  }

  /** Verdict of one verified property. {@code LIMITATION}: measured and documented, not what the design wants. */
  public enum Verdict { PASS, FAIL, LIMITATION }

  public record Check(String name, Verdict verdict, String detail) {
    public boolean failed() {
      return verdict == Verdict.FAIL;
    }
  }

  /**
   * Bytes of the worker binary that crossed each hop, from the recycler's meters.
   *
   * @param binaryBytes size of the pipelines binary (the worker)
   * @param distinctBinaries distinct worker binaries the jobs staged (all jobs use the same binary: 1)
   * @param upstreamFetches runner to recycler: completed downloads ({@code recycler_artifact_upstream_bytes_count})
   * @param upstreamBytes their bytes ({@code ..._sum})
   * @param servedTransfers recycler to wrappers: artifacts sent ({@code recycler_artifact_served_bytes_count})
   * @param servedBytes their bytes
   * @param slotsLeased slots that had at least one lease
   * @param jobsLeased jobs that got at least one lease
   */
  public record Transfers(long binaryBytes, int distinctBinaries, long upstreamFetches, long upstreamBytes,
      long servedTransfers, long servedBytes, long localBytes, int slotsLeased, int jobsLeased) {}

  /** The most jobs of {@code runs} that held a lease at the same instant (checked at each lease's ready time). */
  public static int maxConcurrentJobs(List<JobRun> runs) {
    int best = 0;
    for (JobRun a : runs) {
      for (LeaseRecord l : a.leases()) {
        long at = l.startMillis() + Math.max(0, l.readyLatencyMillis());
        int n = 0;
        for (JobRun b : runs) {
          if (b.leases().stream().anyMatch(x -> x.startMillis() <= at && at < (x.ended() ? x.endMillis()
              : Long.MAX_VALUE))) {
            n++;
          }
        }
        best = Math.max(best, n);
      }
    }
    return best;
  }

  public boolean passed() {
    return checks.stream().noneMatch(Check::failed);
  }

  public List<Check> failedChecks() {
    return checks.stream().filter(Check::failed).toList();
  }

  /** The slot timeline table of all leases. */
  public String timeline() {
    return SlotTimeline.format(leases, originMillis);
  }
}
