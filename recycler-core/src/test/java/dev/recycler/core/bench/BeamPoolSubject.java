package dev.recycler.core.bench;

import dev.recycler.core.testing.RunnerEnvironment;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StopWorkerRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StopWorkerResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnExternalWorkerPoolGrpc;

/**
 * Beam's own Go worker pool: {@code boot --worker_pool} built from {@code github.com/apache/beam/sdks/v2/go/container}
 * v2.70.0. It listens on the hard-coded port 50000 (all interfaces), spawns one boot per StartWorker, never reaps it,
 * and StopWorker SIGKILLs only boot: the worker below it, which sleeps forever after a clean control close, survives.
 * Each boot also leaves its copy of the binary in {@code /tmp/bin*}/worker and the staged file in
 * {@code /tmp/staged}. {@link #leftovers(boolean)} counts all of that and, when asked, kills the leaked workers and
 * deletes the copies, so a long run does not exhaust the machine; the zombie boots can only be reaped by ending the
 * pool, which {@link #close()} does.
 */
final class BeamPoolSubject implements Subject {
  static final int PORT = 50000;
  private static final Pattern LEAKED_WORKER = Pattern.compile("^/tmp/bin[^/ ]*/worker --worker=true .*");

  private final Path bootBinary;
  private final Path dir;
  private final String stagedSuffix;
  private Process pool;
  private Set<String> tmpBefore = Set.of();
  private Set<String> stagedBefore = Set.of();
  private final Set<Long> counted = new HashSet<>();
  private final AtomicLong unreaped = new AtomicLong();

  /** @param stagedSuffix the basename of the staging paths the leases use (to find Beam's staged copies) */
  BeamPoolSubject(Path bootBinary, Path dir, String stagedSuffix) {
    this.bootBinary = bootBinary;
    this.dir = dir;
    this.stagedSuffix = stagedSuffix;
  }

  @Override
  public String name() {
    return "beam-pool";
  }

