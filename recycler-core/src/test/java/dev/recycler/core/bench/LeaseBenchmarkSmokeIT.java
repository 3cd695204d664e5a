package dev.recycler.core.bench;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The lease benchmark at 20 leases per run, in CI: the floor, Beam's worker pool (successive leases only: its
 * concurrent boots race on one staged file, which the full benchmark reports) and this project (warm, new job and
 * cold, each in place and streamed; 4 slots concurrently); then three rounds of the paired new-job run. Prints the table; asserts correctness only (every lease became ready, nothing of ours left
 * behind), never timings. Needs the Go binaries {@code .ci/run} builds (system properties {@code
 * recycler.wrapper.binary}, {@code recycler.worker.binary}, {@code recycler.beam.boot.binary}), the sidecar jar of
 * the package phase, and port 50000 free (Beam's pool hard-codes it).
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class LeaseBenchmarkSmokeIT {
  @TempDir
  Path tmp;

  private static Path binary(String property) {
    Path p = Path.of(System.getProperty(property, "missing"));
    assertThat(p).as("%s (built by .ci/run)", property).isExecutable();
    return p;
  }

  @Test
  void everySubjectServesEveryLeaseAndThisProjectLeavesNothingBehind() throws Exception {
    Path jar = Path.of(System.getProperty("recycler.sidecar.jar", "target/recycler-core.jar"));
    assertThat(jar).as("recycler sidecar jar (mvn package)").isRegularFile();
    LeaseBenchmark.Config config = new LeaseBenchmark.Config(tmp.resolve("results"), jar,
        binary("recycler.wrapper.binary"), List.of(binary("recycler.worker.binary")),
        binary("recycler.beam.boot.binary"), 20, 5, 4, 0, 2, 10,
        Set.of("floor", "beam", "recycler", "recycler-concurrent"),
        List.of(LeaseBenchmark.RECYCLER_JVM.split(" ")),
        // Room for every cold binary, so no cold lease waits for a binary fetched again after its eviction (the full
        // benchmark's 1 GiB cache exercises eviction).
        4096, List.of(0L));

    LeaseBenchmark.Results results = LeaseBenchmark.run(config);
    System.out.println(Report.markdown(results));

    assertThat(results.runs()).extracting(r -> r.subject() + " / " + r.run()).containsExactly(
        "floor / successive", "floor / concurrent", "beam-pool / successive", "recycler / warm",
        "recycler / new job, in place", "recycler / new job, streamed", "recycler / cold, in place",
        "recycler / cold, streamed", "recycler / concurrent warm", "recycler / concurrent new job, in place",
        "recycler / concurrent new job, streamed");
    assertEveryLeaseAnswered(results, 20);
    assertThat(results.runs().stream().filter(r -> r.subject().equals("recycler"))).allSatisfy(r -> {
      assertThat(r.leftovers().processes()).as("%s: leftover processes %s", r.run(), r.leftovers().details())
          .isZero();
      assertThat(r.leftovers().zombies()).as("%s: zombies", r.run()).isZero();
      assertThat(r.leftovers().files()).as("%s: lease directories", r.run()).isZero();
    });
    // Where the bytes went: warm and a new job held in place cross neither hop; a new job streamed crosses the runner
    // hop only (the wrapper holds the content); cold in place crosses only the recycler->wrapper hop; cold streamed
    // crosses both.
    long size = java.nio.file.Files.size(config.workerBinary());
    assertBytes(results.runs().get(3), 0, 0);
    assertBytes(results.runs().get(4), 0, 0);
    assertBytes(results.runs().get(5), 20 * size, 0);
    assertBytes(results.runs().get(6), 0, 20 * (size + 16));
    assertBytes(results.runs().get(7), 20 * (size + 16), 20 * (size + 16));
  }

  /** The headline run, briefly: three rounds of the paired new-job alternation, no warm-up. */
  @Test
  void pairedNewJobAlternatesEveryArmOverFreshlyStagedCopies() throws Exception {
    Path jar = Path.of(System.getProperty("recycler.sidecar.jar", "target/recycler-core.jar"));
    LeaseBenchmark.Config config = new LeaseBenchmark.Config(tmp.resolve("paired"), jar,
        binary("recycler.wrapper.binary"), List.of(binary("recycler.worker.binary")),
        binary("recycler.beam.boot.binary"), 3, 1, 1, 0, 0, 10, Set.of("paired-new-job"),
        List.of(LeaseBenchmark.RECYCLER_JVM.split(" ")), 4096, List.of(0L, 1500L));

    LeaseBenchmark.Results results = LeaseBenchmark.run(config);
    System.out.println(Report.markdown(results));

    // Each gap (staging to StartWorker) is its own set of the seven arms.
    List<String> arms = List.of(
        "floor / paired new job (alternating)", "recycler / paired warm (alternating)",
        "recycler / paired warm, standby (alternating)",
        "recycler / paired new job, in place (alternating)", "recycler / paired new job, streamed (alternating)",
        "recycler / paired cold, in place (alternating)", "beam-pool / paired new job (alternating)");
    assertThat(results.runs()).extracting(r -> r.subject() + " / " + r.run())
        .containsExactlyElementsOf(java.util.stream.Stream.concat(arms.stream(), arms.stream()).toList());
    assertThat(results.runs().get(7).binary()).endsWith("gap 1500 ms");
    assertEveryLeaseAnswered(results, 3);
    long size = java.nio.file.Files.size(config.workerBinary());
    for (int g = 0; g < 14; g += 7) {
      assertBytes(results.runs().get(g + 3), 0, 0);
      assertBytes(results.runs().get(g + 4), 3 * size, 0);
      assertBytes(results.runs().get(g + 5), 0, 3 * (size + 16));
      assertThat(results.runs().get(g + 6).runnerBytes()).as("Beam's boot fetches every job's binary")
          .isEqualTo(3 * size);
    }
    // Every staged copy was deleted after its lease, as the job server's --clean-artifacts-per-job does.
    try (java.util.stream.Stream<Path> s = java.nio.file.Files.walk(tmp.resolve("paired").resolve("work"))) {
      assertThat(s.filter(p -> p.toString().contains("/staging") && p.getFileName().toString()
          .equals(LeaseBenchmark.STAGED_NAME))).isEmpty();
    }
  }

  private static void assertEveryLeaseAnswered(LeaseBenchmark.Results results, int leases) {
    // Names only the failing leases (subject, run, index, error, timings): the whole result list is too long for a CI
    // log to show where it went wrong.
    List<String> failures = new java.util.ArrayList<>();
    for (LeaseBenchmark.RunResult r : results.runs()) {
      if (r.samples().size() != leases) {
        failures.add(r.subject() + " / " + r.run() + ": " + r.samples().size() + " leases, expected " + leases);
      }
      for (LeaseSample s : r.samples()) {
        if (!s.error().isEmpty() || s.firstAnswerMs() < s.readyMs()) {
          failures.add(r.subject() + " / " + r.run() + " #" + s.index() + ": error=" + s.error() + " readyMs="
              + s.readyMs() + " firstAnswerMs=" + s.firstAnswerMs());
        }
      }
    }
    assertThat(failures).as("every lease became ready and answered its first instruction, after its connection")
        .isEmpty();
  }

  private static void assertBytes(LeaseBenchmark.RunResult r, long runnerBytes, long secondHopBytes) {
    assertThat(r.runnerBytes()).as("%s: bytes from the runner", r.run()).isEqualTo(runnerBytes);
    assertThat(r.secondHopBytes()).as("%s: bytes recycler->wrapper", r.run()).isEqualTo(secondHopBytes);
  }
}
