package dev.recycler.core.bench;

import dev.recycler.core.bench.LeaseBenchmark.ResourceRow;
import dev.recycler.core.bench.LeaseBenchmark.Results;
import dev.recycler.core.bench.LeaseBenchmark.RunResult;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Optional;

/** The results as Markdown (printed, and {@code results.md}) and CSV files for the plots. */
final class Report {
  private static final double MB = 1e6;

  private Report() {}

  private static String f(double v) {
    return Double.isNaN(v) ? "n/a" : String.format(Locale.ROOT, v >= 100 ? "%.0f" : "%.1f", v);
  }

  static String markdown(Results r) {
    StringBuilder b = new StringBuilder();
    b.append("## Lease benchmark results\n\n```\n").append(r.machine()).append("```\n\n");
    b.append("| subject | run | binary | slots | leases ready | ready p50 ms | p95 | p99 | first answer p50 ms | p95 "
        + "| p99 | release p50 ms | p95 | p99 | runner->harness MB/lease | recycler->wrapper MB/lease | CPU s/lease "
        + "| leftover procs | zombies | leftover files (MB) | load 1m |\n");
    b.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for (RunResult x : r.runs()) {
      int n = x.samples().size();
      b.append(String.format(Locale.ROOT, "| %s | %s%s | %s | %d | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %s "
              + "| %s | %s | %s | %d | %d | %d (%s) | %s |%n",
          x.subject(), x.run(), x.concurrency() > 1 ? " (" + x.concurrency() + " at a time)" : "", x.binary(),
          x.slots(), x.ok(), n, f(x.ready().p(50)), f(x.ready().p(95)), f(x.ready().p(99)),
          f(x.firstAnswer().p(50)), f(x.firstAnswer().p(95)), f(x.firstAnswer().p(99)), f(x.release().p(50)),
          f(x.release().p(95)), f(x.release().p(99)), x.runnerBytes() < 0 ? "n/a" : f(x.runnerBytes() / MB / n),
          x.secondHopBytes() < 0 ? "n/a" : x.subject().startsWith("recycler") ? f(x.secondHopBytes() / MB / n) : "-",
          Double.isNaN(x.cpuSeconds()) ? "n/a" : String.format(Locale.ROOT, "%.3f", x.cpuSeconds() / n),
          x.leftovers().processes(), x.leftovers().zombies(), x.leftovers().files(),
          f(x.leftovers().fileBytes() / MB), x.load()));
    }
    b.append("\nCPU: ");
    r.runs().stream().map(x -> x.subject() + " = " + x.cpuNote()).distinct()
        .forEach(s -> b.append(s).append("; "));
    b.append("read from /proc/PID/stat (utime+stime+cutime+cstime, 10 ms ticks); the harness JVM is excluded.\n");
    List<String> failures = new ArrayList<>();
    for (RunResult x : r.runs()) {
      x.samples().stream().filter(s -> !s.ok()).limit(3)
          .forEach(s -> failures.add(x.subject() + " / " + x.run() + " #" + s.index() + ": " + s.error()));
    }
    if (!failures.isEmpty()) {
      b.append("\nFailed leases (first 3 per run):\n");
      failures.forEach(s -> b.append("- ").append(s).append('\n'));
    }
    List<String> details = new ArrayList<>();
    for (RunResult x : r.runs()) {
      if (!x.leftovers().details().isEmpty()) {
        details.add(x.subject() + " / " + x.run() + ": " + String.join("; ", x.leftovers().details()));
      }
    }
    if (!details.isEmpty()) {
      b.append("\nLeftovers, examples:\n");
      details.forEach(s -> b.append("- ").append(s).append('\n'));
    }
    b.append("\n| subject | long-lived process | moment | leases | CPU s (cumulative) | fds | threads | RSS MB |\n");
    b.append("|---|---|---|---:|---:|---:|---:|---:|\n");
    for (ResourceRow x : r.resources()) {
      b.append(String.format(Locale.ROOT, "| %s | %s | %s | %d | %.2f | %d | %d | %.1f |%n", x.subject(),
          x.process(), x.moment(), x.leasesSoFar(), x.usage().ticks() / (double) ProcFs.TICKS_PER_SECOND,
          x.usage().fds(), x.usage().threads(), x.usage().rssKb() / 1024.0));
    }
    r.breakdowns().forEach((title, br) -> b.append("\nThis project, where the time goes: ").append(title)
        .append("\n\n").append(br.markdown()));
    b.append('\n').append(targets(r));
    if (!r.notes().isEmpty()) {
      b.append("\nNotes:\n");
      r.notes().forEach(s -> b.append("- ").append(s).append('\n'));
    }
    return b.toString();
  }

