package dev.recycler.core.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.IntFunction;

/**
 * Lease-to-ready latency, release time, bytes, CPU and leaks of three ways to get a Beam Go SDK worker for a runner
 * environment, driven by a runner-side harness that plays the Flink TaskManager exactly as Beam does (fresh control,
 * logging, provision and artifact servers per environment; StartWorker; wait for the control connection with the
 * worker id; close the control stream; StopWorker on the same channel):
 * <ol>
 *   <li>{@code recycler}: this project, the recycler sidecar and go-boot-wrapper processes (warm, new job, cold);
 *   <li>{@code beam-pool}: Beam's {@code boot --worker_pool};
 *   <li>{@code floor}: exec of the worker binary with its final arguments.
 * </ol>
 * Prints figures and writes CSV/Markdown under {@code --out}; asserts nothing about time. Run through {@code
 * .ci/bench}; {@code --help} lists the flags.
 */
public final class LeaseBenchmark {
  static final String STAGED_NAME = "bench-go-worker";
  static final int LONG_WARMUP = 50;
  /** Leak run: leases between the forced collection of the first live-heap reading and the RSS baseline. */
  static final int LONG_SETTLE = 300;
  /** The recycler sidecar's recommended JVM flags (docs/operations.md). */
  static final String RECYCLER_JVM = "-Xms64m -Xmx64m -XX:+AlwaysPreTouch";
  private static final AtomicInteger WORKER_IDS = new AtomicInteger();

  private LeaseBenchmark() {}

  static double epochMillis() {
    Instant now = Instant.now();
    return now.getEpochSecond() * 1e3 + now.getNano() / 1e6;
  }

  /** What to run. {@code workerBinaries}: the first is the worker of every run; the paired new-job run uses each. */
  record Config(Path out, Path recyclerJar, Path wrapperBinary, List<Path> workerBinaries, Path beamBoot, int leases,
      int rounds, int concurrency, int longLeases, int warmup, int batch, Set<String> runs, List<String> recyclerJvm,
      long recyclerCacheMb, List<Long> gapsMillis) {
    static final String DEFAULT_RUNS =
        "floor,beam,beam-concurrent,recycler,recycler-concurrent,long,paired,paired-new-job";

    static Config parse(String[] args) {
      Map<String, String> o = new LinkedHashMap<>();
      for (int i = 0; i < args.length; i++) {
        String a = args[i];
        if (a.equals("--help")) {
          System.out.println(HELP);
          System.exit(0);
        }
        int eq = a.indexOf('=');
        if (!a.startsWith("--") || eq < 0) {
          throw new IllegalArgumentException("expected --flag=value, got " + a + "\n" + HELP);
        }
        o.put(a.substring(2, eq), a.substring(eq + 1));
      }
      String workers = o.get("worker-binary");
      if (workers == null || workers.isBlank()) {
        throw new IllegalArgumentException("--worker-binary is required\n" + HELP);
      }
      Config c = new Config(Path.of(o.getOrDefault("out", "/tmp/recycler-bench/results")),
          path(o, "recycler-jar"), path(o, "wrapper-binary"),
          Arrays.stream(workers.split(",")).map(String::trim).filter(w -> !w.isEmpty()).map(Path::of).toList(),
          path(o, "beam-boot-binary"),
          Integer.parseInt(o.getOrDefault("leases", "200")), Integer.parseInt(o.getOrDefault("rounds", "50")),
          Integer.parseInt(o.getOrDefault("concurrency", "4")), Integer.parseInt(o.getOrDefault("long-leases", "1000")),
          Integer.parseInt(o.getOrDefault("warmup", "200")), Integer.parseInt(o.getOrDefault("batch", "25")),
          new LinkedHashSet<>(Arrays.asList(o.getOrDefault("runs", DEFAULT_RUNS).split(","))),
          Arrays.stream(o.getOrDefault("recycler-jvm", RECYCLER_JVM).split(" ")).filter(s -> !s.isBlank()).toList(),
          Long.parseLong(o.getOrDefault("recycler-cache-mb", "1024")),
          Arrays.stream(o.getOrDefault("gaps", "0").split(",")).map(String::trim).filter(g -> !g.isEmpty())
              .map(Long::parseLong).toList());
      o.keySet().removeAll(List.of("out", "recycler-jar", "wrapper-binary", "worker-binary", "beam-boot-binary",
          "leases", "rounds", "concurrency", "long-leases", "warmup", "batch", "runs", "recycler-jvm",
          "recycler-cache-mb", "gaps"));
      if (!o.isEmpty()) {
        throw new IllegalArgumentException("unknown flags " + o.keySet() + "\n" + HELP);
      }
      return c;
    }

    /** The worker binary of every run but the paired new-job run (which uses each of {@link #workerBinaries}). */
    Path workerBinary() {
      return workerBinaries.get(0);
    }

    /** The same configuration with another number of unrecorded warm-up leases. */
    Config withWarmup(int n) {
      return new Config(out, recyclerJar, wrapperBinary, workerBinaries, beamBoot, leases, rounds, concurrency,
          longLeases, n, batch, runs, recyclerJvm, recyclerCacheMb, gapsMillis);
    }

    private static Path path(Map<String, String> o, String key) {
      String v = o.get(key);
      if (v == null) {
        throw new IllegalArgumentException("--" + key + " is required\n" + HELP);
      }
      return Path.of(v);
    }
  }

