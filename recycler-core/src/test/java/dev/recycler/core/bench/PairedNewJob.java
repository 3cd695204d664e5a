package dev.recycler.core.bench;

import static dev.recycler.core.bench.LeaseBenchmark.STAGED_NAME;
import static dev.recycler.core.bench.LeaseBenchmark.label;
import static dev.recycler.core.bench.LeaseBenchmark.lease;
import static dev.recycler.core.bench.LeaseBenchmark.log;
import static dev.recycler.core.bench.LeaseBenchmark.staged;

import dev.recycler.core.bench.LeaseBenchmark.Config;
import dev.recycler.core.bench.LeaseBenchmark.ResourceRow;
import dev.recycler.core.bench.LeaseBenchmark.RunResult;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.IntFunction;

/**
 * The headline run: every lease is a new job, as users hit it. Beam's job server restages each job's binary under a
 * fresh path without a sha256, so every real job is new to the recycler. Six arms alternate lease by lease (the start
 * arm rotates each round) so that all see the same load from whatever else runs on the machine:
 * <ol>
 *   <li>floor: exec of the freshly staged copy;
 *   <li>this project, warm without a standby: another environment of one job (one staged path for all its leases),
 *       on a recycler of its own with {@code --standby-ttl 0}, as before standby workers;
 *   <li>this project, warm: the same job's leases on the recycler the new-job arms share, with two slots: the job's
 *       standby worker (started when its previous lease ended) is adopted, while the new jobs between its leases take
 *       the other slot (placement keeps the standby of the job with more leases);
 *   <li>this project, new job in place: a fresh staged copy under the recycler's {@code --local-artifact-dirs}; the
 *       slot already holds the content (same bytes as every other job), so the recycler hashes the file from disk
 *       and nothing crosses to the wrapper;
 *   <li>this project, new job streamed: a fresh copy outside the local directories, the fallback: the recycler
 *       streams it from the runner's artifact service to learn its digest;
 *   <li>this project, cold in place: new content (16 unique trailing bytes) staged under the local directory, on a
 *       second recycler whose wrapper keeps only the newest binary: the bytes cross once (disk to the recycler's
 *       cache, recycler to wrapper), never through the runner;
 *   <li>Beam's worker pool, a fresh copy per lease (its boot always fetches the binary from the runner).
 * </ol>
 * Every copy is made before the lease's clock starts and deleted after the lease, as the job server's
 * {@code --clean-artifacts-per-job} does. With a gap ({@code --gaps}), each round stages every arm's copy first and
 * then waits the gap, so every lease starts at least that long after its staging, as a real job's first lease comes
 * seconds after its submission (the recycler hashes the file meanwhile, on its staging threads: their CPU counts for
 * the arm; the rest of the shared recycler's CPU over the gap is background, printed beside it). CPU per lease is read around each lease from {@code /proc} (the subject's
 * long-lived processes, with the children they reaped), plus for Beam's pool and the floor the processes nobody of
 * theirs reaps (read before they are killed). The notes split each arm's CPU by process kind (the recycler JVM, the
 * wrappers, the workers they reaped, Beam's pool and its unreaped boots and workers).
 */
final class PairedNewJob {
  private PairedNewJob() {}

  /** One alternating arm: a subject and how its leases are made. */
  private static final class Arm {
    final Subject subject;
    final String run;
    final IntFunction<Subject.Lease> leases;
    /** Its staged files lie under its recycler's local artifact dirs: the recycler hashes them during the gap. */
    final boolean hashesAhead;
    final List<LeaseSample> samples = new ArrayList<>();
    long ticks;
    /** The subject's CPU over the staging-to-lease gaps besides its staging threads' (not in {@link #ticks}). */
    long gapBackground;
    /** {@link #ticks} by part ({@link LeaseBenchmark#cpuParts}). */
    final Map<String, Long> parts = new java.util.TreeMap<>();

