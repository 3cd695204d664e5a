package dev.recycler.e2e;

import dev.recycler.e2e.EndToEndResult.Check;
import dev.recycler.e2e.EndToEndResult.Verdict;
import dev.recycler.e2e.GoJob.Outcome;
import dev.recycler.e2e.GoJob.Spec;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.Consumer;
import java.util.stream.IntStream;

/**
 * Scale-out on Flink (issue 13): one Flink 1.19.3 session cluster with <b>two TaskManagers</b>, each with its own
 * recycler (the plugin) and its own go-boot-wrapper processes, as two TaskManager pods would have; Beam Go jobs of
 * parallelism 2 submitted with the one {@code --environment_config=localhost:<port>} every pipeline uses.
 *
 * <p><b>How each TaskManager's runner reaches its own recycler on one host.</b> In Kubernetes each pod has its own
 * network namespace, so {@code localhost:<port>} is the pod's own recycler. Here both TaskManagers share the host's
 * network; instead each TaskManager JVM gets its own view of the name {@code localhost} ({@code
 * -Djdk.net.hosts.file}, a hosts file per TaskManager): {@code localhost} is {@code 127.0.0.2} first (then {@code
 * 127.0.0.1}) in TaskManager a and {@code 127.0.0.3} first in b. Each recycler binds the <em>same</em> port on its own
 * loopback address ({@code param.bind-host}, passed per TaskManager as a dynamic property together with the slot
 * names and the cache directory), so Beam's runner in each TaskManager, calling StartWorker on {@code
 * localhost:<port>}, reaches its own TaskManager's recycler, with no change to Beam or to the pipeline. The runner's
 * own servers bind 127.0.0.1 and are named {@code localhost}: the recycler reaches them through the second address
 * (gRPC tries the addresses in order); the wrappers and Go workers use the system resolver. See docs/e2e.md for why
 * not network namespaces, and the limits.
 *
 * <p>Steps: wrappers of both TaskManagers, the cluster (JobManager, then both TaskManagers), Beam's job server; two
 * jobs of parallelism 2 run to the end; a third is held by one TaskManager's worker while the other TaskManager is
 * SIGKILLed, then restarted (its wrappers never stopped), and the held job is cancelled; a fourth job runs. Every
 * wait is bounded; every process started is stopped at the end, also on failure. A violated property is a {@link
 * Check} with verdict FAIL; exceptions mean the run could not be carried out. Not thread-safe: one run per instance.
 */
public final class ScaleOutRun {
  /** The two TaskManagers: name, loopback address of their "localhost", slot id prefix. */
  static final List<Tm> TASK_MANAGERS = List.of(new Tm("tm-a", "127.0.0.2", "a-slot-"),
      new Tm("tm-b", "127.0.0.3", "b-slot-"));
  static final int HARNESS_SLOTS_PER_TM = 2;
  private static final Duration JOB_TIMEOUT = Duration.ofMinutes(3);
  private static final Duration SETTLE = Duration.ofSeconds(90);

  /** One TaskManager of the run. */
  record Tm(String name, String loopback, String slotPrefix) {
    List<String> slots() {
      return IntStream.range(0, HARNESS_SLOTS_PER_TM).mapToObj(i -> slotPrefix + i).toList();
    }
  }

  /** One job: its name, launcher exit code, whether its output was exactly right, Flink's state and TaskManagers. */
  public record Job(String name, String pipeline, int exitCode, boolean outputMatches, String flinkState,
      Set<String> flinkTaskManagers, Map<String, Integer> leasesPerTm, Duration wallTime) {}

  /**
   * What the run did and verified.
   *
   * @param leases each TaskManager's lease records (TaskManager b: those of its recycler after the restart are
   *     appended to those read before the kill)
   * @param slotTables each TaskManager's slot table as text, read at the end
   */
  public record Result(List<Check> checks, List<Job> jobs, Map<String, List<LeaseRecord>> leases,
      Map<String, String> slotTables, Map<String, Duration> figures, String killedTaskManager, long originMillis,
      String workDirectory) {
    public boolean passed() {
      return checks.stream().noneMatch(Check::failed);
    }

    public List<Check> failedChecks() {
      return checks.stream().filter(Check::failed).toList();
    }
  }

  private final Path workRoot;
  private final Path wrapperBinary;
  private final Path pipelinesBinary;
  private final Path jobServerJar;
  private final Consumer<String> progress;
  private final List<Check> checks = new ArrayList<>();
  private final List<Job> jobs = new ArrayList<>();
  private final Map<String, Duration> figures = new LinkedHashMap<>();
  private final Map<String, List<LeaseRecord>> leasesBeforeKill = new LinkedHashMap<>();
  private final Map<String, String> expected = new LinkedHashMap<>();
  private final Map<String, AdminEndpoint> admins = new LinkedHashMap<>();
  private final Map<String, WrapperProcesses> wrappers = new LinkedHashMap<>();
  private final Map<String, Map<String, Long>> wrapperPids = new LinkedHashMap<>();
  private final Set<String> knownWorkerIds = new LinkedHashSet<>();
  private final List<GoJob> launchers = new CopyOnWriteArrayList<>();
  private FlinkSessionCluster cluster;
  private JobServerProcess jobServer;
  private Path work;
  private int recyclerPort;
  private int jobCounter;
  private String killedTm = "";

