package dev.recycler.e2e;

import dev.recycler.e2e.EndToEndResult.Check;
import dev.recycler.e2e.EndToEndResult.JobRun;
import dev.recycler.e2e.EndToEndResult.Transfers;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;

/**
 * The README's demo ({@code bash .ci/demo}): one {@link EndToEndRun} with a readable progress display, then the jobs,
 * the checks, the artifact figures and the slot timeline. Exit code 0 when every check passed, 1 otherwise.
 *
 * <p>Arguments: {@code [--slots N] [--work-dir DIR] [--repo-root DIR]}; the binaries' paths follow {@link
 * EndToEndRun.Settings#checkout(Path)} (system properties override them).
 */
public final class Demo {
  private Demo() {}

  public static void main(String[] args) throws Exception {
    int slots = 3;
    Path workDir = Path.of(System.getProperty("java.io.tmpdir"), "recycler-demo");
    Path repoRoot = Path.of("").toAbsolutePath();
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--slots" -> slots = Integer.parseInt(args[++i]);
        case "--work-dir" -> workDir = Path.of(args[++i]);
        case "--repo-root" -> repoRoot = Path.of(args[++i]);
        default -> {
          System.err.println("usage: Demo [--slots N] [--work-dir DIR] [--repo-root DIR]");
          System.exit(2);
        }
      }
    }
    long t0 = System.nanoTime();
    EndToEndRun run = EndToEndRun.settings()
        .slots(slots)
        .workDirectory(workDir)
        .checkout(repoRoot)
        .progress(line -> System.out.printf(Locale.ROOT, "[%6.1fs] %s%n", (System.nanoTime() - t0) / 1e9, line))
        .build();
    EndToEndResult r = run.run();
    System.out.println();
    System.out.print(report(r));
    System.exit(r.passed() ? 0 : 1);
  }

  /** The end-of-run summary: jobs, checks, transfer figures, timings and the slot timeline. */
  static String report(EndToEndResult r) {
    StringBuilder b = new StringBuilder();
    b.append("JOBS\n");
    b.append(String.format(Locale.ROOT, "%-22s %-20s %7s  %-7s %-12s %8s  %-9s %s%n", "job", "scenario", "wall",
        "slot", "worker id", "ready", "Flink", "result"));
    for (JobRun j : r.jobs()) {
      b.append(String.format(Locale.ROOT, "%-22s %-20s %6.1fs  %-7s %-12s %8s  %-9s %s%n", j.name(),
          j.scenario().name().toLowerCase(Locale.ROOT), j.wallTime().toMillis() / 1000.0,
          j.lease().map(LeaseRecord::slot).orElse("-"), j.lease().map(LeaseRecord::workerId).orElse("-"),
          j.lease().map(l -> l.readyLatencyMillis() + "ms").orElse("-"), j.flinkState(),
          j.scenario().mustSucceed() ? (j.succeeded() ? "ok: " : "FAILED: ") + j.note() : j.note()));
    }
    b.append("\nCHECKS\n");
    for (Check c : r.checks()) {
      b.append(String.format(Locale.ROOT, "  %-10s %s%n             %s%n", c.verdict(), c.name(), c.detail()));
    }
    Transfers x = r.transfers();
    b.append("\nWORKER BINARY TRANSFERS (recycler meters)\n");
    b.append(String.format(Locale.ROOT, "  binary size                %,d bytes%n", x.binaryBytes()));
    b.append(String.format(Locale.ROOT, "  runner -> recycler         %d fetches, %,d bytes (%d jobs with leases)%n",
        x.upstreamFetches(), x.upstreamBytes(), x.jobsLeased()));
    b.append(String.format(Locale.ROOT, "  read in place (staged file) %,d bytes (hashing each job's file, one copy per content)%n",
        x.localBytes()));
    b.append(String.format(Locale.ROOT, "  recycler -> wrappers       %d transfers, %,d bytes (%d slots used)%n",
        x.servedTransfers(), x.servedBytes(), x.slotsLeased()));
    b.append("\nTIMINGS\n");
    b.append(String.format(Locale.ROOT, "  cluster start %s, job server start %s, whole run %s%n",
        secs(r.clusterStart()), secs(r.jobServerStart()), secs(r.total())));
    b.append("\nSLOT TIMELINE (times relative to the run's start; ready = StartWorker to the worker's control"
        + " connection)\n");
    b.append(r.timeline());
    b.append("\nlogs: ").append(r.workDirectory()).append('\n');
    b.append(r.passed() ? "RESULT: all checks passed\n" : "RESULT: " + r.failedChecks().size() + " check(s) FAILED\n");
    return b.toString();
  }

  private static String secs(Duration d) {
    return String.format(Locale.ROOT, "%.1f s", d.toMillis() / 1000.0);
  }
}
