package dev.recycler.e2e;

import dev.recycler.e2e.EndToEndResult.Check;
import dev.recycler.e2e.EndToEndResult.JobRun;
import dev.recycler.e2e.EndToEndResult.Scenario;
import dev.recycler.e2e.EndToEndResult.Transfers;
import dev.recycler.e2e.EndToEndResult.Verdict;
import dev.recycler.e2e.GoJob.Outcome;
import dev.recycler.e2e.GoJob.Spec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.function.Consumer;

/**
 * The end-to-end run with real parts, on 127.0.0.1 with free ports: a Flink 1.19.3 session cluster (JobManager and
 * TaskManager as separate JVMs) with the recycler plugin in the TaskManager and N harness slots, N {@code
 * go-boot-wrapper} processes, Beam's Flink job server, and Beam Go jobs of the sample pipelines binary submitted with
 * {@code --environment_type=EXTERNAL --environment_config=localhost:<recycler port>}.
 *
 * <p>Scenarios, in order: successive jobs; N jobs at once; the failing pipeline, then a job on the same slot; a job
 * cancelled through Flink's REST API while its worker holds, then a job; a worker SIGKILLed mid-job, then a job. After
 * every job the run waits (bounded) for all slots to be IDLE and then checks, without retrying, that no process of
 * any lease is left (by {@code --id=<lease worker id>} in {@code /proc}, and no child or zombie of any wrapper) and
 * that no per-lease directory is left. At the end it stops everything it started and checks the PIDs are gone.
 *
 * <p>{@link #run()} returns an {@link EndToEndResult}; a violated property is a {@link Check} with verdict FAIL, not an
 * exception. Exceptions mean the run could not be carried out (a part did not start, a bound was exceeded where no
 * verdict is possible); everything started is stopped then too. Every wait is bounded. Not thread-safe: one run per
 * instance.
 */
public final class EndToEndRun {
  static final String FAIL_MARKER = "beam-pipelines deliberate failure";
  /** What Beam's runner logs (TaskManager log, INFO) when a worker fetches a bundle's descriptor: a bundle started. */
  static final String BUNDLE_STARTED = "getProcessBundleDescriptor request with id";
  /** Keeps concurrent jobs' first leases open long enough to overlap whatever the submission jitter. */
  private static final Duration CONCURRENT_HOLD = Duration.ofSeconds(4);

  private final Settings s;
  private final Consumer<String> progress;
  private final List<JobRun> jobs = new ArrayList<>();
  private final List<Check> checks = new ArrayList<>();
  private final List<SlotHealth> slotHealth = new ArrayList<>();
  private final List<String> settleViolations = new ArrayList<>();
  private final Map<String, String> expected = new HashMap<>();
  private long originMillis;

  private SessionRig rig;
  private FlinkSessionCluster cluster;
  private WrapperProcesses wrappers;
  private AdminEndpoint admin;
  private Path work;
  private int jobCounter;

  private EndToEndRun(Settings s) {
    this.s = s;
    this.progress = s.progress;
  }

  public static Settings settings() {
    return new Settings();
  }

