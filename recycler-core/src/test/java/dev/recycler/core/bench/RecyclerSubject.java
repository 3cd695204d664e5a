package dev.recycler.core.bench;

import dev.recycler.core.testing.RunnerEnvironment;
import dev.recycler.proto.v1.GetSlotTableRequest;
import dev.recycler.proto.v1.LeaseRecord;
import dev.recycler.proto.v1.RecyclerAdminGrpc;
import dev.recycler.proto.v1.SlotTable;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StopWorkerRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnExternalWorkerPoolGrpc;

/**
 * This project: the recycler sidecar ({@code java -jar recycler-core.jar}) as its own process, plus one
 * go-boot-wrapper process per slot. The runner reaches the recycler's fixed port with a fresh channel per environment,
 * as Beam's {@code ExternalEnvironmentFactory} does.
 */
final class RecyclerSubject implements Subject {
  /**
   * One heap space in {@code jcmd GC.heap_info}: {@code garbage-first heap   total 65536K, used 10240K} (G1), or one
   * line per generation ({@code def new generation   total ...}, {@code tenured generation   total ...}). Metaspace
   * lines have no "total".
   */
  private static final Pattern HEAP_USED = Pattern.compile("total \\d+K, used (\\d+)K");
  private static final Pattern LISTENING = Pattern.compile("recycler listening on (\\S+) admin http://(\\S+)");

  private final String name;
  private final Path recyclerJar;
  private final Path wrapperBinary;
  private final int slots;
  private final long wrapperCacheMaxMb;
  private final Path dir;
  private final List<String> jvmOptions;
  private final long cacheMb;
  private final List<Path> localArtifactDirs;
  private Process recycler;
  private final List<Process> wrappers = new ArrayList<>();
  private final List<String> extraArgs = new ArrayList<>();
  private String endpoint;
  private String adminUrl;
  private ManagedChannel adminChannel;
  private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

  /**
   * @param wrapperCacheMaxMb the wrappers' {@code --cache_max_mb}: 1 keeps only the newest binary (cold runs)
   * @param dir a fresh directory for the cache, the wrappers' work dir and the logs
   * @param localArtifactDirs the recycler's {@code --local-artifact-dirs} (staged files under them are hashed in
   *     place); empty: every artifact is streamed from the runner
   */
  RecyclerSubject(String name, Path recyclerJar, Path wrapperBinary, int slots, long wrapperCacheMaxMb, Path dir,
      List<String> jvmOptions, long cacheMb, List<Path> localArtifactDirs) {
    this.localArtifactDirs = List.copyOf(localArtifactDirs);
    this.name = name;
    this.recyclerJar = recyclerJar;
    this.wrapperBinary = wrapperBinary;
    this.slots = slots;
    this.wrapperCacheMaxMb = wrapperCacheMaxMb;
    this.dir = dir;
    this.jvmOptions = jvmOptions;
    this.cacheMb = cacheMb;
  }

  /** Adds recycler flags (before {@link #start}), e.g. {@code --standby-ttl 0}. */
  RecyclerSubject with(String... args) {
    extraArgs.addAll(List.of(args));
    return this;
  }

  @Override
  public String name() {
    return name;
  }

  Path recyclerLog() {
    return dir.resolve("recycler.log");
  }

  Path wrapperLog(int i) {
    return dir.resolve("wrapper-" + i + ".log");
  }

