package dev.recycler.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import dev.recycler.e2e.FaultTable.Row;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The fault suite's small plan ({@link FaultSuite.Plan#small}: each fault once, a short soak, no scale-out) on a real
 * Flink 1.19.3 session cluster with the recycler plugin, real wrappers and real Beam Go jobs; {@code bash .ci/faults}
 * runs the full plan. One run for the class; each test asserts one property on the table's raw counts.
 *
 * <p>The soak's seed is fixed ({@code -Drecycler.faults.seed} overrides it) so a failure can be repeated.
 */
@Timeout(value = 15, unit = TimeUnit.MINUTES)
class FaultSuiteIT {
  private static FaultSuite.Result result;

  @BeforeAll
  static void runTheSuite() throws Exception {
    Path repoRoot = Path.of(System.getProperty("recycler.e2e.repoRoot", "../..")).toAbsolutePath().normalize();
    Path work = Path.of(System.getProperty("recycler.e2e.workDir", "target/it-work")).toAbsolutePath()
        .resolve("faults");
    long seed = Long.getLong("recycler.faults.seed", 20261207L);
    long t0 = System.nanoTime();
    result = new FaultSuite(FaultSuite.Plan.small(seed), repoRoot, work,
        line -> System.out.printf("[%6.1fs] %s%n", (System.nanoTime() - t0) / 1e9, line)).run();
    System.out.println(FaultSuite.report(result));
  }

  @Test
  void everyFaultOfThePlanWasInjectedOrSaysWhyItCouldNotBe() {
    List<String> keys = result.table().rows().stream().filter(Row::ran).map(r -> r.key).toList();
    assertThat(keys).contains("tm-kill", "wrapper-kill", "worker-kill", "start-cancelled", "concurrent", "stall",
        "corrupt-wrapper", "corrupt-recycler", "disk-full", "cache-read-only", "soak");
    assertThat(result.table().rows()).filteredOn(Row::ran).allSatisfy(r ->
        assertThat(r.injectedCount() > 0 || r.markdown().contains("not possible here")).as(r.fault).isTrue());
  }

  @Test
  void noJobHung() {
    assertThat(result.table().rows()).allSatisfy(r -> assertThat(r.hungCount()).as(r.fault).isZero());
  }

  @Test
  void noProcessWasOrphanedAndEverythingStopped() {
    assertThat(result.table().rows()).allSatisfy(r -> assertThat(r.orphanCount()).as(r.fault + ": "
        + r.notesCopy()).isZero());
    assertThat(result.teardownProblems()).isEmpty();
  }

  @Test
  void nothingLeakedFromOneLeaseIntoAnother() {
    assertThat(result.table().rows()).allSatisfy(r -> assertThat(r.leakCount()).as(r.fault + ": "
        + r.notesCopy()).isZero());
  }

  @Test
  void everyOutcomeWasOneTheFaultAllows() {
    assertThat(result.table().rows()).allSatisfy(r -> assertThat(r.unexpectedOutcomes()).as(r.fault).isEmpty());
    assertThat(result.passed()).as(FaultSuite.report(result)).isTrue();
  }

  @Test
  void theSoakServedItsLeasesAndTheTableWasWritten() {
    Row soak = result.table().rows().stream().filter(r -> r.key.equals("soak")).findFirst().orElseThrow();
    assertThat(soak.notesCopy()).anySatisfy(n -> assertThat(n).startsWith("soak: "));
    assertThat(Path.of(result.workDirectory()).resolve("faults.md")).isRegularFile();
    assertThat(Files.exists(Path.of(result.workDirectory()).resolve("faults.json"))).isTrue();
  }
}
