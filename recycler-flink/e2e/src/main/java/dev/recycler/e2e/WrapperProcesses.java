package dev.recycler.e2e;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * The "harness containers": one {@code go-boot-wrapper} process per slot ({@code --slot slot-<i> --recycler
 * localhost:<port> --work_dir <root>/slot-<i>}), each with its log in {@code <root>/slot-<i>.log}.
 *
 * <p>Lifecycle: {@link #start} launches all of them; {@link #close()} sends SIGTERM to each (the wrapper stops its
 * worker and exits 0), waits up to the grace period, then SIGKILLs. Idempotent. A JVM shutdown hook kills them if the
 * owner never closes. Thread-safe: one lock; {@link #restart} replaces a slot's process (a container restart).
 */
final class WrapperProcesses implements AutoCloseable {
  private final Map<String, Process> bySlot;
  private final Map<String, Path> workDirs;
  private final Path root;
  private final Duration stopGrace;
  private final Path binary;
  private final String recyclerEndpoint;
  private final Duration grace;
  private final Map<String, Integer> exitCodes = new LinkedHashMap<>();
  private final Thread hook;
  private boolean closed;

  private WrapperProcesses(Map<String, Process> bySlot, Map<String, Path> workDirs, Path root, Duration stopGrace,
      Path binary, String recyclerEndpoint, Duration grace) {
    this.bySlot = bySlot;
    this.binary = binary;
    this.recyclerEndpoint = recyclerEndpoint;
    this.grace = grace;
    this.workDirs = workDirs;
    this.root = root;
    this.stopGrace = stopGrace;
    this.hook = new Thread(() -> processes().forEach(Process::destroyForcibly), "wrappers-shutdown");
    Runtime.getRuntime().addShutdownHook(hook);
  }

  /**
   * Starts one wrapper for each of {@code slots}.
   *
   * @param graceInsideWrapper the wrappers' {@code --grace_period} (SIGTERM to SIGKILL of a worker)
   */
  static WrapperProcesses start(Path binary, List<String> slots, String recyclerEndpoint, Path root,
      Duration graceInsideWrapper, Duration stopGrace) throws IOException {
    BuildPaths.requireFile(binary, "go-boot-wrapper binary",
        "cd go-boot-wrapper && go build -o bin/go-boot-wrapper ./cmd/go-boot-wrapper");
    Files.createDirectories(root);
    Map<String, Process> procs = new LinkedHashMap<>();
    Map<String, Path> dirs = new LinkedHashMap<>();
    try {
      for (String slot : slots) {
        Path work = Files.createDirectories(root.resolve(slot));
        procs.put(slot, launch(binary, slot, recyclerEndpoint, work, root.resolve(slot + ".log"),
            graceInsideWrapper));
        dirs.put(slot, work);
      }
    } catch (IOException | RuntimeException e) {
      procs.values().forEach(Process::destroyForcibly);
      throw e;
    }
    return new WrapperProcesses(procs, dirs, root, stopGrace, binary, recyclerEndpoint, graceInsideWrapper);
  }

  private static Process launch(Path binary, String slot, String recyclerEndpoint, Path work, Path log,
      Duration graceInsideWrapper) throws IOException {
    ProcessBuilder pb = new ProcessBuilder(binary.toString(), "--slot", slot, "--recycler", recyclerEndpoint,
        "--work_dir", work.toString(), "--grace_period", graceInsideWrapper.toMillis() + "ms")
        .redirectErrorStream(true)
        .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
        .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
    // The wrapper's own settings come from flags only: no RECYCLER_* variable of ours leaks in.
    pb.environment().keySet().removeIf(k -> k.startsWith("RECYCLER_"));
    return pb.start();
  }

  /**
   * Starts the slot's wrapper again with the same flags and log file, as a container runtime restarts a container
   * whose process died ({@code workDir}: another work directory, e.g. on a mount, or null for the slot's own). The old
   * process must have exited.
   *
   * @throws IllegalStateException if the slot's wrapper still runs
   */
  synchronized void restart(String slot, Path workDir) throws IOException {
    Process old = bySlot.get(slot);
    if (old == null) {
      throw new IllegalArgumentException("no wrapper for slot " + slot + "; slots: " + bySlot.keySet());
    }
    if (old.isAlive()) {
      throw new IllegalStateException("the wrapper of " + slot + " still runs (pid " + old.pid() + ")");
    }
    Path work = workDir == null ? root.resolve(slot) : workDir;
    bySlot.put(slot, launch(binary, slot, recyclerEndpoint, work, root.resolve(slot + ".log"), grace));
    workDirs.put(slot, work);
  }

  /**
   * SIGTERM to the slot's wrapper (it stops its worker and exits 0), waits up to the grace period, then SIGKILL.
   * Returns its exit code (-1 if it would not die). {@link #restart} starts it again.
   */
  synchronized int stop(String slot) throws InterruptedException {
    Process p = bySlot.get(slot);
    p.destroy();
    if (!p.waitFor(stopGrace.toMillis(), TimeUnit.MILLISECONDS)) {
      p.destroyForcibly();
      p.waitFor(10, TimeUnit.SECONDS);
    }
    return p.isAlive() ? -1 : p.exitValue();
  }

  /** SIGKILLs the slot's wrapper (its worker dies with it: Pdeathsig) and waits until it is reaped; returns its PID. */
  synchronized long kill(String slot) throws InterruptedException {
    Process p = bySlot.get(slot);
    p.destroyForcibly();
    p.waitFor(10, TimeUnit.SECONDS);
    return p.pid();
  }

  /** The slot's current work directory. */
  synchronized Path workDir(String slot) {
    return workDirs.get(slot);
  }

  /**
   * The current processes, without the lock (for the shutdown hook, which must not wait for {@link #close()}): the map
   * never changes its keys after {@link #start}, a restart only replaces a value.
   */
  private List<Process> processes() {
    return List.copyOf(bySlot.values());
  }

  /** Slot id to wrapper PID. */
  synchronized Map<String, Long> pids() {
    Map<String, Long> m = new LinkedHashMap<>();
    bySlot.forEach((s, p) -> m.put(s, p.pid()));
    return m;
  }

  /** Slot ids whose wrapper process has exited. */
  synchronized List<String> exited() {
    return bySlot.entrySet().stream().filter(e -> !e.getValue().isAlive()).map(Map.Entry::getKey).toList();
  }

  Path logFile(String slot) {
    return root.resolve(slot + ".log");
  }

  /** Per-lease directories ({@code <work_dir>/leases/*}) that exist now, over all wrappers. */
  synchronized List<Path> leaseDirectories() throws IOException {
    List<Path> found = new ArrayList<>();
    for (Path work : workDirs.values()) {
      Path leases = work.resolve("leases");
      if (Files.isDirectory(leases)) {
        try (Stream<Path> s = Files.list(leases)) {
          s.forEach(found::add);
        }
      }
    }
    return found;
  }

  /** Exit code of each wrapper after {@link #close()} (143/137 when it had to be signalled to death by the JVM). */
  synchronized Map<String, Integer> exitCodes() {
    return Map.copyOf(exitCodes);
  }

  /** SIGTERM to all, wait up to the grace period each, SIGKILL the rest. Idempotent. */
  @Override
  public synchronized void close() {
    if (closed) {
      return;
    }
    closed = true;
    bySlot.values().forEach(Process::destroy);
    for (Map.Entry<String, Process> e : bySlot.entrySet()) {
      Process p = e.getValue();
      try {
        if (!p.waitFor(stopGrace.toMillis(), TimeUnit.MILLISECONDS)) {
          p.destroyForcibly();
          p.waitFor(10, TimeUnit.SECONDS);
        }
        exitCodes.put(e.getKey(), p.isAlive() ? -1 : p.exitValue());
      } catch (InterruptedException ie) {
        p.destroyForcibly();
        Thread.currentThread().interrupt();
      }
    }
    try {
      Runtime.getRuntime().removeShutdownHook(hook);
    } catch (IllegalStateException ignored) {
      // the JVM is shutting down
    }
  }
}