  @Override
  public void start() throws Exception {
    Files.createDirectories(dir);
    List<String> cmd = new ArrayList<>();
    cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    cmd.addAll(jvmOptions);
    // The sidecar's text log lines carry UTC timestamps (milliseconds), which the lease breakdown reads.
    cmd.addAll(List.of("-jar", recyclerJar.toString(), "--port", "0", "--admin-port", "0", "--slots",
        Integer.toString(slots), "--cache-dir", dir.resolve("recycler-cache").toString(), "--cache-max-bytes",
        Long.toString(cacheMb << 20), "--ready-timeout", "60s", "--lease-wait-timeout", "120s"));
    cmd.addAll(extraArgs);
    if (!localArtifactDirs.isEmpty()) {
      cmd.add("--local-artifact-dirs");
      cmd.add(String.join(",", localArtifactDirs.stream().map(Path::toString).toList()));
    }
    recycler = new ProcessBuilder(cmd).redirectError(recyclerLog().toFile()).start();
    BufferedReader out = new BufferedReader(new InputStreamReader(recycler.getInputStream(), StandardCharsets.UTF_8));
    String line;
    Matcher m = null;
    while ((line = out.readLine()) != null) {
      m = LISTENING.matcher(line);
      if (m.find()) {
        break;
      }
      m = null;
    }
    if (m == null) {
      throw new IllegalStateException("recycler did not start; see " + recyclerLog());
    }
    endpoint = m.group(1);
    adminUrl = "http://" + m.group(2);
    Thread drain = new Thread(() -> {
      try {
        out.transferTo(java.io.Writer.nullWriter());
      } catch (IOException ignored) {
        // recycler stopped
      }
    }, "recycler-stdout");
    drain.setDaemon(true);
    drain.start();
    adminChannel = NettyChannelBuilder.forTarget(endpoint).usePlaintext().build();
    for (int i = 0; i < slots; i++) {
      wrappers.add(new ProcessBuilder(wrapperBinary.toString(), "--slot", "slot-" + i, "--recycler", endpoint,
          "--work_dir", dir.resolve("work").toString(), "--grace_period", "2s", "--log_format", "json",
          "--cache_max_mb", Long.toString(wrapperCacheMaxMb))
          .redirectErrorStream(true).redirectOutput(wrapperLog(i).toFile()).start());
    }
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    while (!table(0).getSlotsList().stream().allMatch(s -> s.getState().equals("IDLE"))) {
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException("wrappers did not attach within 60 s: " + table(0));
      }
      LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(20));
    }
  }

  private SlotTable table(int maxLeases) {
    return RecyclerAdminGrpc.newBlockingStub(adminChannel).withDeadlineAfter(10, TimeUnit.SECONDS)
        .getSlotTable(GetSlotTableRequest.newBuilder().setMaxLeases(maxLeases).build());
  }

  /** The whole slot table (with every kept lease record). */
  SlotTable slotTable() {
    return table(0);
  }

  /**
   * The recycler JVM's live heap in KiB: what is still used right after a full collection ({@code jcmd GC.run}, then
   * {@code GC.heap_info}), the figure a leak of Java objects would make grow. -1 if jcmd is missing or says nothing.
   */
  long liveHeapKb() throws IOException, InterruptedException {
    Path jcmd = jcmd();
    String pid = Long.toString(recycler.pid());
    if (!Files.isExecutable(jcmd) || run(jcmd.toString(), pid, "GC.run") == null) {
      return -1;
    }
    String info = run(jcmd.toString(), pid, "GC.heap_info");
    if (info == null) {
      return -1;
    }
    long usedKb = -1;
    for (Matcher m = HEAP_USED.matcher(info); m.find(); ) {
      usedKb = Math.max(usedKb, 0) + Long.parseLong(m.group(1));
    }
    return usedKb;
  }

  /**
   * When the recycler JVM runs with {@code -XX:NativeMemoryTracking}: {@code jcmd VM.native_memory <what>} (e.g.
   * {@code baseline}, {@code summary.diff}), else null. Where the JVM's memory outside the heap goes.
   */
  String nativeMemory(String what) throws IOException, InterruptedException {
    if (jvmOptions.stream().noneMatch(o -> o.startsWith("-XX:NativeMemoryTracking="))) {
      return null;
    }
    return run(jcmd().toString(), Long.toString(recycler.pid()),
        "VM.native_memory", what);
  }

  /** The running JVM's own jcmd. */
  private static Path jcmd() {
    return Path.of(System.getProperty("java.home"), "bin", "jcmd");
  }

  private static String run(String... cmd) throws IOException, InterruptedException {
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    return p.waitFor() == 0 ? out : null;
  }

  /**
   * CPU ticks so far of the recycler's staging threads ({@code recycler-staging-watch} and {@code -hash}): the
   * staging-time hashes and copies of files under its local artifact dirs.
   */
  long stagingTicks() {
    return ProcFs.threadTicks(recycler.pid(), "recycler-stagin");
  }

  @Override
  public Map<Long, String> longLived() {
    Map<Long, String> m = new LinkedHashMap<>();
    m.put(recycler.pid(), "recycler (JVM)");
    for (int i = 0; i < wrappers.size(); i++) {
      m.put(wrappers.get(i).pid(), "go-boot-wrapper slot-" + i);
    }
    return m;
  }

  @Override
  public LeaseSample lease(Lease l) throws Exception {
    try (RunnerEnvironment env = new RunnerEnvironment(l.workerId(), l.binary(), l.stagingPath())) {
      ManagedChannel ch = NettyChannelBuilder.forTarget(endpoint).usePlaintext().build();
      try {
        var pool = BeamFnExternalWorkerPoolGrpc.newBlockingStub(ch);
        double startMs = LeaseBenchmark.epochMillis();
        long t0 = System.nanoTime();
        StartWorkerResponse r;
        try {
          r = pool.withDeadlineAfter(120, TimeUnit.SECONDS).startWorker(env.startRequest());
        } catch (StatusRuntimeException e) {
          return LeaseSample.failed(l, startMs, env.artifactBytes(), "StartWorker: " + e.getStatus());
        }
        if (!r.getError().isEmpty()) {
          return LeaseSample.failed(l, startMs, env.artifactBytes(), "StartWorker: " + r.getError());
        }
        long ready = env.connected().get(60, TimeUnit.SECONDS);
        Answer first = Subject.firstAnswer(env, l.workerId(), t0);
        Instant closedAt = Instant.now();
        env.closeControl();
        try {
          pool.withDeadlineAfter(30, TimeUnit.SECONDS)
              .stopWorker(StopWorkerRequest.newBuilder().setWorkerId(l.workerId()).build());
        } catch (StatusRuntimeException e) {
          // Beam ignores StopWorker errors too; the lease already ended with the control close.
        }
        LeaseRecord ended = awaitEnded(l.workerId());
        double closedMs = closedAt.getEpochSecond() * 1e3 + closedAt.getNano() / 1e6;
        double releaseMs = Math.max(0, ended.getEndUnixMillis() - closedMs);
        String err = !first.error().isEmpty() ? first.error()
            : ended.getEndReason().equals("RUNNER_CLOSED") || ended.getEndReason().equals("STOP_WORKER")
            ? "" : "lease ended with " + ended.getEndReason() + " " + ended.getOutcome();
        return new LeaseSample(l.run(), l.index(), l.workerId(), startMs, (ready - t0) / 1e6, first.ms(), releaseMs,
            env.artifactBytes(), err);
      } finally {
        ch.shutdownNow();
        ch.awaitTermination(5, TimeUnit.SECONDS);
      }
    }
  }

  /** Polls the slot table (1 ms) until the runner's lease has ended and its slot is IDLE again. */
  private LeaseRecord awaitEnded(String runnerWorkerId) {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    while (System.nanoTime() < deadline) {
      SlotTable t = table(4 * slots + 4);
      for (LeaseRecord r : t.getLeasesList()) {
        if (r.getRunnerWorkerId().equals(runnerWorkerId) && r.getEndUnixMillis() != 0) {
          // Released: the slot is IDLE at this generation, or a concurrent lease already took it (a later
          // generation): under load a 1 ms poll can miss the short IDLE moment between two leases of a slot.
          boolean idle = t.getSlotsList().stream().filter(s -> s.getSlotId().equals(r.getSlotId()))
              .allMatch(s -> s.getState().equals("IDLE") && s.getGeneration() == r.getGeneration()
                  || s.getGeneration() > r.getGeneration());
          if (idle) {
            return r;
          }
        }
      }
      LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(1));
    }
    throw new IllegalStateException("lease of " + runnerWorkerId + " did not end within 60 s: " + table(8));
  }

  /** Sum of a Prometheus sample from the admin endpoint's /metrics. */
  double metric(String sample) throws IOException, InterruptedException {
    String body = http.send(HttpRequest.newBuilder(URI.create(adminUrl + "/metrics")).timeout(Duration.ofSeconds(10))
        .build(), HttpResponse.BodyHandlers.ofString()).body();
    double sum = 0;
    for (String line : body.split("\n")) {
      if (line.startsWith(sample + " ") || line.startsWith(sample + "{")) {
        sum += Double.parseDouble(line.substring(line.lastIndexOf(' ') + 1));
      }
    }
    return sum;
  }

  @Override
  public long secondHopBytes() {
    try {
      return (long) metric("recycler_artifact_served_bytes_sum");
    } catch (IOException | InterruptedException e) {
      throw new IllegalStateException("cannot scrape the recycler's /metrics", e);
    }
  }

  @Override
  public Leftovers leftovers(boolean cleanUp) throws IOException {
    List<ProcFs.Proc> all = ProcFs.all();
    List<Long> roots = new ArrayList<>(longLived().keySet());
    String work = dir.resolve("work").toString();
    List<ProcFs.Proc> family = new ArrayList<>(ProcFs.descendants(roots, all));
    // Also anything that escaped the tree but still runs from a lease directory.
    all.stream().filter(p -> p.cmdline().contains(work) && !roots.contains(p.pid())
        && family.stream().noneMatch(f -> f.pid() == p.pid())).forEach(family::add);
    // A slot's standby worker (and its lease directory) is there by design, not left over: the slot table names it.
    List<String> standbyDirs = new ArrayList<>();
    for (dev.recycler.proto.v1.SlotStatus st : table(1).getSlotsList()) {
      if (st.getStandbyGeneration() > 0) {
        standbyDirs.add(st.getSlotId().replaceAll("[^A-Za-z0-9._-]", "_") + "-g" + st.getStandbyGeneration());
      }
    }
    family.removeIf(p -> standbyDirs.stream().anyMatch(d -> p.cmdline().contains("/" + d)));
    int procs = (int) family.stream().filter(p -> !p.zombie()).count();
    int zombies = (int) family.stream().filter(ProcFs.Proc::zombie).count();
    List<String> details = new ArrayList<>();
    family.stream().limit(4).forEach(p -> details.add(p.pid() + " " + p.state() + " " + abbreviate(p.cmdline())));
    int files = 0;
    Path leases = dir.resolve("work").resolve("leases");
    if (Files.isDirectory(leases)) {
      try (Stream<Path> s = Files.list(leases)) {
        files = (int) s.filter(l -> !standbyDirs.contains(l.getFileName().toString())).count();
      }
    }
    if (files > 0) {
      details.add(files + " lease directories under " + leases);
    }
    if (!standbyDirs.isEmpty()) {
      details.add(standbyDirs.size() + " standby worker(s), not counted: " + String.join(", ", standbyDirs));
    }
    return new Leftovers(procs, zombies, files, 0, details);
  }

  static String abbreviate(String s) {
    return s.length() > 100 ? s.substring(0, 100) + "..." : s;
  }

  @Override
  public void close() throws Exception {
    if (adminChannel != null) {
      adminChannel.shutdownNow();
    }
    // SIGTERM: wrappers stop their workers and exit 0; the recycler closes cleanly.
    for (Process w : wrappers) {
      w.destroy();
    }
    for (Process w : wrappers) {
      if (!w.waitFor(20, TimeUnit.SECONDS)) {
        w.destroyForcibly().waitFor();
      }
    }
    if (recycler != null) {
      recycler.destroy();
      if (!recycler.waitFor(30, TimeUnit.SECONDS)) {
        recycler.destroyForcibly().waitFor();
      }
    }
  }
}