  static final String HELP = """
      usage: LeaseBenchmark --recycler-jar=J --wrapper-binary=W --worker-binary=B[,B2...] --beam-boot-binary=P [flags]
        --worker-binary=B,B2 the Go worker binaries: the first is used by every run; the paired new-job run runs
                             once per binary (e.g. beam-pipelines,beam-wordcount)
        --out=DIR            results directory (default /tmp/recycler-bench/results)
        --leases=N           successive leases per run, rounds of the paired runs (default 200)
        --rounds=N           rounds of the concurrent runs (default 50)
        --concurrency=N      leases per concurrent round, and slots of the concurrent recycler (default 4)
        --long-leases=N      leases of the recycler's long leak run (default 1000; 0 = skip)
        --warmup=N           unrecorded leases (paired runs: rounds) before each subject's runs (default 200)
        --batch=N            Beam's pool: leases between leak counts and clean-ups (default 25)
        --runs=a,b           any of floor,beam,beam-concurrent,recycler,recycler-concurrent,long,paired,paired-new-job
                             (default all; beam-concurrent needs beam; paired alternates floor, warm leases of this
                             project and Beam's pool; paired-new-job alternates floor, this project (warm, new job in
                             place, new job streamed, cold in place) and Beam's pool, every lease a freshly staged copy)
        --recycler-jvm=OPTS  JVM options of the recycler sidecar process (default: the sidecar's recommended
                             flags, docs/operations.md: -Xms64m -Xmx64m -XX:+AlwaysPreTouch)
        --recycler-cache-mb=N  the recycler's --cache-max-bytes in MiB (default 1024)
        --gaps=MS,MS         paired new-job run: staging-to-lease gaps, each its own set of rounds (default 0): every
                             arm stages its fresh copy, then waits the gap before StartWorker, as a real job's binary
                             is staged at submission, seconds before its first lease (the e2e prints the real gap)""";

  /** One recorded run: aggregates over its leases. */
  record RunResult(String subject, String run, int slots, int concurrency, List<LeaseSample> samples,
      long runnerBytes, long secondHopBytes, double cpuSeconds, Subject.Leftovers leftovers, String cpuNote,
      String load, String binary) {
    int ok() {
      return (int) samples.stream().filter(LeaseSample::ok).count();
    }

    Stats ready() {
      return new Stats(samples.stream().filter(LeaseSample::ok).map(LeaseSample::readyMs).toList());
    }

    Stats firstAnswer() {
      return new Stats(samples.stream().filter(LeaseSample::ok).map(LeaseSample::firstAnswerMs).toList());
    }

    Stats release() {
      return new Stats(samples.stream().filter(LeaseSample::ok).map(LeaseSample::releaseMs).toList());
    }
  }

  /** Long-lived processes at two moments. */
  record ResourceRow(String subject, String process, String moment, int leasesSoFar, ProcFs.Usage usage) {}

  /** Everything measured. */
  record Results(List<RunResult> runs, List<ResourceRow> resources, List<String> notes, String machine,
      Map<String, Breakdown.Result> breakdowns) {
    boolean allReady() {
      return runs.stream().allMatch(r -> r.ok() == r.samples().size());
    }
  }

