package dev.recycler.e2e;

import dev.recycler.e2e.GoJob.Spec;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.SeekableByteChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.BooleanSupplier;
import java.util.function.Consumer;
import java.util.stream.IntStream;

/**
 * The parts every single-TaskManager run starts, in the order a pod would ({@link EndToEndRun}, {@link FaultSuite},
 * {@link LogLossComparison}):
 * N {@code go-boot-wrapper} processes ({@code slot-0..N-1}), a Flink 1.19.3 session cluster whose one TaskManager
 * carries the recycler plugin with N harness slots, and Beam's Flink job server; all on 127.0.0.1 with free ports.
 * Then the steps both runs take on them: submitting Beam Go jobs, waiting for a job's lease, for all slots IDLE, and
 * scanning for what a lease left behind.
 *
 * <p>Lifecycle: {@link #start} starts everything and waits until every wrapper attached; {@link #close()} stops
 * everything it started (launchers, job server, wrappers, TaskManager, JobManager), also when a start failed halfway;
 * idempotent. A JVM shutdown hook kills the launchers if the owner never closes (the other parts have their own).
 *
 * <p>Thread-safety: the job and lease methods may be called from several threads (the fault suite's soak runs jobs
 * in parallel); the set of known worker ids and the launcher list are concurrent collections; start and close are
 * called by the owner alone.
 */
final class SessionRig implements AutoCloseable {
  static final String SLOT_PREFIX = "slot-";

  /**
   * What to start.
   *
   * @param taskSlots Flink task slots of the TaskManager (one per concurrent job)
   * @param flinkConfig extra Flink configuration (recycler options as {@link RecyclerPlugin#param}), applied last
   */
  record Options(Path work, Path wrapperBinary, Path jobServerJar, Path pluginJar, Path flinkLib, int slots,
      int taskSlots, Map<String, String> flinkConfig, Consumer<String> progress) {
    Options {
      Objects.requireNonNull(work, "work");
      flinkConfig = Map.copyOf(flinkConfig);
    }
  }

  private final Options o;
  private final Consumer<String> progress;
  private final List<String> slotIds;
  private final Set<String> knownWorkerIds = ConcurrentHashMap.newKeySet();
  private final Map<String, Long> launcherPids = new ConcurrentHashMap<>();
  private final List<GoJob> launchers = new CopyOnWriteArrayList<>();
  private final Map<String, Long> longLived = new LinkedHashMap<>();
  private final Thread hook;
  private int recyclerPort;
  private int adminPort;
  private AdminEndpoint admin;
  private WrapperProcesses wrappers;
  private FlinkSessionCluster cluster;
  private JobServerProcess jobServer;
  private Duration clusterStart = Duration.ZERO;
  private Duration jobServerStart = Duration.ZERO;
  private Map<String, Long> attachedPids = Map.of();
  private boolean closed;

  private SessionRig(Options o) {
    this.o = o;
    this.progress = o.progress();
    this.slotIds = IntStream.range(0, o.slots()).mapToObj(i -> SLOT_PREFIX + i).toList();
    this.hook = new Thread(() -> launchers.forEach(GoJob::destroyNow), "rig-launchers-shutdown");
  }

  /** Starts wrappers, cluster and job server and waits until every slot is attached and IDLE. */
  static SessionRig start(Options o) throws IOException, InterruptedException {
    SessionRig rig = new SessionRig(o);
    Runtime.getRuntime().addShutdownHook(rig.hook);
    try {
      rig.startAll();
      return rig;
    } catch (IOException | InterruptedException | RuntimeException | Error e) {
      rig.close();
      throw e;
    }
  }