  public ScaleOutRun(Path repoRoot, Path workRoot, Consumer<String> progress) {
    Path root = repoRoot.toAbsolutePath().normalize();
    this.workRoot = workRoot.toAbsolutePath();
    this.wrapperBinary = RunSupport.property("recycler.e2e.wrapperBinary",
        root.resolve("go-boot-wrapper/bin/go-boot-wrapper"));
    this.pipelinesBinary = RunSupport.property("recycler.e2e.pipelinesBinary",
        root.resolve("go-boot-wrapper/examples/pipelines/bin/beam-pipelines"));
    this.jobServerJar = RunSupport.property("recycler.e2e.jobServerJar",
        root.resolve("recycler-flink/e2e/jobserver/target/beam-flink-job-server.jar"));
    this.progress = progress;
  }

  /** Runs everything once and stops everything it started, also on failure. */
  public Result run() throws IOException, InterruptedException {
    long t0 = System.nanoTime();
    long origin = System.currentTimeMillis();
    work = Files.createDirectories(workRoot.resolve("run-" + origin));
    Thread hook = new Thread(() -> launchers.forEach(GoJob::destroyNow), "scaleout-launchers-shutdown");
    Runtime.getRuntime().addShutdownHook(hook);
    Map<String, Long> longLived = new LinkedHashMap<>();
    Map<String, String> tables = new LinkedHashMap<>();
    Map<String, List<LeaseRecord>> allLeases = new LinkedHashMap<>();
    try {
      recyclerPort = freeOnAll();
      int adminPort = freeOnAll();
      for (Tm tm : TASK_MANAGERS) {
        admins.put(tm.name(), new AdminEndpoint(tm.loopback() + ":" + adminPort));
      }
      for (String p : List.of("wordcount", "groupside")) {
        expected.put(p, GoJob.expectedOutput(pipelinesBinary, p, List.of()));
      }

      // 1. Each TaskManager's harness containers, pointed at its own recycler's address.
      for (Tm tm : TASK_MANAGERS) {
        progress.accept("start " + HARNESS_SLOTS_PER_TM + " go-boot-wrapper processes for " + tm.name() + " (slots "
            + String.join(", ", tm.slots()) + ") -> " + tm.loopback() + ":" + recyclerPort);
        WrapperProcesses w = WrapperProcesses.start(wrapperBinary, tm.slots(), tm.loopback() + ":" + recyclerPort,
            work.resolve("wrappers").resolve(tm.name()), Duration.ofSeconds(5), Duration.ofSeconds(30));
        wrappers.put(tm.name(), w);
        w.pids().forEach((slot, pid) -> longLived.put("wrapper " + slot, pid));
      }

      // 2. The cluster: the JobManager, then both TaskManagers with their own recycler settings.
      progress.accept("start Flink " + BuildPaths.flinkVersion() + " JobManager and TaskManagers "
          + TASK_MANAGERS.stream().map(Tm::name).toList() + " (1 Flink slot each, parallelism 2); recycler port "
          + recyclerPort + ", admin port " + adminPort + " on each TaskManager's own loopback address");
      long clusterT0 = System.nanoTime();
      cluster = FlinkSessionCluster.builder()
          .workDirectory(work.resolve("flink"))
          .withoutDefaultTaskManager()
          .taskManagerSlots(1)
          .taskManagerMemory("2048m")
          .plugin(RecyclerPlugin.DIRECTORY, BuildPaths.recyclerPluginJar())
          .config(RecyclerPlugin.config(HARNESS_SLOTS_PER_TM, recyclerPort, adminPort))
          .config(RecyclerPlugin.param("local-artifact-dirs"), work.resolve("job-server-artifacts").toString())
          .config("taskmanager.memory.task.off-heap.size", "384m")
          .config("taskmanager.memory.jvm-metaspace.size", "512m")
          .config("parallelism.default", "2")
          // No silent failover: a restarted task would start new leases and hide what the kill did.
          .config("restart-strategy.type", "none")
          // Notice a SIGKILLed TaskManager within seconds (defaults: 10 s interval, 50 s timeout).
          .config("heartbeat.interval", "2000")
          .config("heartbeat.timeout", "20000")
          .stopTimeout(Duration.ofSeconds(60))
          .start();
      longLived.put("jobmanager", cluster.jobManagerPid().orElse(-1));
      for (Tm tm : TASK_MANAGERS) {
        cluster.launchNamedTaskManager(tm.name(), tmProperties(tm), List.of("-Djdk.net.hosts.file=" + hostsFile(tm)));
      }
      for (Tm tm : TASK_MANAGERS) {
        cluster.awaitNamedTaskManager(tm.name());
        longLived.put(tm.name() + " (first JVM)", cluster.namedTaskManagerPid(tm.name()).orElse(-1));
      }
      figures.put("cluster start (JobManager + 2 TaskManagers registered)", since(clusterT0));
      progress.accept(String.format(Locale.ROOT, "cluster up in %.1f s, REST %s",
          since(clusterT0).toMillis() / 1000.0, cluster.restAddress()));

      // 3. Beam's job server.
      jobServer = JobServerProcess.builder(jobServerJar)
          .flinkMaster(cluster.restAddress())
          .flinkConfDir(cluster.configDirectory())
          .artifactsDir(work.resolve("job-server-artifacts"))
          .logFile(work.resolve("job-server.log"))
          .startTimeout(Duration.ofSeconds(120))
          .start();
      longLived.put("job server", jobServer.pid());
      for (Tm tm : TASK_MANAGERS) {
        wrapperPids.put(tm.name(), awaitAttached(tm, Duration.ofSeconds(60)));
      }
      progress.accept("all slots of both TaskManagers attached; wrapper pids " + wrapperPids);

      // 4. Jobs of parallelism 2: each TaskManager's runner leases from its own recycler.
      Job j1 = runToEnd("wordcount");
      Job j2 = runToEnd("groupside");
      for (Job j : List.of(j1, j2)) {
        boolean both = j.leasesPerTm().values().stream().allMatch(n -> n > 0);
        check("job " + j.name() + " (parallelism 2) ran on both TaskManagers, each leasing from its own recycler,"
                + " output exactly as expected",
            j.exitCode() == 0 && j.outputMatches() && both && j.flinkTaskManagers().size() == 2,
            "exit " + j.exitCode() + ", output " + (j.outputMatches() ? "as expected" : "WRONG") + ", Flink "
                + j.flinkState() + " on " + j.flinkTaskManagers() + ", leases per TaskManager " + j.leasesPerTm());
      }
      checkOwnSlotsOnly();

      // 5. TaskManager b is SIGKILLed while both hold a lease of a running job.
      killScenario();

      // 6. A job after the restart uses both TaskManagers again.
      Job j4 = runToEnd("wordcount");
      check("after the restart, job " + j4.name() + " (parallelism 2) ran on both TaskManagers again",
          j4.exitCode() == 0 && j4.outputMatches() && j4.leasesPerTm().values().stream().allMatch(n -> n > 0),
          "exit " + j4.exitCode() + ", Flink " + j4.flinkState() + " on " + j4.flinkTaskManagers()
              + ", leases per TaskManager " + j4.leasesPerTm());
      checkOwnSlotsOnly();
      checkNoWorkerLeft();

      for (Tm tm : TASK_MANAGERS) {
        AdminEndpoint.Table t = admins.get(tm.name()).table();
        List<LeaseRecord> before = leasesBeforeKill.getOrDefault(tm.name(), List.of());
        List<LeaseRecord> leases = new ArrayList<>(before);
        leases.addAll(t.leases());
        allLeases.put(tm.name(), List.copyOf(leases));
        tables.put(tm.name(), slotTable(tm, t, before, origin));
      }
    } catch (IOException | InterruptedException | RuntimeException | Error e) {
      progress.accept("run aborted: " + e);
      stopAll();
      Runtime.getRuntime().removeShutdownHook(hook);
      throw e;
    }
    progress.accept("stop everything: job server, TaskManagers, JobManager, wrappers");
    if (!killedTm.isEmpty()) {
      cluster.namedTaskManagerPid(killedTm).ifPresent(p -> longLived.put(killedTm + " (restarted JVM)", p));
    }
    stopAll();
    checkStopped(longLived);
    Runtime.getRuntime().removeShutdownHook(hook);
    deleteBulk();
    figures.put("whole run", since(t0));
    return new Result(List.copyOf(checks), List.copyOf(jobs), allLeases, tables, Map.copyOf(figures), killedTm,
        origin, work.toString());
  }

