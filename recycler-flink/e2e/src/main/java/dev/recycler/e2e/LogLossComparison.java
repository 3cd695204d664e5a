package dev.recycler.e2e;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * Does the recycler's exit instruction lose log lines a worker sent over Beam's logging service? Runs Beam's own
 * {@code debugging_wordcount} example (a binary no one here wrote; it logs {@code Matched: <word>} at INFO for each of
 * the two words its filter keeps, and asserts their counts) on one Flink session cluster, alternating job by job
 * between two environments: {@code EXTERNAL} through the recycler (plugin in the TaskManager, go-boot-wrapper slots),
 * and Beam's own {@code PROCESS} environment (the runner starts Beam's Go boot program, which fetches and runs the
 * worker, and kills it when the environment closes). For each job it counts the {@code Matched:} lines in the
 * TaskManager log: Beam's {@code Slf4jLogWriter} writes there every log entry the runner receives, and the recycler's
 * logging proxy the entries that arrived after the runner's logging server had closed (logger {@code
 * dev.recycler.worker}).
 *
 * <p>Arguments: {@code --debugging-wordcount BINARY --beam-boot BINARY [--jobs N] [--parallelism N] [--work-dir DIR]
 * [--repo-root DIR] [--distinct-words N]}; harness slots = max(2, parallelism).
 * Prints one line per job and a summary per environment; exit 0 when every job succeeded (the counts are the
 * finding, not a pass condition).
 */
public final class LogLossComparison {
  private static final int EXPECTED_LINES = 2;
  private static final Duration JOB_TIMEOUT = Duration.ofMinutes(3);
  /** After a job ends, how long late log lines may still arrive in the TaskManager log. */
  private static final Duration LOG_SETTLE = Duration.ofSeconds(3);

  private LogLossComparison() {}

  /**
   * One job: its {@code Matched:} lines in the TaskManager log and those that went to the worker's stderr instead (the
   * wrappers' logs; Beam's PROCESS environment sends a worker's stderr to /dev/null).
   */
  record JobLines(String environment, String job, int exitCode, int matched, int onStderr, double wallSeconds) {}