  private void startAll() throws IOException, InterruptedException {
    Path work = o.work();
    recyclerPort = FlinkSessionCluster.freePort();
    adminPort = FlinkSessionCluster.freePort();
    admin = new AdminEndpoint("127.0.0.1:" + adminPort);

    // 1. The harness containers first, as in a pod: they retry attaching until the recycler is up.
    progress.accept("start " + o.slots() + " go-boot-wrapper processes (slots " + String.join(", ", slotIds) + ")");
    wrappers = WrapperProcesses.start(o.wrapperBinary(), slotIds, "localhost:" + recyclerPort,
        work.resolve("wrappers"), Duration.ofSeconds(5), Duration.ofSeconds(30));
    wrappers.pids().forEach((slot, pid) -> longLived.put("wrapper " + slot, pid));

    // 2. The Flink session cluster with the recycler plugin in the TaskManager.
    progress.accept("start Flink " + BuildPaths.flinkVersion() + " session cluster (JobManager + TaskManager JVMs),"
        + " recycler plugin on 127.0.0.1:" + recyclerPort + ", admin 127.0.0.1:" + adminPort);
    cluster = FlinkSessionCluster.builder()
        .workDirectory(work.resolve("flink"))
        .flinkLibDirectory(o.flinkLib())
        .taskManagerSlots(o.taskSlots())
        .taskManagerMemory("2048m")
        .plugin(RecyclerPlugin.DIRECTORY, o.pluginJar())
        .config(RecyclerPlugin.config(o.slots(), recyclerPort, adminPort))
        .config(RecyclerPlugin.param("cache-dir"), recyclerCacheDir().toString())
        // The job server's artifacts directory, which a TaskManager reads anyway (on Kubernetes a shared volume):
        // the recycler identifies each job's binary there in place instead of streaming it through the runner.
        .config(RecyclerPlugin.param("local-artifact-dirs"), jobServerArtifacts().toString())
        // The runner sends a whole artifact (the worker binary) into Netty direct buffers: give it room.
        .config("taskmanager.memory.task.off-heap.size", "384m")
        // Every Beam job loads Beam's runner classes into its own user classloader; with three jobs at once after
        // several before them (not yet unloaded), Flink's default 256 MB metaspace ran out once in CI.
        .config("taskmanager.memory.jvm-metaspace.size", "512m")
        .config(o.flinkConfig())
        .stopTimeout(Duration.ofSeconds(60))
        .start();
    clusterStart = cluster.coldStartTime();
    longLived.put("jobmanager", cluster.jobManagerPid().orElse(-1));
    longLived.put("taskmanager", cluster.taskManagerPid().orElse(-1));
    progress.accept(String.format("cluster up in %.1f s, REST %s", clusterStart.toMillis() / 1000.0,
        cluster.restAddress()));

    // 3. Beam's job server pointed at the cluster.
    progress.accept("start Beam's Flink job server (--flink-master " + cluster.restAddress() + ")");
    jobServer = JobServerProcess.builder(o.jobServerJar())
        .flinkMaster(cluster.restAddress())
        .flinkConfDir(cluster.configDirectory())
        .artifactsDir(jobServerArtifacts())
        .logFile(work.resolve("job-server.log"))
        .startTimeout(Duration.ofSeconds(120))
        .start();
    jobServerStart = jobServer.startupTime();
    longLived.put("job server", jobServer.pid());
    progress.accept(String.format("job server up in %.1f s at %s", jobServerStart.toMillis() / 1000.0,
        jobServer.jobEndpoint()));

    attachedPids = awaitAttached(Duration.ofSeconds(60));
    progress.accept("all slots attached and IDLE; wrapper pids " + attachedPids);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Parts

  Path work() {
    return o.work();
  }

  List<String> slotIds() {
    return slotIds;
  }

  int recyclerPort() {
    return recyclerPort;
  }

  AdminEndpoint admin() {
    return admin;
  }

  WrapperProcesses wrappers() {
    return wrappers;
  }

  FlinkSessionCluster cluster() {
    return cluster;
  }

  JobServerProcess jobServer() {
    return jobServer;
  }

  Duration clusterStart() {
    return clusterStart;
  }

  Duration jobServerStart() {
    return jobServerStart;
  }

  /** Slot to wrapper PID as the slot table showed them once all had attached at the start. */
  Map<String, Long> attachedPids() {
    return attachedPids;
  }

  /** The long-lived processes started (wrappers as first started, JobManager, first TaskManager, job server). */
  Map<String, Long> longLivedPids() {
    return java.util.Collections.unmodifiableMap(new LinkedHashMap<>(longLived));
  }

  /** Job name to launcher PID, of every job started. */
  Map<String, Long> launcherPids() {
    return Map.copyOf(launcherPids);
  }

  /** Every lease worker id seen so far (lease records read through this rig). */
  Set<String> knownWorkerIds() {
    return Set.copyOf(knownWorkerIds);
  }

  /** The recycler's artifact cache directory ({@code cache-dir}). */
  Path recyclerCacheDir() {
    return o.work().resolve("recycler-cache");
  }

  /** Beam's job server's {@code --artifacts-dir}, also the recycler's {@code local-artifact-dirs}. */
  Path jobServerArtifacts() {
    return o.work().resolve("job-server-artifacts");
  }

  /** This run's wrappers' root directory: every worker of theirs runs from a lease directory below it. */
  String wrappersRoot() {
    return o.work().resolve("wrappers").toString();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Jobs and leases

  /** Starts a launcher of {@code binary} (the sample pipelines binary or a copy of it); returns at once. */
  GoJob startJob(Path binary, Spec spec) throws IOException {
    GoJob job = GoJob.start(binary, spec, jobServer.jobEndpoint(), recyclerPort, o.work().resolve("outputs"),
        o.work().resolve("launchers"));
    launcherPids.put(spec.name(), job.pid());
    launchers.add(job);
    return job;
  }

  /** The job's lease records (several when Beam's runner starts an environment per stage). */
  List<LeaseRecord> leasesOf(String jobName) throws IOException, InterruptedException {
    List<LeaseRecord> l = admin.table().leases().stream().filter(r -> matchesJob(r.jobName(), jobName)).toList();
    l.forEach(r -> knownWorkerIds.add(r.workerId()));
    return l;
  }

  /**
   * Waits for a lease of the job to be ACTIVE with a worker pid; empty if {@code running} turns false or the bound
   * passes.
   */
  Optional<LeaseRecord> awaitActiveLease(String jobName, BooleanSupplier running, Duration bound)
      throws IOException, InterruptedException {
    long deadline = System.nanoTime() + bound.toNanos();
    while (System.nanoTime() < deadline && running.getAsBoolean()) {
      AdminEndpoint.Table t = admin.table();
      for (AdminEndpoint.Slot slot : t.slots()) {
        if (slot.state().equals("ACTIVE") && matchesJob(slot.jobName(), jobName)) {
          Optional<LeaseRecord> l = t.leases().stream()
              .filter(r -> r.workerId().equals(slot.workerId()) && r.workerPid() > 0 && !r.ended()).findFirst();
          if (l.isPresent()) {
            knownWorkerIds.add(l.get().workerId());
            return l;
          }
        }
      }
      RunSupport.pause();
    }
    return Optional.empty();
  }

  /** The Flink job whose name carries {@code jobName}, in {@code state}, waiting up to {@code bound}. */
  String awaitFlinkJob(String jobName, String state, Duration bound) throws IOException, InterruptedException {
    long deadline = System.nanoTime() + bound.toNanos();
    while (true) {
      for (JobSummary j : cluster.jobs()) {
        if (matchesJob(j.name(), jobName) && j.state().equals(state)) {
          return j.id();
        }
      }
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException("no Flink job named like " + jobName + " in state " + state + " after "
            + bound + "; jobs: " + cluster.jobs());
      }
      RunSupport.pause();
    }
  }

  /** Flink's final state of the job ("?" if Flink lists none), waiting up to 60 s for it to be terminal. */
  String finalFlinkState(String flinkId) throws IOException, InterruptedException {
    if (flinkId == null) {
      return "?";
    }
    try {
      return cluster.awaitJobTerminal(flinkId, Duration.ofSeconds(60)).state();
    } catch (IllegalStateException e) {
      return cluster.job(flinkId).state();
    }
  }

  /**
   * Beam's job server names the Flink job {@code <job_name>-<user>-<MMddHHmmss>-<hash>}; the recycler's lease records
   * carry the same name (from the pipeline options).
   */
  static boolean matchesJob(String actual, String jobName) {
    return actual != null && (actual.equals(jobName) || actual.startsWith(jobName + "-"));
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Slots and leftovers

  /** Waits until all slots are attached and IDLE; returns slot to wrapper PID. */
  Map<String, Long> awaitAttached(Duration bound) throws IOException, InterruptedException {
    long deadline = System.nanoTime() + bound.toNanos();
    while (true) {
      AdminEndpoint.Table t = tableOrNull();
      if (t != null && t.allIdle() && t.slots().size() == slotIds.size()) {
        Map<String, Long> pids = new LinkedHashMap<>();
        t.slots().forEach(x -> pids.put(x.slot(), x.wrapperPid()));
        return pids;
      }
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException("wrappers did not attach within " + bound + ": "
            + (t == null ? "admin endpoint not answering" : t.states()) + "; exited: " + wrappers.exited()
            + "; logs under " + wrappersRoot());
      }
      RunSupport.pause();
    }
  }

  /** The slot table, or null while the admin endpoint does not answer (the TaskManager is down or starting). */
  AdminEndpoint.Table tableOrNull() throws InterruptedException {
    try {
      return admin.table();
    } catch (IOException e) {
      return null;
    }
  }

  /** Waits up to {@code bound} for every slot to be IDLE; the time it took, or null if the bound passed. */
  Duration awaitIdle(Duration bound) throws IOException, InterruptedException {
    long t = System.nanoTime();
    long deadline = t + bound.toNanos();
    AdminEndpoint.Table table = admin.table();
    while (!table.allIdle() && System.nanoTime() < deadline) {
      RunSupport.pause();
      table = admin.table();
    }
    table.leases().forEach(l -> knownWorkerIds.add(l.workerId()));
    return table.allIdle() ? Duration.ofNanos(System.nanoTime() - t) : null;
  }

  /**
   * What a lease left behind, checked once without retrying; call it when every slot is IDLE. Orphans: a process
   * whose command line has {@code --id=<worker id of any lease seen>} below this run's wrapper directories, or any
   * process or zombie below a wrapper. Leaks: a per-lease directory under a wrapper's {@code leases/}.
   */
  Leftovers leftovers() throws IOException, InterruptedException {
    Leftovers found = scanLeftovers();
    // A standby worker the recycler dropped a moment ago (its slot went to another job, or its time ran out) is
    // stopped by its wrapper within milliseconds: look again, briefly, before calling anything left over.
    for (int i = 0; i < 8 && !found.none(); i++) {
      Thread.sleep(250);
      found = scanLeftovers();
    }
    return found;
  }

  private Leftovers scanLeftovers() throws IOException, InterruptedException {
    // The slots' standby workers, and their lease directories, are there by design: the slot table names them.
    AdminEndpoint.Table table = tableOrNull();
    Set<String> standbys = new java.util.HashSet<>();
    Set<String> standbyDirs = new java.util.HashSet<>();
    if (table != null) {
      table.slots().stream().filter(s -> s.standbyGeneration() > 0).forEach(s -> {
        standbys.add(s.standbyWorkerId());
        standbyDirs.add(s.slot().replaceAll("[^A-Za-z0-9._-]", "_") + "-g" + s.standbyGeneration());
      });
    }
    List<String> orphans = new ArrayList<>();
    ProcessTable procs = ProcessTable.snapshot();
    for (String id : knownWorkerIds) {
      if (!standbys.contains(id)) {
        procs.withWorkerId(id, wrappersRoot()).forEach(p -> orphans.add("process of lease " + id + " alive: " + p));
      }
    }
    List<Long> wrapperPids = List.copyOf(wrappers.pids().values());
    List<ProcessTable.Proc> underWrappers = procs.descendantsOf(wrapperPids);
    // Standby workers among the wrappers' own processes (whatever directory the wrapper works in: some faults move
    // it to a volume outside the run's wrapper directories).
    Set<Long> standbyPids = new java.util.HashSet<>();
    underWrappers.stream().filter(p -> standbys.stream().anyMatch(id -> java.util.Arrays.stream(p.cmdline().split(" "))
        .anyMatch(a -> a.startsWith("--id=" + id + ".")))).forEach(p -> standbyPids.add(p.pid()));
    underWrappers.forEach(p -> {
      String d = (p.isZombie() ? "zombie" : "process") + " under a wrapper: " + p;
      if (!standbyPids.contains(p.pid()) && orphans.stream().noneMatch(x -> x.endsWith(p.toString()))) {
        orphans.add(d);
      }
    });
    // Any inner worker of this run's wrappers that no live wrapper owns (a standby, say, whose wrapper was killed),
    // even if no lease ever named its id.
    Set<Long> owned = new java.util.HashSet<>();
    underWrappers.forEach(p -> owned.add(p.pid()));
    procs.all().stream().filter(p -> p.cmdline().contains("--worker=true") && p.cmdline().contains(wrappersRoot())
        && !owned.contains(p.pid())).forEach(p -> {
          if (orphans.stream().noneMatch(x -> x.endsWith(p.toString()))) {
            orphans.add("worker process no wrapper owns: " + p);
          }
        });
    List<String> leaks = new ArrayList<>();
    wrappers.leaseDirectories().stream().filter(d -> !standbyDirs.contains(d.getFileName().toString()))
        .forEach(d -> leaks.add("lease directory left: " + d));
    return new Leftovers(List.copyOf(orphans), List.copyOf(leaks));
  }

  /** Orphaned processes and cross-lease leftovers found by one scan. */
  record Leftovers(List<String> orphans, List<String> leaks) {
    boolean none() {
      return orphans.isEmpty() && leaks.isEmpty();
    }

    List<String> all() {
      List<String> a = new ArrayList<>(orphans);
      a.addAll(leaks);
      return a;
    }
  }

  /** Waits until {@code text} appears in {@code log} after byte {@code offset}; false if the bound passes. */
  static boolean awaitLogLine(Path log, long offset, String text, Duration bound)
      throws IOException, InterruptedException {
    long deadline = System.nanoTime() + bound.toNanos();
    while (true) {
      try (SeekableByteChannel ch = Files.newByteChannel(log)) {
        long size = ch.size();
        if (size > offset) {
          ByteBuffer buf = ByteBuffer.allocate((int) Math.min(size - offset, 16 << 20));
          ch.position(offset);
          while (buf.hasRemaining() && ch.read(buf) > 0) {
            // fill
          }
          if (new String(buf.array(), 0, buf.position(), StandardCharsets.UTF_8).contains(text)) {
            return true;
          }
        }
      }
      if (System.nanoTime() > deadline) {
        return false;
      }
      RunSupport.pause();
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Lifecycle

  /** Stops launchers still running, the job server, the wrappers and the cluster. Idempotent. */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    for (GoJob job : launchers) {
      if (job.isRunning()) {
        try {
          job.kill();
        } catch (IOException | InterruptedException e) {
          progress.accept("cannot stop launcher " + job.spec().name() + ": " + e);
        }
      }
    }
    if (jobServer != null) {
      jobServer.close();
    }
    if (wrappers != null) {
      wrappers.close();
    }
    if (cluster != null) {
      cluster.close();
    }
    try {
      Runtime.getRuntime().removeShutdownHook(hook);
    } catch (IllegalStateException ignored) {
      // the JVM is shutting down
    }
  }

  /** Launchers still running (after {@link #close()}: none, unless one could not be killed). */
  List<String> runningLaunchers() {
    return launchers.stream().filter(GoJob::isRunning).map(j -> j.spec().name()).toList();
  }

  /**
   * Deletes the job server's staged files (a copy of the worker binary per job): call it only while no job runs (Beam's
   * job server keeps them after the job).
   */
  void deleteStagedArtifacts() throws IOException {
    if (Files.isDirectory(jobServerArtifacts())) {
      try (java.util.stream.Stream<Path> s = Files.list(jobServerArtifacts())) {
        RunSupport.deleteTrees(s.toList(), progress);
      }
    }
  }

  /**
   * Deletes what is big and no longer needed once everything has stopped (a run stages a copy of the worker binary
   * and of the job server jar per job: gigabytes), keeping logs, outputs and configuration for post-mortems.
   */
  void deleteBulk() {
    List<Path> bulk = new ArrayList<>(List.of(jobServerArtifacts(), o.work().resolve("flink/tmp"),
        recyclerCacheDir()));
    for (String slot : slotIds) {
      bulk.add(o.work().resolve("wrappers").resolve(slot).resolve("cache"));
    }
    RunSupport.deleteTrees(bulk, progress);
  }
}
