package dev.recycler.e2e;

import dev.recycler.e2e.EndToEndResult.Check;
import dev.recycler.e2e.FaultTable.Memory;
import dev.recycler.e2e.FaultTable.Row;
import dev.recycler.e2e.GoJob.Outcome;
import dev.recycler.e2e.GoJob.Spec;
import java.io.IOException;
import java.io.OutputStream;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;
import java.util.stream.Stream;

/**
 * The fault suite (issue 12 item 5): on a real Flink 1.19.3 session cluster with the recycler plugin and 3 harness
 * slots ({@link SessionRig}), real go-boot-wrapper processes and real Beam Go jobs of the sample pipelines binary, it
 * injects each fault of the plan, counts what happened and checks that nothing hung, nothing was orphaned and nothing
 * of one lease leaked into another:
 *
 * <ol>
 *   <li>TaskManager SIGKILL mid-bundle and restart (the recycler is the plugin inside it: also the recycler's restart
 *       under live wrappers): the job fails, the same wrapper processes re-attach, the next job is served from the
 *       caches that survived (no byte to the wrappers, the staged file only hashed);
 *   <li>wrapper SIGKILL mid-bundle, restarted at once as a container runtime would;
 *   <li>worker SIGKILL mid-bundle (the runner logged the bundle's descriptor request; the worker holds in the bundle);
 *   <li>StartWorker cancelled while it waits for a slot (every slot held; the waiting job cancelled through REST);
 *   <li>more new jobs at once than harness slots;
 *   <li>a stalled worker (SIGSTOP mid-bundle), with a short {@code worker-stall-timeout};
 *   <li>a corrupt artifact: the wrappers' cached worker binary overwritten in place; the recycler's cache entry
 *       overwritten while the wrappers' caches are emptied;
 *   <li>a full disk in the wrappers' work directories (a tmpfs mount filled to the last byte);
 *   <li>an unwritable recycler cache directory (a read-only bind mount; as root, chmod would not stop a write) while a
 *       job brings a binary the cache does not hold;
 *   <li>the scale-out run ({@link ScaleOutRun}: two TaskManagers, one SIGKILLed mid-job), on its own cluster;
 *   <li>a soak: rounds of concurrent jobs, each fault-free or with a random fault (worker SIGKILL at a random moment
 *       after its control connection, wrapper SIGKILL, cancel while running, cancel while waiting, SIGSTOP), and now
 *       and then a corrupted wrapper cache between rounds, until the plan's number of leases; a fixed, printed seed.
 * </ol>
 *
 * <p>After every injection (and every soak round) the suite waits, bounded, for all slots to be IDLE and scans once:
 * orphaned processes (a worker of any lease seen, or anything below a wrapper), cross-job leaks (a lease directory
 * left; a fault-free job whose output is not exactly the expected one), and lost log lines (every fault-free job
 * writes one tagged stderr line per element, {@code --log_tag}; each must be in the wrappers' logs). A job not
 * terminal within its bound is hung: the suite cancels it through REST, kills its launcher and counts it.
 *
 * <p>{@link #run()} returns the {@link FaultTable}; it passed when hung = orphans = leaks = lost lines = 0 and every
 * outcome is one the fault allows. Exceptions mean the suite could not be carried out (a part did not start);
 * everything started is stopped then too. Not thread-safe: one run per instance (the soak's job threads are its own).
 */
public final class FaultSuite {
  /** Elements of a fault-free groupside job: one tagged log line each. */
  static final int ELEMENTS = 20;
  private static final Duration JOB_BOUND = Duration.ofMinutes(3);
  /** After a fault, the job must end by itself within this (the stalled worker needs keepalive's ~30 s at worst). */
  private static final Duration FAULT_BOUND = Duration.ofSeconds(90);
  private static final Duration SETTLE = Duration.ofSeconds(90);
  private static final Duration STALL_TIMEOUT = Duration.ofSeconds(10);
  private static final String HOLD = "--hold=300s";

  /**
   * What to run.
   *
   * @param repeats how often each fault is injected (scale-out: once)
   * @param soakLeases the soak runs rounds until at least this many leases were served; 0 skips it
   * @param seed the soak's random seed (printed; the same seed makes the same choices)
   * @param scaleOut whether to run the scale-out scenario at the end (its own cluster, about 2-3 minutes)
   */
  public record Plan(int repeats, int soakLeases, long seed, boolean scaleOut) {
    public Plan {
      if (repeats < 1 || soakLeases < 0) {
        throw new IllegalArgumentException("repeats must be >= 1 and soakLeases >= 0, got " + repeats + ", "
            + soakLeases);
      }
    }

    /** The full suite of {@code bash .ci/faults}: each fault twice, a soak of 500 leases, the scale-out run. */
    public static Plan full(long seed) {
      return new Plan(2, 500, seed, true);
    }

    /** The CI version: each fault once, a short soak, no scale-out (it runs in the full suite). */
    public static Plan small(long seed) {
      return new Plan(1, 16, seed, false);
    }
  }

  /** What the run did: the table, the seed, the timing and where the logs are. */
  public record Result(FaultTable table, Plan plan, Duration total, String startedUtc, String load,
      List<String> teardownProblems, String workDirectory) {
    public boolean passed() {
      return table.passed() && teardownProblems.isEmpty();
    }
  }

  private final Plan plan;
  private final Path workRoot;
  private final Path repoRoot;
  private final Path wrapperBinary;
  private final Path pipelinesBinary;
  private final Path jobServerJar;
  private final Consumer<String> progress;
  private final FaultTable table = new FaultTable();
  private final Map<String, String> expected = new ConcurrentHashMap<>();
  /** Fault-free tagged jobs not yet counted: job name to the number of lines each must have written. */
  private final Map<String, Integer> taggedJobs = new ConcurrentHashMap<>();
  private final AtomicInteger jobCounter = new AtomicInteger();
  private SessionRig rig;
  private Path work;
  private int variants;

  public FaultSuite(Plan plan, Path repoRoot, Path workRoot, Consumer<String> progress) {
    this.plan = Objects.requireNonNull(plan, "plan");
    this.repoRoot = repoRoot.toAbsolutePath().normalize();
    this.workRoot = workRoot.toAbsolutePath();
    this.wrapperBinary = RunSupport.property("recycler.e2e.wrapperBinary",
        this.repoRoot.resolve("go-boot-wrapper/bin/go-boot-wrapper"));
    this.pipelinesBinary = RunSupport.property("recycler.e2e.pipelinesBinary",
        this.repoRoot.resolve("go-boot-wrapper/examples/pipelines/bin/beam-pipelines"));
    this.jobServerJar = RunSupport.property("recycler.e2e.jobServerJar",
        this.repoRoot.resolve("recycler-flink/e2e/jobserver/target/beam-flink-job-server.jar"));
    this.progress = progress;
  }

