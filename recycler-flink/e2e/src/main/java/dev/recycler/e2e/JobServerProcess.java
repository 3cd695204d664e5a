package dev.recycler.e2e;

import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Beam's Flink job server ({@code FlinkJobServerDriver}, the shaded jar built by {@code recycler-flink/e2e/jobserver})
 * as a child JVM on free 127.0.0.1 ports. Go pipelines submit to {@link #jobEndpoint()} with {@code --runner=universal
 * --endpoint=<jobEndpoint>}.
 *
 * <p>Lifecycle: {@link Builder#start()} returns once the job port accepts connections (the job service is the last of
 * the three services the driver starts), or fails, with the tail of the log, if the JVM exits or the start timeout
 * passes; a port lost to another process between choosing and binding is retried with fresh ports. {@link #close()}
 * sends SIGTERM, waits the grace period, then SIGKILLs the JVM and anything it started (boot processes of a
 * {@code PROCESS} environment under {@code [local]}), and deletes the artifacts directory if this class created it. It
 * is idempotent and thread-safe; a JVM shutdown hook does the same forcibly if the caller never closes.
 *
 * <p>Output: the child's stdout and stderr both go to {@link #logFile()}, which is kept after close.
 *
 * <p>Beam quirks this class absorbs: Beam's own driver listens on all interfaces with its job and artifact ports
 * whatever {@code --job-host} says, so this class starts {@code LoopbackJobServerDriver} from the same jar, which binds
 * every port to {@code --job-host} (127.0.0.1); its per-job artifact cleanup ({@code --clean-artifacts-per-job}, on by
 * default) fails for Go jobs because the staged name nests the launcher's absolute binary path in subdirectories, so
 * each job leaves its worker binary under the artifacts directory until this class deletes it.
 */
public final class JobServerProcess implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(JobServerProcess.class);

  /** Beam's FlinkJobServerDriver with its job and artifact ports bound to --job-host (see the jobserver module). */
  static final String MAIN_CLASS = "dev.recycler.e2e.jobserver.LoopbackJobServerDriver";
  private static final String LOOPBACK = "127.0.0.1";
  private static final int START_ATTEMPTS = 3;
  private static final Duration POLL_INTERVAL = Duration.ofMillis(100);
  private static final Duration CONNECT_TIMEOUT = Duration.ofSeconds(1);
  private static final Duration KILL_WAIT = Duration.ofSeconds(10);

  /** Flink's own Java 17 module flags (its scripts pass them); the embedded MiniCluster of {@code [local]} needs them. */
  private static final List<String> JAVA17_MODULE_FLAGS = List.of(
      "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
      "--add-opens=java.base/java.lang=ALL-UNNAMED",
      "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
      "--add-opens=java.base/java.io=ALL-UNNAMED",
      "--add-opens=java.base/java.net=ALL-UNNAMED",
      "--add-opens=java.base/java.nio=ALL-UNNAMED",
      "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
      "--add-opens=java.base/java.text=ALL-UNNAMED",
      "--add-opens=java.base/java.time=ALL-UNNAMED",
      "--add-opens=java.base/java.util=ALL-UNNAMED",
      "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
      "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
      "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED");

  private final Process process;
  private final Ports ports;
  private final Path logFile;
  private final Path artifactsDir;
  private final boolean ownsArtifactsDir;
  private final Duration startupTime;
  private final Duration grace;
  private final Thread shutdownHook;
  private final AtomicBoolean closed = new AtomicBoolean();

  private JobServerProcess(Process process, Ports ports, Builder b, Path artifactsDir, boolean ownsArtifactsDir,
      Duration startupTime) {
    this.process = process;
    this.ports = ports;
    this.logFile = b.logFile;
    this.artifactsDir = artifactsDir;
    this.ownsArtifactsDir = ownsArtifactsDir;
    this.startupTime = startupTime;
    this.grace = b.stopGrace;
    this.shutdownHook = new Thread(this::killNow, "job-server-shutdown-" + process.pid());
    Runtime.getRuntime().addShutdownHook(shutdownHook);
  }

  /** A builder for a job server running {@code shadedJar} ({@code target/beam-flink-job-server.jar}). */
  public static Builder builder(Path shadedJar) {
    return new Builder(shadedJar);
  }

  /** {@code 127.0.0.1:<job port>}, the value of the Go pipeline's {@code --endpoint}. */
  public String jobEndpoint() {
    return LOOPBACK + ":" + ports.job;
  }

  /** The artifact staging port (the launcher learns it from the job service; exposed for diagnostics). */
  public int artifactPort() {
    return ports.artifact;
  }

  /** The Java expansion service port (unused by Go pipelines without cross-language transforms). */
  public int expansionPort() {
    return ports.expansion;
  }

  public long pid() {
    return process.pid();
  }

  public boolean isAlive() {
    return process.isAlive();
  }

  /** The child's combined stdout and stderr; kept after {@link #close()}. */
  public Path logFile() {
    return logFile;
  }

  /** Where the job server stores staged artifacts (each job's worker binary, among others). */
  public Path artifactsDir() {
    return artifactsDir;
  }

  /** From launching the JVM to the job port accepting connections, for the successful attempt. */
  public Duration startupTime() {
    return startupTime;
  }

  /**
   * Stops the job server: SIGTERM, up to the grace period, then SIGKILL, then the same for any process it started.
   * Deletes the artifacts directory if this class created it. Idempotent; never throws.
   */
  @Override
  public void close() {
    if (!closed.compareAndSet(false, true)) {
      return;
    }
    List<ProcessHandle> children = process.descendants().toList();
    process.destroy();
    boolean graceful = awaitExit(process.toHandle(), grace);
    if (!graceful) {
      LOG.warn("job server did not stop within grace={}, killing it pid={}", grace, process.pid());
      process.destroyForcibly();
      awaitExit(process.toHandle(), KILL_WAIT);
    }
    for (ProcessHandle child : children) {
      if (child.isAlive()) {
        child.destroyForcibly();
        awaitExit(child, KILL_WAIT);
      }
    }
    try {
      Runtime.getRuntime().removeShutdownHook(shutdownHook);
    } catch (IllegalStateException e) {
      // The JVM is already shutting down and the hook may be running: it only repeats what was done here.
    }
    if (ownsArtifactsDir) {
      deleteRecursively(artifactsDir);
    }
    LOG.info("job server stopped pid={} graceful={} exit_code={}", process.pid(), graceful,
        process.isAlive() ? "alive" : String.valueOf(process.exitValue()));
  }

  @Override
  public String toString() {
    return "JobServerProcess{pid=" + process.pid() + ", endpoint=" + jobEndpoint() + ", log=" + logFile + "}";
  }

  private void killNow() {
    process.descendants().forEach(ProcessHandle::destroyForcibly);
    process.destroyForcibly();
  }

  /** Waits for {@code handle} to exit, for at most {@code timeout}; true if it did. */
  private static boolean awaitExit(ProcessHandle handle, Duration timeout) {
    try {
      handle.onExit().get(timeout.toMillis(), TimeUnit.MILLISECONDS);
      return true;
    } catch (TimeoutException e) {
      return false;
    } catch (ExecutionException e) {
      return !handle.isAlive();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return !handle.isAlive();
    }
  }

  private static void deleteRecursively(Path dir) {
    if (!Files.exists(dir)) {
      return;
    }
    try (Stream<Path> walk = Files.walk(dir)) {
      for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
        Files.deleteIfExists(p);
      }
    } catch (IOException | UncheckedIOException e) {
      LOG.warn("cannot delete job server artifacts dir={}: {}", dir, e.toString());
    }
  }

  /** Configures and starts a {@link JobServerProcess}. Setters reject bad values at once. */
  public static final class Builder {
    private final Path jar;
    private String flinkMaster;
    private Path flinkConfDir;
    private Path artifactsDir;
    private Path logFile;
    private Path javaExecutable = Path.of(System.getProperty("java.home"), "bin", "java");
    private final List<String> jvmOptions = new ArrayList<>(List.of("-Xmx1g"));
    private Duration startTimeout = Duration.ofSeconds(60);
    private Duration stopGrace = Duration.ofSeconds(10);

    private Builder(Path jar) {
      this.jar = Objects.requireNonNull(jar, "jar").toAbsolutePath();
    }

    /**
     * The Flink cluster jobs go to: {@code host:restPort} of a session cluster's JobManager (for example {@code
     * 127.0.0.1:8081}), or {@code [local]} for a MiniCluster inside the job server (required).
     */
    public Builder flinkMaster(String hostPortOrLocal) {
      Objects.requireNonNull(hostPortOrLocal, "flinkMaster");
      if (!hostPortOrLocal.equals("[local]") && !hostPortOrLocal.matches("[^:\\s]+:\\d{1,5}")) {
        throw new IllegalArgumentException(
            "flinkMaster must be host:restPort (like 127.0.0.1:8081) or [local], got '" + hostPortOrLocal + "'");
      }
      this.flinkMaster = hostPortOrLocal;
      return this;
    }

    /** The session cluster's conf dir ({@code config.yaml}); its settings apply to every submitted job (optional). */
    public Builder flinkConfDir(Path dir) {
      this.flinkConfDir = Objects.requireNonNull(dir, "flinkConfDir").toAbsolutePath();
      return this;
    }

    /**
     * Where staged artifacts go (optional). The default is a fresh directory that {@link #close()} deletes; a directory
     * given here is left in place. Flink's TaskManagers read artifacts from it, so it must be on their machine.
     */
    public Builder artifactsDir(Path dir) {
      this.artifactsDir = Objects.requireNonNull(dir, "artifactsDir").toAbsolutePath();
      return this;
    }

    /** The file the child's stdout and stderr go to, appended (optional; default a new temp file). */
    public Builder logFile(Path file) {
      this.logFile = Objects.requireNonNull(file, "logFile").toAbsolutePath();
      return this;
    }

    /** The {@code java} to run (optional; default the running JVM's). */
    public Builder javaExecutable(Path java) {
      this.javaExecutable = Objects.requireNonNull(java, "javaExecutable");
      return this;
    }

    /** Extra JVM options, after the defaults ({@code -Xmx1g}; a later {@code -Xmx} wins) (optional). */
    public Builder jvmOptions(List<String> options) {
      Objects.requireNonNull(options, "jvmOptions").forEach(o -> Objects.requireNonNull(o, "jvm option"));
      jvmOptions.addAll(options);
      return this;
    }

    /** How long {@link #start()} waits for the job port (optional; default 60 s). */
    public Builder startTimeout(Duration timeout) {
      this.startTimeout = positive(timeout, "startTimeout");
      return this;
    }

    /** How long {@link JobServerProcess#close()} waits after SIGTERM before SIGKILL (optional; default 10 s). */
    public Builder stopGrace(Duration grace) {
      this.stopGrace = positive(grace, "stopGrace");
      return this;
    }

    /**
     * Starts the job server and waits until its job port accepts connections.
     *
     * @throws IOException if the JVM cannot be launched, exits during start, or is not ready within the start timeout
     *     (the JVM is then stopped); the message carries the tail of the log
     */
    public JobServerProcess start() throws IOException, InterruptedException {
      if (flinkMaster == null) {
        throw new IllegalStateException("flinkMaster is required: host:restPort of the JobManager, or [local]");
      }
      if (!Files.isRegularFile(jar)) {
        throw new IllegalStateException("job server jar not found at " + jar
            + ": build it with `cd recycler-flink/e2e/jobserver && mvn -B -q package`");
      }
      if (flinkConfDir != null && !Files.isDirectory(flinkConfDir)) {
        throw new IllegalStateException("flinkConfDir " + flinkConfDir + " is not a directory");
      }
      boolean ownsArtifacts = artifactsDir == null;
      Path artifacts = ownsArtifacts ? Files.createTempDirectory("beam-job-server-artifacts-") : artifactsDir;
      Files.createDirectories(artifacts);
      if (logFile == null) {
        logFile = Files.createTempFile("beam-job-server-", ".log");
      }
      Files.createDirectories(logFile.toAbsolutePath().getParent());

      IOException lastFailure = null;
      for (int attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
        Ports ports = Ports.free();
        long logOffset = Files.exists(logFile) ? Files.size(logFile) : 0;
        long launched = System.nanoTime();
        Process process = new ProcessBuilder(command(ports, artifacts))
            .directory(artifacts.getParent().toFile())
            .redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.appendTo(logFile.toFile()))
            .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
            .start();
        try {
          if (awaitJobPort(process, ports.job)) {
            Duration startup = Duration.ofNanos(System.nanoTime() - launched);
            LOG.info("job server started pid={} endpoint={}:{} flink_master={} startup_ms={} log={}", process.pid(),
                LOOPBACK, ports.job, flinkMaster, startup.toMillis(), logFile);
            return new JobServerProcess(process, ports, this, artifacts, ownsArtifacts, startup);
          }
        } catch (InterruptedException e) {
          process.destroyForcibly();
          throw e;
        }
        String logTail = tail(logFile, logOffset, 40);
        if (process.isAlive()) {
          process.destroyForcibly();
          awaitExit(process.toHandle(), KILL_WAIT);
          throw new IOException("job server not listening on " + LOOPBACK + ":" + ports.job + " after " + startTimeout
              + " (pid " + process.pid() + " killed); log " + logFile + ":\n" + logTail);
        }
        lastFailure = new IOException("job server exited with code " + process.exitValue() + " during start; log "
            + logFile + ":\n" + logTail);
        if (!logTail.contains("BindException") && !logTail.contains("Address already in use")) {
          break;
        }
        LOG.warn("job server lost a port to another process, retrying with fresh ports attempt={}", attempt);
      }
      if (ownsArtifacts) {
        deleteRecursively(artifacts);
      }
      throw lastFailure;
    }

    private List<String> command(Ports ports, Path artifacts) {
      List<String> cmd = new ArrayList<>();
      cmd.add(javaExecutable.toString());
      cmd.addAll(JAVA17_MODULE_FLAGS);
      cmd.addAll(jvmOptions);
      cmd.addAll(List.of("-cp", jar.toString(), MAIN_CLASS,
          "--job-host", LOOPBACK,
          "--job-port", String.valueOf(ports.job),
          "--artifact-port", String.valueOf(ports.artifact),
          "--expansion-port", String.valueOf(ports.expansion),
          "--artifacts-dir", artifacts.toString(),
          "--flink-master", flinkMaster));
      if (flinkConfDir != null) {
        cmd.addAll(List.of("--flink-conf-dir", flinkConfDir.toString()));
      }
      return cmd;
    }

    /** True once {@code port} accepts a connection; false if the process exits or the start timeout passes. */
    private boolean awaitJobPort(Process process, int port) throws InterruptedException {
      long deadline = System.nanoTime() + startTimeout.toNanos();
      while (System.nanoTime() < deadline) {
        if (!process.isAlive()) {
          return false;
        }
        if (accepts(port)) {
          return true;
        }
        // Waiting on the exit future paces the polling and notices a crash at once.
        if (awaitExit(process.toHandle(), POLL_INTERVAL)) {
          return false;
        }
      }
      return false;
    }

    private static boolean accepts(int port) {
      try (Socket s = new Socket()) {
        s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), (int) CONNECT_TIMEOUT.toMillis());
        return true;
      } catch (IOException e) {
        return false;
      }
    }

    private static Duration positive(Duration d, String name) {
      Objects.requireNonNull(d, name);
      if (d.isNegative() || d.isZero()) {
        throw new IllegalArgumentException(name + " must be positive, got " + d);
      }
      return d;
    }
  }

  /** Three distinct free loopback ports. Another process may take one before the job server binds it: see retries. */
  private record Ports(int job, int artifact, int expansion) {
    static Ports free() throws IOException {
      try (ServerSocket a = bind(); ServerSocket b = bind(); ServerSocket c = bind()) {
        return new Ports(a.getLocalPort(), b.getLocalPort(), c.getLocalPort());
      }
    }

    private static ServerSocket bind() throws IOException {
      ServerSocket s = new ServerSocket();
      s.setReuseAddress(true);
      s.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
      return s;
    }
  }

  /** The last {@code lines} lines written to {@code file} after {@code offset}; never throws. */
  private static String tail(Path file, long offset, int lines) {
    try {
      byte[] all = Files.readAllBytes(file);
      int from = (int) Math.min(offset, all.length);
      List<String> written = new String(all, from, all.length - from, StandardCharsets.UTF_8).lines().toList();
      return String.join("\n", written.subList(Math.max(0, written.size() - lines), written.size()));
    } catch (IOException | UncheckedIOException e) {
      return "(cannot read " + file + ": " + e + ")";
    }
  }
}
