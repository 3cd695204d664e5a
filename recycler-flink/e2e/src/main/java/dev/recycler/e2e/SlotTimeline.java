package dev.recycler.e2e;

import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.Comparator;
import java.util.List;

/**
 * Formats lease records as the slot timeline: one row per lease, in start order, with times relative to the run's
 * start so concurrent leases are easy to spot; {@code (standby)} after the ready time marks a lease that adopted the
 * job's standby worker.
 *
 * <pre>{@code
 * slot      gen  job             worker id    runner      pid  start (UTC)     start    ready      end     held  exit reason
 * slot-0      1  e2e01wordcount  slot-0.g1    1-1       28176  08:01:28.298   +22.8s   2240ms   +25.6s     2.7s  RUNNER_CLOSED (exited on instruction, SIGTERM)
 * }</pre>
 */
public final class SlotTimeline {
  private static final DateTimeFormatter CLOCK = DateTimeFormatter.ofPattern("HH:mm:ss.SSS").withZone(ZoneOffset.UTC);

  private SlotTimeline() {}

  /** The table; {@code originMillis} is the wall-clock zero of the relative columns. */
  public static String format(List<LeaseRecord> leases, long originMillis) {
    List<LeaseRecord> rows = leases.stream()
        .sorted(Comparator.comparingLong(LeaseRecord::startMillis).thenComparing(LeaseRecord::slot)).toList();
    int jobWidth = Math.max(3, rows.stream().mapToInt(l -> shortName(l.jobName()).length()).max().orElse(3));
    String fmt = "%-8s %4s  %-" + jobWidth + "s  %-12s %-6s %8s  %-12s %8s %18s %8s %8s  %s%n";
    StringBuilder b = new StringBuilder();
    b.append(String.format(fmt, "slot", "gen", "job", "worker id", "runner", "pid", "start (UTC)", "start", "ready",
        "end", "held", "exit reason"));
    for (LeaseRecord l : rows) {
      String job = l.jobName().isEmpty() ? "-" : shortName(l.jobName());
      String pid = l.workerPid() > 0 ? Long.toString(l.workerPid()) : "-";
      b.append(String.format(fmt, l.slot(), l.generation(), job, l.workerId(), l.runnerWorkerId(), pid,
          CLOCK.format(Instant.ofEpochMilli(l.startMillis())), relative(l.startMillis(), originMillis),
          l.readyLatencyMillis() >= 0 ? l.readyLatencyMillis() + "ms" + (l.standby() ? " (standby)" : "") : "never",
          l.ended() ? relative(l.endMillis(), originMillis) : "-",
          l.ended() ? seconds(l.endMillis() - l.startMillis()) : "-",
          l.exitDescription()));
    }
    return b.toString();
  }

  /**
   * The job's name without the suffix Beam's job server appends ({@code -<user>-<MMddHHmmss>-<hash>}), e.g. {@code
   * e2e01wordcount} for {@code e2e01wordcount-root-1124080117-2ca8e2b}.
   */
  static String shortName(String jobName) {
    return jobName.replaceFirst("-[^-]+-\\d{10}-[0-9a-f]+$", "");
  }

  private static String relative(long millis, long origin) {
    return "+" + seconds(millis - origin);
  }

  private static String seconds(long millis) {
    return String.format("%.1fs", millis / 1000.0);
  }
}