  public static void main(String[] args) throws Exception {
    Config c;
    try {
      c = Config.parse(args);
    } catch (IllegalArgumentException e) {
      System.err.println(e.getMessage());
      System.exit(2);
      return;
    }
    Results r = run(c);
    System.out.println(Report.markdown(r));
    System.exit(r.allReady() ? 0 : 1);
  }

  /** Runs the configured subjects one after the other and writes the result files. */
  static Results run(Config c) throws Exception {
    Files.createDirectories(c.out());
    Path work = c.out().resolve("work");
    List<RunResult> runs = new ArrayList<>();
    List<ResourceRow> resources = new ArrayList<>();
    List<String> notes = new ArrayList<>();
    String machine = Machine.describe(c);
    log("machine: " + machine.replace("\n", "; "));
    Map<String, Breakdown.Result> breakdowns = new LinkedHashMap<>();
    // The job server's artifacts directory, which the recyclers read in place (--local-artifact-dirs), and one they
    // cannot see (the streamed fallback: a recycler without local-artifact-dirs, or a file outside them).
    Staging inPlace = new Staging(work.resolve("staging"));
    Staging elsewhere = new Staging(work.resolve("staging-not-shared"));
    String bin = label(c.workerBinary());

    if (c.runs().contains("floor")) {
      try (FloorSubject floor = new FloorSubject(work.resolve("floor"))) {
        floor.start();
        warmUp(floor, c, i -> lease("warmup", i, perJob(i), c.workerBinary()));
        runs.add(execute(floor, "successive", 1, 1, c.leases(), c, i -> lease("successive", i, perJob(i),
            c.workerBinary()), false));
        runs.add(execute(floor, "concurrent", 1, c.concurrency(), c.rounds() * c.concurrency(), c,
            i -> lease("concurrent", i, perJob(i), c.workerBinary()), false));
      }
    }

    if (c.runs().contains("beam")) {
      try (BeamPoolSubject beam = new BeamPoolSubject(c.beamBoot(), work.resolve("beam-pool"), STAGED_NAME)) {
        beam.start();
        warmUp(beam, c, i -> lease("warmup", i, perJob(i), c.workerBinary()));
        beam.leftovers(true);
        snapshot(beam, "after warm-up", 0, resources);
        runs.add(execute(beam, "successive", 1, 1, c.leases(), c, i -> lease("successive", i, perJob(i),
            c.workerBinary()), true));
        if (c.runs().contains("beam-concurrent")) {
          runs.add(execute(beam, "concurrent", 1, c.concurrency(), c.rounds() * c.concurrency(), c,
              i -> lease("concurrent", i, perJob(i), c.workerBinary()), true));
        }
        snapshot(beam, "after run", c.leases() + (c.runs().contains("beam-concurrent")
            ? c.rounds() * c.concurrency() : 0), resources);
        notes.add("Beam's pool stages every boot's binary as /tmp/staged/1-" + STAGED_NAME + " (its staged-name counter "
            + "starts at 1 in every boot process), so concurrent boots overwrite one another's file: see the failed "
            + "concurrent leases, if any.");
        notes.add("Beam's pool leaks per lease: the worker (sleeping forever after the control close), a zombie boot "
            + "(never reaped by the pool), a copy of the binary in /tmp/bin*/worker and the staged file in /tmp/staged. "
            + "The benchmark counted them every " + c.batch() + " leases and then cleaned up (SIGKILL to the leaked "
            + "workers, deleted the copies) so the run does not exhaust the machine; zombie boots can only be reaped "
            + "by ending the pool, done at the end.");
      }
    }

    if (c.runs().contains("recycler")) {
      try (RecyclerSubject ours = new RecyclerSubject("recycler", c.recyclerJar(), c.wrapperBinary(), 1, 1,
          work.resolve("recycler-1"), c.recyclerJvm(), c.recyclerCacheMb(), List.of(inPlace.root()))) {
        ours.start();
        // One job's staged binary, for every warm lease: all environments of one job share its staged path.
        Path warmJob = inPlace.stage(c.workerBinary(), STAGED_NAME, false);
        warmUp(ours, c, i -> lease("warmup", i, warmJob.toString(), warmJob));
        snapshot(ours, "after warm-up", 0, resources);
        RunResult warm = execute(ours, "warm", 1, 1, c.leases(), c,
            i -> lease("warm", i, warmJob.toString(), warmJob), false);
        runs.add(warm);
        RunResult newJob = execute(ours, "new job, in place", 1, 1, c.leases(), c,
            i -> staged("new job, in place", i, inPlace, c.workerBinary(), false), false);
        runs.add(newJob);
        runs.add(execute(ours, "new job, streamed", 1, 1, c.leases(), c,
            i -> staged("new job, streamed", i, elsewhere, c.workerBinary(), false), false));
        runs.add(execute(ours, "cold, in place", 1, 1, c.leases(), c,
            i -> staged("cold, in place", i, inPlace, c.workerBinary(), true), false));
        runs.add(execute(ours, "cold, streamed", 1, 1, c.leases(), c,
            i -> staged("cold, streamed", i, elsewhere, c.workerBinary(), true), false));
        snapshot(ours, "after run", 5 * c.leases(), resources);
        Subject.deleteTree(warmJob.getParent());
        breakdowns.put("warm run (" + c.leases() + " leases)", Breakdown.analyse(ours, warm));
        breakdowns.put("new job, in place (" + c.leases() + " leases)", Breakdown.analyse(ours, newJob));
      }
      notes.add("Staging: every new-job and cold lease of this project stages a fresh plain copy of the binary under a "
          + "new job directory, as Beam's job server does (no sha256; the copy is made before the lease's clock starts "
          + "and deleted after the lease, as --clean-artifacts-per-job does). 'in place': under the recycler's "
          + "--local-artifact-dirs (hashed from disk); 'streamed': outside it (fetched from the runner's artifact "
          + "service, the fallback).");
      notes.add("Cold: the wrapper's --cache_max_mb=0 means unbounded, so it cannot empty the cache. Cold leases "
          + "instead stage a binary whose content is new (the worker binary plus 16 unique trailing bytes, still a "
          + "valid ELF), under a fresh staging path; the wrapper runs with --cache_max_mb=1, which keeps only the newest "
          + "binary (no effect with one binary, as in the warm and new-job runs). So the binary reaches the wrapper "
          + "every lease, as for a rebuilt pipeline.");
    }

    if (c.runs().contains("recycler-concurrent")) {
      try (RecyclerSubject ours = new RecyclerSubject("recycler", c.recyclerJar(), c.wrapperBinary(),
          c.concurrency(), 2048, work.resolve("recycler-" + c.concurrency()), c.recyclerJvm(), c.recyclerCacheMb(),
          List.of(inPlace.root()))) {
        ours.start();
        Path warmJob = inPlace.stage(c.workerBinary(), STAGED_NAME, false);
        // Warm up in rounds, so that every slot's wrapper holds the binary before the measured rounds.
        execute(ours, "warm-up", c.concurrency(), c.concurrency(), c.warmup() - c.warmup() % c.concurrency()
            + c.concurrency(), c, i -> lease("warmup", i, warmJob.toString(), warmJob), false);
        runs.add(execute(ours, "concurrent warm", c.concurrency(), c.concurrency(), c.rounds() * c.concurrency(), c,
            i -> lease("concurrent warm", i, warmJob.toString(), warmJob), false));
        runs.add(execute(ours, "concurrent new job, in place", c.concurrency(), c.concurrency(),
            c.rounds() * c.concurrency(), c,
            i -> staged("concurrent new job, in place", i, inPlace, c.workerBinary(), false), false));
        runs.add(execute(ours, "concurrent new job, streamed", c.concurrency(), c.concurrency(),
            c.rounds() * c.concurrency(), c,
            i -> staged("concurrent new job, streamed", i, elsewhere, c.workerBinary(), false), false));
        Subject.deleteTree(warmJob.getParent());
      }
    }

    if (c.runs().contains("long") && c.longLeases() > 0) {
      try (RecyclerSubject ours = new RecyclerSubject("recycler (long)", c.recyclerJar(), c.wrapperBinary(), 1, 2048,
          work.resolve("recycler-long"), c.recyclerJvm(), c.recyclerCacheMb(), List.of(inPlace.root()))) {
        ours.start();
        Path warmJob = inPlace.stage(c.workerBinary(), STAGED_NAME, false);
        // A longer warm-up: the baseline of the growth check should be a JVM past its first JIT and heap sizing.
        Config longWarmup = c.withWarmup(Math.max(c.warmup(), LONG_WARMUP));
        warmUp(ours, longWarmup, i -> lease("warmup", i, warmJob.toString(), warmJob));
        // The live-heap reading forces a full collection, which shrinks the JVM below its working size for a while.
        // So it comes first, then LONG_SETTLE more leases let the JVM return to its working size, then the RSS
        // baseline: neither a freshly collected heap (too low a baseline) nor a collection after the baseline (too
        // flat a curve) skews the growth figure. The last reading comes after the last snapshot.
        long heapBefore = ours.liveHeapKb();
        Config settle = c.withWarmup(LONG_SETTLE);
        warmUp(ours, settle, i -> lease("settle", i, warmJob.toString(), warmJob));
        snapshot(ours, "after warm-up", 0, resources);
        ours.nativeMemory("baseline");
        int step = Math.max(1, c.longLeases() / 10);
        List<LeaseSample> all = new ArrayList<>();
        RunResult last = null;
        for (int done = 0; done < c.longLeases(); done += step) {
          int n = Math.min(step, c.longLeases() - done);
          int base = done;
          last = execute(ours, "warm x" + c.longLeases(), 1, 1, n, c,
              i -> lease("long", base + i, warmJob.toString(), warmJob), false);
          all.addAll(last.samples());
          snapshot(ours, "after " + (done + n), done + n, resources);
        }
        String nmt = ours.nativeMemory("summary.diff");
        if (nmt != null) {
          Files.createDirectories(c.out());
          Files.writeString(c.out().resolve("recycler-native-memory-diff.txt"), nmt);
        }
        long heapAfter = ours.liveHeapKb();
        notes.add(String.format(Locale.ROOT, "Leak run: the recycler JVM's live heap right after a full collection "
            + "(jcmd GC.run, then GC.heap_info) was %.1f MB after warm-up and %.1f MB "
            + "after %d leases.", heapBefore / 1024.0, heapAfter / 1024.0, c.longLeases()));
        RunResult whole = new RunResult(last.subject(), last.run(), 1, 1, all, -1, -1, Double.NaN, last.leftovers(),
            "see the resource table", last.load(), bin);
        runs.add(whole);
        breakdowns.put("leak run (" + c.longLeases() + " leases)", Breakdown.analyse(ours, whole));
        Subject.deleteTree(warmJob.getParent());
      }
    }

    if (c.runs().contains("paired")) {
      // Floor, warm leases of this project and Beam's pool alternating, so all see the same load from whatever else
      // runs on the machine: the fairest reading of the latency targets on a shared machine.
      try (FloorSubject floor = new FloorSubject(work.resolve("paired-floor"));
          BeamPoolSubject beam = new BeamPoolSubject(c.beamBoot(), work.resolve("paired-beam-pool"), STAGED_NAME);
          RecyclerSubject ours = new RecyclerSubject("recycler", c.recyclerJar(), c.wrapperBinary(), 1, 2048,
              work.resolve("paired-recycler"), c.recyclerJvm(), c.recyclerCacheMb(), List.of())) {
        floor.start();
        ours.start();
        beam.start();
        warmUp(beam, c, i -> lease("warmup", i, perJob(i), c.workerBinary()));
        beam.leftovers(true);
        warmUp(floor, c, i -> lease("warmup", i, perJob(i), c.workerBinary()));
        warmUp(ours, c, i -> lease("warmup", i, "/staging/warm-job/" + STAGED_NAME, c.workerBinary()));
        List<LeaseSample> f = new ArrayList<>();
        List<LeaseSample> w = new ArrayList<>();
        List<LeaseSample> bp = new ArrayList<>();
        String load0 = loadAverage();
        for (int i = 0; i < c.leases(); i++) {
          f.add(floor.lease(lease("paired", i, perJob(i), c.workerBinary())));
          w.add(ours.lease(lease("paired warm", i, "/staging/warm-job/" + STAGED_NAME, c.workerBinary())));
          bp.add(beam.lease(lease("paired", i, perJob(i), c.workerBinary())));
          if (i % c.batch() == c.batch() - 1) {
            beam.leftovers(true);
          }
        }
        beam.leftovers(true);
        String load = load0 + " -> " + loadAverage();
        runs.add(new RunResult("floor", "paired (alternating)", 1, 1, f, bytes(f), -1, Double.NaN, floor.leftovers(false),
            "not measured in the paired run", load, bin));
        RunResult pw = new RunResult("recycler", "paired warm (alternating)", 1, 1, w, bytes(w), -1, Double.NaN,
            ours.leftovers(false), "not measured in the paired run", load, bin);
        runs.add(pw);
        runs.add(new RunResult("beam-pool", "paired (alternating)", 1, 1, bp, bytes(bp), -1, Double.NaN,
            Subject.Leftovers.NONE, "not measured in the paired run", load, bin));
        breakdowns.put("paired warm run (" + c.leases() + " leases)", Breakdown.analyse(ours, pw));
        log(String.format(Locale.ROOT, "paired: floor p50 %.1f ms, recycler warm p50 %.1f ms, beam-pool p50 %.1f ms, "
            + "load %s", runs.get(runs.size() - 3).ready().p(50), pw.ready().p(50), runs.get(runs.size() - 1).ready()
            .p(50), load));
      }
    }

    if (c.runs().contains("paired-new-job")) {
      for (Path binary : c.workerBinaries()) {
        PairedNewJob.run(c, binary, work.resolve("paired-new-job-" + label(binary)), runs, resources, notes,
            breakdowns);
      }
    }

    Results r = new Results(runs, resources, notes, machine, breakdowns);
    Report.write(c.out(), r);
    return r;
  }

