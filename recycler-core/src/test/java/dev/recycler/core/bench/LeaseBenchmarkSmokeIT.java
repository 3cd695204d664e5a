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
 * concurrent boots race on one staged file, which the full benchmark reports) and this project (warm, new job, cold;
 * 4 slots concurrently). Prints the table; asserts correctness only (every lease became ready, nothing of ours left
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
        binary("recycler.wrapper.binary"), binary("recycler.worker.binary"), binary("recycler.beam.boot.binary"),
        20, 5, 4, 0, 2, 10, Set.of("floor", "beam", "recycler", "recycler-concurrent"),
        List.of(LeaseBenchmark.RECYCLER_JVM.split(" ")),
        // Room for every cold binary, so no cold lease waits for a binary fetched again after its eviction (the full
        // benchmark's 1 GiB cache exercises eviction).
        4096);

    LeaseBenchmark.Results results = LeaseBenchmark.run(config);
    System.out.println(Report.markdown(results));

    assertThat(results.runs()).extracting(r -> r.subject() + " / " + r.run()).containsExactly(
        "floor / successive", "floor / concurrent", "beam-pool / successive", "recycler / warm",
        "recycler / new job", "recycler / cold", "recycler / concurrent warm", "recycler / concurrent new job");
    assertThat(results.runs()).allSatisfy(r -> {
      assertThat(r.samples()).as("%s / %s leases", r.subject(), r.run()).hasSize(20);
      assertThat(r.samples()).as("%s / %s: every lease became ready", r.subject(), r.run())
          .allSatisfy(s -> assertThat(s.error()).isEmpty());
    });
    assertThat(results.runs().stream().filter(r -> r.subject().equals("recycler"))).allSatisfy(r -> {
      assertThat(r.leftovers().processes()).as("%s: leftover processes %s", r.run(), r.leftovers().details())
          .isZero();
      assertThat(r.leftovers().zombies()).as("%s: zombies", r.run()).isZero();
      assertThat(r.leftovers().files()).as("%s: lease directories", r.run()).isZero();
    });
    // The cold run really sent the binary over both hops every lease; the warm run over neither.
    LeaseBenchmark.RunResult warm = results.runs().get(3);
    LeaseBenchmark.RunResult cold = results.runs().get(5);
    assertThat(warm.runnerBytes()).isZero();
    assertThat(warm.secondHopBytes()).isZero();
    long size = java.nio.file.Files.size(config.workerBinary());
    assertThat(cold.runnerBytes()).isEqualTo(20 * (size + 16));
    assertThat(cold.secondHopBytes()).isEqualTo(20 * (size + 16));
  }
}