  /** Runs everything once and stops everything it started, also on failure. */
  public EndToEndResult run() throws IOException, InterruptedException {
    long t0 = System.nanoTime();
    originMillis = System.currentTimeMillis();
    work = Files.createDirectories(s.workDirectory.resolve("run-" + originMillis));
    Map<String, Long> startPids;
    AdminEndpoint.Table last;
    Transfers transfers;
    try {
      rig = SessionRig.start(new SessionRig.Options(work, s.wrapperBinary, s.jobServerJar, s.pluginJar, s.flinkLib,
          s.slots, Math.max(s.slots, s.concurrentJobs), Map.of(), progress));
      cluster = rig.cluster();
      wrappers = rig.wrappers();
      admin = rig.admin();
      startPids = rig.attachedPids();

      // 4. The scenarios.
      successive();
      concurrent();
      failing();
      cancelled();
      workerKilledEarly();
      workerKilled();

      checkSlotHealth(admin.table().leases());
      checkWrappers(startPids);
      checkWorkerPids();
      checkSettled();
      last = admin.table();
      transfers = transfers(last);
      checkTransfers(transfers);
      // Issue 10: each job's real staging -> first StartWorker gap, and whether its digest was ready (a figure).
      progress.accept(StagingGaps.format(StagingGaps.of(cluster.taskManagerLog(), jobs),
          (int) jobs.stream().filter(j -> j.lease().isPresent()).count()));
      progress.accept(StagingGaps.laterLeases(jobs));
    } catch (IOException | InterruptedException | RuntimeException | Error e) {
      progress.accept("run aborted: " + e);
      if (rig != null) {
        rig.close();
      }
      throw e;
    }

    progress.accept("stop everything: job server, wrappers, TaskManager, JobManager");
    Map<String, Long> processPids = rig.longLivedPids();
    rig.close();
    checkStopped(processPids);
    rig.deleteBulk();

    Duration total = Duration.ofNanos(System.nanoTime() - t0);
    List<LeaseRecord> leases = last.leases();
    return new EndToEndResult(s.slots, List.copyOf(jobs), leases, List.copyOf(checks), startPids, transfers,
        rig.clusterStart(), rig.jobServerStart(), total, originMillis, work.toString());
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Scenarios

  private void successive() throws IOException, InterruptedException {
    List<String> pipelines = List.of("wordcount", "groupside");
    for (int i = 0; i < s.successiveJobs; i++) {
      runToEnd(Scenario.SUCCESSIVE, pipelines.get(i % 2));
    }
    List<JobRun> runs = jobsOf(Scenario.SUCCESSIVE);
    check("successive jobs: " + runs.size() + " jobs one after another, each exactly the expected output",
        runs.size() >= 5 && runs.stream().allMatch(JobRun::succeeded), describe(runs));
  }

  private void concurrent() throws IOException, InterruptedException {
    int n = s.concurrentJobs;
    progress.accept("submit " + n + " jobs at the same time (each worker holds " + CONCURRENT_HOLD.toSeconds()
        + " s before its first element, so the jobs overlap)");
    List<GoJob> started = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      started.add(start(i % 2 == 0 ? "wordcount" : "groupside", "--hold=" + CONCURRENT_HOLD.toSeconds() + "s"));
    }
    for (GoJob job : started) {
      finish(Scenario.CONCURRENT, job, s.jobTimeout, true);
    }
    settle("concurrent jobs");
    List<JobRun> runs = jobsOf(Scenario.CONCURRENT);
    int overlap = EndToEndResult.maxConcurrentJobs(runs);
    Set<String> slotsUsed = new LinkedHashSet<>();
    runs.forEach(r -> r.leases().forEach(l -> slotsUsed.add(l.slot())));
    check(n + " concurrent new jobs on " + s.slots + " harness slots (the rest wait for a slot): each exactly the"
            + " expected output, leases of different jobs at the same time",
        runs.stream().allMatch(JobRun::succeeded) && overlap >= 2,
        describe(runs) + "; leases of " + overlap + " jobs at once; slots used " + slotsUsed);
  }

  private void failing() throws IOException, InterruptedException {
    JobRun failed = runToEnd(Scenario.FAILING, "fail");
    String marker = expected.get("fail").strip();
    boolean ownError = failed.exitCode() == 1 && failed.note().contains("own error");
    JobRun next = runToEnd(Scenario.AFTER_FAILING, "wordcount");
    slotHealth.add(new SlotHealth("failing pipeline fails with its own error (\"" + marker + "\") and leaves its slot"
        + " healthy", ownError && next.succeeded(), "failed job: " + failed.note() + "; next job: "
        + describe(List.of(next)), failed));
  }