  /** The binary's file name, for labels. */
  static String label(Path binary) {
    return binary.getFileName().toString();
  }

  static long bytes(List<LeaseSample> samples) {
    return samples.stream().mapToLong(LeaseSample::runnerBytes).sum();
  }

  private static String perJob(int i) {
    return "/staging/job-" + WORKER_IDS.get() + "-" + i + "/" + STAGED_NAME;
  }

  static Subject.Lease lease(String run, int i, String stagingPath, Path binary) {
    return new Subject.Lease(run, i, WORKER_IDS.incrementAndGet() + "-1", stagingPath, binary, null);
  }

  /** A lease of a new job: a fresh staged copy (new content when {@code distinct}), deleted after the lease. */
  static Subject.Lease staged(String run, int i, Staging staging, Path binary, boolean distinct) {
    Path copy = staging.stage(binary, STAGED_NAME, distinct);
    return new Subject.Lease(run, i, WORKER_IDS.incrementAndGet() + "-1", copy.toString(), copy, copy.getParent());
  }

  /** After a lease: deletes what was staged for it, as the job server's --clean-artifacts-per-job does. */
  static void unstage(Subject.Lease l) throws IOException {
    if (l.stagedJob() != null) {
      Subject.deleteTree(l.stagedJob());
    }
  }