    void addCpu(Map<String, Long> before, Map<String, Long> after) {
      after.forEach((k, v) -> {
        long d = v - before.getOrDefault(k, 0L);
        parts.merge(k, d, Long::sum);
        ticks += d;
      });
    }
    long secondHop;

    Arm(Subject subject, String run, IntFunction<Subject.Lease> leases) {
      this(subject, run, leases, false);
    }

    Arm(Subject subject, String run, IntFunction<Subject.Lease> leases, boolean hashesAhead) {
      this.subject = subject;
      this.run = run;
      this.leases = leases;
      this.hashesAhead = hashesAhead;
    }
  }

  static void run(Config c, Path binary, Path work, List<RunResult> runs, List<ResourceRow> resources,
      List<String> notes, Map<String, Breakdown.Result> breakdowns) throws Exception {
    // Each recycler watches only its own staging directory (as one TaskManager's recycler watches its job server's):
    // floor, Beam's pool and the streamed arm stage where no recycler hashes ahead.
    Staging inPlace = new Staging(work.resolve("staging"));
    Staging inPlaceCold = new Staging(work.resolve("staging-cold"));
    Staging elsewhere = new Staging(work.resolve("staging-not-shared"));
    // The recycler without standbys watches only its warm job's directory: it would otherwise hash every new job's
    // copy as well, on CPU read for its own warm leases.
    Staging warmOnly = new Staging(work.resolve("staging-warm"));
    try (FloorSubject floor = new FloorSubject(work.resolve("floor"));
        BeamPoolSubject beam = new BeamPoolSubject(c.beamBoot(), work.resolve("beam-pool"), STAGED_NAME);
        RecyclerSubject ours = new RecyclerSubject("recycler", c.recyclerJar(), c.wrapperBinary(), 2, 2048,
            work.resolve("recycler"), c.recyclerJvm(), c.recyclerCacheMb(), List.of(inPlace.root()));
        RecyclerSubject cold = new RecyclerSubject("recycler", c.recyclerJar(), c.wrapperBinary(), 1, 1,
            work.resolve("recycler-cold"), c.recyclerJvm(), c.recyclerCacheMb(), List.of(inPlaceCold.root()));
        RecyclerSubject noStandby = new RecyclerSubject("recycler", c.recyclerJar(), c.wrapperBinary(), 1, 2048,
            work.resolve("recycler-no-standby"), c.recyclerJvm(), c.recyclerCacheMb(), List.of(warmOnly.root()))
            .with("--standby-ttl", "0")) {
      floor.start();
      ours.start();
      noStandby.start();
      cold.start();
      beam.start();
      Path warmJob = inPlace.stage(binary, STAGED_NAME, false);
      Path warmOnlyJob = warmOnly.stage(binary, STAGED_NAME, false);
      List<Arm> arms = List.of(
          new Arm(floor, "paired new job", i -> staged("paired new job", i, elsewhere, binary, false)),
          new Arm(noStandby, "paired warm", i -> lease("paired warm", i, warmOnlyJob.toString(), warmOnlyJob)),
          new Arm(ours, "paired warm, standby", i -> lease("paired warm, standby", i, warmJob.toString(),
              warmJob)),
          new Arm(ours, "paired new job, in place", i -> staged("paired new job, in place", i, inPlace, binary,
              false), true),
          new Arm(ours, "paired new job, streamed", i -> staged("paired new job, streamed", i, elsewhere, binary,
              false)),
          new Arm(cold, "paired cold, in place", i -> staged("paired cold, in place", i, inPlaceCold, binary, true),
              true),
          new Arm(beam, "paired new job", i -> staged("paired new job", i, elsewhere, binary, false)));

      boolean first = true;
      for (long gap : c.gapsMillis()) {
        // The binary label carries the gap, so each gap's arms form their own table and target rows.
        String bin = label(binary) + (c.gapsMillis().size() > 1 || gap > 0 ? ", gap " + gap + " ms" : "");
        if (first) {
          log("paired new job (" + bin + "): " + c.warmup() + " warm-up rounds");
          rounds(arms, c.warmup(), beam, c.batch(), false, gap);
          beam.leftovers(true);
        }
        String ourLabel = "recycler (paired new job, " + bin + ")";
        String coldLabel = "recycler (paired cold, " + bin + ")";
        LeaseBenchmark.snapshot(ours, ourLabel, "before the rounds", 0, resources);
        LeaseBenchmark.snapshot(cold, coldLabel, "before the rounds", 0, resources);
        LeaseBenchmark.snapshot(beam, "beam-pool (paired new job, " + bin + ")", "before the rounds", 0, resources);
        first = false;
        for (Arm a : arms) {
          a.samples.clear();
          a.ticks = 0;
          a.gapBackground = 0;
          a.parts.clear();
          a.secondHop = 0;
        }
        String load0 = LeaseBenchmark.loadAverage();
        log("paired new job (" + bin + "): " + c.leases() + " rounds of " + arms.size() + " leases, each staged "
            + gap + " ms before its StartWorker");
        Subject.Leftovers beamLeaked = rounds(arms, c.leases(), beam, c.batch(), true, gap);
        String load = load0 + " -> " + LeaseBenchmark.loadAverage();
        LeaseBenchmark.snapshot(ours, ourLabel, "after run", 4 * c.leases(), resources);
        LeaseBenchmark.snapshot(cold, coldLabel, "after run", c.leases(), resources);
        LeaseBenchmark.snapshot(beam, "beam-pool (paired new job, " + bin + ")", "after run", c.leases(), resources);
        long heapOurs = ours.liveHeapKb();
        long heapCold = cold.liveHeapKb();
        notes.add(String.format(Locale.ROOT, "Paired new job (%s): the recycler JVMs' live heap right after a full "
            + "collection at the end: %.1f MB (warm/new-job recycler), %.1f MB (cold recycler); their RSS is in the "
            + "resource table.", bin, heapOurs / 1024.0, heapCold / 1024.0));

        for (Arm a : arms) {
          Subject.Leftovers left = a.subject == beam ? beamLeaked : a.subject.leftovers(false);
          String note = a.subject == beam
              ? "per lease, read around it: pool incl. reaped children; plus leaked workers and zombie boots (read "
                  + "before clean-up)"
              : a.subject == floor ? "per lease: the worker (read before SIGKILL)"
              : a.hashesAhead && !ownsSubject(arms, a)
                  ? "per lease, read around it (and the staging threads' CPU over the staging-to-lease gap, so a hash"
                      + " done ahead counts), incl. the release wait: recycler JVM + wrapper incl. its reaped worker"
              : "per lease, read around it (an arm with a recycler of its own: from its staging on), incl. the release"
                  + " wait: recycler JVM + wrapper incl. its reaped worker";
          RunResult r = new RunResult(a.subject.name(), a.run + " (alternating)", 1, 1, List.copyOf(a.samples),
              LeaseBenchmark.bytes(a.samples), a.subject instanceof RecyclerSubject ? a.secondHop : -1,
              a.ticks / (double) ProcFs.TICKS_PER_SECOND, left, note, load, bin);
          runs.add(r);
          log(String.format(Locale.ROOT, "%s / %s (%s): ok %d/%d ready p50 %.1f first answer p50 %.1f p95 %.1f ms,"
              + " CPU %.3f s/lease, runner MB/lease %.1f", r.subject(), r.run(), bin, r.ok(), r.samples().size(),
              r.ready().p(50), r.firstAnswer().p(50), r.firstAnswer().p(95), r.cpuSeconds() / r.samples().size(),
              r.runnerBytes() / 1e6 / r.samples().size()));
          StringBuilder split = new StringBuilder();
          a.parts.forEach((k, v) -> {
            if (v != 0) {
              split.append(String.format(Locale.ROOT, "%s%s %.3f", split.length() == 0 ? "" : ", ", k,
                  v / (double) ProcFs.TICKS_PER_SECOND / r.samples().size()));
            }
          });
          notes.add(String.format(Locale.ROOT, "Paired new job (%s), %s / %s: CPU s/lease by process: %s.%s", bin,
              r.subject(), r.run(), split, a.gapBackground == 0 ? "" : String.format(Locale.ROOT, " Not charged:"
                  + " the shared recycler's other CPU over the gap (background), %.3f s/lease.",
                  a.gapBackground / (double) ProcFs.TICKS_PER_SECOND / r.samples().size())));
          log("  CPU s/lease by process: " + split + (a.gapBackground == 0 ? "" : String.format(Locale.ROOT,
              "; not charged, background over the gap: %.3f", a.gapBackground / (double) ProcFs.TICKS_PER_SECOND
                  / r.samples().size())));
        }
        breakdowns.put("paired warm (" + bin + ", " + c.leases() + " leases)",
            Breakdown.analyse(noStandby, runs.get(runs.size() - 6)));
        breakdowns.put("paired warm, standby (" + bin + ", " + c.leases() + " leases)",
            Breakdown.analyse(ours, runs.get(runs.size() - 5)));
        breakdowns.put("paired new job, in place (" + bin + ", " + c.leases() + " leases)",
            Breakdown.analyse(ours, runs.get(runs.size() - 4)));
        breakdowns.put("paired new job, streamed (" + bin + ", " + c.leases() + " leases)",
            Breakdown.analyse(ours, runs.get(runs.size() - 3)));
        breakdowns.put("paired cold, in place (" + bin + ", " + c.leases() + " leases)",
            Breakdown.analyse(cold, runs.get(runs.size() - 2)));
      }
      Subject.deleteTree(warmJob.getParent());
      Subject.deleteTree(warmOnlyJob.getParent());
    }
  }

