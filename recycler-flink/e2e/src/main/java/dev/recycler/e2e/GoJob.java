package dev.recycler.e2e;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * One Beam Go job: the sample pipelines binary ({@code beam-pipelines}) run as the launcher against Beam's job server,
 * with the recycler as the EXTERNAL environment:
 *
 * <pre>
 * beam-pipelines --pipeline=P --output=OUT --job_name=NAME --runner=universal --endpoint=127.0.0.1:JOBPORT
 *     --environment_type=EXTERNAL --environment_config=localhost:RECYCLERPORT [extra flags]
 * </pre>
 *
 * The launcher stages its own binary as the worker, submits, and exits 0 when the job succeeded, 1 when it failed or
 * was cancelled. Its stdout and stderr go to {@code <log dir>/<name>.log}.
 *
 * <p>Thread-safety: a started job may be awaited or killed from any thread (the JDK's {@link Process} is).
 */
final class GoJob {
  /** What to run: a job name (also the Flink job's name), a pipeline and extra flags such as {@code --hold=2m}. */
  record Spec(String name, String pipeline, List<String> extraFlags) {
    Spec {
      extraFlags = List.copyOf(extraFlags);
    }

    static Spec of(String name, String pipeline, String... extraFlags) {
      return new Spec(name, pipeline, List.of(extraFlags));
    }
  }

  /** How a launcher ended. {@code exitCode} is -1 when it had to be killed. */
  record Outcome(int exitCode, Duration wallTime, String launcherOutput, Optional<String> output) {}

  private final Spec spec;
  private final Process process;
  private final Path log;
  private final Path outputFile;
  private final long startedNanos;
  private volatile long exitedNanos;

  private GoJob(Spec spec, Process process, Path log, Path outputFile, long startedNanos) {
    this.spec = spec;
    this.process = process;
    this.log = log;
    this.outputFile = outputFile;
    this.startedNanos = startedNanos;
  }

  /** Starts the launcher; returns at once. */
  static GoJob start(Path binary, Spec spec, String jobEndpoint, int recyclerPort, Path outputDir, Path logDir)
      throws IOException {
    Files.createDirectories(outputDir);
    Files.createDirectories(logDir);
    Path out = outputDir.resolve(spec.name() + ".txt");
    Files.deleteIfExists(out);
    Path log = logDir.resolve(spec.name() + ".log");
    List<String> cmd = new ArrayList<>(List.of(binary.toString(),
        "--pipeline=" + spec.pipeline(),
        "--output=" + out,
        "--job_name=" + spec.name(),
        "--runner=universal",
        "--endpoint=" + jobEndpoint,
        "--environment_type=EXTERNAL",
        "--environment_config=localhost:" + recyclerPort));
    cmd.addAll(spec.extraFlags());
    long started = System.nanoTime();
    Process p = new ProcessBuilder(cmd)
        .directory(outputDir.toFile())
        .redirectErrorStream(true)
        .redirectOutput(log.toFile())
        .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
        .start();
    GoJob job = new GoJob(spec, p, log, out, started);
    p.onExit().thenRun(() -> job.exitedNanos = System.nanoTime());
    return job;
  }

  /**
   * The exact output a successful run of {@code pipeline} with {@code flags} writes (for {@code fail}, its error
   * message), from the binary's {@code --print_expected}: computed in plain Go, without Beam.
   */
  static String expectedOutput(Path binary, String pipeline, List<String> flags) throws IOException,
      InterruptedException {
    List<String> cmd = new ArrayList<>(List.of(binary.toString(), "--pipeline=" + pipeline, "--print_expected"));
    cmd.addAll(flags);
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    byte[] out = p.getInputStream().readAllBytes();
    if (!p.waitFor(30, TimeUnit.SECONDS) || p.exitValue() != 0) {
      p.destroyForcibly();
      throw new IllegalStateException("'" + String.join(" ", cmd) + "' failed: " + new String(out,
          StandardCharsets.UTF_8));
    }
    return new String(out, StandardCharsets.UTF_8);
  }

  Spec spec() {
    return spec;
  }

  long pid() {
    return process.pid();
  }

  boolean isRunning() {
    return process.isAlive();
  }

  Path logFile() {
    return log;
  }

  /** Waits up to {@code timeout} for the launcher to exit; empty if it still runs. */
  Optional<Outcome> await(Duration timeout) throws InterruptedException, IOException {
    if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
      return Optional.empty();
    }
    return Optional.of(outcome(process.exitValue()));
  }

  /** SIGKILLs the launcher (a job that never ends must not outlive the run) and returns what it had done. */
  Outcome kill() throws InterruptedException, IOException {
    process.destroyForcibly();
    process.waitFor(10, TimeUnit.SECONDS);
    return outcome(-1);
  }

  /** SIGKILL without waiting (for shutdown hooks). */
  void destroyNow() {
    process.destroyForcibly();
  }

  private Outcome outcome(int code) throws IOException {
    long end = exitedNanos != 0 ? exitedNanos : System.nanoTime();
    Duration wall = Duration.ofNanos(end - startedNanos);
    String text = Files.exists(log) ? Files.readString(log, StandardCharsets.UTF_8) : "";
    Optional<String> output = Files.exists(outputFile)
        ? Optional.of(Files.readString(outputFile, StandardCharsets.UTF_8)) : Optional.empty();
    return new Outcome(code, wall, text, output);
  }
}
