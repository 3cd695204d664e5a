package dev.recycler.core.bench;

import java.util.List;
import java.util.Map;

/**
 * One way of getting a Go SDK worker for a runner environment: this project, Beam's worker pool, or the bare exec
 * floor. Implementations own every process they start and stop them all in {@link #close()}.
 */
interface Subject extends AutoCloseable {
  /** Short name used in tables and file names. */
  String name();

  /** Starts the long-lived processes (if any) and waits until they serve. */
  void start() throws Exception;

  /** The long-lived processes whose CPU, fds, threads and RSS are reported, pid to label. */
  Map<Long, String> longLived();

  /**
   * Runs one full lease for {@code env}'s worker id: start, wait for the runner's control connection, close control,
   * release, wait until reusable. Thread-safe: the concurrent runs call it from several threads.
   */
  LeaseSample lease(Lease lease) throws Exception;

  /**
   * CPU ticks of processes of this subject that no long-lived process reaps (so their CPU is not in its cutime),
   * read just before they were killed; cumulative.
   */
  default long unreapedTicks() {
    return 0;
  }

  /** Bytes the recycler sent to wrappers so far (cumulative), or 0 where there is no second hop. */
  default long secondHopBytes() {
    return 0;
  }

  /**
   * Counts what this subject left behind (processes, zombies, files) beyond its long-lived processes. When {@code
   * cleanUp} is set, also removes what it can (Beam's pool: kills the leaked workers and deletes their binary copies).
   */
  Leftovers leftovers(boolean cleanUp) throws Exception;

  /** What was left over at one moment. {@code details} lists examples for the report. */
  record Leftovers(int processes, int zombies, int files, long fileBytes, List<String> details) {
    static final Leftovers NONE = new Leftovers(0, 0, 0, 0, List.of());

    Leftovers plus(Leftovers o) {
      List<String> d = new java.util.ArrayList<>(details);
      d.addAll(o.details);
      return new Leftovers(processes + o.processes, zombies + o.zombies, files + o.files, fileBytes + o.fileBytes,
          d.size() > 6 ? d.subList(0, 6) : d);
    }
  }

  /**
   * What a lease is run with.
   *
   * @param stagingPath the path the job server staged the binary under (an absolute path to a real file when the
   *     benchmark staged a copy, which the runner's artifact server then serves)
   * @param binary the worker binary the floor executes and the runner serves when nothing was staged
   * @param stagedJob the staged job's directory, deleted after the lease as the job server's
   *     {@code --clean-artifacts-per-job} does; null when nothing was staged for this lease
   */
  record Lease(String run, int index, String workerId, String stagingPath, java.nio.file.Path binary,
      java.nio.file.Path stagedJob) {}

  /** How long to wait for the worker's answer to the first instruction. */
  long FIRST_ANSWER_TIMEOUT_S = 30;

  /** StartWorker (or exec) to the worker's first answer, in ms; or why there was none. */
  record Answer(double ms, String error) {}

  /**
   * Sends the first instruction right after the worker is there (StartWorker returned, control connected) and
   * measures from {@code t0} (the StartWorker call or exec, {@link System#nanoTime()}) to its answer.
   */
  static Answer firstAnswer(dev.recycler.core.testing.RunnerEnvironment env, String workerId, long t0) {
    try {
      long at = env.firstAnswer("first-" + workerId).get(FIRST_ANSWER_TIMEOUT_S, java.util.concurrent.TimeUnit.SECONDS);
      return new Answer((at - t0) / 1e6, "");
    } catch (Exception e) {
      return new Answer(-1, "no answer to the first instruction within " + FIRST_ANSWER_TIMEOUT_S + " s: " + e);
    }
  }

  /** Deletes a directory tree (leftovers of a subject's runs); absent is fine. */
  static void deleteTree(java.nio.file.Path p) throws java.io.IOException {
    if (!java.nio.file.Files.exists(p)) {
      return;
    }
    try (java.util.stream.Stream<java.nio.file.Path> s = java.nio.file.Files.walk(p)) {
      for (java.nio.file.Path q : s.sorted(java.util.Comparator.reverseOrder()).toList()) {
        java.nio.file.Files.deleteIfExists(q);
      }
    }
  }
}
