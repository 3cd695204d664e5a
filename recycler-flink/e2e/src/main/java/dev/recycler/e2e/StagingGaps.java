package dev.recycler.e2e;

import dev.recycler.e2e.EndToEndResult.JobRun;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * The real gap between a job's staging and its first lease: for each job's first lease, the staged binary's
 * modification time (when the job server finished writing it) to the StartWorker call, and whether the recycler had
 * its digest ready then (hashed at staging time) or had to hash on the lease's path. Read from the recycler's own log
 * lines in the TaskManager log ({@code staged_at=}, {@code digest_ready=}), matched to the lease by slot and
 * generation. A figure, printed with the run; nothing here is asserted.
 */
final class StagingGaps {
  private static final Pattern LINE = Pattern.compile(
      "lease=(\\d+) runner_worker=\\S+ staged_at=(\\d+) digest_ready=(true|false)(?: waited_ms=(\\d+))?");
  /** A lease is identified while it waits for its slot, so its log lines name it by sequence number until then. */
  private static final Pattern ASSIGNED =
      Pattern.compile("lease assigned slot=(\\S+) generation=(\\d+) .* lease=(\\d+)");

  /** One job's first lease: gap in ms (staged to StartWorker), digest ready, ms waited for a running staging hash. */
  record Gap(String job, long gapMillis, boolean digestReady, long waitedMillis, long readyLatencyMillis) {}

  private StagingGaps() {}

  static List<Gap> of(Path taskManagerLog, List<JobRun> jobs) throws IOException {
    Map<String, Matcher> bySequence = new HashMap<>();
    Map<String, Matcher> bySlotGeneration = new HashMap<>();
    try (Stream<String> lines = Files.lines(taskManagerLog)) {
      lines.forEach(line -> {
        Matcher m = LINE.matcher(line);
        if (m.find()) {
          bySequence.putIfAbsent(m.group(1), m); // the lease's first line says it
        }
        Matcher a = ASSIGNED.matcher(line);
        if (a.find() && bySequence.containsKey(a.group(3))) {
          bySlotGeneration.putIfAbsent(a.group(1) + "/" + a.group(2), bySequence.get(a.group(3)));
        }
      });
    }
    List<Gap> gaps = new ArrayList<>();
    for (JobRun j : jobs) {
      Optional<LeaseRecord> first = j.lease();
      if (first.isEmpty()) {
        continue;
      }
      Matcher m = bySlotGeneration.get(first.get().slot() + "/" + first.get().generation());
      if (m == null) {
        continue; // no in-place identification logged for it (streamed, or the log rolled)
      }
      gaps.add(new Gap(j.name(), first.get().startMillis() - Long.parseLong(m.group(2)),
          Boolean.parseBoolean(m.group(3)), m.group(4) == null ? 0 : Long.parseLong(m.group(4)),
          first.get().readyLatencyMillis()));
    }
    return gaps;
  }

  /**
   * A job's leases after its first (its later environments on this TaskManager): how many adopted a standby worker,
   * and lease-to-ready p50 of those that did and those that did not, beside the first leases'. A figure.
   */
  static String laterLeases(List<JobRun> jobs) {
    List<Long> first = new ArrayList<>();
    List<Long> adopted = new ArrayList<>();
    List<Long> booted = new ArrayList<>();
    for (JobRun j : jobs) {
      List<LeaseRecord> leases = j.leases().stream().filter(l -> l.readyLatencyMillis() >= 0)
          .sorted(java.util.Comparator.comparingLong(LeaseRecord::startMillis)).toList();
      for (int i = 0; i < leases.size(); i++) {
        (i == 0 ? first : leases.get(i).standby() ? adopted : booted).add(leases.get(i).readyLatencyMillis());
      }
    }
    return String.format("leases after each job's first: %d, of which %d adopted the job's standby worker;"
        + " lease-to-ready p50: adopted %s ms, booted %s ms (first leases: %s ms, %d)", adopted.size() + booted.size(),
        adopted.size(), p50(adopted), p50(booted), p50(first), first.size());
  }

  private static String p50(List<Long> xs) {
    if (xs.isEmpty()) {
      return "-";
    }
    long[] sorted = xs.stream().mapToLong(Long::longValue).sorted().toArray();
    return Long.toString(sorted[(sorted.length - 1) / 2]);
  }

  /** Per job and the summary: gap min / p50 / max, digests ready, first lease lease-to-ready p50. */
  static String format(List<Gap> gaps, int jobsWithLeases) {
    if (gaps.isEmpty()) {
      return "staging -> first StartWorker: no in-place identification found in the TaskManager log";
    }
    StringBuilder b = new StringBuilder("staging -> first StartWorker, per job (gap ms, digest ready at the lease"
        + " or waited ms for the staging-time hash, first lease ready ms):");
    for (Gap g : gaps) {
      b.append(String.format("%n  %-24s gap %6d  %-18s ready %5d", g.job(), g.gapMillis(),
          g.digestReady() ? "digest ready" : g.waitedMillis() > 0 ? "waited " + g.waitedMillis() + " ms"
              : "hashed at lease", g.readyLatencyMillis()));
    }
    long[] sorted = gaps.stream().mapToLong(Gap::gapMillis).sorted().toArray();
    long[] ready = gaps.stream().mapToLong(Gap::readyLatencyMillis).filter(x -> x >= 0).sorted().toArray();
    b.append(String.format("%n  %d of %d jobs with leases: gap min %d / p50 %d / max %d ms; digest ready before"
            + " StartWorker for %d; first lease lease-to-ready p50 %s ms", gaps.size(), jobsWithLeases, sorted[0],
        sorted[(sorted.length - 1) / 2], sorted[sorted.length - 1], gaps.stream().filter(Gap::digestReady).count(),
        ready.length == 0 ? "-" : Long.toString(ready[(ready.length - 1) / 2])));
    return b.toString();
  }
}
