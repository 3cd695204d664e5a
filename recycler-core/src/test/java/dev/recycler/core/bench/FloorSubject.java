package dev.recycler.core.bench;

import dev.recycler.core.testing.RunnerEnvironment;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;

/**
 * The floor: exec of the worker binary with exactly the arguments and environment Beam's boot gives it ({@code
 * --worker=true --id --logging_endpoint --control_endpoint --semi_persist_dir}, {@code PIPELINE_OPTIONS_FILE}), no
 * pool and no boot; SIGKILL and reap after the runner closes control. The binary is already on local disk.
 */
final class FloorSubject implements Subject {
  private final Path dir;
  private final AtomicLong unreaped = new AtomicLong();

  FloorSubject(Path dir) {
    this.dir = dir;
  }

  @Override
  public String name() {
    return "floor";
  }

  @Override
  public void start() throws IOException {
    Files.createDirectories(dir);
  }

  @Override
  public Map<Long, String> longLived() {
    return Map.of();
  }

  @Override
  public LeaseSample lease(Lease l) throws Exception {
    try (RunnerEnvironment env = new RunnerEnvironment(l.workerId(), l.binary(), l.stagingPath())) {
      StartWorkerRequest req = env.startRequest();
      Path d = dir.resolve(l.workerId());
      Files.createDirectories(d);
      Path options = d.resolve("pipeline_options.json");
      // What Beam's boot writes: protojson of the provision info's pipeline options (the environment's are these).
      Files.writeString(options, "{\"options\":{\"job_name\":\"env-" + l.workerId() + "\"}}");
      ProcessBuilder pb = new ProcessBuilder(l.binary().toString(), "--worker=true", "--id=" + l.workerId(),
          "--logging_endpoint=" + req.getLoggingEndpoint().getUrl(),
          "--control_endpoint=" + req.getControlEndpoint().getUrl(), "--semi_persist_dir=" + d)
          .directory(d.toFile()).redirectErrorStream(true)
          .redirectOutput(ProcessBuilder.Redirect.appendTo(dir.resolve("workers.log").toFile()));
      Map<String, String> e = pb.environment();
      String path = e.get("PATH");
      String home = e.get("HOME");
      e.clear();
      e.put("PATH", path == null ? "/usr/bin:/bin" : path);
      e.put("HOME", home == null ? "/root" : home);
      e.put("PIPELINE_OPTIONS_FILE", options.toString());
      double startMs = LeaseBenchmark.epochMillis();
      long t0 = System.nanoTime();
      Process p = pb.start();
      try {
        long ready = env.connected().get(60, TimeUnit.SECONDS);
        Answer first = Subject.firstAnswer(env, l.workerId(), t0);
        long closed = System.nanoTime();
        env.closeControl();
        ProcFs.Proc stat = ProcFs.read(p.pid());
        p.destroyForcibly();
        p.waitFor();
        long reaped = System.nanoTime();
        if (stat != null) {
          unreaped.addAndGet(stat.ownTicks());
        }
        return new LeaseSample(l.run(), l.index(), l.workerId(), startMs, (ready - t0) / 1e6, first.ms(),
            (reaped - closed) / 1e6, env.artifactBytes(), first.error());
      } finally {
        if (p.isAlive()) {
          p.destroyForcibly().waitFor();
        }
        Subject.deleteTree(d);
      }
    }
  }

  @Override
  public long unreapedTicks() {
    return unreaped.get();
  }

  @Override
  public Leftovers leftovers(boolean cleanUp) throws IOException {
    String marker = "--semi_persist_dir=" + dir;
    List<ProcFs.Proc> left = ProcFs.matching(p -> p.cmdline().contains(marker));
    List<String> details = new ArrayList<>();
    left.stream().limit(3).forEach(p -> details.add(p.pid() + " " + p.state()));
    int files;
    try (Stream<Path> s = Files.list(dir)) {
      files = (int) s.filter(Files::isDirectory).count();
    }
    return new Leftovers((int) left.stream().filter(p -> !p.zombie()).count(),
        (int) left.stream().filter(ProcFs.Proc::zombie).count(), files, 0, details);
  }

  @Override
  public void close() {}
}
