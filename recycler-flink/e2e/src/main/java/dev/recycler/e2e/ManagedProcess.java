package dev.recycler.e2e;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.OptionalInt;
import java.util.concurrent.TimeUnit;

/**
 * One child JVM with its output in files. {@link #stop} sends SIGTERM, waits, then SIGKILLs, and is idempotent and
 * thread-safe (the JDK's {@link Process} methods are).
 */
final class ManagedProcess {
  private final String name;
  private final Process process;
  private final Path stdout;
  private final Path stderr;

  private ManagedProcess(String name, Process process, Path stdout, Path stderr) {
    this.name = name;
    this.process = process;
    this.stdout = stdout;
    this.stderr = stderr;
  }

  static ManagedProcess start(String name, List<String> command, Path workDir, Map<String, String> env,
      Path logDir) throws IOException {
    Path out = logDir.resolve(name + ".out");
    Path err = logDir.resolve(name + ".err");
    ProcessBuilder pb = new ProcessBuilder(command)
        .directory(workDir.toFile())
        .redirectOutput(out.toFile())
        .redirectError(err.toFile())
        .redirectInput(ProcessBuilder.Redirect.from(Path.of("/dev/null").toFile()));
    pb.environment().putAll(env);
    return new ManagedProcess(name, pb.start(), out, err);
  }

  String name() {
    return name;
  }

  long pid() {
    return process.pid();
  }

  boolean isAlive() {
    return process.isAlive();
  }

  OptionalInt exitCode() {
    return process.isAlive() ? OptionalInt.empty() : OptionalInt.of(process.exitValue());
  }

  Path stdout() {
    return stdout;
  }

  Path stderr() {
    return stderr;
  }

  /** Waits for the process to exit by itself; returns its exit code, or empty on timeout. */
  OptionalInt awaitExit(Duration timeout) throws InterruptedException {
    return process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)
        ? OptionalInt.of(process.exitValue()) : OptionalInt.empty();
  }

  /** SIGKILL (no shutdown hook of the child runs) and wait up to 10 s; returns the exit code, -1 if still alive. */
  int kill() throws InterruptedException {
    process.destroyForcibly();
    if (!process.waitFor(10, TimeUnit.SECONDS)) {
      return -1;
    }
    return process.exitValue();
  }

  /**
   * SIGTERM, wait up to {@code grace}, then SIGKILL (and wait for it). Returns the exit code. Idempotent.
   */
  int stop(Duration grace) {
    try {
      if (process.isAlive()) {
        process.destroy();
        if (!process.waitFor(grace.toMillis(), TimeUnit.MILLISECONDS)) {
          process.destroyForcibly();
          process.waitFor(10, TimeUnit.SECONDS);
        }
      }
      return process.exitValue();
    } catch (InterruptedException e) {
      process.destroyForcibly();
      Thread.currentThread().interrupt();
      return -1;
    } catch (IllegalThreadStateException e) {
      return -1; // still not gone after SIGKILL: nothing more we can do
    }
  }

  /** The last {@code lines} lines of a file, for error messages; never throws. */
  static String tail(Path file, int lines) {
    try {
      if (!Files.exists(file)) {
        return "(no " + file.getFileName() + ")";
      }
      List<String> all = Files.readAllLines(file, StandardCharsets.UTF_8);
      List<String> last = new ArrayList<>(all.subList(Math.max(0, all.size() - lines), all.size()));
      return "--- " + file + " (last " + last.size() + " lines) ---\n" + String.join("\n", last);
    } catch (IOException | UncheckedIOException e) {
      return "(cannot read " + file + ": " + e + ")";
    }
  }
}