  private static void warmUp(Subject s, Config c, IntFunction<Subject.Lease> leases) throws Exception {
    for (int i = 0; i < c.warmup(); i++) {
      Subject.Lease l = leases.apply(i);
      LeaseSample w;
      try {
        w = s.lease(l);
      } finally {
        unstage(l);
      }
      if (!w.ok()) {
        throw new IllegalStateException(s.name() + " warm-up lease failed: " + w.error());
      }
    }
    log(s.name() + ": " + c.warmup() + " warm-up leases done");
  }

  static void snapshot(Subject s, String moment, int leases, List<ResourceRow> out) {
    snapshot(s, s.name(), moment, leases, out);
  }

  static void snapshot(Subject s, String subject, String moment, int leases, List<ResourceRow> out) {
    s.longLived().forEach((pid, label) -> out.add(new ResourceRow(subject, label, moment, leases,
        ProcFs.usage(pid, label))));
  }

  /** CPU ticks so far of the subject's long-lived processes (incl. reaped children) and of its unreaped ones. */
  static long ticks(Subject s) {
    return cpuParts(s).values().stream().mapToLong(Long::longValue).sum();
  }

  /**
   * {@link #ticks} split by part: each long-lived process kind's own ticks (its label without the slot), the ticks of
   * the children it reaped ("... reaped"), and the subject's unreaped processes.
   */
  static Map<String, Long> cpuParts(Subject s) {
    Map<String, Long> m = new java.util.TreeMap<>();
    m.merge("unreaped", s.unreapedTicks(), Long::sum);
    for (Map.Entry<Long, String> e : s.longLived().entrySet()) {
      ProcFs.Proc p = ProcFs.read(e.getKey());
      if (p != null) {
        String kind = e.getValue().replaceAll(" slot-\\d+$", "");
        m.merge(kind, p.ownTicks(), Long::sum);
        m.merge(kind + " reaped", p.totalTicks() - p.ownTicks(), Long::sum);
      }
    }
    return m;
  }