  public static void main(String[] args) throws Exception {
    Path workDir = Path.of("/tmp/recycler-logloss");
    Path repoRoot = Path.of("").toAbsolutePath();
    Path dwc = null;
    Path boot = null;
    int jobs = 6;
    int parallelism = 1;
    int distinctWords = 0;
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--work-dir" -> workDir = Path.of(args[++i]);
        case "--repo-root" -> repoRoot = Path.of(args[++i]);
        case "--jobs" -> jobs = Integer.parseInt(args[++i]);
        case "--parallelism" -> parallelism = Integer.parseInt(args[++i]);
        case "--distinct-words" -> distinctWords = Integer.parseInt(args[++i]);
        case "--debugging-wordcount" -> dwc = Path.of(args[++i]);
        case "--beam-boot" -> boot = Path.of(args[++i]);
        default -> {
          System.err.println("usage: LogLossComparison --debugging-wordcount BIN --beam-boot BIN [--jobs N]"
              + " [--parallelism N] [--distinct-words N] [--work-dir DIR] [--repo-root DIR]");
          System.exit(2);
        }
      }
    }
    if (dwc == null || boot == null) {
      System.err.println("--debugging-wordcount and --beam-boot are required");
      System.exit(2);
    }
    Path root = repoRoot.toAbsolutePath().normalize();
    Path work = Files.createDirectories(workDir.resolve("run-" + System.currentTimeMillis()));
    Path wrapperBinary = RunSupport.property("recycler.e2e.wrapperBinary",
        root.resolve("go-boot-wrapper/bin/go-boot-wrapper"));
    Path jobServerJar = RunSupport.property("recycler.e2e.jobServerJar",
        root.resolve("recycler-flink/e2e/jobserver/target/beam-flink-job-server.jar"));
    long t0 = System.nanoTime();
    List<JobLines> results = new ArrayList<>();
    int slots = Math.max(2, parallelism);
    Path input = work.resolve("input.txt");
    Files.writeString(input, inputText(distinctWords), StandardCharsets.UTF_8);
    // With more than one subtask per stage, the two matched words may be logged by different workers.
    SessionRig.Options options = new SessionRig.Options(work, wrapperBinary, jobServerJar,
        BuildPaths.recyclerPluginJar(), BuildPaths.flinkLibDirectory(), slots, slots,
        Map.of("parallelism.default", Integer.toString(parallelism)), line -> say(t0, line));
    try (SessionRig rig = SessionRig.start(options)) {
      FlinkSessionCluster cluster = rig.cluster();
      int port = rig.recyclerPort();
      say(t0, "TaskManager log " + cluster.taskManagerLog());
      for (int i = 0; i < jobs; i++) {
        for (String env : List.of("recycler", "process")) {
          String name = "logloss-" + env + "-" + i;
          List<String> envFlags = env.equals("recycler")
              ? List.of("--environment_type=EXTERNAL", "--environment_config=localhost:" + port)
              : List.of("--environment_type=PROCESS", "--environment_config={\"command\":\"" + boot + "\"}");
          long logBefore = Files.size(cluster.taskManagerLog());
          Map<Path, Long> wrapperLogsBefore = sizes(work.resolve("wrappers"));
          long start = System.nanoTime();
          int code = launch(dwc, name, rig.jobServer().jobEndpoint(), input, work, envFlags);
          double wall = (System.nanoTime() - start) / 1e9;
          Thread.sleep(LOG_SETTLE.toMillis());
          int matched = countMatched(cluster.taskManagerLog(), logBefore);
          int onStderr = 0;
          for (Map.Entry<Path, Long> e : wrapperLogsBefore.entrySet()) {
            onStderr += countMatched(e.getKey(), e.getValue());
          }
          JobLines r = new JobLines(env, name, code, matched, onStderr, wall);
          results.add(r);
          say(t0, String.format(Locale.ROOT, "%-26s exit %d  %5.1f s  Matched lines in the TaskManager log: %d of %d,"
              + " in the harness's stderr log: %s", name, code, wall, matched, EXPECTED_LINES,
              env.equals("recycler") ? Integer.toString(onStderr) : "- (/dev/null)"));
        }
      }
    }
    System.out.println();
    boolean allOk = true;
    for (String env : List.of("recycler", "process")) {
      List<JobLines> of = results.stream().filter(r -> r.environment().equals(env)).toList();
      long ok = of.stream().filter(r -> r.exitCode() == 0).count();
      int lines = of.stream().mapToInt(JobLines::matched).sum();
      int stderr = of.stream().mapToInt(JobLines::onStderr).sum();
      long lossy = of.stream().filter(r -> r.matched() < EXPECTED_LINES).count();
      allOk &= ok == of.size();
      System.out.printf(Locale.ROOT, "%-9s jobs %d (succeeded %d)  Matched lines in the TaskManager log %d of %d,"
          + " jobs short of lines there %d; lines kept in the harness's stderr log %s%n", env, of.size(), ok, lines,
          EXPECTED_LINES * of.size(), lossy, env.equals("recycler") ? Integer.toString(stderr) : "- (/dev/null)");
    }
    System.out.println("logs: " + work);
    System.exit(allOk ? 0 : 1);
  }

  /**
   * Text whose words the default filter ("Flourish|stomach") keeps as Flourish: 3 and stomach: 1, as the job asserts,
   * plus {@code distinct} other distinct words: each of those makes the worker log one DEBUG "Did not match" entry,
   * and the Go SDK's log buffer holds 2,000 entries before it writes further lines to the worker's stderr instead.
   */
  private static String inputText(int distinct) {
    StringBuilder b = new StringBuilder();
    for (int i = 0; i < distinct; i++) {
      int n = i;
      StringBuilder w = new StringBuilder("q");
      for (int k = 0; k < 4; k++) {
        w.append((char) ('a' + n % 26));
        n /= 26;
      }
      b.append(w).append(i % 10 == 9 ? '\n' : ' ');
    }
    b.append('\n');
    for (int i = 0; i < 200; i++) {
      b.append("the king and his daughters walk line ").append(i % 7 == 0 ? "Cordelia" : "Goneril").append('\n');
    }
    b.append("Flourish of trumpets\nFlourish again\nanother Flourish\nan empty stomach\n");
    return b.toString();
  }

  private static int launch(Path binary, String name, String endpoint, Path input, Path work, List<String> envFlags)
      throws IOException, InterruptedException {
    Path out = Files.createDirectories(work.resolve("outputs")).resolve(name + ".txt");
    Path log = Files.createDirectories(work.resolve("launchers")).resolve(name + ".log");
    List<String> cmd = new ArrayList<>(List.of(binary.toString(), "--input=" + input, "--output=" + out,
        "--job_name=" + name, "--runner=universal", "--endpoint=" + endpoint, "--worker_binary=" + binary));
    cmd.addAll(envFlags);
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile())
        .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null"))).start();
    if (!p.waitFor(JOB_TIMEOUT.toSeconds(), TimeUnit.SECONDS)) {
      p.destroyForcibly().waitFor();
      return -1;
    }
    return p.exitValue();
  }

  private static Map<Path, Long> sizes(Path dir) throws IOException {
    Map<Path, Long> m = new LinkedHashMap<>();
    try (var files = Files.list(dir)) {
      for (Path p : files.filter(f -> f.toString().endsWith(".log")).toList()) {
        m.put(p, Files.size(p));
      }
    }
    return m;
  }

  private static int countMatched(Path log, long from) throws IOException {
    byte[] all = Files.readAllBytes(log);
    String tail = new String(all, (int) Math.min(from, all.length), (int) Math.max(0, all.length - from),
        StandardCharsets.UTF_8);
    Map<String, Integer> words = new LinkedHashMap<>();
    tail.lines().filter(l -> l.contains("Matched: ")).forEach(l -> words.merge(
        l.substring(l.indexOf("Matched: ") + 9).trim(), 1, Integer::sum));
    return words.values().stream().mapToInt(Integer::intValue).sum();
  }

  private static void say(long t0, String line) {
    System.out.printf(Locale.ROOT, "[%6.1fs] %s%n", (System.nanoTime() - t0) / 1e9, line);
  }
}