  // ---------------------------------------------------------------------------------------------------------------
  // The kill

  private void killScenario() throws IOException, InterruptedException {
    GoJob job = start("groupside", "--hold=5m");
    String name = job.spec().name();
    // Flink deploys the held stage on both TaskManagers, but only one subtask gets the elements (the source is one
    // impulse): its worker holds in the pace DoFn for 5 minutes, while the other subtask's bundle is empty and its
    // lease ends by itself. Wait for that stable state, then kill the other TaskManager while the holder's lease runs.
    Tm a = null;
    LeaseRecord leaseA = null;
    Map<String, List<LeaseRecord>> ofJob = new LinkedHashMap<>();
    long deadline = System.nanoTime() + JOB_TIMEOUT.toNanos();
    while (a == null && job.isRunning() && System.nanoTime() < deadline) {
      Map<Tm, LeaseRecord> active = new LinkedHashMap<>();
      for (Tm tm : TASK_MANAGERS) {
        activeLease(tm, name).ifPresent(l -> active.put(tm, l));
        ofJob.put(tm.name(), leasesOf(tm, name));
      }
      if (active.size() == 1) {
        Tm holder = active.keySet().iterator().next();
        boolean otherDone = TASK_MANAGERS.stream().filter(t -> t != holder).allMatch(t ->
            !ofJob.get(t.name()).isEmpty() && ofJob.get(t.name()).stream().allMatch(LeaseRecord::ended));
        if (otherDone) {
          a = holder;
          leaseA = active.get(holder);
        }
      }
      if (a == null) {
        RunSupport.pause();
      }
    }
    if (a == null) {
      check("a held job of parallelism 2 ran on both TaskManagers, one of them holding its lease", false,
          "leases of the job per TaskManager " + ofJob + " within " + JOB_TIMEOUT + "; launcher running "
              + job.isRunning());
      finish(job, Duration.ofSeconds(1));
      return;
    }
    final Tm holderTm = a;
    Tm b = TASK_MANAGERS.stream().filter(t -> t != holderTm).findFirst().orElseThrow();
    final LeaseRecord heldLease = leaseA;
    ProcessTable procs = ProcessTable.snapshot();
    boolean aWorkerUnderA = procs.descendantsOf(wrapperPids.get(a.name()).values()).stream()
        .anyMatch(p -> p.pid() == heldLease.workerPid());
    List<LeaseRecord> doneB = ofJob.get(b.name());
    check("while the job holds: " + a.name() + "'s lease runs its worker under " + a.name() + "'s own wrappers; "
            + b.name() + "'s part of the job (an empty bundle) ran on " + b.name() + "'s own slots",
        aWorkerUnderA && doneB.stream().allMatch(l -> l.slot().startsWith(b.slotPrefix())),
        a.name() + " " + leaseA.workerId() + " pid " + leaseA.workerPid() + " under its wrappers: " + aWorkerUnderA
            + "; " + b.name() + ": " + doneB.stream().map(l -> l.workerId() + " " + l.exitDescription()).toList());
    killedTm = b.name();
    leasesBeforeKill.put(b.name(), admins.get(b.name()).table().leases());

    progress.accept("SIGKILL " + b.name() + " (pid " + cluster.namedTaskManagerPid(b.name()).orElse(-1) + ") while "
        + a.name() + " holds " + leaseA.workerId() + " in a bundle of " + name);
    long killT = System.nanoTime();
    int code = cluster.killNamedTaskManager(b.name());
    AdminEndpoint.Table right = admins.get(a.name()).table();
    Optional<LeaseRecord> stillA = right.leases().stream()
        .filter(l -> l.workerId().equals(heldLease.workerId())).findFirst();
    progress.accept(b.name() + " exited with " + code + "; right after, " + a.name() + "'s lease " + leaseA.workerId()
        + " is " + stillA.map(l -> l.ended() ? "ended " + l.exitDescription() : "still running").orElse("?")
        + ", slots " + right.states());

    // The holder's side, polled throughout: until the JobManager has dropped the killed TaskManager (heartbeat), then
    // through the killed TaskManager's restart, its lease must run on, untouched.
    Set<String> statesSeen = new LinkedHashSet<>();
    right.slots().forEach(x -> statesSeen.add(x.state()));
    String killedId = cluster.namedTaskManagerId(b.name());
    long lostDeadline = System.nanoTime() + Duration.ofSeconds(90).toNanos();
    boolean dropped = false;
    while (!dropped && System.nanoTime() < lostDeadline) {
      admins.get(a.name()).table().slots().forEach(x -> statesSeen.add(x.state()));
      dropped = !cluster.registeredTaskManagers().contains(killedId);
      if (!dropped) {
        RunSupport.pause();
      }
    }
    Duration toDropped = since(killT);
    figures.put("SIGKILL to the JobManager dropping the killed TaskManager (heartbeat timeout 20 s)", toDropped);
    progress.accept(String.format(Locale.ROOT, "the JobManager %s %s %.1f s after the kill", dropped ? "dropped"
        : "still lists", killedId, toDropped.toMillis() / 1000.0));
    String afterDrop = untouched(a, heldLease, statesSeen);

    // The killed TaskManager's wrappers are separate processes: they survive, with no worker left under them.
    boolean bAlive = wrapperPids.get(b.name()).values().stream().allMatch(ProcessTable::isAlive);
    List<ProcessTable.Proc> underB = ProcessTable.snapshot().descendantsOf(wrapperPids.get(b.name()).values());
    check(b.name() + "'s wrappers outlive their TaskManager, with no worker left under them",
        bAlive && underB.isEmpty(), "wrappers alive " + bAlive + " " + wrapperPids.get(b.name()) + "; processes under"
            + " them " + underB);

    // Restart it: a new JVM with the same port and settings; its wrappers re-attach by themselves.
    progress.accept("restart " + b.name() + " (same recycler port and settings; its wrappers keep running) while "
        + a.name() + " still holds " + heldLease.workerId());
    long restartT = System.nanoTime();
    cluster.relaunchNamedTaskManager(b.name());
    cluster.awaitNamedTaskManager(b.name());
    Duration registered = since(restartT);
    Map<String, Long> pidsB = awaitAttached(b, Duration.ofSeconds(120));
    Duration reattached = since(restartT);
    figures.put("killed TaskManager's restart: JVM start to registered with the JobManager", registered);
    figures.put("killed TaskManager's restart: JVM start to all its wrappers re-attached (IDLE)", reattached);
    progress.accept(String.format(Locale.ROOT, "%s registered after %.1f s, its %d wrappers re-attached after %.1f s",
        b.name(), registered.toMillis() / 1000.0, pidsB.size(), reattached.toMillis() / 1000.0));
    check("after its restart, " + b.name() + "'s wrappers re-attach (the same processes, not new ones)",
        pidsB.equals(wrapperPids.get(b.name())),
        "wrapper pids after " + pidsB + ", before " + wrapperPids.get(b.name()) + String.format(Locale.ROOT,
            "; all attached %.1f s after the new JVM started", reattached.toMillis() / 1000.0));
    String afterRestart = untouched(a, heldLease, statesSeen);
    check("killing " + b.name() + " mid-job leaves " + a.name() + "'s slots and leases untouched: its running lease"
            + " goes on (same worker process) through the kill and the restart, its slots never detach, its wrappers"
            + " keep their PIDs",
        dropped && afterDrop.isEmpty() && afterRestart.isEmpty(),
        (dropped ? "" : "the JobManager never dropped " + killedId + " within 90 s; ") + a.name() + "'s lease "
            + heldLease.workerId() + " (worker pid " + heldLease.workerPid() + "): after the drop "
            + (afterDrop.isEmpty() ? "untouched" : afterDrop) + ", after the restart "
            + (afterRestart.isEmpty() ? "untouched" : afterRestart) + "; slot states seen " + statesSeen);

    // End the held job through Flink's REST API: the holder's lease ends by its own runner.
    String flinkId = RunSupport.flinkJobId(cluster, name);
    if (flinkId != null) {
      progress.accept("cancel " + name + " through Flink REST");
      cluster.cancelJob(flinkId);
    }
    Job held = finish(job, Duration.ofSeconds(60));
    settle(held.name());
    Optional<LeaseRecord> ended = admins.get(a.name()).table().leases().stream()
        .filter(l -> l.workerId().equals(heldLease.workerId())).findFirst();
    check("the cancelled job's lease on " + a.name() + " ends by its own runner and its slots are IDLE again",
        ended.isPresent() && ended.get().ended() && Set.of("RUNNER_CLOSED", "STOP_WORKER", "CANCELLED")
            .contains(ended.get().endReason()) && admins.get(a.name()).table().allIdle(),
        heldLease.workerId() + ": " + ended.map(LeaseRecord::exitDescription).orElse("missing") + "; job exit "
            + held.exitCode() + ", Flink " + held.flinkState());
  }

