package dev.recycler.e2e;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Consumer;
import java.util.stream.Stream;

/** Steps the runs ({@link EndToEndRun}, {@link ScaleOutRun}, {@link FaultSuite}) take the same way. Stateless. */
final class RunSupport {
  /** How often the runs poll Flink's REST API and the slot tables: neither pushes state changes. */
  static final Duration POLL = Duration.ofMillis(100);

  private RunSupport() {}

  /** Sleeps one {@link #POLL} interval. */
  static void pause() throws InterruptedException {
    LockSupport.parkNanos(POLL.toNanos());
    if (Thread.interrupted()) {
      throw new InterruptedException();
    }
  }

  /** The path a system property names, or {@code fallback} when it is unset or blank. */
  static Path property(String name, Path fallback) {
    String v = System.getProperty(name);
    return v == null || v.isBlank() ? fallback : Path.of(v);
  }

  /** The Flink job id of the Beam job named {@code jobName}, or null if Flink lists none. */
  static String flinkJobId(FlinkSessionCluster cluster, String jobName) throws IOException, InterruptedException {
    for (JobSummary j : cluster.jobs()) {
      if (SessionRig.matchesJob(j.name(), jobName)) {
        return j.id();
      }
    }
    return null;
  }

  /** Deletes each existing tree (a run's large files: staged binaries, caches); logs what it cannot delete. */
  static void deleteTrees(List<Path> trees, Consumer<String> progress) {
    for (Path p : trees) {
      if (!Files.exists(p)) {
        continue;
      }
      try (Stream<Path> walk = Files.walk(p)) {
        for (Path f : walk.sorted(Comparator.reverseOrder()).toList()) {
          Files.deleteIfExists(f);
        }
      } catch (IOException | UncheckedIOException e) {
        progress.accept("cannot delete " + p + ": " + e);
      }
    }
  }

  /** The most telling line of a failed launcher's output: the last exception named, else the last line. */
  static String cause(String text) {
    List<String> lines = text.lines().map(String::strip).filter(l -> !l.isBlank()).toList();
    String pick = lines.isEmpty() ? "(no output)" : lines.get(lines.size() - 1);
    for (String l : lines) {
      if (l.matches(".*\\b[\\w.]+(Exception|Error)\\b.*")) {
        pick = l;
      }
    }
    return ProcessTable.abbreviate(pick.replaceAll("org\\.apache\\.beam\\.vendor\\.grpc\\.v\\w+\\.", ""));
  }
}