  private void cancelled() throws IOException, InterruptedException {
    GoJob job = start("groupside", "--hold=" + s.hold.toSeconds() + "s");
    Optional<LeaseRecord> running = awaitActiveLease(job, s.jobTimeout);
    String note;
    boolean ok = false;
    if (running.isEmpty()) {
      note = "the job's lease never became ACTIVE within " + s.jobTimeout;
      finish(Scenario.CANCELLED, job, Duration.ofSeconds(1), false);
    } else {
      String flinkId = awaitFlinkJob(job.spec().name(), "RUNNING", Duration.ofSeconds(60));
      progress.accept("cancel " + job.spec().name() + " through Flink REST (job " + flinkId + ") while worker "
          + running.get().workerId() + " (pid " + running.get().workerPid() + ") holds");
      long cancelAt = System.nanoTime();
      cluster.cancelJob(flinkId);
      JobRun run = finish(Scenario.CANCELLED, job, Duration.ofSeconds(90), false);
      Duration cancelToExit = Duration.ofNanos(System.nanoTime() - cancelAt);
      Duration idle = settle("cancelled job");
      ok = run.flinkState().equals("CANCELED") && run.exitCode() != 0 && run.exitCode() != -1 && idle != null;
      note = "Flink state " + run.flinkState() + ", launcher exit " + run.exitCode() + " " + ms(cancelToExit)
          + " after the cancel, " + (idle == null ? "slots NOT idle" : "all slots IDLE " + ms(idle) + " later")
          + "; lease ended " + leaseOf(job.spec().name()).map(LeaseRecord::exitDescription).orElse("?");
    }
    JobRun cancelledRun = jobs.get(jobs.size() - 1);
    JobRun next = runToEnd(Scenario.AFTER_CANCELLED, "groupside");
    slotHealth.add(new SlotHealth("a job cancelled through Flink's REST API while running frees its slot",
        ok && next.succeeded(), note + "; next job: " + describe(List.of(next)), cancelledRun));
  }

  /**
   * Regression: a worker SIGKILLed right after its control connection, before it opened its data stream (the demo
   * once killed one 170 ms after connecting, while it fetched its descriptors), left Beam's runner waiting minutes in
   * {@code GrpcDataService.createOutboundAggregator} for a data client, and the job hung. Killed here as soon as the
   * lease is ACTIVE, without waiting for a bundle: the job must still end by itself.
   */
  private void workerKilledEarly() throws IOException, InterruptedException {
    Kill k = killWorker(Scenario.WORKER_KILLED_EARLY, false);
    check("a worker SIGKILLed as soon as it connected (before its data stream) makes the job fail, never hang",
        k.ok(), k.note());
  }

  /** Mid-job: the worker is inside a bundle (it asked for the bundle's descriptor and now holds in the pace DoFn). */
  private void workerKilled() throws IOException, InterruptedException {
    Kill k = killWorker(Scenario.WORKER_KILLED, true);
    JobRun killedRun = jobs.get(jobs.size() - 1);
    JobRun next = runToEnd(Scenario.AFTER_WORKER_KILLED, "wordcount");
    slotHealth.add(new SlotHealth("a worker killed with SIGKILL mid-job makes the job fail or restart, never hang; the"
        + " slot recovers", k.ok() && next.succeeded(), k.note() + "; next job: " + describe(List.of(next)),
        killedRun));
  }

  /** What a worker kill came to: whether the job ended by itself and the slots settled, and the figures in words. */
  private record Kill(boolean ok, String note) {}