  /**
   * Runs {@code total} leases, {@code concurrency} at a time (a round starts when the previous round has fully
   * released). With {@code batches}, counts and cleans up what the subject leaks every {@link Config#batch()} leases.
   */
  static RunResult execute(Subject s, String run, int slots, int concurrency, int total, Config c,
      IntFunction<Subject.Lease> leases, boolean batches) throws Exception {
    log(s.name() + " / " + run + ": " + total + " leases, " + concurrency + " at a time");
    String load0 = loadAverage();
    long ticks0 = ticks(s);
    long hop0 = s.secondHopBytes();
    List<LeaseSample> samples = new ArrayList<>();
    Subject.Leftovers leaked = Subject.Leftovers.NONE;
    // Zombies are never cleaned up between batches (only the pool could reap them): count this run's own.
    int zombiesBefore = batches ? s.leftovers(false).zombies() : 0;
    int maxZombies = zombiesBefore;
    ExecutorService exec = Executors.newFixedThreadPool(concurrency);
    try {
      int sinceCleanUp = 0;
      for (int i = 0; i < total; i += concurrency) {
        List<Future<LeaseSample>> round = new ArrayList<>();
        for (int k = 0; k < concurrency && i + k < total; k++) {
          Subject.Lease l = leases.apply(i + k);
          round.add(exec.submit(() -> {
            try {
              return s.lease(l);
            } catch (Exception e) {
              return LeaseSample.failed(l, epochMillis(), 0, e.toString());
            } finally {
              unstage(l);
            }
          }));
        }
        for (Future<LeaseSample> f : round) {
          LeaseSample sample = f.get(10, TimeUnit.MINUTES);
          samples.add(sample);
          if (!sample.ok()) {
            log(s.name() + " / " + run + " lease " + sample.index() + " failed: " + sample.error());
          }
        }
        sinceCleanUp += round.size();
        if (batches && (sinceCleanUp >= c.batch() || i + concurrency >= total)) {
          Subject.Leftovers l = s.leftovers(true);
          maxZombies = Math.max(maxZombies, l.zombies());
          leaked = leaked.plus(new Subject.Leftovers(l.processes(), 0, l.files(), l.fileBytes(), l.details()));
          sinceCleanUp = 0;
        }
        if ((i / concurrency) % 50 == 49) {
          log(s.name() + " / " + run + ": " + samples.size() + " done");
        }
      }
    } finally {
      exec.shutdownNow();
    }
    Subject.Leftovers left = batches
        ? new Subject.Leftovers(leaked.processes(), maxZombies - zombiesBefore, leaked.files(), leaked.fileBytes(), leaked.details())
        : s.leftovers(false);
    long ticks1 = ticks(s);
    long hop1 = s.secondHopBytes();
    long runnerBytes = samples.stream().mapToLong(LeaseSample::runnerBytes).sum();
    String cpuNote = s.longLived().isEmpty() ? "the worker processes (read before SIGKILL)"
        : batches ? "pool incl. reaped children + leaked workers and zombie boots (read before clean-up)"
        : "long-lived processes incl. reaped children (workers)";
    RunResult r = new RunResult(s.name(), run, slots, concurrency, samples, runnerBytes, hop1 - hop0,
        (ticks1 - ticks0) / (double) ProcFs.TICKS_PER_SECOND, left, cpuNote, load0 + " -> " + loadAverage(),
        label(c.workerBinary()));
    log(String.format(Locale.ROOT, "%s / %s: ok %d/%d ready p50 %.1f ms p95 %.1f ms first answer p50 %.1f ms "
        + "release p50 %.1f ms, load %s", s.name(), run, r.ok(), samples.size(), r.ready().p(50), r.ready().p(95),
        r.firstAnswer().p(50), r.release().p(50), r.load()));
    return r;
  }

  /** The 1-minute load average (other work on the machine shows here). */
  static String loadAverage() {
    try {
      return Files.readString(Path.of("/proc/loadavg")).split(" ")[0];
    } catch (IOException e) {
      return "?";
    }
  }

  static void log(String line) {
    System.err.println(Instant.now() + " bench: " + line);
  }
}