  private static Optional<RunResult> find(Results r, String subject, String run, String binary) {
    return r.runs().stream().filter(x -> x.subject().equals(subject) && x.run().equals(run)
        && x.binary().equals(binary)).findFirst();
  }

  private static Optional<RunResult> find(Results r, String subject, String run) {
    return r.runs().stream().filter(x -> x.subject().equals(subject) && x.run().equals(run)).findFirst();
  }

  static String targets(Results r) {
    StringBuilder b = new StringBuilder("| target | measured | met? |\n|---|---|---|\n");
    for (String bin : r.runs().stream().filter(x -> x.run().startsWith("paired new job")).map(RunResult::binary)
        .distinct().toList()) {
      Optional<RunResult> pf = find(r, "floor", "paired new job (alternating)", bin);
      Optional<RunResult> pw = find(r, "recycler", "paired warm (alternating)", bin);
      Optional<RunResult> pws = find(r, "recycler", "paired warm, standby (alternating)", bin);
      Optional<RunResult> pin = find(r, "recycler", "paired new job, in place (alternating)", bin);
      Optional<RunResult> pst = find(r, "recycler", "paired new job, streamed (alternating)", bin);
      Optional<RunResult> pcold = find(r, "recycler", "paired cold, in place (alternating)", bin);
      Optional<RunResult> pb = find(r, "beam-pool", "paired new job (alternating)", bin);
      if (pb.isEmpty()) {
        continue;
      }
      RunResult beam = pb.get();
      record Target(String name, Optional<RunResult> x, double limit) {}
      for (Target t : List.of(
          new Target("new job, the slot already holds the content (in place): p50 <= 0.2 x Beam's pool", pin, 0.2),
          new Target("new job, streamed fallback (for reference, against the in-place target): p50 <= 0.2 x Beam's "
              + "pool", pst, 0.2),
          new Target("new job, bytes crossing once (new content, in place): p50 <= 0.6 x Beam's pool", pcold, 0.6))) {
        if (t.x().isPresent()) {
          RunResult x = t.x().get();
          double q = x.ready().p(50) / beam.ready().p(50);
          double qa = x.firstAnswer().p(50) / beam.firstAnswer().p(50);
          b.append(String.format(Locale.ROOT, "| %s [%s] | lease-to-ready %.1f vs %.1f ms: %.2f x; to first answer "
                  + "%.1f vs %.1f ms: %.2f x | %s / %s |%n", t.name(), bin, x.ready().p(50), beam.ready().p(50), q,
              x.firstAnswer().p(50), beam.firstAnswer().p(50), qa, q <= t.limit() ? "yes" : "no",
              qa <= t.limit() ? "yes" : "no"));
        }
      }
      for (Optional<RunResult> x : List.of(pin, pst, pcold)) {
        if (x.isPresent()) {
          double q = x.get().cpuSeconds() / x.get().samples().size()
              / (beam.cpuSeconds() / beam.samples().size());
          b.append(String.format(Locale.ROOT, "| CPU per new-job lease <= 0.5 x Beam's (%s) [%s] | %.3f vs %.3f "
                  + "s/lease: %.2f x | %s |%n", x.get().run().replace(" (alternating)", ""), bin,
              x.get().cpuSeconds() / x.get().samples().size(), beam.cpuSeconds() / beam.samples().size(), q,
              q <= 0.5 ? "yes" : "no"));
        }
      }
      record Warm(String name, Optional<RunResult> x) {}
      for (Warm w : List.of(new Warm("warm lease within 5 ms of the floor (p50), the job's standby worker adopted", pws),
          new Warm("(for reference) warm lease without a standby (--standby-ttl 0)", pw))) {
        if (pf.isPresent() && w.x().isPresent()) {
          RunResult x = w.x().get();
          double d = x.ready().p(50) - pf.get().ready().p(50);
          double da = x.firstAnswer().p(50) - pf.get().firstAnswer().p(50);
          b.append(String.format(Locale.ROOT, "| %s [%s] | lease-to-ready %.1f vs %.1f ms: %+.1f ms; to first answer"
                  + " %.1f vs %.1f ms: %+.1f ms | %s / %s |%n", w.name(), bin, x.ready().p(50),
              pf.get().ready().p(50), d, x.firstAnswer().p(50), pf.get().firstAnswer().p(50), da, d <= 5 ? "yes" : "no",
              da <= 5 ? "yes" : "no"));
        }
      }
    }
    Optional<RunResult> floor = find(r, "floor", "successive");
    Optional<RunResult> warm = find(r, "recycler", "warm");
    Optional<RunResult> pairedFloor = find(r, "floor", "paired (alternating)");
    Optional<RunResult> pairedWarm = find(r, "recycler", "paired warm (alternating)");
    if (pairedFloor.isPresent() && pairedWarm.isPresent()) {
      double d = pairedWarm.get().ready().p(50) - pairedFloor.get().ready().p(50);
      b.append(String.format(Locale.ROOT, "| p50 warm lease-to-ready within 15 ms of the floor (paired run) | %.1f ms "
          + "vs %.1f ms: %+.1f ms | %s |%n", pairedWarm.get().ready().p(50), pairedFloor.get().ready().p(50), d,
          d <= 15 ? "yes" : "no"));
    }
    Optional<RunResult> beam = find(r, "beam-pool", "successive");
    if (floor.isPresent() && warm.isPresent()) {
      double d = warm.get().ready().p(50) - floor.get().ready().p(50);
      b.append(String.format(Locale.ROOT, "| p50 warm lease-to-ready within 15 ms of the floor (separate runs) | %.1f ms vs "
          + "%.1f ms: %+.1f ms | %s |%n", warm.get().ready().p(50), floor.get().ready().p(50), d, d <= 15 ? "yes" : "no"));
    }
    Optional<RunResult> pairedBeam = find(r, "beam-pool", "paired (alternating)");
    if (pairedBeam.isPresent() && pairedWarm.isPresent()) {
      double q = pairedWarm.get().ready().p(50) / pairedBeam.get().ready().p(50);
      b.append(String.format(Locale.ROOT, "| p50 warm lease-to-ready <= 0.2 x Beam's pool (paired run) | %.1f ms vs "
          + "%.1f ms: %.2f x | %s |%n", pairedWarm.get().ready().p(50), pairedBeam.get().ready().p(50), q,
          q <= 0.2 ? "yes" : "no"));
    }
    if (beam.isPresent() && warm.isPresent()) {
      double q = warm.get().ready().p(50) / beam.get().ready().p(50);
      b.append(String.format(Locale.ROOT, "| p50 warm lease-to-ready <= 0.2 x Beam's pool (separate runs) | %.1f ms vs %.1f ms: "
          + "%.2f x | %s |%n", warm.get().ready().p(50), beam.get().ready().p(50), q, q <= 0.2 ? "yes" : "no"));
    }
    Optional<RunResult> lng = r.runs().stream().filter(x -> x.subject().equals("recycler (long)")).findFirst();
    if (lng.isPresent()) {
      RunResult x = lng.get();
      b.append(String.format(Locale.ROOT, "| zero leftover processes and zombies after %d leases | %d processes, %d "
          + "zombies, %d lease dirs (%d/%d leases ready) | %s |%n", x.samples().size(), x.leftovers().processes(),
          x.leftovers().zombies(), x.leftovers().files(), x.ok(), x.samples().size(),
          x.leftovers().processes() == 0 && x.leftovers().zombies() == 0 ? "yes" : "no"));
      List<ResourceRow> rows = r.resources().stream().filter(y -> y.subject().equals("recycler (long)")).toList();
      for (String proc : rows.stream().map(ResourceRow::process).distinct().toList()) {
        List<ResourceRow> p = rows.stream().filter(y -> y.process().equals(proc)).toList();
        ProcFs.Usage first = p.get(0).usage();
        ProcFs.Usage last = p.get(p.size() - 1).usage();
        double growth = 100.0 * (last.rssKb() - first.rssKb()) / first.rssKb();
        b.append(String.format(Locale.ROOT, "| %s: fds and threads flat | fds %d -> %d, threads %d -> %d | %s |%n",
            proc, first.fds(), last.fds(), first.threads(), last.threads(),
            first.fds() == last.fds() && first.threads() == last.threads() ? "yes"
                : Math.abs(last.fds() - first.fds()) <= 2 && Math.abs(last.threads() - first.threads()) <= 3
                    ? "yes (within noise)" : "no"));
        b.append(String.format(Locale.ROOT, "| %s: RSS growth < 5 %% | %.1f MB -> %.1f MB: %+.1f %% | %s |%n", proc,
            first.rssKb() / 1024.0, last.rssKb() / 1024.0, growth, growth < 5 ? "yes" : "no"));
        ProcFs.Usage mid = p.get(p.size() / 2).usage();
        b.append(String.format(Locale.ROOT, "| (for the curve) %s: RSS from lease %d to %d | %.1f MB -> %.1f MB: %+.1f %% "
            + "| - |%n", proc, p.get(p.size() / 2).leasesSoFar(), p.get(p.size() - 1).leasesSoFar(),
            mid.rssKb() / 1024.0, last.rssKb() / 1024.0, 100.0 * (last.rssKb() - mid.rssKb()) / mid.rssKb()));
      }
    }
    return b.toString();
  }