  @Override
  public void start() throws Exception {
    Files.createDirectories(dir);
    // The previous pool of this benchmark may still be releasing the port: wait a little before giving up.
    long freeBy = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    while (true) {
      try (ServerSocket probe = new ServerSocket()) {
        probe.setReuseAddress(true);
        probe.bind(new InetSocketAddress(PORT));
        break;
      } catch (IOException e) {
        if (System.nanoTime() > freeBy) {
          throw new IllegalStateException("port " + PORT + " is in use (" + e.getMessage() + "): Beam's Go worker "
              + "pool hard-codes it; stop whatever listens there (ss -ltnp 'sport = :" + PORT + "') and run again", e);
        }
        java.util.concurrent.locks.LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(200));
      }
    }
    tmpBefore = tmpBinDirs();
    stagedBefore = stagedFiles();
    pool = new ProcessBuilder(bootBinary.toString(), "--worker_pool").directory(dir.toFile())
        .redirectErrorStream(true).redirectOutput(dir.resolve("pool.log").toFile()).start();
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
    while (true) {
      if (!pool.isAlive()) {
        throw new IllegalStateException("beam-boot --worker_pool exited with " + pool.exitValue() + "; see "
            + dir.resolve("pool.log"));
      }
      try (Socket s = new Socket("127.0.0.1", PORT)) {
        break;
      } catch (IOException notYet) {
        if (System.nanoTime() > deadline) {
          throw new IllegalStateException("beam-boot --worker_pool did not listen on " + PORT + " within 30 s");
        }
        LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(20));
      }
    }
  }

  @Override
  public Map<Long, String> longLived() {
    return Map.of(pool.pid(), "beam-boot --worker_pool");
  }

  @Override
  public LeaseSample lease(Lease l) throws Exception {
    try (RunnerEnvironment env = new RunnerEnvironment(l.workerId(), l.binary(), l.stagingPath())) {
      ManagedChannel ch = NettyChannelBuilder.forTarget("127.0.0.1:" + PORT).usePlaintext().build();
      try {
        var stub = BeamFnExternalWorkerPoolGrpc.newBlockingStub(ch);
        double startMs = LeaseBenchmark.epochMillis();
        long t0 = System.nanoTime();
        StartWorkerResponse r;
        try {
          // Beam sets no deadline; a generous one keeps the benchmark from hanging.
          r = stub.withDeadlineAfter(120, TimeUnit.SECONDS).startWorker(env.startRequest());
        } catch (StatusRuntimeException e) {
          return LeaseSample.failed(l, startMs, 0, "StartWorker: " + e.getStatus());
        }
        if (!r.getError().isEmpty()) {
          return LeaseSample.failed(l, startMs, 0, "StartWorker: " + r.getError());
        }
        long ready;
        try {
          // A Beam runner would wait forever here; 15 s is 10x a normal boot of this binary on this machine.
          ready = env.connected().get(15, TimeUnit.SECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
          return LeaseSample.failed(l, startMs, env.artifactBytes(),
              "no control connection within 15 s (the runner would wait forever); processes of the lease: "
                  + describe(l.workerId()));
        }
        Answer first = Subject.firstAnswer(env, l.workerId(), t0);
        long closed = System.nanoTime();
        env.closeControl();
        StopWorkerResponse s = stub.withDeadlineAfter(30, TimeUnit.SECONDS)
            .stopWorker(StopWorkerRequest.newBuilder().setWorkerId(l.workerId()).build());
        long stopped = System.nanoTime();
        return new LeaseSample(l.run(), l.index(), l.workerId(), startMs, (ready - t0) / 1e6, first.ms(),
            (stopped - closed) / 1e6, env.artifactBytes(), !first.error().isEmpty() ? first.error()
                : s.getError().isEmpty() ? "" : "StopWorker: " + s.getError());
      } finally {
        ch.shutdownNow();
        ch.awaitTermination(5, TimeUnit.SECONDS);
      }
    }
  }

  /** Boot and worker processes of one worker id, with state and what they block in, for a failed lease. */
  private static String describe(String workerId) {
    List<String> out = new ArrayList<>();
    for (ProcFs.Proc p : ProcFs.matching(p -> p.cmdline().contains("--id=" + workerId + " "))) {
      String wchan;
      try {
        wchan = Files.readString(Path.of("/proc", Long.toString(p.pid()), "wchan")).trim();
      } catch (IOException e) {
        wchan = "?";
      }
      out.add(p.pid() + " " + p.state() + " wchan=" + wchan + " " + RecyclerSubject.abbreviate(p.cmdline()));
    }
    return out.isEmpty() ? "none alive" : String.join("; ", out);
  }

  @Override
  public long unreapedTicks() {
    return unreaped.get();
  }

  @Override
  public synchronized Leftovers leftovers(boolean cleanUp) throws IOException {
    List<ProcFs.Proc> all = ProcFs.all();
    long poolPid = pool.pid();
    List<ProcFs.Proc> workers = all.stream().filter(p -> !p.zombie() && LEAKED_WORKER.matcher(p.cmdline()).matches())
        .toList();
    List<ProcFs.Proc> zombies = all.stream().filter(p -> p.zombie() && p.ppid() == poolPid).toList();
    List<ProcFs.Proc> liveBoots = all.stream().filter(p -> !p.zombie() && p.ppid() == poolPid).toList();
    List<String> details = new ArrayList<>();
    workers.stream().limit(2).forEach(p -> details.add(p.pid() + " " + RecyclerSubject.abbreviate(p.cmdline())));
    zombies.stream().limit(1).forEach(p -> details.add(p.pid() + " Z (boot, child of the pool)"));
    Set<String> bins = tmpBinDirs();
    bins.removeAll(tmpBefore);
    Set<String> staged = stagedFiles();
    staged.removeAll(stagedBefore);
    long bytes = 0;
    for (String b : bins) {
      bytes += size(Path.of("/tmp", b, "worker"));
    }
    for (String s : staged) {
      bytes += size(Path.of("/tmp/staged", s));
    }
    if (!bins.isEmpty()) {
      details.add(bins.size() + " copies /tmp/bin*/worker");
    }
    if (!staged.isEmpty()) {
      details.add(staged.size() + " staged files in /tmp/staged");
    }
    Leftovers found = new Leftovers(workers.size() + liveBoots.size(), zombies.size(), bins.size() + staged.size(),
        bytes, details);
    if (cleanUp) {
      for (ProcFs.Proc z : zombies) {
        if (counted.add(z.pid())) {
          unreaped.addAndGet(z.totalTicks());
        }
      }
      for (ProcFs.Proc w : workers) {
        ProcFs.Proc now = ProcFs.read(w.pid());
        if (now != null && counted.add(w.pid())) {
          unreaped.addAndGet(now.ownTicks());
        }
        ProcFs.kill(w.pid());
      }
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
      while (workers.stream().anyMatch(w -> ProcFs.read(w.pid()) != null) && System.nanoTime() < deadline) {
        LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(10));
      }
      for (String b : bins) {
        Subject.deleteTree(Path.of("/tmp", b));
      }
      for (String s : staged) {
        Files.deleteIfExists(Path.of("/tmp/staged", s));
      }
    }
    return found;
  }

  private static long size(Path p) {
    try {
      return Files.size(p);
    } catch (IOException e) {
      return 0;
    }
  }

  /** /tmp/bin* directories that hold a {@code worker}: Beam boot's copies. */
  private static Set<String> tmpBinDirs() throws IOException {
    Set<String> out = new HashSet<>();
    try (Stream<Path> s = Files.list(Path.of("/tmp"))) {
      s.filter(p -> p.getFileName().toString().startsWith("bin") && Files.exists(p.resolve("worker")))
          .forEach(p -> out.add(p.getFileName().toString()));
    }
    return out;
  }

  private Set<String> stagedFiles() throws IOException {
    Set<String> out = new HashSet<>();
    Path staged = Path.of("/tmp/staged");
    if (Files.isDirectory(staged)) {
      try (Stream<Path> s = Files.list(staged)) {
        s.map(p -> p.getFileName().toString()).filter(n -> n.endsWith(stagedSuffix)).forEach(out::add);
      }
    }
    return out;
  }

  /** Kills the leaked workers, deletes the copies, then ends the pool (its zombie boots are reaped by init). */
  @Override
  public void close() throws Exception {
    if (pool == null) {
      return;
    }
    leftovers(true);
    pool.destroyForcibly();
    pool.waitFor(20, TimeUnit.SECONDS);
  }
}