  /** Runs the plan once and stops everything it started, also on failure. */
  public Result run() throws IOException, InterruptedException {
    long t0 = System.nanoTime();
    String started = Instant.now().toString();
    String loadBefore = load();
    long origin = System.currentTimeMillis();
    work = Files.createDirectories(workRoot.resolve("run-" + origin));
    progress.accept("fault suite: plan " + plan + " (repeat the soak's choices with --seed " + plan.seed() + ")");
    List<String> teardown = new ArrayList<>();
    try {
      Map<String, String> config = new LinkedHashMap<>();
      // Short enough to see within a job's bound, long enough for a loaded machine's slow reader.
      config.put(RecyclerPlugin.param("worker-stall-timeout"), STALL_TIMEOUT.toSeconds() + " s");
      config.put(RecyclerPlugin.param("lease-history-size"), "300");
      // No silent failover: a restarted task would start new leases and hide what the fault did.
      config.put("restart-strategy.type", "none");
      // Notice a SIGKILLed TaskManager within seconds (defaults: 10 s interval, 50 s timeout).
      config.put("heartbeat.interval", "2000");
      config.put("heartbeat.timeout", "20000");
      // Each job's jar (Beam's job server jar, 170 MB) stays in the TaskManager's blob cache for an hour by default:
      // hundreds of jobs filled the disk in the first full run.
      config.put("blob.service.cleanup.interval", "60");
      // Beam's runner classes are unloaded late (METASPACE_RECYCLE_KB):
      // more metaspace than docs/flink.md recommends, so the suite restarts the TaskManager less often.
      config.put("taskmanager.memory.process.size", "3584m");
      config.put("taskmanager.memory.jvm-metaspace.size", METASPACE_MB + "m");
      rig = SessionRig.start(new SessionRig.Options(work, wrapperBinary, jobServerJar, BuildPaths.recyclerPluginJar(),
          BuildPaths.flinkLibDirectory(), 3, 6, config, progress));
      for (int i = 0; i < plan.repeats(); i++) {
        inject("tm-kill", "TaskManager SIGKILL mid-bundle, restart (= recycler restart under live wrappers)",
            "the job fails; the same wrapper processes re-attach; the next job succeeds with no byte refetched",
            this::taskManagerKill);
        inject("wrapper-kill", "wrapper SIGKILL mid-bundle (restarted at once)",
            "the job fails; the restarted wrapper attaches; the next job succeeds", this::wrapperKill);
        inject("worker-kill", "worker SIGKILL mid-bundle", "the job fails; the next job succeeds", this::workerKill);
        inject("start-cancelled", "StartWorker cancelled while waiting for a slot",
            "the waiting job is cancelled and never gets a lease; the next job succeeds", this::startCancelled);
        inject("concurrent", "5 new jobs at once on 3 harness slots", "all succeed with exact outputs",
            this::concurrent);
        inject("stall", "stalled worker (SIGSTOP mid-bundle), worker-stall-timeout " + STALL_TIMEOUT.toSeconds()
            + " s", "the lease ends as lost, the job fails, the worker is killed; the next job succeeds",
            this::stalledWorker);
        inject("corrupt-wrapper", "corrupt artifact: wrappers' cached worker binary overwritten",
            "detected by the wrapper; the job succeeds", this::corruptWrapperCache);
        inject("corrupt-recycler", "corrupt artifact: recycler's cache entry overwritten, wrappers' caches emptied",
            "never served as the binary: the job succeeds, or fails naming the artifact and the next one succeeds",
            this::corruptRecyclerCache);
      }
      inject("disk-full", "full disk in the wrappers' work dirs (tmpfs filled)",
          "the job fails with a message naming the full disk; once space is back the next job succeeds",
          this::diskFull);
      inject("cache-read-only", "unwritable recycler cache directory (read-only bind mount), new binary",
          "the job succeeds (the binary served without the cache) or fails naming the directory; writable again,"
              + " the next new binary succeeds", this::cacheReadOnly);
      if (plan.soakLeases() > 0) {
        soak();
      }
    } catch (IOException | InterruptedException | RuntimeException | Error e) {
      progress.accept("suite aborted: " + e);
      if (rig != null) {
        rig.close();
        unmountAll();
        deleteBulk();
      }
      unmountAll();
      throw e;
    }
    progress.accept("stop everything: job server, wrappers, TaskManager, JobManager");
    rig.close();
    unmountAll();
    teardown.addAll(stillAlive());
    deleteBulk();
    if (plan.scaleOut()) {
      scaleOut();
    }
    Duration total = Duration.ofNanos(System.nanoTime() - t0);
    String loadText = "before " + loadBefore + "; after " + load();
    Result r = new Result(table, plan, total, started, loadText, List.copyOf(teardown), work.toString());
    Map<String, Object> header = new LinkedHashMap<>();
    header.put("started (UTC)", started);
    header.put("duration", String.format(Locale.ROOT, "%.1f min", total.toMillis() / 60000.0));
    header.put("load average (1/5/15 min)", loadText);
    header.put("machine", Runtime.getRuntime().availableProcessors() + " vCPUs");
    header.put("plan", plan.toString());
    header.put("seed", plan.seed());
    header.put("jobs", jobCounter.get());
    header.put("TaskManager restarts for Beam's metaspace growth", metaspaceRestarts);
    header.put("teardown", teardown.isEmpty() ? "every process stopped" : String.join("; ", teardown));
    Path md = table.write(work, header);
    progress.accept("table written to " + md + " and faults.json");
    return r;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Framework: one injection, then the settle and the scan

  /** One injection of a fault: does it and records its outcome; {@link #inject} settles and scans afterwards. */
  private interface Injection {
    void run(Row row) throws IOException, InterruptedException;
  }

  private void inject(String key, String fault, String expect, Injection body)
      throws IOException, InterruptedException {
    Row row = table.row(key, fault, expect);
    progress.accept("== " + fault);
    row.memoryBefore(tmMemory());
    body.run(row);
    quiesce(row, fault);
    row.memoryAfter(tmMemory());
  }

  /**
   * Waits for every slot to be IDLE, then scans for orphans and leaks and counts the tagged log lines. A TaskManager
   * that died meanwhile is counted against the row and started again; one whose metaspace is nearly full is restarted
   * (see {@link #METASPACE_RECYCLE_KB}).
   */
  private void quiesce(Row row, String after) throws IOException, InterruptedException {
    Duration idle;
    try {
      idle = rig.awaitIdle(SETTLE);
    } catch (IOException down) {
      row.unexpected("the TaskManager stopped answering during " + after + ": " + tmDeath());
      restartTaskManager("it died");
      idle = rig.awaitIdle(SETTLE);
    }
    if (idle == null) {
      row.unexpected("slots not IDLE within " + SETTLE + " after " + after + ": " + rig.admin().table().states());
    }
    SessionRig.Leftovers left = rig.leftovers();
    if (!left.none()) {
      progress.accept("  !! after " + after + ": " + String.join("; ", left.all()));
    }
    row.orphans(left.orphans());
    row.leaks(left.leaks());
    killOrphans();
    countLogLines(row);
    // No job runs now: their staged binaries (84 MB per job) would fill the disk over a soak.
    rig.deleteStagedArtifacts();
    Memory m = tmMemory();
    if (m.metaspaceUsedKb() > METASPACE_RECYCLE_KB) {
      metaspaceRestarts++;
      row.note(String.format(Locale.ROOT, "TaskManager restarted (SIGTERM, start, wrappers re-attach) with %.0f MB"
          + " of metaspace used after %d jobs", m.metaspaceUsedKb() / 1024.0, jobCounter.get()));
      restartTaskManager("its metaspace is " + m.metaspaceUsedKb() / 1024 + " MB");
    }
  }

  /**
   * Beam's Flink runner classes, loaded per job into the job's classloader, are unloaded late: 332 MB of TaskManager
   * metaspace after 29 jobs here, and the recommended 512 MB ran out after about 30 jobs in the first soak
   * (OutOfMemoryError: Metaspace, the TaskManager shut itself down). Not the recycler's (the plugin loads no job
   * class); the suite gives the TaskManager {@link #METASPACE_MB} and restarts it between faults once 70 % of that is
   * used, as an operator would, and counts the restarts.
   */
  private static final long METASPACE_MB = 1536;
  private static final long METASPACE_RECYCLE_KB = METASPACE_MB * 1024 * 7 / 10;
  private int metaspaceRestarts;

  private void restartTaskManager(String why) throws IOException, InterruptedException {
    progress.accept("restart the TaskManager (" + why + ")");
    String old = rig.cluster().taskManagerId();
    rig.cluster().stopTaskManager();
    rig.cluster().startTaskManager();
    deleteTaskManagerFiles(old);
    rig.awaitAttached(Duration.ofSeconds(120));
  }

  /** The files a stopped TaskManager JVM left (its blob cache: each job's jar). */
  private void deleteTaskManagerFiles(String taskManagerId) {
    RunSupport.deleteTrees(List.of(rig.cluster().workDirectory().resolve("tmp").resolve("tm_" + taskManagerId)),
        progress);
  }

  /** The first fatal line of the current TaskManager's log, e.g. its OutOfMemoryError. */
  private String tmDeath() {
    try (Stream<String> lines = Files.lines(rig.cluster().taskManagerLog(), StandardCharsets.ISO_8859_1)) {
      return lines.filter(l -> l.contains("OutOfMemoryError") || l.contains("Fatal error")).map(ProcessTable::abbreviate)
          .findFirst().orElse("no fatal error in its log");
    } catch (IOException | java.io.UncheckedIOException e) {
      return "its log is unreadable: " + e;
    }
  }

  private Memory tmMemory() {
    return rig.cluster().taskManagerPid().stream().mapToObj(Memory::of).findFirst().orElse(Memory.UNKNOWN);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // The faults

  private void taskManagerKill(Row row) throws IOException, InterruptedException {
    Held h = holdInBundle(row);
    if (h == null) {
      return;
    }
    Map<String, Long> before = rig.wrappers().pids();
    row.injected(1);
    row.affected(1);
    progress.accept("SIGKILL the TaskManager (pid " + rig.cluster().taskManagerPid().orElse(-1) + ") while "
        + h.lease.workerId() + " (pid " + h.lease.workerPid() + ") holds in a bundle of " + h.job.spec().name());
    long killT = System.nanoTime();
    rig.cluster().killTaskManager();
    Duration gone = awaitGone(h.lease.workerPid(), Duration.ofSeconds(30));
    End e = end(h.job, FAULT_BOUND);
    long jobEnded = millisSince(killT);
    expect(row, e, "failed", "cancelled");
    long restartT = System.nanoTime();
    String killedId = rig.cluster().taskManagerId();
    rig.cluster().startTaskManager();
    deleteTaskManagerFiles(killedId);
    Map<String, Long> after = rig.awaitAttached(Duration.ofSeconds(120));
    long reattach = millisSince(restartT);
    row.recovered(reattach);
    if (!after.equals(before)) {
      row.unexpected("wrappers after the restart " + after + ", before " + before + " (not the same processes)");
    }
    row.note(String.format(Locale.ROOT, "worker gone %s after the kill; job ended %.1f s after the kill (%s);"
            + " wrappers re-attached %.1f s after the new TaskManager started", gone == null ? "NOT within 30 s"
            : gone.toMillis() + " ms", jobEnded / 1000.0, e.cause,
        reattach / 1000.0));
    if (gone == null) {
      row.unexpected("worker " + h.lease.workerId() + " still alive 30 s after its TaskManager died");
    }
    // The restarted recycler adopts its cache directory and the wrappers keep theirs: nothing is copied or served.
    Map<String, Double> m0 = rig.admin().metrics();
    End next = end(start(Kind.FREE_GROUPSIDE, pipelinesBinary), JOB_BOUND);
    expect(row, next, "succeeded");
    Map<String, Double> m1 = rig.admin().metrics();
    long served = delta(m0, m1, "recycler_artifact_served_bytes_sum");
    long local = delta(m0, m1, "recycler_artifact_local_read_bytes_total");
    long size = Files.size(pipelinesBinary);
    row.note("after the restart: " + served + " bytes served to wrappers, " + local + " bytes read in place (binary "
        + size + ")");
    // Hashing reads the file once; the staging-time hash of a worker binary first compares its first and last 64 KiB
    // with cached content of the same size (LocalArtifacts.PROBE_BYTES) to choose between hashing and copying.
    long hashOnly = size + 2 * 64 * 1024;
    if (served != 0 || local > hashOnly) {
      row.unexpected("the caches were not reused after the restart: " + served + " bytes served to wrappers, "
          + local + " bytes read in place for one job (hashing alone reads at most " + hashOnly + ")");
    }
  }

  private void wrapperKill(Row row) throws IOException, InterruptedException {
    Held h = holdInBundle(row);
    if (h == null) {
      return;
    }
    String slot = h.lease.slot();
    row.injected(1);
    row.affected(1);
    progress.accept("SIGKILL the wrapper of " + slot + " (pid " + rig.wrappers().pids().get(slot) + ") while "
        + h.lease.workerId() + " holds in a bundle");
    long killT = System.nanoTime();
    rig.wrappers().kill(slot);
    rig.wrappers().restart(slot, null);
    Duration gone = awaitGone(h.lease.workerPid(), Duration.ofSeconds(30));
    End e = end(h.job, FAULT_BOUND);
    expect(row, e, "failed");
    Duration idle = rig.awaitIdle(SETTLE);
    if (idle != null) {
      row.recovered(millisSince(killT));
    }
    row.note("wrapper kill: worker gone " + (gone == null ? "NOT within 30 s" : gone.toMillis() + " ms") + "; job: "
        + e.cause + "; lease " + leaseEnd(h));
    if (gone == null) {
      row.unexpected("worker of the killed wrapper still alive after 30 s");
    }
    expect(row, end(start(Kind.FREE_GROUPSIDE, pipelinesBinary), JOB_BOUND), "succeeded");
  }

  private void workerKill(Row row) throws IOException, InterruptedException {
    Held h = holdInBundle(row);
    if (h == null) {
      return;
    }
    row.injected(1);
    row.affected(1);
    progress.accept("SIGKILL worker " + h.lease.workerId() + " (pid " + h.lease.workerPid() + ") mid-bundle");
    long killT = System.nanoTime();
    ProcessHandle.of(h.lease.workerPid()).ifPresent(ProcessHandle::destroyForcibly);
    End e = end(h.job, FAULT_BOUND);
    expect(row, e, "failed");
    if (rig.awaitIdle(SETTLE) != null) {
      row.recovered(millisSince(killT));
    }
    row.note("worker kill: job ended " + e.wall.toMillis() + " ms after submission: " + e.cause + "; lease "
        + leaseEnd(h));
    expect(row, end(start(Kind.FREE_GROUPSIDE, pipelinesBinary), JOB_BOUND), "succeeded");
  }

  private void startCancelled(Row row) throws IOException, InterruptedException {
    List<GoJob> holders = new ArrayList<>();
    for (int i = 0; i < rig.slotIds().size(); i++) {
      holders.add(start(Kind.HELD, pipelinesBinary));
    }
    for (GoJob h : holders) {
      if (rig.awaitActiveLease(h.spec().name(), h::isRunning, JOB_BOUND).isEmpty()) {
        row.unexpected("holder " + h.spec().name() + " never got a lease");
      }
    }
    GoJob waiter = start(Kind.FREE_WORDCOUNT, pipelinesBinary);
    String flinkId = rig.awaitFlinkJob(waiter.spec().name(), "RUNNING", Duration.ofSeconds(90));
    // Flink deploys the task, whose operator's open() calls StartWorker, which waits for a slot: no line in any log
    // says so, so the job is given 5 s in RUNNING (no slot can free meanwhile: the holders hold 5 minutes).
    long until = System.nanoTime() + Duration.ofSeconds(5).toNanos();
    while (System.nanoTime() < until) {
      RunSupport.pause();
    }
    boolean waiting = rig.leasesOf(waiter.spec().name()).isEmpty();
    row.injected(1);
    row.affected(1);
    progress.accept("cancel " + waiter.spec().name() + " (job " + flinkId + ") while its StartWorker waits"
        + (waiting ? "" : " (it already HAS a lease)"));
    long cancelT = System.nanoTime();
    rig.cluster().cancelJob(flinkId);
    End e = end(waiter, FAULT_BOUND);
    row.recovered(millisSince(cancelT));
    expect(row, e, "cancelled");
    if (!waiting) {
      row.unexpected("the job got a lease before it could be cancelled while waiting: not injected as meant");
    }
    for (GoJob h : holders) {
      String id = RunSupport.flinkJobId(rig.cluster(), h.spec().name());
      if (id != null) {
        rig.cluster().cancelJob(id);
      }
    }
    for (GoJob h : holders) {
      end(h, FAULT_BOUND);
    }
    rig.awaitIdle(SETTLE);
    List<LeaseRecord> late = rig.leasesOf(waiter.spec().name());
    if (!late.isEmpty()) {
      row.unexpected("the cancelled waiter got a lease after all: " + late.stream().map(LeaseRecord::workerId)
          .toList());
    }
    expect(row, end(start(Kind.FREE_GROUPSIDE, pipelinesBinary), JOB_BOUND), "succeeded");
  }

  private void concurrent(Row row) throws IOException, InterruptedException {
    int n = rig.slotIds().size() + 2;
    List<GoJob> jobs = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      jobs.add(start(i % 2 == 0 ? Kind.FREE_GROUPSIDE : Kind.FREE_WORDCOUNT, pipelinesBinary, "--hold=3s"));
    }
    row.injected(1);
    row.affected(n);
    for (GoJob j : jobs) {
      expect(row, end(j, JOB_BOUND), "succeeded");
    }
  }

  private void stalledWorker(Row row) throws IOException, InterruptedException {
    Held h = holdInBundle(row);
    if (h == null) {
      return;
    }
    row.injected(1);
    row.affected(1);
    long pid = h.lease.workerPid();
    progress.accept("SIGSTOP worker " + h.lease.workerId() + " (pid " + pid + ") mid-bundle");
    long stopT = System.nanoTime();
    signal("STOP", pid);
    End e = end(h.job, FAULT_BOUND);
    expect(row, e, "failed");
    if (rig.awaitIdle(SETTLE) != null) {
      row.recovered(millisSince(stopT));
    }
    Optional<LeaseRecord> l = rig.leasesOf(h.job.spec().name()).stream()
        .filter(x -> x.workerId().equals(h.lease.workerId())).findFirst();
    row.note("stall: lease " + l.map(x -> x.exitDescription() + " " + (x.ended() ? (x.endMillis()
        - x.startMillis() - x.readyLatencyMillis()) + " ms after ready" : "")).orElse("?") + "; job: " + e.cause);
    if (ProcessTable.isAlive(pid)) {
      row.unexpected("stopped worker pid " + pid + " still alive after its lease ended");
      signal("CONT", pid);
      ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
    }
    expect(row, end(start(Kind.FREE_GROUPSIDE, pipelinesBinary), JOB_BOUND), "succeeded");
  }

  private void corruptWrapperCache(Row row) throws IOException, InterruptedException {
    int files = 0;
    for (String slot : rig.slotIds()) {
      files += corruptFiles(rig.wrappers().workDir(slot).resolve("cache"), f -> true);
    }
    row.injected(1);
    row.affected(1);
    Map<String, Double> m0 = rig.admin().metrics();
    End e = end(start(Kind.FREE_GROUPSIDE, pipelinesBinary), JOB_BOUND);
    expect(row, e, "succeeded");
    Map<String, Double> m1 = rig.admin().metrics();
    row.note("wrapper cache: " + files + " files overwritten; then " + delta(m0, m1,
        "recycler_artifact_served_bytes_sum") + " bytes served to wrappers (a refetch of what was corrupt)");
  }

  private void corruptRecyclerCache(Row row) throws IOException, InterruptedException {
    int files = corruptFiles(rig.recyclerCacheDir(), f -> f.getFileName().toString().startsWith("sha256-"));
    for (String slot : rig.slotIds()) {
      deleteFiles(rig.wrappers().workDir(slot).resolve("cache"));
    }
    row.injected(1);
    row.affected(1);
    End e = end(start(Kind.FREE_GROUPSIDE, pipelinesBinary), JOB_BOUND);
    row.note("recycler cache: " + files + " entries overwritten, wrappers' caches emptied; job: " + e.outcome() + " "
        + snippet(e.output, "corrupt", e.cause));
    if (e.outcome().equals("failed") && !e.output.contains("sha256")) {
      row.unexpected("failed without naming the artifact's digest: " + e.cause);
    } else {
      expect(row, e, "succeeded", "failed");
    }
    if (!e.outcome().equals("succeeded")) {
      expect(row, end(start(Kind.FREE_GROUPSIDE, pipelinesBinary), JOB_BOUND), "succeeded");
    }
  }

  private void diskFull(Row row) throws IOException, InterruptedException {
    Path mounts = Files.createDirectories(work.resolve("tmpfs"));
    List<String> slots = rig.slotIds();
    for (String slot : slots) {
      Path m = Files.createDirectories(mounts.resolve(slot));
      String err = command("mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", m.toString());
      if (err != null) {
        row.notPossible("mount -t tmpfs refused (" + err + ")");
        unmountAll();
        return;
      }
      mounted.add(m);
    }
    // Each wrapper restarted on its tmpfs (its container's volume), then the volume filled to the last byte.
    for (String slot : slots) {
      rig.wrappers().stop(slot);
      rig.wrappers().restart(slot, mounts.resolve(slot));
    }
    rig.awaitAttached(Duration.ofSeconds(60));
    for (String slot : slots) {
      fill(mounts.resolve(slot).resolve("filler"));
    }
    row.injected(1);
    row.affected(1);
    End e = end(start(Kind.FREE_GROUPSIDE, pipelinesBinary), JOB_BOUND);
    boolean clear = e.output.toLowerCase(Locale.ROOT).contains("no space left on device");
    row.note("disk full: job " + e.outcome() + ": " + snippet(e.output, "no space left", e.cause)
        + (clear ? "" : " (launcher output does not say 'no space left on device')"));
    expect(row, e, "failed");
    if (e.outcome().equals("failed") && !clear) {
      row.unexpected("the failure does not name the full disk: " + e.cause);
    }
    long freeT = System.nanoTime();
    for (String slot : slots) {
      Files.deleteIfExists(mounts.resolve(slot).resolve("filler"));
    }
    if (rig.awaitIdle(SETTLE) != null) {
      row.recovered(millisSince(freeT));
    }
    expect(row, end(start(Kind.FREE_GROUPSIDE, pipelinesBinary), JOB_BOUND), "succeeded");
    // Leftovers on the volumes are scanned now; then back to the wrappers' own directories.
    SessionRig.Leftovers left = rig.leftovers();
    row.orphans(left.orphans());
    row.leaks(left.leaks());
    for (String slot : slots) {
      rig.wrappers().stop(slot);
    }
    unmountAll();
    for (String slot : slots) {
      rig.wrappers().restart(slot, null);
    }
    rig.awaitAttached(Duration.ofSeconds(60));
  }

  private void cacheReadOnly(Row row) throws IOException, InterruptedException {
    Path cache = rig.recyclerCacheDir();
    String err = command("mount", "--bind", cache.toString(), cache.toString());
    if (err == null) {
      mounted.add(cache);
      err = command("mount", "-o", "remount,ro,bind", cache.toString());
    }
    if (err != null) {
      row.notPossible("read-only bind mount refused (" + err + ")");
      unmountAll();
      return;
    }
    row.injected(1);
    row.affected(1);
    End e = end(start(Kind.FREE_GROUPSIDE, newVariant()), JOB_BOUND);
    boolean clear = e.output.contains(cache.toString()) || e.output.toLowerCase(Locale.ROOT).contains("read-only");
    row.note("read-only cache: job " + e.outcome() + ": " + snippet(e.output, "Read-only", e.cause));
    if (e.outcome().equals("failed") && !clear) {
      row.unexpected("the failure does not name the read-only cache directory: " + e.cause);
    } else {
      expect(row, e, "succeeded", "failed");
    }
    long rwT = System.nanoTime();
    unmountAll();
    expect(row, end(start(Kind.FREE_GROUPSIDE, newVariant()), JOB_BOUND), "succeeded");
    row.recovered(millisSince(rwT));
  }

  private void scaleOut() throws InterruptedException {
    Row row = table.row("scale-out", "scale-out: 2 TaskManagers, one SIGKILLed mid-job and restarted",
        "the other TaskManager's lease runs on untouched; the killed side's wrappers re-attach; later jobs use both");
    progress.accept("== " + row.fault + " (its own cluster)");
    try {
      ScaleOutRun.Result r = new ScaleOutRun(repoRoot, work.resolve("scale-out"), progress).run();
      row.injected(1);
      row.affected(1);
      for (ScaleOutRun.Job j : r.jobs()) {
        row.outcome(j.exitCode() == 0 && j.outputMatches() ? "succeeded" : j.flinkState().equals("CANCELED")
            ? "cancelled" : "failed");
      }
      r.figures().forEach((k, v) -> {
        if (k.contains("re-attached")) {
          row.recovered(v.toMillis());
        }
      });
      for (Check c : r.failedChecks()) {
        if (c.name().contains("no worker process")) {
          row.orphans(List.of(c.detail()));
        } else {
          row.unexpected(c.name() + ": " + c.detail());
        }
      }
      row.note("scale-out: " + r.checks().size() + " checks, " + r.failedChecks().size() + " failed; logs "
          + r.workDirectory());
    } catch (IOException | RuntimeException e) {
      row.injected(1);
      row.unexpected("the scale-out run could not be carried out: " + e);
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // The soak

  /** What a soak job does. */
  private enum SoakFault {
    NONE(46), WORKER_KILL(16), WRAPPER_KILL(10), CANCEL_RUNNING(10), CANCEL_WAITING(10), STALL(4), CORRUPT_CACHE(4);

    final int weight;

    SoakFault(int weight) {
      this.weight = weight;
    }

    static SoakFault pick(Random r) {
      int total = Stream.of(values()).filter(f -> f != CORRUPT_CACHE).mapToInt(f -> f.weight).sum();
      int x = r.nextInt(total);
      for (SoakFault f : values()) {
        if (f == CORRUPT_CACHE) {
          continue;
        }
        x -= f.weight;
        if (x < 0) {
          return f;
        }
      }
      return NONE;
    }
  }

  private void soak() throws IOException, InterruptedException {
    Row row = table.row("soak", "soak: " + plan.soakLeases() + "+ leases, random faults, seed " + plan.seed(),
        "fault-free jobs succeed exactly; faulted jobs fail or are cancelled, never hang");
    progress.accept("== soak until " + plan.soakLeases() + " leases, seed " + plan.seed());
    row.memoryBefore(tmMemory());
    Random rnd = new Random(plan.seed());
    // Two more jobs than slots: some StartWorker calls wait, which the cancel-while-waiting fault needs.
    int perRound = rig.slotIds().size() + 2;
    Map<SoakFault, Integer> injected = new TreeMap<>();
    Map<String, Integer> outcomes = new TreeMap<>();
    int leases = 0;
    int round = 0;
    long t0 = System.nanoTime();
    ExecutorService pool = Executors.newFixedThreadPool(perRound, r -> {
      Thread t = new Thread(r, "soak-job");
      t.setDaemon(true);
      return t;
    });
    try {
      while (leases < plan.soakLeases()) {
        round++;
        if (rnd.nextInt(100) < SoakFault.CORRUPT_CACHE.weight) {
          String slot = rig.slotIds().get(rnd.nextInt(rig.slotIds().size()));
          corruptFiles(rig.wrappers().workDir(slot).resolve("cache"), f -> true);
          injected.merge(SoakFault.CORRUPT_CACHE, 1, Integer::sum);
          row.injected(1);
        }
        List<Future<SoakJob>> futures = new ArrayList<>();
        for (int i = 0; i < perRound; i++) {
          SoakFault f = SoakFault.pick(rnd);
          long seed = rnd.nextLong();
          futures.add(pool.submit(() -> soakJob(f, new Random(seed))));
        }
        List<String> names = new ArrayList<>();
        for (Future<SoakJob> fu : futures) {
          SoakJob j;
          try {
            j = fu.get(JOB_BOUND.plus(FAULT_BOUND).plusMinutes(1).toMillis(), TimeUnit.MILLISECONDS);
          } catch (ExecutionException | TimeoutException e) {
            row.unexpected("soak job thread failed: " + e);
            continue;
          }
          names.add(j.end.name);
          String key = j.injected.name().toLowerCase(Locale.ROOT) + " -> " + j.end.outcome();
          outcomes.merge(key, 1, Integer::sum);
          row.outcome(j.end.outcome());
          if (j.injected != SoakFault.NONE) {
            injected.merge(j.injected, 1, Integer::sum);
            row.injected(1);
            row.affected(1);
          }
          if (j.end.hung) {
            row.hung(1);
          }
          Set<String> allowed = switch (j.injected) {
            case NONE -> Set.of("succeeded");
            case CANCEL_RUNNING, CANCEL_WAITING -> Set.of("cancelled");
            default -> Set.of("failed", "cancelled");
          };
          if (!allowed.contains(j.end.outcome())) {
            row.unexpected(j.end.name + " (" + j.injected + "): " + j.end.outcome() + ": " + j.end.cause);
          }
          if (j.note != null) {
            row.note(j.end.name + ": " + j.note);
          }
          if (j.recoverMillis >= 0) {
            row.recovered(j.recoverMillis);
          }
        }
        // Counted before the settle: a TaskManager restart there starts a new slot table.
        for (String n : names) {
          leases += rig.leasesOf(n).size();
        }
        quiesce(row, "soak round " + round);
        progress.accept(String.format(Locale.ROOT, "soak round %d: %d/%d leases after %.0f s; faults %s",
            round, leases, plan.soakLeases(), millisSince(t0) / 1000.0, injected));
      }
    } finally {
      pool.shutdownNow();
    }
    row.note("soak: " + round + " rounds, " + leases + " leases; injected " + injected + "; outcomes " + outcomes);
    row.memoryAfter(tmMemory());
  }

  private record SoakJob(SoakFault injected, End end, String note, long recoverMillis) {}

  /** One soak job with its fault; runs on a soak thread. */
  private SoakJob soakJob(SoakFault f, Random r) throws IOException, InterruptedException {
    if (f == SoakFault.NONE) {
      return new SoakJob(f, end(start(r.nextInt(4) > 0 ? Kind.FREE_GROUPSIDE : Kind.FREE_WORDCOUNT, pipelinesBinary),
          JOB_BOUND), null, -1);
    }
    GoJob job = start(Kind.HELD, pipelinesBinary);
    String name = job.spec().name();
    if (f == SoakFault.CANCEL_WAITING) {
      String id = rig.awaitFlinkJob(name, "RUNNING", JOB_BOUND);
      boolean waiting = rig.leasesOf(name).isEmpty();
      long t = System.nanoTime();
      rig.cluster().cancelJob(id);
      End e = end(job, FAULT_BOUND);
      return new SoakJob(waiting ? f : SoakFault.CANCEL_RUNNING, e, null, millisSince(t));
    }
    Optional<LeaseRecord> l = rig.awaitActiveLease(name, job::isRunning, JOB_BOUND);
    if (l.isEmpty()) {
      return new SoakJob(SoakFault.NONE, end(job, Duration.ofSeconds(1)), "no lease became ACTIVE: not injected", -1);
    }
    LeaseRecord lease = l.get();
    // A random moment after the control connection: before the descriptors, during them, or holding in the bundle.
    sleepMillis(r.nextInt(2500));
    long t = System.nanoTime();
    String note = null;
    switch (f) {
      case WORKER_KILL -> ProcessHandle.of(lease.workerPid()).ifPresent(ProcessHandle::destroyForcibly);
      case WRAPPER_KILL -> {
        rig.wrappers().kill(lease.slot());
        rig.wrappers().restart(lease.slot(), null);
      }
      case CANCEL_RUNNING -> {
        String id = RunSupport.flinkJobId(rig.cluster(), name);
        if (id != null) {
          rig.cluster().cancelJob(id);
        }
      }
      case STALL -> signal("STOP", lease.workerPid());
      default -> throw new IllegalStateException("not a job fault: " + f);
    }
    End e = end(job, FAULT_BOUND);
    long recover = millisSince(t);
    if (f == SoakFault.STALL && ProcessTable.isAlive(lease.workerPid())) {
      Duration gone = awaitGone(lease.workerPid(), Duration.ofSeconds(20));
      if (gone == null) {
        note = "stopped worker " + lease.workerPid() + " still alive 20 s after its job ended";
        signal("CONT", lease.workerPid());
      }
    }
    return new SoakJob(f, e, note, recover);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Jobs

  /** The kinds of job the suite submits. */
  private enum Kind {
    /** groupside over {@link #ELEMENTS} numbers, one tagged stderr line per element; two leases (two stages). */
    FREE_GROUPSIDE,
    /** wordcount of the bundled text; one lease. */
    FREE_WORDCOUNT,
    /** wordcount whose worker holds 5 minutes in its first bundle: ended only by the fault. */
    HELD
  }

  private GoJob start(Kind kind, Path binary, String... extra) throws IOException, InterruptedException {
    String pipeline = kind == Kind.FREE_GROUPSIDE ? "groupside" : "wordcount";
    // Letters and digits only: Beam turns other characters of a job name into '0'.
    String name = String.format(Locale.ROOT, "f%04d%s", jobCounter.incrementAndGet(), pipeline);
    List<String> flags = new ArrayList<>();
    List<String> outputFlags = new ArrayList<>();
    if (kind == Kind.FREE_GROUPSIDE) {
      outputFlags.add("--elements=" + ELEMENTS);
      flags.add("--log_tag=" + name);
      taggedJobs.put(name, ELEMENTS);
    }
    if (kind == Kind.HELD) {
      flags.add(HOLD);
    }
    flags.addAll(outputFlags);
    flags.addAll(List.of(extra));
    String key = pipeline + outputFlags;
    if (!expected.containsKey(key)) {
      expected.put(key, GoJob.expectedOutput(pipelinesBinary, pipeline, outputFlags));
    }
    GoJob job = rig.startJob(binary, new Spec(name, pipeline, flags));
    expectedByJob.put(name, key);
    return job;
  }

  private final Map<String, String> expectedByJob = new ConcurrentHashMap<>();

  /** How a job ended. {@code hung}: not terminal within its bound (then cancelled through REST, launcher killed). */
  private record End(String name, int exit, String flinkState, boolean exact, boolean hung, String cause,
      Duration wall, String output) {
    String outcome() {
      if (hung) {
        return "hung";
      }
      if (exit == 0) {
        return exact ? "succeeded" : "wrong output";
      }
      return flinkState.equals("CANCELED") ? "cancelled" : "failed";
    }
  }

  /** Waits up to {@code bound} for the launcher; a job still running then is hung: cancelled, killed, counted. */
  private End end(GoJob job, Duration bound) throws IOException, InterruptedException {
    String name = job.spec().name();
    Optional<Outcome> done = job.await(bound);
    boolean hung = done.isEmpty();
    if (hung) {
      progress.accept("  !! " + name + " HUNG: not terminal within " + bound + "; cancelling it through REST");
      String id = RunSupport.flinkJobId(rig.cluster(), name);
      if (id != null) {
        rig.cluster().cancelJob(id);
      }
      done = job.await(Duration.ofSeconds(60));
      if (done.isEmpty()) {
        done = Optional.of(job.kill());
      }
    }
    Outcome o = done.get();
    String state = rig.finalFlinkState(RunSupport.flinkJobId(rig.cluster(), name));
    String want = expected.get(expectedByJob.get(name));
    boolean exact = o.output().isPresent() && o.output().get().equals(want);
    if (o.exitCode() != 0) {
      taggedJobs.remove(name);
    }
    End e = new End(name, o.exitCode(), state, exact, hung, o.exitCode() == 0 ? (exact ? "exact output"
        : "output DIFFERS") : RunSupport.cause(o.launcherOutput()), o.wallTime(), o.launcherOutput());
    progress.accept(String.format(Locale.ROOT, "job %s: %s in %.1f s (Flink %s) %s", name, e.outcome(),
        o.wallTime().toMillis() / 1000.0, state, e.exit == 0 ? "" : e.cause));
    return e;
  }

  private static void expect(Row row, End e, String... allowed) {
    row.outcome(e.outcome());
    if (e.hung) {
      row.hung(1);
    }
    if (!List.of(allowed).contains(e.outcome())) {
      row.unexpected(e.name + ": " + e.outcome() + " (allowed " + String.join("/", allowed) + "): " + e.cause);
    }
  }

  /** A held job whose worker is inside a bundle (the runner asked for the bundle's descriptor). */
  private record Held(GoJob job, LeaseRecord lease) {}

  private Held holdInBundle(Row row) throws IOException, InterruptedException {
    Path log = rig.cluster().taskManagerLog();
    long offset = Files.exists(log) ? Files.size(log) : 0;
    GoJob job = start(Kind.HELD, pipelinesBinary);
    Optional<LeaseRecord> l = rig.awaitActiveLease(job.spec().name(), job::isRunning, JOB_BOUND);
    if (l.isEmpty()) {
      End e = end(job, Duration.ofSeconds(1));
      row.unexpected(job.spec().name() + ": its lease never became ACTIVE (" + e.outcome() + ": " + e.cause + ")");
      return null;
    }
    if (!SessionRig.awaitLogLine(log, offset, EndToEndRun.BUNDLE_STARTED, Duration.ofSeconds(60))) {
      row.note(job.spec().name() + ": no bundle start seen in the TaskManager log within 60 s");
    }
    return new Held(job, l.get());
  }

  private String leaseEnd(Held h) throws IOException, InterruptedException {
    return rig.leasesOf(h.job.spec().name()).stream().filter(x -> x.workerId().equals(h.lease.workerId()))
        .map(LeaseRecord::exitDescription).findFirst().orElse("?");
  }

  /** A copy of the pipelines binary with random bytes appended: new content (a new digest) that runs the same. */
  private Path newVariant() throws IOException {
    Path dir = Files.createDirectories(work.resolve("binaries"));
    Path p = dir.resolve("beam-pipelines-v" + (++variants));
    Files.copy(pipelinesBinary, p, StandardCopyOption.REPLACE_EXISTING);
    byte[] trailer = new byte[64];
    new Random().nextBytes(trailer);
    Files.write(p, trailer, StandardOpenOption.APPEND);
    p.toFile().setExecutable(true);
    return p;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Counting

  /** Counts the tagged lines of every finished fault-free job in the wrappers' logs; lost = expected - found. */
  private void countLogLines(Row row) throws IOException {
    if (taggedJobs.isEmpty()) {
      return;
    }
    Map<String, Set<String>> found = new HashMap<>();
    try (Stream<Path> logs = Files.list(work.resolve("wrappers"))) {
      for (Path log : logs.filter(p -> p.getFileName().toString().endsWith(".log")).toList()) {
        for (String line : Files.readAllLines(log, StandardCharsets.ISO_8859_1)) {
          int i = line.indexOf(" element ");
          if (i > 0 && taggedJobs.containsKey(line.substring(0, i))) {
            found.computeIfAbsent(line.substring(0, i), k -> new HashSet<>()).add(line.substring(i + 9));
          }
        }
      }
    }
    int checked = 0;
    int lost = 0;
    for (Map.Entry<String, Integer> e : Map.copyOf(taggedJobs).entrySet()) {
      int n = found.getOrDefault(e.getKey(), Set.of()).size();
      checked += e.getValue();
      lost += Math.max(0, e.getValue() - n);
      if (n < e.getValue()) {
        row.note("job " + e.getKey() + ": " + (e.getValue() - n) + " of " + e.getValue() + " log lines missing");
      }
      taggedJobs.remove(e.getKey());
    }
    row.logLines(checked, lost);
  }

  /** Kills processes a scan found (so one fault's orphan is not counted again after the next). */
  private void killOrphans() {
    ProcessTable procs = ProcessTable.snapshot();
    for (String id : rig.knownWorkerIds()) {
      procs.withWorkerId(id, rig.wrappersRoot()).forEach(p -> {
        signal("CONT", p.pid());
        ProcessHandle.of(p.pid()).ifPresent(ProcessHandle::destroyForcibly);
      });
    }
  }

  /** What is still alive once everything was stopped: launchers, workers of any lease. */
  private List<String> stillAlive() {
    List<String> alive = new ArrayList<>();
    rig.longLivedPids().forEach((what, pid) -> {
      if (pid > 0 && ProcessTable.isAlive(pid)) {
        alive.add(what + " pid " + pid);
      }
    });
    rig.runningLaunchers().forEach(n -> alive.add("launcher " + n));
    ProcessTable procs = ProcessTable.snapshot();
    for (String id : rig.knownWorkerIds()) {
      procs.withWorkerId(id, rig.wrappersRoot()).forEach(p -> alive.add("worker of lease " + id + ": " + p));
    }
    return alive;
  }

  /** About 200 characters of {@code text} ending just after {@code needle}, or {@code otherwise} if it is absent. */
  private static String snippet(String text, String needle, String otherwise) {
    int i = text.indexOf(needle);
    if (i < 0) {
      return otherwise;
    }
    int end = Math.min(text.length(), i + needle.length() + 40);
    int nl = text.indexOf('\n', i);
    if (nl > 0 && nl < end) {
      end = nl;
    }
    return "..." + text.substring(Math.max(0, end - 200), end).strip();
  }

  /** The rig's bulk (staged binaries, caches) and the binary variants; logs and outputs stay. */
  private void deleteBulk() {
    rig.deleteBulk();
    RunSupport.deleteTrees(List.of(work.resolve("binaries"), work.resolve("tmpfs")), progress);
  }

  private static long delta(Map<String, Double> a, Map<String, Double> b, String name) {
    return (long) (AdminEndpoint.sum(b, name) - AdminEndpoint.sum(a, name));
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Files, mounts, signals

  private final List<Path> mounted = new ArrayList<>();

  private void unmountAll() {
    for (int i = mounted.size() - 1; i >= 0; i--) {
      Path m = mounted.get(i);
      String err = command("umount", m.toString());
      if (err != null) {
        progress.accept("umount " + m + " failed (" + err + "); lazy unmount");
        command("umount", "-l", m.toString());
      }
    }
    mounted.clear();
  }

  /** Overwrites 4 KiB in the middle of each regular file below {@code dir} that {@code which} accepts. */
  private static int corruptFiles(Path dir, java.util.function.Predicate<Path> which) throws IOException {
    if (!Files.isDirectory(dir)) {
      return 0;
    }
    List<Path> files;
    try (Stream<Path> s = Files.walk(dir)) {
      files = s.filter(Files::isRegularFile).filter(which).filter(f -> sizeOf(f) > 8192).toList();
    }
    byte[] junk = new byte[4096];
    new Random().nextBytes(junk);
    int n = 0;
    for (Path f : files) {
      try (RandomAccessFile raf = new RandomAccessFile(f.toFile(), "rw")) {
        raf.seek(raf.length() / 2);
        raf.write(junk);
        n++;
      } catch (IOException e) {
        // e.g. ETXTBSY: a running worker's binary; not corrupted
      }
    }
    return n;
  }

  private static long sizeOf(Path f) {
    try {
      return Files.size(f);
    } catch (IOException e) {
      return 0;
    }
  }

  private static void deleteFiles(Path dir) throws IOException {
    if (!Files.isDirectory(dir)) {
      return;
    }
    try (Stream<Path> s = Files.walk(dir)) {
      for (Path f : s.filter(Files::isRegularFile).toList()) {
        Files.deleteIfExists(f);
      }
    }
  }

  /** Writes zeros to {@code file} until the file system is full. */
  private static void fill(Path file) {
    byte[] mb = new byte[1 << 20];
    try (OutputStream out = Files.newOutputStream(file)) {
      while (true) {
        out.write(mb);
      }
    } catch (IOException full) {
      // ENOSPC: what we wanted
    }
  }

  /** Runs a command; null if it exited 0, else its output (the reason). */
  private static String command(String... cmd) {
    try {
      Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
      String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
      if (!p.waitFor(30, TimeUnit.SECONDS)) {
        p.destroyForcibly();
        return "timed out";
      }
      return p.exitValue() == 0 ? null : "exit " + p.exitValue() + ": " + out;
    } catch (IOException e) {
      return e.toString();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return "interrupted";
    }
  }

  private static void signal(String sig, long pid) {
    command("kill", "-" + sig, Long.toString(pid));
  }

  /** Waits until {@code pid} is gone; the time it took, or null if the bound passed. */
  private static Duration awaitGone(long pid, Duration bound) throws InterruptedException {
    long t = System.nanoTime();
    long deadline = t + bound.toNanos();
    while (ProcessTable.isAlive(pid)) {
      if (System.nanoTime() > deadline) {
        return null;
      }
      Thread.sleep(5);
    }
    return Duration.ofNanos(System.nanoTime() - t);
  }

  private static void sleepMillis(long ms) throws InterruptedException {
    Thread.sleep(ms);
  }

  private static long millisSince(long nanos) {
    return (System.nanoTime() - nanos) / 1_000_000;
  }

  private static String load() {
    try {
      String[] f = Files.readString(Path.of("/proc/loadavg")).split(" ");
      return f[0] + " " + f[1] + " " + f[2];
    } catch (IOException e) {
      return "?";
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Command line

  /**
   * {@code bash .ci/faults}: the full plan (or {@code --small}), then the table. Exit code 0 when the suite passed.
   * Arguments: {@code [--work-dir DIR] [--repo-root DIR] [--seed N] [--soak-leases N] [--repeats N] [--small]
   * [--no-scale-out]}.
   */
  public static void main(String[] args) throws Exception {
    Path workDir = Path.of(System.getProperty("java.io.tmpdir"), "recycler-faults");
    Path repoRoot = Path.of("").toAbsolutePath();
    long seed = System.currentTimeMillis();
    Integer soak = null;
    Integer repeats = null;
    boolean small = false;
    boolean scaleOut = true;
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--work-dir" -> workDir = Path.of(args[++i]);
        case "--repo-root" -> repoRoot = Path.of(args[++i]);
        case "--seed" -> seed = Long.parseLong(args[++i]);
        case "--soak-leases" -> soak = Integer.parseInt(args[++i]);
        case "--repeats" -> repeats = Integer.parseInt(args[++i]);
        case "--small" -> small = true;
        case "--no-scale-out" -> scaleOut = false;
        default -> {
          System.err.println("usage: FaultSuite [--work-dir DIR] [--repo-root DIR] [--seed N] [--soak-leases N]"
              + " [--repeats N] [--small] [--no-scale-out]");
          System.exit(2);
        }
      }
    }
    Plan base = small ? Plan.small(seed) : Plan.full(seed);
    Plan plan = new Plan(repeats != null ? repeats : base.repeats(), soak != null ? soak : base.soakLeases(), seed,
        scaleOut && base.scaleOut());
    long t0 = System.nanoTime();
    Result r = new FaultSuite(plan, repoRoot, workDir,
        line -> System.out.printf(Locale.ROOT, "[%6.1fs] %s%n", (System.nanoTime() - t0) / 1e9, line)).run();
    System.out.println();
    System.out.print(report(r));
    System.exit(r.passed() ? 0 : 1);
  }

  /** The table, the notes of each fault, and the verdict. */
  public static String report(Result r) {
    StringBuilder b = new StringBuilder();
    b.append(String.format(Locale.ROOT, "FAULT SUITE %s, %.1f min, load %s, seed %d%n%n", r.startedUtc(),
        r.total().toMillis() / 60000.0, r.load(), r.plan().seed()));
    b.append(r.table().markdown()).append('\n');
    b.append("NOTES\n");
    for (Row row : r.table().rows()) {
      for (String n : row.notesCopy()) {
        b.append("  [").append(row.key).append("] ").append(n).append('\n');
      }
    }
    if (!r.teardownProblems().isEmpty()) {
      b.append("\nTEARDOWN: still alive after stopping everything: ").append(r.teardownProblems()).append('\n');
    }
    b.append("\nlogs and faults.md / faults.json: ").append(r.workDirectory()).append('\n');
    b.append(r.passed() ? "RESULT: passed (no hang, no orphan, no leak, no lost log line, every outcome expected)\n"
        : "RESULT: FAILED\n");
    return b.toString();
  }
}
