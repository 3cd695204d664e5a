package dev.recycler.e2e;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * A real Flink session cluster on 127.0.0.1: a JobManager ({@code StandaloneSessionClusterEntrypoint}) and one
 * TaskManager ({@code TaskManagerRunner}) as separate JVMs started from the Maven artifacts in {@link
 * BuildPaths#flinkLibDirectory()}, with plugins in {@code plugins/<dir>/} as in a Flink image. Unlike a MiniCluster it
 * loads plugins, so the recycler's {@code ExternalResourceDriverFactory} really runs in the TaskManager.
 *
 * <pre>{@code
 * try (FlinkSessionCluster cluster = FlinkSessionCluster.builder()
 *         .taskManagerSlots(2)
 *         .plugin(RecyclerPlugin.DIRECTORY, BuildPaths.recyclerPluginJar())
 *         .config(RecyclerPlugin.config(2, recyclerPort, adminPort))   // 2 harness slots on recyclerPort
 *         .start()) {
 *   cluster.restAddress();       // 127.0.0.1:<port>: the Beam job server's --flink-master
 *   cluster.configDirectory();   // the Beam job server's --flink-conf-dir
 * }
 * }</pre>
 *
 * <p><b>What {@link Builder#start()} does</b> (what Flink's shell scripts would): writes {@code conf/config.yaml} with
 * every address bound to 127.0.0.1 and free ports, plus a log4j 2 configuration; runs {@code BashJavaUtils} for the
 * JobManager's and TaskManager's memory settings (without them the TaskManager refuses to start); starts both JVMs with
 * Flink's Java 17 {@code --add-opens} list, logs in {@code log/}, and {@code FLINK_PLUGINS_DIR}; then polls REST until
 * the TaskManager has registered all its slots. The work directory (config, logs, plugins, tmp) is kept after close for
 * post-mortems.
 *
 * <p><b>Lifecycle.</b> {@link #close()} stops the TaskManagers, then the JobManager: SIGTERM, wait, SIGKILL. It is
 * idempotent, and a JVM shutdown hook calls it if the owner never does. {@link #stopTaskManager()} and {@link
 * #startTaskManager()} stop and restart the TaskManager alone.
 *
 * <p><b>Several TaskManagers.</b> {@link Builder#withoutDefaultTaskManager()} starts the JobManager alone; {@link
 * #launchNamedTaskManager} then adds TaskManagers by name, each with its own dynamic properties (e.g. its own recycler
 * port) and JVM options, {@link #awaitNamedTaskManager} waits for one to register, and {@link #killNamedTaskManager}
 * / {@link #relaunchNamedTaskManager} kill and restart one (a new JVM with the same settings and a new resource id
 * {@code <name>-<n>}).
 *
 * <p><b>Concurrency.</b> Process state is guarded by the instance's monitor; REST helpers are thread-safe.
 */
public final class FlinkSessionCluster implements AutoCloseable {
  /** The Java 17 module flags of Flink 1.19's {@code env.java.opts.all} (the shell scripts pass them; we must). */
  public static final List<String> JAVA_17_OPTIONS = List.of(
      "-XX:+IgnoreUnrecognizedVMOptions",
      "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
      "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
      "--add-exports=jdk.compiler/com.sun.tools.javac.api=ALL-UNNAMED",
      "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
      "--add-exports=jdk.compiler/com.sun.tools.javac.parser=ALL-UNNAMED",
      "--add-exports=jdk.compiler/com.sun.tools.javac.tree=ALL-UNNAMED",
      "--add-exports=jdk.compiler/com.sun.tools.javac.util=ALL-UNNAMED",
      "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
      "--add-opens=java.base/java.lang=ALL-UNNAMED",
      "--add-opens=java.base/java.net=ALL-UNNAMED",
      "--add-opens=java.base/java.io=ALL-UNNAMED",
      "--add-opens=java.base/java.nio=ALL-UNNAMED",
      "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
      "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
      "--add-opens=java.base/java.text=ALL-UNNAMED",
      "--add-opens=java.base/java.time=ALL-UNNAMED",
      "--add-opens=java.base/java.util=ALL-UNNAMED",
      "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
      "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
      "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED");

  private static final String HOST = "127.0.0.1";
  private static final String BASH_JAVA_UTILS = "org.apache.flink.runtime.util.bash.BashJavaUtils";
  private static final String RESULT_PREFIX = "BASH_JAVA_UTILS_EXEC_RESULT:";
  private static final Duration POLL_INTERVAL = Duration.ofMillis(200);
  private static final List<String> REQUIRED_JARS = List.of("flink-runtime-", "flink-rpc-akka-loader-",
      "flink-streaming-java-", "flink-clients-", "log4j-core-", "log4j-slf4j-impl-", "slf4j-api-");

  private final Builder settings;
  private final Path workDir;
  private final Path confDir;
  private final Path logDir;
  private final String classpath;
  private final int restPort;
  private final URI restUri;
  private final FlinkRestClient rest;
  private final Thread shutdownHook;
  private final long startNanos = System.nanoTime();
  // written once by startAll() before the monitor is first taken, read under it
  private List<String> taskManagerJvmArgs = List.of();
  private List<String> taskManagerDynamicArgs = List.of();
  private volatile Duration coldStart = Duration.ZERO;

  // guarded by this
  private ManagedProcess jobManager;
  private ManagedProcess taskManager;
  private int taskManagerStarts;
  private String taskManagerId;
  private final Map<String, NamedTaskManager> named = new LinkedHashMap<>();
  private boolean closed;
  /** Set first by {@link #close()} so a start in progress (which holds the monitor) gives up within one poll. */
  private volatile boolean closeRequested;

  private FlinkSessionCluster(Builder b, Path workDir, String classpath, int restPort) {
    this.settings = b;
    this.workDir = workDir;
    this.confDir = workDir.resolve("conf");
    this.logDir = workDir.resolve("log");
    this.classpath = classpath;
    this.restPort = restPort;
    this.restUri = URI.create("http://" + HOST + ":" + restPort);
    this.rest = new FlinkRestClient(restUri);
    this.shutdownHook = new Thread(this::close, "flink-session-cluster-shutdown");
  }

  public static Builder builder() {
    return new Builder();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Addresses and files

  /** {@code 127.0.0.1:<rest port>}: Flink's REST endpoint, what the Beam job server takes as {@code --flink-master}. */
  public String restAddress() {
    return HOST + ":" + restPort;
  }

  public int restPort() {
    return restPort;
  }

  /** {@code http://127.0.0.1:<rest port>}. */
  public URI restUri() {
    return restUri;
  }

  /** Directory of {@code config.yaml} (e.g. the Beam job server's {@code --flink-conf-dir}). */
  public Path configDirectory() {
    return confDir;
  }

  /** The cluster's work directory: {@code conf/}, {@code log/}, {@code plugins/}, {@code tmp/}. Kept after close. */
  public Path workDirectory() {
    return workDir;
  }

  public Path logDirectory() {
    return logDir;
  }

  public Path jobManagerLog() {
    return logDir.resolve("jobmanager.log");
  }

  /** Log of the current (or last) TaskManager; each {@link #startTaskManager()} gets a new file. */
  public synchronized Path taskManagerLog() {
    return logDir.resolve(taskManagerName(taskManagerStarts) + ".log");
  }

  /** Flink resource id of the current (or last) TaskManager ({@code tm-1}, {@code tm-2}, ...). */
  public synchronized String taskManagerId() {
    return taskManagerId;
  }

  /** How long {@link Builder#start()} took, from writing the configuration to all slots registered. */
  public Duration coldStartTime() {
    return coldStart;
  }

  public synchronized OptionalLong jobManagerPid() {
    return jobManager != null && jobManager.isAlive() ? OptionalLong.of(jobManager.pid()) : OptionalLong.empty();
  }

  public synchronized OptionalLong taskManagerPid() {
    return taskManager != null && taskManager.isAlive() ? OptionalLong.of(taskManager.pid()) : OptionalLong.empty();
  }

  public synchronized boolean isTaskManagerRunning() {
    return taskManager != null && taskManager.isAlive();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // REST helpers

  public ClusterOverview overview() throws IOException, InterruptedException {
    return rest.overview();
  }

  /** All jobs the JobManager knows, newest first as Flink lists them. */
  public List<JobSummary> jobs() throws IOException, InterruptedException {
    return rest.jobs();
  }

  public JobSummary job(String jobId) throws IOException, InterruptedException {
    return rest.job(jobId);
  }

  /** Resource ids of the TaskManagers the JobManager lists now (REST {@code /taskmanagers}). */
  public List<String> registeredTaskManagers() throws IOException, InterruptedException {
    List<String> ids = new ArrayList<>();
    for (JsonNode t : rest.get("/taskmanagers").path("taskmanagers")) {
      ids.add(t.path("id").asText());
    }
    return ids;
  }

  /**
   * Resource ids of the TaskManagers that ran (or run) any subtask of the job, from REST ({@code
   * /jobs/<id>/vertices/<vertex>/taskmanagers}).
   */
  public Set<String> taskManagersOfJob(String jobId) throws IOException, InterruptedException {
    Set<String> ids = new TreeSet<>();
    for (JsonNode v : rest.get("/jobs/" + jobId).path("vertices")) {
      for (JsonNode t : rest.get("/jobs/" + jobId + "/vertices/" + v.path("id").asText() + "/taskmanagers")
          .path("taskmanagers")) {
        String id = t.path("taskmanager-id").asText();
        if (!id.isEmpty()) {
          ids.add(id);
        }
      }
    }
    return ids;
  }

  /** Asks Flink to cancel a job ({@code PATCH /jobs/<id>?mode=cancel}); returns at once. */
  public void cancelJob(String jobId) throws IOException, InterruptedException {
    rest.patch("/jobs/" + jobId + "?mode=cancel");
  }

  /**
   * Waits until the job is FINISHED, FAILED or CANCELED and returns it.
   *
   * @throws IllegalStateException on timeout, with the job's last state
   */
  public JobSummary awaitJobTerminal(String jobId, Duration timeout) throws IOException, InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (true) {
      JobSummary job = rest.job(jobId);
      if (job.isTerminal()) {
        return job;
      }
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException("job " + jobId + " still " + job.state() + " after " + timeout);
      }
      pause();
    }
  }

  /** Cancels every job that is not finished yet and waits for each to end; returns how many it cancelled. */
  public int cancelAllJobs(Duration timeout) throws IOException, InterruptedException {
    List<String> cancelled = new ArrayList<>();
    for (JobSummary job : rest.jobs()) {
      if (!job.isTerminal()) {
        cancelJob(job.id());
        cancelled.add(job.id());
      }
    }
    for (String id : cancelled) {
      awaitJobTerminal(id, timeout);
    }
    return cancelled.size();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Lifecycle

  /**
   * Stops the TaskManager (SIGTERM, wait up to the stop timeout, SIGKILL) and returns its exit code (143 after a
   * clean SIGTERM); -1 if none runs.
   */
  public synchronized int stopTaskManager() {
    if (taskManager == null) {
      return -1;
    }
    int code = taskManager.stop(settings.stopTimeout);
    taskManager = null;
    return code;
  }

  /**
   * SIGKILLs the TaskManager (no shutdown hook runs: the recycler plugin inside it dies without a word, as in an
   * out-of-memory kill) and waits for it; returns its exit code (137), -1 if none runs. {@link #startTaskManager()}
   * starts a new one.
   */
  public synchronized int killTaskManager() throws InterruptedException {
    if (taskManager == null) {
      return -1;
    }
    int code = taskManager.kill();
    taskManager = null;
    return code;
  }

  /**
   * Starts a new TaskManager (a new JVM, new log file, new resource id) with the cluster's configuration and waits
   * until all its slots are registered.
   *
   * @throws IllegalStateException if one is running, or if the new one exits or does not register in time (the
   *     message carries the tail of its log); the process is stopped then
   */
  public void startTaskManager() throws IOException, InterruptedException {
    startTaskManager(Map.of());
  }

  /**
   * Like {@link #startTaskManager()}, with extra {@code -D key=value} dynamic properties for this TaskManager only
   * (they override config.yaml), e.g. a different recycler port.
   */
  public synchronized void startTaskManager(Map<String, String> dynamicProperties)
      throws IOException, InterruptedException {
    if (closed) {
      throw new IllegalStateException("cluster is closed");
    }
    if (taskManager != null && taskManager.isAlive()) {
      throw new IllegalStateException("a TaskManager is running (pid " + taskManager.pid() + "): stop it first");
    }
    launchTaskManager(dynamicProperties);
    awaitTaskManagerRegistered(settings.startTimeout);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Named TaskManagers (several per cluster)

  /**
   * Starts one more TaskManager JVM named {@code name} and returns at once (use {@link #awaitNamedTaskManager}).
   * {@code dynamicProperties} are passed as {@code -D key=value} (they override config.yaml, e.g. this TaskManager's
   * recycler port), {@code jvmOptions} after Flink's memory options. Its resource id is {@code <name>-<n>}, n counting
   * its starts; its log is {@code log/taskmanager-<name>-<n>.log}.
   *
   * @throws IllegalStateException if the cluster is closed or a TaskManager of that name is running
   */
  public synchronized void launchNamedTaskManager(String name, Map<String, String> dynamicProperties,
      List<String> jvmOptions) throws IOException {
    if (name == null || !name.matches("[a-z0-9][a-z0-9-]*")) {
      throw new IllegalArgumentException("TaskManager name must be lowercase letters, digits and '-', got " + name);
    }
    NamedTaskManager t = named.get(name);
    if (t != null && t.process != null && t.process.isAlive()) {
      throw new IllegalStateException("TaskManager " + name + " is running (pid " + t.process.pid() + ")");
    }
    NamedTaskManager fresh = new NamedTaskManager(name, Map.copyOf(dynamicProperties), List.copyOf(jvmOptions));
    if (t != null) {
      fresh.starts = t.starts;
    }
    named.put(name, fresh);
    relaunchNamedTaskManager(name);
  }

  /**
   * Starts a new JVM for the named TaskManager with the settings of its last launch (a new resource id); returns at
   * once.
   *
   * @throws IllegalStateException if the cluster is closed, the name is unknown or that TaskManager is running
   */
  public synchronized void relaunchNamedTaskManager(String name) throws IOException {
    if (closed) {
      throw new IllegalStateException("cluster is closed");
    }
    NamedTaskManager t = namedOrThrow(name);
    if (t.process != null && t.process.isAlive()) {
      throw new IllegalStateException("TaskManager " + name + " is running (pid " + t.process.pid() + ")");
    }
    launchNamed(t);
  }

  /**
   * Waits until the named TaskManager's current JVM has registered all its slots with the JobManager.
   *
   * @throws IllegalStateException if it exits or does not register within the start timeout (it is stopped then;
   *     the message carries its log tail)
   */
  public synchronized void awaitNamedTaskManager(String name) throws InterruptedException {
    NamedTaskManager t = namedOrThrow(name);
    awaitRegistered(t.id, t.process, settings.startTimeout);
  }

  /** SIGKILLs the named TaskManager's JVM (no shutdown hook runs) and waits for it; returns its exit code (137). */
  public synchronized int killNamedTaskManager(String name) throws InterruptedException {
    NamedTaskManager t = namedOrThrow(name);
    return t.process == null ? -1 : t.process.kill();
  }

  /** SIGTERM, wait up to the stop timeout, SIGKILL; returns the exit code. */
  public synchronized int stopNamedTaskManager(String name) {
    NamedTaskManager t = namedOrThrow(name);
    return t.process == null ? -1 : t.process.stop(settings.stopTimeout);
  }

  /** PID of the named TaskManager's JVM while it runs. */
  public synchronized OptionalLong namedTaskManagerPid(String name) {
    NamedTaskManager t = namedOrThrow(name);
    return t.process != null && t.process.isAlive() ? OptionalLong.of(t.process.pid()) : OptionalLong.empty();
  }

  /** Flink resource id of the named TaskManager's current (or last) JVM: {@code <name>-<n>}. */
  public synchronized String namedTaskManagerId(String name) {
    return namedOrThrow(name).id;
  }

  /** Log file of the named TaskManager's current (or last) JVM. */
  public synchronized Path namedTaskManagerLog(String name) {
    return logDir.resolve("taskmanager-" + namedOrThrow(name).id + ".log");
  }

  private NamedTaskManager namedOrThrow(String name) {
    NamedTaskManager t = named.get(name);
    if (t == null) {
      throw new IllegalArgumentException("no TaskManager named " + name + "; known: " + named.keySet());
    }
    return t;
  }

  /** Settings and current JVM of one named TaskManager; guarded by the cluster's monitor. */
  private static final class NamedTaskManager {
    final String name;
    final Map<String, String> dynamicProperties;
    final List<String> jvmOptions;
    int starts;
    String id;
    ManagedProcess process;

    NamedTaskManager(String name, Map<String, String> dynamicProperties, List<String> jvmOptions) {
      this.name = name;
      this.dynamicProperties = new LinkedHashMap<>(dynamicProperties);
      this.jvmOptions = jvmOptions;
    }
  }

  /** Stops the TaskManager, then the JobManager. Idempotent; never throws. */
  @Override
  public void close() {
    closeRequested = true;
    synchronized (this) {
      if (closed) {
        return;
      }
      closed = true;
      if (taskManager != null) {
        taskManager.stop(settings.stopTimeout);
      }
      for (NamedTaskManager t : named.values()) {
        if (t.process != null) {
          t.process.stop(settings.stopTimeout);
        }
      }
      if (jobManager != null) {
        jobManager.stop(settings.stopTimeout);
      }
    }
    if (Thread.currentThread() != shutdownHook) {
      try {
        Runtime.getRuntime().removeShutdownHook(shutdownHook);
      } catch (IllegalStateException e) {
        // the JVM is shutting down already
      }
    }
  }

  private void startAll() throws IOException, InterruptedException {
    Runtime.getRuntime().addShutdownHook(shutdownHook);
    Files.createDirectories(confDir);
    Files.createDirectories(logDir);
    Files.createDirectories(workDir.resolve("tmp"));
    installPlugins();
    writeConfiguration();

    // Both memory calculations at once: each is a JVM start.
    CompletableFuture<List<List<String>>> jm = bashJavaUtilsAsync("GET_JM_RESOURCE_PARAMS", "jobmanager");
    CompletableFuture<List<List<String>>> tm = bashJavaUtilsAsync("GET_TM_RESOURCE_PARAMS", "taskmanager");
    List<List<String>> jmParams = join(jm);
    List<List<String>> tmParams = join(tm);
    taskManagerJvmArgs = tmParams.get(0);
    taskManagerDynamicArgs = tmParams.get(1);

    List<String> jmCommand = new ArrayList<>(javaCommand(jmParams.get(0), jobManagerLog()));
    jmCommand.add("org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint");
    jmCommand.addAll(List.of("--configDir", confDir.toString(), "--executionMode", "cluster"));
    jmCommand.addAll(jmParams.get(1));
    synchronized (this) {
      jobManager = ManagedProcess.start("jobmanager", jmCommand, workDir, environment(), logDir);
      if (settings.defaultTaskManager) {
        // The TaskManager retries until the JobManager is up: starting both at once saves seconds.
        launchTaskManager(Map.of());
        awaitTaskManagerRegistered(settings.startTimeout);
      }
    }
    coldStart = Duration.ofNanos(System.nanoTime() - startNanos);
  }

  private synchronized void launchTaskManager(Map<String, String> dynamicProperties) throws IOException {
    taskManagerStarts++;
    String name = taskManagerName(taskManagerStarts);
    taskManagerId = "tm-" + taskManagerStarts;
    List<String> command = new ArrayList<>(javaCommand(taskManagerJvmArgs, logDir.resolve(name + ".log")));
    command.add("org.apache.flink.runtime.taskexecutor.TaskManagerRunner");
    command.addAll(List.of("--configDir", confDir.toString()));
    command.addAll(taskManagerDynamicArgs);
    dynamicProperties.forEach((k, v) -> command.addAll(List.of("-D", k + "=" + v)));
    command.addAll(List.of("-D", "taskmanager.resource-id=" + taskManagerId));
    taskManager = ManagedProcess.start(name, command, workDir, environment(), logDir);
  }

  private synchronized void awaitTaskManagerRegistered(Duration timeout) throws InterruptedException {
    ManagedProcess tm = taskManager;
    try {
      awaitRegistered(taskManagerId, tm, timeout);
    } catch (IllegalStateException e) {
      if (!tm.isAlive()) {
        taskManager = null;
      }
      throw e;
    }
  }

  /** Polls REST until TaskManager {@code id} has registered all its slots; stops {@code tm} on timeout. */
  private synchronized void awaitRegistered(String id, ManagedProcess tm, Duration timeout)
      throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    String lastSeen = "no answer from REST yet";
    while (true) {
      if (closeRequested) {
        throw new IllegalStateException("cluster closed while waiting for TaskManager " + id);
      }
      if (!jobManager.isAlive()) {
        throw startFailure("the JobManager exited with code " + jobManager.exitCode().orElse(-1), jobManager);
      }
      if (!tm.isAlive()) {
        throw startFailure("TaskManager " + id + " exited with code " + tm.exitCode().orElse(-1)
            + " before registering", tm);
      }
      try {
        JsonNode list = rest.get("/taskmanagers").path("taskmanagers");
        for (JsonNode t : list) {
          if (id.equals(t.path("id").asText())
              && t.path("slotsNumber").asInt() == settings.taskManagerSlots) {
            return;
          }
        }
        lastSeen = list.toString();
      } catch (IOException e) {
        lastSeen = e.toString();
      }
      if (System.nanoTime() > deadline) {
        tm.stop(settings.stopTimeout);
        throw startFailure("TaskManager " + id + " did not register " + settings.taskManagerSlots
            + " slots within " + timeout + " (last REST answer: " + lastSeen + ")", tm);
      }
      pause();
    }
  }

  /** Starts the JVM of a named TaskManager (its next start); the caller holds the monitor. */
  private void launchNamed(NamedTaskManager t) throws IOException {
    t.starts++;
    t.id = t.name + "-" + t.starts;
    List<String> jvm = new ArrayList<>(taskManagerJvmArgs);
    jvm.addAll(t.jvmOptions);
    List<String> command = new ArrayList<>(javaCommand(jvm, logDir.resolve("taskmanager-" + t.id + ".log")));
    command.add("org.apache.flink.runtime.taskexecutor.TaskManagerRunner");
    command.addAll(List.of("--configDir", confDir.toString()));
    command.addAll(taskManagerDynamicArgs);
    t.dynamicProperties.forEach((k, v) -> command.addAll(List.of("-D", k + "=" + v)));
    command.addAll(List.of("-D", "taskmanager.resource-id=" + t.id));
    t.process = ManagedProcess.start("taskmanager-" + t.id, command, workDir, environment(), logDir);
  }

  private IllegalStateException startFailure(String what, ManagedProcess p) {
    return new IllegalStateException(what + "; work directory " + workDir + "\n"
        + ManagedProcess.tail(logDir.resolve(p.name() + ".log"), 40) + "\n" + ManagedProcess.tail(p.stderr(), 20)
        + "\n" + ManagedProcess.tail(p.stdout(), 20));
  }

  private List<String> javaCommand(List<String> jvmArgs, Path logFile) {
    List<String> cmd = new ArrayList<>();
    cmd.add(settings.javaExecutable.toString());
    cmd.addAll(jvmArgs);
    cmd.addAll(JAVA_17_OPTIONS);
    cmd.add("-Dlog.file=" + logFile);
    cmd.add("-Dlog4j.configurationFile=" + confDir.resolve("log4j.properties").toUri());
    cmd.add("-classpath");
    cmd.add(classpath);
    return cmd;
  }

  private Map<String, String> environment() {
    return Map.of(
        "FLINK_CONF_DIR", confDir.toString(),
        "FLINK_PLUGINS_DIR", workDir.resolve("plugins").toString(),
        "FLINK_LOG_DIR", logDir.toString());
  }

  private CompletableFuture<List<List<String>>> bashJavaUtilsAsync(String command, String role) {
    return CompletableFuture.supplyAsync(() -> {
      try {
        return bashJavaUtils(command, role);
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IllegalStateException("interrupted", e);
      }
    });
  }

  /** Runs BashJavaUtils; returns [JVM arguments, dynamic properties ("-D", "k=v", ...)]. */
  private List<List<String>> bashJavaUtils(String command, String role) throws IOException, InterruptedException {
    List<String> cmd = new ArrayList<>(javaCommand(List.of("-Xmx128m"), logDir.resolve("bash-java-utils.log")));
    cmd.addAll(List.of(BASH_JAVA_UTILS, command, "--configDir", confDir.toString()));
    Path out = logDir.resolve("bash-java-utils-" + role + ".out");
    Process p = new ProcessBuilder(cmd).directory(workDir.toFile())
        .redirectErrorStream(true).redirectOutput(out.toFile()).start();
    if (!p.waitFor(60, TimeUnit.SECONDS)) {
      p.destroyForcibly();
      throw new IllegalStateException("BashJavaUtils " + command + " did not finish within 60 s");
    }
    List<String> results = Files.readAllLines(out).stream()
        .filter(l -> l.startsWith(RESULT_PREFIX))
        .map(l -> l.substring(RESULT_PREFIX.length()).trim())
        .toList();
    if (p.exitValue() != 0 || results.size() < 2) {
      throw new IllegalStateException("BashJavaUtils " + command + " failed (exit " + p.exitValue()
          + "); check the memory settings in " + confDir.resolve("config.yaml") + "\n" + ManagedProcess.tail(out, 30));
    }
    List<String> jvm = split(results.get(results.size() - 2));
    List<String> dynamic = split(results.get(results.size() - 1));
    return List.of(jvm, dynamic);
  }

  private static List<String> split(String s) {
    return Arrays.stream(s.trim().split("\\s+")).filter(t -> !t.isEmpty()).toList();
  }

  private void installPlugins() throws IOException {
    for (Map.Entry<String, Path> e : settings.plugins.entrySet()) {
      Path dir = workDir.resolve("plugins").resolve(e.getKey());
      Files.createDirectories(dir);
      Files.copy(e.getValue(), dir.resolve(e.getValue().getFileName()), StandardCopyOption.REPLACE_EXISTING);
    }
  }

  private void writeConfiguration() throws IOException {
    Map<String, String> c = new LinkedHashMap<>();
    c.put("jobmanager.rpc.address", HOST);
    c.put("jobmanager.rpc.port", Integer.toString(settings.rpcPort));
    c.put("jobmanager.bind-host", HOST);
    c.put("taskmanager.host", HOST);
    c.put("taskmanager.bind-host", HOST);
    c.put("rest.address", HOST);
    c.put("rest.bind-address", HOST);
    c.put("rest.port", Integer.toString(restPort));
    c.put("jobmanager.memory.process.size", settings.jobManagerMemory);
    c.put("taskmanager.memory.process.size", settings.taskManagerMemory);
    c.put("taskmanager.numberOfTaskSlots", Integer.toString(settings.taskManagerSlots));
    c.put("parallelism.default", "1");
    c.put("io.tmp.dirs", workDir.resolve("tmp").toString());
    c.putAll(settings.config);
    StringBuilder yaml = new StringBuilder("# written by dev.recycler.e2e.FlinkSessionCluster\n");
    c.forEach((k, v) -> yaml.append(k).append(": '").append(v.replace("'", "''")).append("'\n"));
    Files.writeString(confDir.resolve("config.yaml"), yaml.toString(), StandardCharsets.UTF_8);

    try (InputStream log4j = FlinkSessionCluster.class.getResourceAsStream("log4j-cluster.properties")) {
      if (log4j == null) {
        throw new IllegalStateException("log4j-cluster.properties missing from the recycler-e2e jar");
      }
      Files.copy(log4j, confDir.resolve("log4j.properties"), StandardCopyOption.REPLACE_EXISTING);
    }
  }

  private static String taskManagerName(int start) {
    return "taskmanager-" + start;
  }

  private static void pause() throws InterruptedException {
    // Polling REST: Flink has no push notification for "slots registered".
    LockSupport.parkNanos(POLL_INTERVAL.toNanos());
    if (Thread.interrupted()) {
      throw new InterruptedException();
    }
  }

  private static <T> T join(CompletableFuture<T> f) throws IOException, InterruptedException {
    try {
      return f.get();
    } catch (ExecutionException e) {
      Throwable c = e.getCause();
      if (c instanceof UncheckedIOException u) {
        throw u.getCause();
      }
      if (c instanceof RuntimeException r) {
        throw r;
      }
      throw new IllegalStateException(c);
    }
  }

  static int freePort() throws IOException {
    try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getByName(HOST))) {
      return s.getLocalPort();
    }
  }

  /**
   * Settings of a cluster. Setters validate at once; {@link #start()} checks the classpath and starts everything.
   * Not thread-safe.
   */
  public static final class Builder {
    private int taskManagerSlots = 1;
    private final Map<String, Path> plugins = new LinkedHashMap<>();
    private final Map<String, String> config = new LinkedHashMap<>();
    private Path workDirectory;
    private Path flinkLibDirectory;
    private Path javaExecutable = Path.of(System.getProperty("java.home"), "bin", "java");
    private String jobManagerMemory = "1024m";
    private String taskManagerMemory = "1536m";
    private Duration startTimeout = Duration.ofSeconds(120);
    private Duration stopTimeout = Duration.ofSeconds(60);
    private int rpcPort;
    private boolean defaultTaskManager = true;

    private Builder() {}

    /**
     * Starts only the JobManager: {@link Builder#start()} then returns without a TaskManager, and the caller adds
     * them with {@link FlinkSessionCluster#launchNamedTaskManager}. The single-TaskManager methods ({@link
     * FlinkSessionCluster#taskManagerPid()}, ...) then see none until {@link FlinkSessionCluster#startTaskManager()}.
     */
    public Builder withoutDefaultTaskManager() {
      this.defaultTaskManager = false;
      return this;
    }

    /** Slots of the TaskManager ({@code taskmanager.numberOfTaskSlots}); default 1. */
    public Builder taskManagerSlots(int slots) {
      if (slots < 1 || slots > 64) {
        throw new IllegalArgumentException("task manager slots must be between 1 and 64, got " + slots);
      }
      this.taskManagerSlots = slots;
      return this;
    }

    /** Installs {@code jar} as {@code plugins/<directory>/<jar name>} (Flink loads each folder in its own loader). */
    public Builder plugin(String directory, Path jar) {
      if (directory == null || !directory.matches("[A-Za-z0-9][A-Za-z0-9_.-]*")) {
        throw new IllegalArgumentException("plugin directory must be a simple name, got " + directory);
      }
      BuildPaths.requireFile(jar, "plugin jar", "mvn -pl recycler-flink package");
      plugins.put(directory, jar.toAbsolutePath());
      return this;
    }

    /** One Flink configuration entry; overrides the launcher's defaults (addresses, ports, memory) if it must. */
    public Builder config(String key, String value) {
      if (key == null || key.isBlank() || value == null) {
        throw new IllegalArgumentException("config key and value must be set, got " + key + "=" + value);
      }
      config.put(key, value);
      return this;
    }

    public Builder config(Map<String, String> entries) {
      entries.forEach(this::config);
      return this;
    }

    /** Where conf/, log/, plugins/ and tmp/ go; default a new temporary directory. Kept after close. */
    public Builder workDirectory(Path dir) {
      this.workDirectory = dir.toAbsolutePath();
      return this;
    }

    /** Jars of the Flink JVMs' classpath; default {@link BuildPaths#flinkLibDirectory()}. */
    public Builder flinkLibDirectory(Path dir) {
      this.flinkLibDirectory = dir.toAbsolutePath();
      return this;
    }

    /** The {@code java} of the Flink JVMs; default the running JVM's. */
    public Builder javaExecutable(Path java) {
      this.javaExecutable = java;
      return this;
    }

    /** {@code jobmanager.memory.process.size}; default 1024m. */
    public Builder jobManagerMemory(String size) {
      this.jobManagerMemory = size;
      return this;
    }

    /** {@code taskmanager.memory.process.size}; default 1536m. */
    public Builder taskManagerMemory(String size) {
      this.taskManagerMemory = size;
      return this;
    }

    /** Longest {@link #start()} (and {@link FlinkSessionCluster#startTaskManager()}) waits; default 120 s. */
    public Builder startTimeout(Duration timeout) {
      this.startTimeout = positive(timeout);
      return this;
    }

    /** Grace between SIGTERM and SIGKILL for each process; default 60 s. */
    public Builder stopTimeout(Duration timeout) {
      this.stopTimeout = positive(timeout);
      return this;
    }

    /**
     * Writes the configuration, starts the JobManager and the TaskManager and returns once the TaskManager has
     * registered all its slots.
     *
     * @throws IllegalStateException if the classpath is incomplete or a process fails to come up (with its log tail);
     *     everything started is stopped again
     */
    public FlinkSessionCluster start() throws IOException, InterruptedException {
      Path lib = flinkLibDirectory != null ? flinkLibDirectory : BuildPaths.flinkLibDirectory();
      String classpath = classpath(lib);
      Path work = workDirectory != null ? workDirectory : Files.createTempDirectory("flink-session-");
      Files.createDirectories(work);
      rpcPort = freePort();
      FlinkSessionCluster cluster = new FlinkSessionCluster(this, work, classpath, freePort());
      try {
        cluster.startAll();
        return cluster;
      } catch (IOException | InterruptedException | RuntimeException | Error e) {
        cluster.close();
        throw e;
      }
    }

    private static String classpath(Path lib) throws IOException {
      if (!Files.isDirectory(lib)) {
        throw new IllegalStateException("Flink classpath directory " + lib + " is missing: build recycler-flink/e2e"
            + " first ('mvn -B -pl recycler-flink/e2e -am package -DskipTests' copies the Flink jars there)");
      }
      List<Path> jars;
      try (Stream<Path> s = Files.list(lib)) {
        jars = s.filter(p -> p.getFileName().toString().endsWith(".jar")).sorted().toList();
      }
      for (String required : REQUIRED_JARS) {
        if (jars.stream().noneMatch(j -> j.getFileName().toString().startsWith(required))) {
          throw new IllegalStateException("no " + required + "*.jar in " + lib + ": the Flink classpath is"
              + " incomplete; rebuild recycler-flink/e2e");
        }
      }
      return jars.stream().map(Path::toString).collect(Collectors.joining(":"));
    }

    private static Duration positive(Duration d) {
      if (d == null || d.isNegative() || d.isZero()) {
        throw new IllegalArgumentException("timeout must be positive, got " + d);
      }
      return d;
    }
  }
}