  /** What changed for the holder: empty if its lease still runs with the same worker and its wrappers are the same. */
  private String untouched(Tm a, LeaseRecord held, Set<String> statesSeen) throws IOException, InterruptedException {
    AdminEndpoint.Table t = admins.get(a.name()).table();
    t.slots().forEach(x -> statesSeen.add(x.state()));
    List<String> changed = new ArrayList<>();
    Optional<LeaseRecord> now = t.leases().stream().filter(l -> l.workerId().equals(held.workerId())).findFirst();
    if (now.isEmpty() || now.get().ended()) {
      changed.add("lease " + now.map(LeaseRecord::exitDescription).orElse("missing"));
    } else if (now.get().workerPid() != held.workerPid() || !ProcessTable.isAlive(held.workerPid())) {
      changed.add("worker pid " + now.get().workerPid() + " alive " + ProcessTable.isAlive(held.workerPid()));
    }
    Map<String, Long> pids = new LinkedHashMap<>();
    t.slots().forEach(x -> pids.put(x.slot(), x.wrapperPid()));
    if (!pids.equals(wrapperPids.get(a.name()))
        || !wrapperPids.get(a.name()).values().stream().allMatch(ProcessTable::isAlive)) {
      changed.add("wrappers " + pids + " (before " + wrapperPids.get(a.name()) + ")");
    }
    if (statesSeen.contains("DETACHED") || statesSeen.contains("BACKOFF")) {
      changed.add("slot states seen " + statesSeen);
    }
    return String.join("; ", changed);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Jobs

  private GoJob start(String pipeline, String... flags) throws IOException {
    jobCounter++;
    String name = String.format(Locale.ROOT, "scale%02d%s", jobCounter, pipeline);
    progress.accept("job " + name + ": submit (parallelism 2)" + (flags.length > 0 ? " " + String.join(" ", flags)
        : ""));
    GoJob job = GoJob.start(pipelinesBinary, Spec.of(name, pipeline, flags), jobServer.jobEndpoint(), recyclerPort,
        work.resolve("outputs"), work.resolve("launchers"));
    launchers.add(job);
    return job;
  }

  private Job runToEnd(String pipeline) throws IOException, InterruptedException {
    Job j = finish(start(pipeline), JOB_TIMEOUT);
    settle(j.name());
    return j;
  }

  /** Waits for the launcher (cancelling through REST and killing it after {@code timeout}); records the job. */
  private Job finish(GoJob job, Duration timeout) throws IOException, InterruptedException {
    String name = job.spec().name();
    Optional<Outcome> done = job.await(timeout);
    if (done.isEmpty()) {
      String id = RunSupport.flinkJobId(cluster, name);
      if (id != null) {
        cluster.cancelJob(id);
      }
      done = job.await(Duration.ofSeconds(60));
      if (done.isEmpty()) {
        done = Optional.of(job.kill());
      }
    }
    Outcome o = done.get();
    String id = RunSupport.flinkJobId(cluster, name);
    String state = "?";
    Set<String> tms = Set.of();
    if (id != null) {
      try {
        state = cluster.awaitJobTerminal(id, Duration.ofSeconds(60)).state();
      } catch (IllegalStateException e) {
        state = cluster.job(id).state();
      }
      tms = cluster.taskManagersOfJob(id);
    }
    Map<String, Integer> perTm = new LinkedHashMap<>();
    for (Tm tm : TASK_MANAGERS) {
      List<LeaseRecord> l = leasesOf(tm, name);
      l.forEach(r -> knownWorkerIds.add(r.workerId()));
      perTm.put(tm.name(), l.size());
    }
    boolean matches = o.output().isPresent() && o.output().get().equals(expected.get(job.spec().pipeline()));
    Job j = new Job(name, job.spec().pipeline(), o.exitCode(), matches, state, tms, perTm, o.wallTime());
    jobs.add(j);
    progress.accept(String.format(Locale.ROOT, "job %s: exit %d in %.1f s, Flink %s on %s, leases per TaskManager %s",
        name, o.exitCode(), o.wallTime().toMillis() / 1000.0, state, tms, perTm));
    return j;
  }

  private List<LeaseRecord> leasesOf(Tm tm, String jobName) {
    try {
      return admins.get(tm.name()).table().leases().stream()
          .filter(l -> SessionRig.matchesJob(l.jobName(), jobName)).toList();
    } catch (IOException e) {
      return List.of(); // the TaskManager is down
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return List.of();
    }
  }

  private Optional<LeaseRecord> activeLease(Tm tm, String jobName) throws IOException, InterruptedException {
    AdminEndpoint.Table t = admins.get(tm.name()).table();
    for (AdminEndpoint.Slot s : t.slots()) {
      if (s.state().equals("ACTIVE") && SessionRig.matchesJob(s.jobName(), jobName)) {
        Optional<LeaseRecord> l = t.leases().stream()
            .filter(r -> r.workerId().equals(s.workerId()) && r.workerPid() > 0 && !r.ended()).findFirst();
        if (l.isPresent()) {
          knownWorkerIds.add(l.get().workerId());
          return l;
        }
      }
    }
    return Optional.empty();
  }
  // ---------------------------------------------------------------------------------------------------------------
  // Checks

  /** Waits (bounded) until both TaskManagers' slots are IDLE; a FAIL check if they are not. */
  private void settle(String after) throws IOException, InterruptedException {
    for (Tm tm : TASK_MANAGERS) {
      long deadline = System.nanoTime() + SETTLE.toNanos();
      AdminEndpoint.Table t = admins.get(tm.name()).table();
      while (!t.allIdle() && System.nanoTime() < deadline) {
        RunSupport.pause();
        t = admins.get(tm.name()).table();
      }
      if (!t.allIdle()) {
        check("after " + after + ": " + tm.name() + "'s slots IDLE", false, t.states() + " after " + SETTLE);
      }
    }
  }

  /** Each recycler's table names only its own slots, held by its own wrappers, and every lease is on them. */
  private void checkOwnSlotsOnly() throws IOException, InterruptedException {
    List<String> problems = new ArrayList<>();
    StringBuilder seen = new StringBuilder();
    for (Tm tm : TASK_MANAGERS) {
      AdminEndpoint.Table t = admins.get(tm.name()).table();
      Map<String, Long> pids = new LinkedHashMap<>();
      t.slots().forEach(s -> pids.put(s.slot(), s.wrapperPid()));
      if (!pids.equals(wrapperPids.get(tm.name()))) {
        problems.add(tm.name() + " shows slots/wrappers " + pids + ", its own are " + wrapperPids.get(tm.name()));
      }
      t.leases().stream().filter(l -> !l.slot().startsWith(tm.slotPrefix()))
          .forEach(l -> problems.add(tm.name() + " leased foreign slot " + l.slot()));
      seen.append(seen.isEmpty() ? "" : "; ").append(tm.name()).append(": slots ").append(pids.keySet())
          .append(", ").append(t.leases().size()).append(" leases");
    }
    check("each TaskManager's slot table shows only its own slots, wrappers and leases", problems.isEmpty(),
        problems.isEmpty() ? seen.toString() : String.join("; ", problems));
  }

  private void checkNoWorkerLeft() {
    ProcessTable procs = ProcessTable.snapshot();
    List<String> left = new ArrayList<>();
    for (String id : knownWorkerIds) {
      procs.withWorkerId(id, work.resolve("wrappers").toString()).forEach(p -> left.add(id + ": " + p));
    }
    for (Tm tm : TASK_MANAGERS) {
      procs.descendantsOf(wrapperPids.get(tm.name()).values()).forEach(p -> left.add("under " + tm.name() + ": " + p));
    }
    check("no worker process of any lease is left (" + knownWorkerIds.size() + " leases)", left.isEmpty(),
        left.isEmpty() ? "none" : String.join("; ", left));
  }

  private void checkStopped(Map<String, Long> pids) {
    List<String> alive = new ArrayList<>();
    pids.forEach((what, pid) -> {
      if (pid > 0 && ProcessTable.isAlive(pid)) {
        alive.add(what + " pid " + pid);
      }
    });
    for (GoJob j : launchers) {
      if (j.isRunning()) {
        alive.add("launcher " + j.spec().name());
      }
    }
    Map<String, Integer> codes = new LinkedHashMap<>();
    wrappers.values().forEach(w -> codes.putAll(w.exitCodes()));
    check("every process the run started is stopped (" + pids.size() + " long-lived, " + launchers.size()
            + " launchers), wrappers exit 0 on SIGTERM",
        alive.isEmpty() && codes.values().stream().allMatch(c -> c == 0),
        (alive.isEmpty() ? "none alive" : "alive: " + alive) + "; wrapper exit codes " + codes);
  }

  private Map<String, Long> awaitAttached(Tm tm, Duration bound) throws IOException, InterruptedException {
    long deadline = System.nanoTime() + bound.toNanos();
    String last = "no answer";
    while (System.nanoTime() < deadline) {
      try {
        AdminEndpoint.Table t = admins.get(tm.name()).table();
        if (t.allIdle() && t.slots().size() == HARNESS_SLOTS_PER_TM) {
          Map<String, Long> pids = new LinkedHashMap<>();
          t.slots().forEach(s -> pids.put(s.slot(), s.wrapperPid()));
          return pids;
        }
        last = t.states();
      } catch (IOException e) {
        last = e.toString(); // the recycler is not up yet
      }
      RunSupport.pause();
    }
    throw new IllegalStateException(tm.name() + "'s wrappers did not attach within " + bound + ": " + last
        + "; logs under " + work.resolve("wrappers").resolve(tm.name()));
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Setup helpers

  /** This TaskManager's recycler: its own loopback address, slot names and cache (the port is the same for all). */
  private Map<String, String> tmProperties(Tm tm) {
    Map<String, String> p = new LinkedHashMap<>();
    p.put(RecyclerPlugin.param("bind-host"), tm.loopback());
    p.put(RecyclerPlugin.param("slot-id-prefix"), tm.slotPrefix());
    p.put(RecyclerPlugin.param("cache-dir"), work.resolve("recycler-cache").resolve(tm.name()).toString());
    return p;
  }

  /**
   * The TaskManager's own hosts file: {@code localhost} is its loopback address first, then 127.0.0.1 (where Beam's
   * runner binds its own servers, which it also names {@code localhost}). The first line makes the machine's name
   * the reverse name of 127.0.0.1: Flink's BlobClient connects to {@code getHostName()} of the JobManager's
   * 127.0.0.1, and {@code localhost} there would lead it to this TaskManager's own address instead.
   */
  private Path hostsFile(Tm tm) throws IOException {
    Path f = work.resolve("flink").resolve("hosts-" + tm.name());
    String host = InetAddress.getLocalHost().getHostName();
    Files.writeString(f, "# written by dev.recycler.e2e.ScaleOutRun: this TaskManager's view of localhost\n"
        + "127.0.0.1 " + host + "\n" + tm.loopback() + " localhost\n127.0.0.1 localhost\n", StandardCharsets.UTF_8);
    return f;
  }

  /** A port free on 127.0.0.1 and on every TaskManager's loopback address. */
  private static int freeOnAll() throws IOException {
    for (int attempt = 0; attempt < 20; attempt++) {
      int port = FlinkSessionCluster.freePort();
      boolean free = true;
      for (Tm tm : TASK_MANAGERS) {
        try (ServerSocket s = new ServerSocket(port, 1, InetAddress.getByName(tm.loopback()))) {
          // free there too
        } catch (IOException e) {
          free = false;
        }
      }
      if (free) {
        return port;
      }
    }
    throw new IOException("no port free on 127.0.0.1 and every TaskManager's loopback address after 20 attempts");
  }

  private void stopAll() {
    for (GoJob j : launchers) {
      if (j.isRunning()) {
        try {
          j.kill();
        } catch (IOException | InterruptedException e) {
          progress.accept("cannot stop launcher " + j.spec().name() + ": " + e);
        }
      }
    }
    if (jobServer != null) {
      jobServer.close();
    }
    if (cluster != null) {
      cluster.close();
    }
    wrappers.values().forEach(WrapperProcesses::close);
  }

  private void deleteBulk() {
    List<Path> bulk = new ArrayList<>(List.of(work.resolve("job-server-artifacts"), work.resolve("flink/tmp"),
        work.resolve("recycler-cache")));
    for (Tm tm : TASK_MANAGERS) {
      for (String slot : tm.slots()) {
        bulk.add(work.resolve("wrappers").resolve(tm.name()).resolve(slot).resolve("cache"));
      }
    }
    RunSupport.deleteTrees(bulk, progress);
  }


  /**
   * One TaskManager's slot table: slots with their wrapper PIDs, then its leases as a timeline; for a TaskManager that
   * was killed, first the leases its first JVM's recycler reported just before the kill ({@code beforeKill}).
   */
  static String slotTable(Tm tm, AdminEndpoint.Table t, List<LeaseRecord> beforeKill, long origin) {
    StringBuilder b = new StringBuilder();
    b.append(tm.name()).append(" (recycler on ").append(tm.loopback()).append(", its runner's localhost)\n");
    for (AdminEndpoint.Slot s : t.slots()) {
      b.append(String.format(Locale.ROOT, "  %-10s %-8s wrapper pid %-8d leases served %d%n", s.slot(), s.state(),
          s.wrapperPid(), s.leasesServed()));
    }
    if (!beforeKill.isEmpty()) {
      b.append("  leases of the first JVM, read just before its SIGKILL (a lease shown running died with it):\n");
      b.append(SlotTimeline.format(beforeKill, origin));
      b.append("  leases of the restarted JVM's recycler (generations start again at 1):\n");
    }
    b.append(SlotTimeline.format(t.leases(), origin));
    return b.toString();
  }

  private void check(String name, boolean ok, String detail) {
    checks.add(new Check(name, ok ? Verdict.PASS : Verdict.FAIL, detail));
    progress.accept((ok ? "PASS " : "FAIL ") + name + ": " + detail);
  }

  private static Duration since(long nanos) {
    return Duration.ofNanos(System.nanoTime() - nanos);
  }
  /**
   * {@code bash .ci/scaleout}: one run, then the checks, the figures and a slot table per TaskManager. Exit code 0
   * when every check passed. Arguments: {@code [--work-dir DIR] [--repo-root DIR]}.
   */
  public static void main(String[] args) throws Exception {
    Path workDir = Path.of(System.getProperty("java.io.tmpdir"), "recycler-scaleout");
    Path repoRoot = Path.of("").toAbsolutePath();
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--work-dir" -> workDir = Path.of(args[++i]);
        case "--repo-root" -> repoRoot = Path.of(args[++i]);
        default -> {
          System.err.println("usage: ScaleOutRun [--work-dir DIR] [--repo-root DIR]");
          System.exit(2);
        }
      }
    }
    long t0 = System.nanoTime();
    Result r = new ScaleOutRun(repoRoot, workDir,
        line -> System.out.printf(Locale.ROOT, "[%6.1fs] %s%n", (System.nanoTime() - t0) / 1e9, line)).run();
    System.out.println();
    System.out.print(report(r));
    System.exit(r.passed() ? 0 : 1);
  }