  static void write(Path out, Results r) throws IOException {
    Files.createDirectories(out);
    StringBuilder s = new StringBuilder(
        "subject,run,binary,concurrency,index,runner_worker_id,start_epoch_ms,ready_ms,first_answer_ms,release_ms,"
            + "runner_bytes,error\n");
    for (RunResult x : r.runs()) {
      for (LeaseSample l : x.samples()) {
        s.append(String.format(Locale.ROOT, "%s,%s,%s,%d,%d,%s,%.3f,%.3f,%.3f,%.3f,%d,%s%n", x.subject(),
            x.run().replace(',', ';'), x.binary().replace(',', ';'), x.concurrency(), l.index(), l.runnerWorkerId(), l.startEpochMs(),
            l.readyMs(), l.firstAnswerMs(), l.releaseMs(), l.runnerBytes(), l.error().replaceAll("[,\n]", ";")));
      }
    }
    Files.writeString(out.resolve("samples.csv"), s);
    StringBuilder res = new StringBuilder("subject,process,moment,leases,pid,cpu_s,fds,threads,rss_kb\n");
    for (ResourceRow x : r.resources()) {
      res.append(String.format(Locale.ROOT, "%s,%s,%s,%d,%d,%.2f,%d,%d,%d%n", x.subject(), x.process(), x.moment(),
          x.leasesSoFar(), x.usage().pid(), x.usage().ticks() / (double) ProcFs.TICKS_PER_SECOND, x.usage().fds(),
          x.usage().threads(), x.usage().rssKb()));
    }
    Files.writeString(out.resolve("resources.csv"), res);
    Files.writeString(out.resolve("results.md"), markdown(r));
  }
}