  /** Whether {@code a} is the only arm of its subject. */
  private static boolean ownsSubject(List<Arm> arms, Arm a) {
    return arms.stream().filter(x -> x.subject == a.subject).count() == 1;
  }

  private static long stagingTicks(Subject s) {
    return s instanceof RecyclerSubject r ? r.stagingTicks() : 0;
  }

  /**
   * Runs {@code n} rounds, one lease per arm each, the first arm rotating. Counts and cleans up Beam's leaks every
   * {@code batch} rounds (and at the end); returns the leaks counted.
   */
  private static Subject.Leftovers rounds(List<Arm> arms, int n, BeamPoolSubject beam, int batch, boolean record,
      long gapMillis) throws Exception {
    Subject.Leftovers leaked = Subject.Leftovers.NONE;
    int zombiesBefore = beam.leftovers(false).zombies();
    int maxZombies = zombiesBefore;
    Arm beamArm = arms.stream().filter(a -> a.subject == beam).findFirst().orElseThrow();
    for (int i = 0; i < n; i++) {
      Subject.Lease[] prepared = new Subject.Lease[arms.size()];
      // An arm whose subject serves no other arm (the cold recycler) is read from before its staging to the end of
      // its lease: what its recycler and wrapper do meanwhile (the staging-time copy, a prefetch that may still be
      // running while other arms' leases run) is all its own. Shared subjects are read around the gap (for the arm
      // whose files they watch) and around each lease.
      Map<Arm, Map<String, Long>> exclusiveStart = new java.util.IdentityHashMap<>();
      Map<Arm, Long> exclusiveHop = new java.util.IdentityHashMap<>();
      for (Arm a : arms) {
        if (ownsSubject(arms, a) && a.subject instanceof RecyclerSubject) {
          exclusiveStart.put(a, LeaseBenchmark.cpuParts(a.subject));
          exclusiveHop.put(a, a.subject.secondHopBytes());
        }
      }
      if (gapMillis > 0) {
        // Every arm's copy is staged first, then the gap passes once for all of them: each lease starts at least
        // gapMillis after its staging (plus the round's earlier leases). A recycler's CPU meanwhile (its hash done
        // ahead) belongs to the arm whose file it watches, and so do the bytes its wrapper prefetched meanwhile.
        Map<Subject, Map<String, Long>> before = new java.util.IdentityHashMap<>();
        Map<Subject, Long> stagingBefore = new java.util.IdentityHashMap<>();
        Map<Subject, Long> hopBefore = new java.util.IdentityHashMap<>();
        for (int k = 0; k < arms.size(); k++) {
          prepared[k] = arms.get(k).leases.apply(i);
          before.computeIfAbsent(arms.get(k).subject, LeaseBenchmark::cpuParts);
          stagingBefore.computeIfAbsent(arms.get(k).subject, PairedNewJob::stagingTicks);
          hopBefore.putIfAbsent(arms.get(k).subject, arms.get(k).subject.secondHopBytes());
        }
        Thread.sleep(gapMillis);
        for (Arm a : arms) {
          if (a.hashesAhead && !exclusiveStart.containsKey(a)) {
            // Charged: the staging threads' CPU (the hash done ahead for this arm's file). The rest of the shared
            // subject's CPU over the gap (its JVM and wrappers idling, collections of earlier leases' garbage, the
            // other arms' standby workers) is background, reported beside it.
            long staging = stagingTicks(a.subject) - stagingBefore.get(a.subject);
            long whole = LeaseBenchmark.cpuParts(a.subject).entrySet().stream()
                .mapToLong(e -> e.getValue() - before.get(a.subject).getOrDefault(e.getKey(), 0L)).sum();
            a.parts.merge("recycler (JVM) staging threads", staging, Long::sum);
            a.ticks += staging;
            a.gapBackground += whole - staging;
            a.secondHop += a.subject.secondHopBytes() - hopBefore.get(a.subject);
          }
        }
      }
      for (int k = 0; k < arms.size(); k++) {
        int index = (i + k) % arms.size();
        Arm a = arms.get(index);
        Subject.Lease l = prepared[index] != null ? prepared[index] : a.leases.apply(i);
        long hop0 = a.subject.secondHopBytes();
        Map<String, Long> t0 = LeaseBenchmark.cpuParts(a.subject);
        LeaseSample s;
        try {
          s = a.subject.lease(l);
        } catch (Exception e) {
          s = LeaseSample.failed(l, LeaseBenchmark.epochMillis(), 0, e.toString());
        } finally {
          LeaseBenchmark.unstage(l);
        }
        Map<String, Long> since = exclusiveStart.get(a);
        if (since != null) {
          a.addCpu(since, LeaseBenchmark.cpuParts(a.subject));
          a.secondHop += a.subject.secondHopBytes() - exclusiveHop.get(a);
        } else {
          a.addCpu(t0, LeaseBenchmark.cpuParts(a.subject));
          a.secondHop += a.subject.secondHopBytes() - hop0;
        }
        a.samples.add(s);
        if (!s.ok()) {
          log(a.subject.name() + " / " + a.run + " lease " + i + " failed: " + s.error());
          if (!record) {
            throw new IllegalStateException(a.subject.name() + " / " + a.run + " warm-up lease failed: " + s.error());
          }
        }
      }
      if (i % batch == batch - 1 || i == n - 1) {
        Map<String, Long> t0 = LeaseBenchmark.cpuParts(beam);
        Subject.Leftovers l = beam.leftovers(true);
        beamArm.addCpu(t0, LeaseBenchmark.cpuParts(beam));
        maxZombies = Math.max(maxZombies, l.zombies());
        leaked = leaked.plus(new Subject.Leftovers(l.processes(), 0, l.files(), l.fileBytes(), l.details()));
      }
      if (i % 20 == 19) {
        log("paired new job: " + (i + 1) + "/" + n + " rounds");
      }
    }
    return new Subject.Leftovers(leaked.processes(), maxZombies - zombiesBefore, leaked.files(), leaked.fileBytes(),
        leaked.details());
  }
}