  /**
   * Starts a holding wordcount job, SIGKILLs its worker once the lease is ACTIVE (after the runner logged a bundle's
   * start, if {@code inBundle}), and waits at most {@code killBound} for the job to end by itself; a job still running
   * then is a hang, which the run cancels through REST at once.
   */
  private Kill killWorker(Scenario scenario, boolean inBundle) throws IOException, InterruptedException {
    long logOffset = Files.size(cluster.taskManagerLog());
    GoJob job = start("wordcount", "--hold=" + s.hold.toSeconds() + "s");
    Optional<LeaseRecord> running = awaitActiveLease(job, s.jobTimeout);
    if (running.isEmpty()) {
      finish(scenario, job, Duration.ofSeconds(1), false);
      return new Kill(false, "the job's lease never became ACTIVE within " + s.jobTimeout);
    }
    LeaseRecord l = running.get();
    boolean bundleSeen = inBundle
        && SessionRig.awaitLogLine(cluster.taskManagerLog(), logOffset, BUNDLE_STARTED, Duration.ofSeconds(60));
    progress.accept("SIGKILL worker " + l.workerId() + " (pid " + l.workerPid() + ") of " + job.spec().name()
        + (!inBundle ? " as soon as it connected"
            : bundleSeen ? " mid-bundle" : " (no bundle seen in the TaskManager log within 60 s)"));
    long killAt = System.nanoTime();
    boolean signalled = ProcessHandle.of(l.workerPid()).map(ProcessHandle::destroyForcibly).orElse(false);
    Optional<Outcome> byItself = job.await(s.killBound);
    Duration killToExit = Duration.ofNanos(System.nanoTime() - killAt);
    // A hung job is cancelled through REST at once; one that ended is only collected.
    JobRun run = finish(scenario, job, Duration.ofSeconds(1), false);
    Duration idle = settle("killed worker");
    boolean ok = signalled && byItself.isPresent() && run.exitCode() != 0 && idle != null
        && !run.flinkState().equals("RUNNING");
    String note = (inBundle && !bundleSeen ? "no bundle start seen before the kill; " : "") + "signal sent "
        + signalled + "; job " + (byItself.isPresent() ? "ended by itself " + ms(killToExit) + " after the kill"
            : "did NOT end within " + s.killBound + " (cancelled by the run)")
        + ", Flink state " + run.flinkState() + ", launcher exit " + run.exitCode() + "; leases of the job: "
        + leasesOf(job.spec().name()).stream().map(x -> x.workerId() + " " + x.exitDescription()).toList();
    return new Kill(ok, note);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Jobs

  private GoJob start(String pipeline, String... flags) throws IOException, InterruptedException {
    jobCounter++;
    // Letters and digits only: Beam turns other characters of a job name into '0' and appends "-<user>-<time>-<hash>".
    String name = String.format("e2e%02d%s", jobCounter, pipeline);
    Spec spec = Spec.of(name, pipeline, flags);
    String key = pipeline;
    if (!expected.containsKey(key)) {
      expected.put(key, GoJob.expectedOutput(s.pipelinesBinary, pipeline, List.of()));
    }
    progress.accept("job " + name + ": submit" + (flags.length > 0 ? " " + String.join(" ", flags) : ""));
    return rig.startJob(s.pipelinesBinary, spec);
  }

  /** Starts a job, waits for it, settles, records it. */
  private JobRun runToEnd(Scenario scenario, String pipeline) throws IOException, InterruptedException {
    GoJob job = start(pipeline);
    JobRun run = finish(scenario, job, s.jobTimeout, true);
    settle(run.name());
    return run;
  }

  /**
   * Waits up to {@code timeout} for the launcher; if it still runs, cancels its Flink job through REST and kills it.
   * Records and returns the run.
   */
  private JobRun finish(Scenario scenario, GoJob job, Duration timeout, boolean report)
      throws IOException, InterruptedException {
    String name = job.spec().name();
    Optional<Outcome> done = job.await(timeout);
    String extra = "";
    if (done.isEmpty()) {
      extra = "; did not end within " + timeout + ": cancelled through Flink REST";
      String id = RunSupport.flinkJobId(cluster, name);
      if (id != null) {
        cluster.cancelJob(id);
      }
      done = job.await(Duration.ofSeconds(60));
      if (done.isEmpty()) {
        done = Optional.of(job.kill());
        extra += ", launcher killed";
      }
    }
    Outcome o = done.get();
    String flinkId = RunSupport.flinkJobId(cluster, name);
    String state = rig.finalFlinkState(flinkId);
    String want = expected.get(job.spec().pipeline());
    boolean matches = o.output().isPresent() && o.output().get().equals(want);
    Optional<LeaseRecord> lease = leaseOf(name);
    String note;
    if (scenario == Scenario.FAILING) {
      boolean own = o.launcherOutput().contains(FAIL_MARKER);
      note = own ? "failed with its own error: \"" + fromMarker(o.launcherOutput()) + "\""
          : "launcher output lacks \"" + FAIL_MARKER + "\"";
      matches = false;
    } else if (o.exitCode() == 0) {
      note = matches ? "output exactly as expected" : o.output().isPresent() ? "output DIFFERS from the expected"
          : "no output file";
    } else {
      note = "launcher exit " + o.exitCode() + ": " + RunSupport.cause(o.launcherOutput());
    }
    note += extra;
    List<LeaseRecord> all = leasesOf(name);
    JobRun run = new JobRun(scenario, name, job.spec().pipeline(), o.exitCode(), o.wallTime(), matches, flinkId,
        state, lease, all, note);
    jobs.add(run);
    if (report) {
      progress.accept(String.format("job %s: %s in %.1f s (Flink %s%s) %s", name,
          o.exitCode() == 0 ? "succeeded" : "exit " + o.exitCode(), o.wallTime().toMillis() / 1000.0, state,
          lease.map(l -> ", " + l.slot() + " " + l.workerId() + " ready " + l.readyLatencyMillis() + " ms").orElse(""),
          note));
    } else {
      progress.accept(String.format("job %s: exit %d after %.1f s (Flink %s)", name, o.exitCode(),
          o.wallTime().toMillis() / 1000.0, state));
    }
    return run;
  }

  /** Waits for the job's lease to be ACTIVE with a worker pid; empty if the launcher ends or the bound passes. */
  private Optional<LeaseRecord> awaitActiveLease(GoJob job, Duration bound) throws IOException, InterruptedException {
    return rig.awaitActiveLease(job.spec().name(), job::isRunning, bound);
  }

  private String awaitFlinkJob(String jobName, String state, Duration bound) throws IOException, InterruptedException {
    return rig.awaitFlinkJob(jobName, state, bound);
  }

  private Optional<LeaseRecord> leaseOf(String jobName) throws IOException, InterruptedException {
    return leasesOf(jobName).stream().findFirst();
  }

  private List<LeaseRecord> leasesOf(String jobName) throws IOException, InterruptedException {
    return rig.leasesOf(jobName);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // After each job: slots IDLE, nothing of any lease left

  /**
   * Waits (bounded) for every slot to be IDLE, then checks once, without retrying, that no process of any lease
   * survives and no lease directory is left. Returns the time to IDLE, or null if the bound passed.
   */
  private Duration settle(String after) throws IOException, InterruptedException {
    Duration took = rig.awaitIdle(s.settleBound);
    List<String> problems = new ArrayList<>();
    if (took == null) {
      problems.add("slots not IDLE within " + s.settleBound + ": " + admin.table().states());
    }
    problems.addAll(rig.leftovers().all());
    if (!problems.isEmpty()) {
      settleViolations.add("after " + after + ": " + String.join("; ", problems));
      progress.accept("  !! after " + after + ": " + String.join("; ", problems));
    }
    return took;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Checks at the end

  private void checkWrappers(Map<String, Long> startPids) throws IOException, InterruptedException {
    AdminEndpoint.Table t = admin.table();
    Map<String, Long> now = new LinkedHashMap<>();
    t.slots().forEach(x -> now.put(x.slot(), x.wrapperPid()));
    Map<String, Long> started = wrappers.pids();
    long leases = t.slots().stream().mapToLong(AdminEndpoint.Slot::leasesServed).sum();
    check("every wrapper kept its PID across all " + jobs.size() + " jobs (" + leases + " leases)",
        now.equals(startPids) && startPids.equals(started) && wrappers.exited().isEmpty(),
        "at attach " + startPids + ", at the end " + now + ", processes started " + started + ", exited "
            + wrappers.exited());
  }

  private void checkWorkerPids() throws IOException, InterruptedException {
    List<LeaseRecord> leases = admin.table().leases();
    List<Long> pids = leases.stream().map(LeaseRecord::workerPid).filter(p -> p > 0).toList();
    Set<Long> distinct = new LinkedHashSet<>(pids);
    Set<Long> wrapperPids = new LinkedHashSet<>(wrappers.pids().values());
    Set<String> workerIds = new LinkedHashSet<>();
    leases.forEach(l -> workerIds.add(l.workerId()));
    long started = leases.stream().filter(l -> l.readyLatencyMillis() >= 0).count();
    check("each lease ran a new inner worker process (distinct worker pids and worker ids)",
        pids.size() == distinct.size() && distinct.stream().noneMatch(wrapperPids::contains)
            && workerIds.size() == leases.size() && pids.size() >= started && !pids.isEmpty(),
        leases.size() + " leases, " + started + " became ready, " + distinct.size() + " distinct worker pids of "
            + pids.size() + ", " + workerIds.size() + " distinct worker ids");
  }

  private void checkSettled() {
    int n = jobs.size();
    check("after every job all slots returned to IDLE; no worker, boot or zombie process and no lease directory"
            + " survived a lease", settleViolations.isEmpty(),
        settleViolations.isEmpty() ? "checked after each of " + n + " jobs" : String.join(" | ", settleViolations));
  }

  private Transfers transfers(AdminEndpoint.Table t) throws IOException, InterruptedException {
    Map<String, Double> m = admin.metrics();
    long size = Files.size(s.pipelinesBinary);
    Set<String> slotsLeased = new LinkedHashSet<>();
    Set<String> jobsLeased = new LinkedHashSet<>();
    t.leases().stream().filter(l -> l.readyLatencyMillis() >= 0).forEach(l -> {
      slotsLeased.add(l.slot());
      jobsLeased.add(l.jobName());
    });
    return new Transfers(size, 1,
        (long) AdminEndpoint.sum(m, "recycler_artifact_upstream_bytes_count"),
        (long) AdminEndpoint.sum(m, "recycler_artifact_upstream_bytes_sum"),
        (long) AdminEndpoint.sum(m, "recycler_artifact_served_bytes_count"),
        (long) AdminEndpoint.sum(m, "recycler_artifact_served_bytes_sum"),
        (long) AdminEndpoint.sum(m, "recycler_artifact_local_read_bytes_total"),
        slotsLeased.size(), jobsLeased.size());
  }

  private void checkTransfers(Transfers x) {
    // Each slot gets the binary once: at its first lease, or before it by prefetch (an idle slot is sent a newly
    // staged binary), so a slot that held no lease may hold it too.
    check("the worker binary crossed from the recycler to each wrapper at most once per slot",
        x.servedTransfers() >= x.slotsLeased() && x.servedTransfers() <= s.slots
            && x.servedBytes() == x.binaryBytes() * x.servedTransfers(),
        x.servedTransfers() + " transfers, " + x.servedBytes() + " bytes; " + x.slotsLeased() + " of " + s.slots
            + " slots leased (binary " + x.binaryBytes() + " bytes)");
    String figures = x.upstreamFetches() + " fetches, " + x.upstreamBytes() + " bytes for " + x.distinctBinaries()
        + " distinct binary over " + x.jobsLeased() + " jobs with leases; " + x.localBytes()
        + " bytes read in place from the job server's staged files";
    // The identity rule (docs/architecture.md#artifacts): each job's staged file is hashed in place once (a second
    // environment of the job finds the memo) and copied into the cache once per distinct content; nothing streams.
    long predictedLocal = x.binaryBytes() * (x.jobsLeased() + x.distinctBinaries());
    if (x.upstreamFetches() == 0 && x.upstreamBytes() == 0 && x.localBytes() > 0
        && x.localBytes() <= predictedLocal) {
      check("the worker binary never crossed the runner's gRPC service: identified in place, copied once per content",
          Verdict.PASS, figures + " (at most " + predictedLocal + " predicted)");
    } else if (x.upstreamFetches() == x.distinctBinaries() && x.upstreamBytes() == x.binaryBytes()) {
      check("the worker binary crossed from the runner to the recycler once per distinct binary", Verdict.PASS,
          figures);
    } else if (x.upstreamFetches() <= x.jobsLeased() && x.upstreamBytes() == x.binaryBytes() * x.upstreamFetches()) {
      check("the worker binary crossed from the runner to the recycler once per distinct binary", Verdict.LIMITATION,
          figures + ": once per job, because Beam's job server stages every job under a fresh path without a sha256,"
              + " so the recycler cannot know the content before fetching it (docs/e2e.md)");
    } else {
      check("the worker binary crossed from the runner to the recycler once per distinct binary", Verdict.FAIL,
          figures);
    }
  }

  private void checkStopped(Map<String, Long> pids) {
    List<String> alive = new ArrayList<>();
    pids.forEach((what, pid) -> {
      if (pid > 0 && ProcessTable.isAlive(pid)) {
        alive.add(what + " pid " + pid);
      }
    });
    rig.launcherPids().forEach((name, pid) -> {
      if (ProcessTable.isAlive(pid)) {
        alive.add("launcher " + name + " pid " + pid);
      }
    });
    ProcessTable procs = ProcessTable.snapshot();
    for (String id : rig.knownWorkerIds()) {
      procs.withWorkerId(id, rig.wrappersRoot()).forEach(p -> alive.add("worker of lease " + id + ": " + p));
    }
    Map<String, Integer> codes = wrappers.exitCodes();
    boolean cleanExit = codes.values().stream().allMatch(c -> c == 0);
    check("every process the run started is stopped (" + pids.size() + " long-lived processes, "
            + jobs.size() + " launchers, their workers)",
        alive.isEmpty() && cleanExit,
        (alive.isEmpty() ? "none alive" : "alive: " + alive) + "; wrapper exit codes " + codes
            + "; pids " + pids);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Helpers

  private void check(String name, boolean ok, String detail) {
    check(name, ok ? Verdict.PASS : Verdict.FAIL, detail);
  }

  private void check(String name, Verdict v, String detail) {
    checks.add(new Check(name, v, detail));
    progress.accept("check " + v + ": " + name + " -- " + detail);
  }

  private List<JobRun> jobsOf(Scenario scenario) {
    return jobs.stream().filter(j -> j.scenario() == scenario).toList();
  }

  /**
   * An incident's check, completed at the end of the run: its slot is healthy when the next lease on it of a job that
   * must succeed (the job right after the incident may go to another slot, one without a standby worker; a later
   * incident's lease does not count) ran and ended normally.
   */
  private record SlotHealth(String name, boolean ok, String detail, JobRun incident) {}

  private void checkSlotHealth(List<LeaseRecord> leases) {
    for (SlotHealth h : slotHealth) {
      Optional<LeaseRecord> incident = h.incident().leases().stream()
          .max(java.util.Comparator.comparingLong(LeaseRecord::startMillis));
      Optional<LeaseRecord> next = incident.flatMap(l -> EndToEndResult.nextOnSlot(jobs, leases, l));
      String slotNote = incident.map(l -> " (incident on " + l.slot() + " g" + l.generation() + "; the slot's next"
          + " lease: " + next.map(n -> n.workerId() + " of " + n.jobName() + ", " + n.exitDescription())
              .orElse("none in the run") + ")").orElse(" (the incident had no lease)");
      check(h.name() + " (the slot's next lease runs and ends normally)",
          h.ok() && next.isPresent() && EndToEndResult.endedNormally(next.get()), h.detail() + slotNote);
    }
  }

  private static String describe(List<JobRun> runs) {
    StringBuilder b = new StringBuilder();
    for (JobRun r : runs) {
      b.append(b.isEmpty() ? "" : ", ").append(r.name()).append(r.succeeded() ? " ok" : " NOT ok (" + r.note() + ")");
    }
    return b.toString();
  }

  /** The DoFn's message as the launcher printed it: from the marker to the end of its line. */
  private static String fromMarker(String text) {
    int i = text.lastIndexOf(FAIL_MARKER);
    int end = text.indexOf('\n', i);
    return ProcessTable.abbreviate(text.substring(i, end < 0 ? text.length() : end).strip());
  }

  private static String ms(Duration d) {
    return d.toMillis() + " ms";
  }
  /** What to run and where. Setters validate at once; {@link #build()} checks the files exist. Not thread-safe. */
  public static final class Settings {
    private int slots = 3;
    private int successiveJobs = 5;
    private int concurrentJobs = -1;
    private Path workDirectory;
    private Path wrapperBinary;
    private Path pipelinesBinary;
    private Path jobServerJar;
    private Path pluginJar;
    private Path flinkLib;
    private Duration jobTimeout = Duration.ofMinutes(3);
    private Duration hold = Duration.ofMinutes(5);
    private Duration killBound = Duration.ofSeconds(60);
    private Duration settleBound = Duration.ofSeconds(60);
    private Consumer<String> progress = line -> { };

    private Settings() {}

    /**
     * The binaries and jar of a checkout at {@code repoRoot}, each overridable by a system property: {@code
     * recycler.e2e.wrapperBinary} (default {@code go-boot-wrapper/bin/go-boot-wrapper}), {@code
     * recycler.e2e.pipelinesBinary} ({@code go-boot-wrapper/examples/pipelines/bin/beam-pipelines}), {@code
     * recycler.e2e.jobServerJar} ({@code recycler-flink/e2e/jobserver/target/beam-flink-job-server.jar}).
     */
    public Settings checkout(Path repoRoot) {
      Path root = repoRoot.toAbsolutePath().normalize();
      wrapperBinary(RunSupport.property("recycler.e2e.wrapperBinary",
          root.resolve("go-boot-wrapper/bin/go-boot-wrapper")));
      pipelinesBinary(RunSupport.property("recycler.e2e.pipelinesBinary",
          root.resolve("go-boot-wrapper/examples/pipelines/bin/beam-pipelines")));
      jobServerJar(RunSupport.property("recycler.e2e.jobServerJar",
          root.resolve("recycler-flink/e2e/jobserver/target/beam-flink-job-server.jar")));
      return this;
    }

    /** Harness slots (= wrappers) on the TaskManager; default 3. */
    public Settings slots(int n) {
      if (n < 2 || n > 16) {
        throw new IllegalArgumentException("slots must be between 2 and 16 (2 are needed for concurrent jobs), got "
            + n);
      }
      this.slots = n;
      return this;
    }

    /** Jobs run one after another at the start; default 5 (at least 5). */
    public Settings successiveJobs(int n) {
      if (n < 5) {
        throw new IllegalArgumentException("successive jobs must be at least 5, got " + n);
      }
      this.successiveJobs = n;
      return this;
    }

    /** Jobs submitted at once; default slots + 2 (every slot serves a lease, two wait). At least 2. */
    public Settings concurrentJobs(int n) {
      if (n < 2) {
        throw new IllegalArgumentException("concurrent jobs must be at least 2, got " + n);
      }
      this.concurrentJobs = n;
      return this;
    }

    /** Root of the run's directories (a new {@code run-<millis>} below it per run). Required. */
    public Settings workDirectory(Path dir) {
      this.workDirectory = dir.toAbsolutePath();
      return this;
    }

    /** {@code go-boot-wrapper/bin/go-boot-wrapper}. Required. */
    public Settings wrapperBinary(Path p) {
      this.wrapperBinary = p.toAbsolutePath();
      return this;
    }

    /** {@code go-boot-wrapper/examples/pipelines/bin/beam-pipelines}. Required. */
    public Settings pipelinesBinary(Path p) {
      this.pipelinesBinary = p.toAbsolutePath();
      return this;
    }

    /** The shaded job server jar ({@code recycler-flink/e2e/jobserver/target/beam-flink-job-server.jar}). Required. */
    public Settings jobServerJar(Path p) {
      this.jobServerJar = p.toAbsolutePath();
      return this;
    }

    /** The plugin jar; default {@link BuildPaths#recyclerPluginJar()}. */
    public Settings pluginJar(Path p) {
      this.pluginJar = p.toAbsolutePath();
      return this;
    }

    /** The Flink JVMs' classpath directory; default {@link BuildPaths#flinkLibDirectory()}. */
    public Settings flinkLib(Path p) {
      this.flinkLib = p.toAbsolutePath();
      return this;
    }

    /** Longest a normal job may take before the run cancels it; default 3 min. */
    public Settings jobTimeout(Duration d) {
      this.jobTimeout = positive(d);
      return this;
    }

    /** Longest a job may take to end by itself after its worker is SIGKILLed; default 60 s (it takes about 1 s). */
    public Settings killBound(Duration d) {
      this.killBound = positive(d);
      return this;
    }

    /** Receives one line per step (the demo prints them); default none. */
    public Settings progress(Consumer<String> listener) {
      this.progress = Objects.requireNonNull(listener, "progress");
      return this;
    }

    /** Checks the files and returns the run. */
    public EndToEndRun build() {
      Objects.requireNonNull(workDirectory, "workDirectory is required");
      BuildPaths.requireFile(Objects.requireNonNull(wrapperBinary, "wrapperBinary is required"),
          "go-boot-wrapper binary", "cd go-boot-wrapper && go build -o bin/go-boot-wrapper ./cmd/go-boot-wrapper");
      BuildPaths.requireFile(Objects.requireNonNull(pipelinesBinary, "pipelinesBinary is required"),
          "beam-pipelines binary", "cd go-boot-wrapper/examples/pipelines && go build -trimpath -ldflags='-s -w'"
              + " -o bin/beam-pipelines ./cmd/beam-pipelines");
      BuildPaths.requireFile(Objects.requireNonNull(jobServerJar, "jobServerJar is required"), "Beam job server jar",
          "cd recycler-flink/e2e/jobserver && mvn -B -q package");
      if (pluginJar == null) {
        pluginJar = BuildPaths.recyclerPluginJar();
      }
      BuildPaths.requireFile(pluginJar, "recycler plugin jar", "mvn -B -pl recycler-flink -am package -DskipTests");
      if (flinkLib == null) {
        flinkLib = BuildPaths.flinkLibDirectory();
      }
      if (concurrentJobs < 0) {
        // More new jobs at once than harness slots: the last ones wait for a slot, as on a busy TaskManager (five
        // concurrent new jobs on three slots once exhausted a TaskManager's heap when every job's binary was
        // streamed through it).
        concurrentJobs = slots + 2;
      }
      return new EndToEndRun(this);
    }

    private static Duration positive(Duration d) {
      if (d == null || d.isNegative() || d.isZero()) {
        throw new IllegalArgumentException("duration must be positive, got " + d);
      }
      return d;
    }
  }
}