  /** Checks, jobs, figures and the slot table of each TaskManager. */
  public static String report(Result r) {
    StringBuilder b = new StringBuilder("JOBS (parallelism 2)\n");
    for (Job j : r.jobs()) {
      b.append(String.format(Locale.ROOT, "  %-20s exit %2d  %6.1fs  Flink %-9s on %-14s leases per TaskManager %s%n",
          j.name(), j.exitCode(), j.wallTime().toMillis() / 1000.0, j.flinkState(), j.flinkTaskManagers(),
          j.leasesPerTm()));
    }
    b.append("\nCHECKS\n");
    for (Check c : r.checks()) {
      b.append(String.format(Locale.ROOT, "  %-5s %s%n        %s%n", c.verdict(), c.name(), c.detail()));
    }
    b.append("\nFIGURES\n");
    r.figures().entrySet().stream().sorted(Map.Entry.comparingByKey()).forEach(e -> b.append(String.format(
        Locale.ROOT, "  %-90s %6.1f s%n", e.getKey(), e.getValue().toMillis() / 1000.0)));
    r.leases().forEach((tm, l) -> b.append(String.format(Locale.ROOT, "  leases on %s: %d%n", tm, l.size())));
    b.append("\nSLOT TABLE PER TASKMANAGER (times relative to the run's start)\n");
    r.slotTables().values().forEach(t -> b.append(t).append('\n'));
    b.append("logs: ").append(r.workDirectory()).append('\n');
    b.append(r.passed() ? "RESULT: all checks passed\n" : "RESULT: " + r.failedChecks().size() + " check(s) FAILED\n");
    return b.toString();
  }
}
