package dev.recycler.core.sidecar;

import dev.recycler.core.Recycler;
import dev.recycler.core.RecyclerConfig;
import java.nio.file.Path;
import java.time.Duration;
import java.time.format.DateTimeParseException;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

/**
 * The standalone sidecar: {@code java -jar recycler-core.jar --port 50000 --slots 4}. SIGTERM stops it gracefully
 * (exit instructions to every leased slot first). Exit codes: 0 clean stop, 2 bad arguments, 1 failed to start.
 */
public final class RecyclerMain {
  private static final Map<String, String> FLAGS = new LinkedHashMap<>();

  static {
    FLAGS.put("--port", "fixed gRPC port for the runner, wrappers and workers (default 50000; 0 = any free port)");
    FLAGS.put("--slots", "number of slots, named <prefix>0..<prefix>N-1 (default 1)");
    FLAGS.put("--slot-prefix", "prefix of generated slot ids (default slot-)");
    FLAGS.put("--slot-ids", "explicit comma-separated slot ids (instead of --slots)");
    FLAGS.put("--bind", "address to bind (default 127.0.0.1; the harness shares the TaskManager's network namespace)");
    FLAGS.put("--advertise-host", "host wrappers and workers dial (default: the bind address, 127.0.0.1 for 0.0.0.0)");
    FLAGS.put("--cache-dir", "directory for large cached artifacts (default: <java.io.tmpdir>/recycler-cache-<port>)");
    FLAGS.put("--cache-max-bytes", "artifact cache bound in bytes (default 2147483648)");
    FLAGS.put("--memory-blob-max-bytes",
        "artifacts up to this size (and 1/32 of the heap) stay in memory, in total at most 8 times this and a quarter"
            + " of the heap (default 8388608)");
    FLAGS.put("--local-artifact-dirs", "comma-separated absolute directories whose staged files (the job server's"
        + " --artifacts-dir, mounted here too) are read in place instead of streamed from the runner (default: none)");
    FLAGS.put("--worker-stall-timeout", "how long a worker may leave the runner's instructions unread before its"
        + " lease ends as lost and the runner's bundle fails (default 60s)");
    FLAGS.put("--lease-wait-timeout", "longest a StartWorker waits for a free slot (default 60s)");
    FLAGS.put("--ready-timeout", "longest from lease to the worker's control connection (default 120s)");
    FLAGS.put("--drain-timeout", "after an exit instruction, when to re-send it (default 60s)");
    FLAGS.put("--failure-backoff", "base back-off of a slot after repeated failures (default 1s)");
    FLAGS.put("--failure-backoff-max", "cap of that back-off (default 60s)");
    FLAGS.put("--upstream-timeout", "deadline of unary calls to the runner (default 30s)");
    FLAGS.put("--artifact-fetch-timeout", "deadline of one artifact download from the runner (default 10m)");
    FLAGS.put("--shutdown-timeout", "on SIGTERM, how long to wait for wrappers to stop their workers (default 30s)");
    FLAGS.put("--admin-port", "HTTP port for /slots, /metrics, /healthz (default -1 = off; 0 = any free port)");
    FLAGS.put("--attach-secret-file", "file holding the secret wrappers must present to attach, e.g. a mounted"
        + " Kubernetes Secret (default: none, any local process may attach; see docs/security.md)");
    FLAGS.put("--max-inbound-message-bytes", "largest gRPC message the fixed port accepts (default "
        + RecyclerConfig.DEFAULT_MAX_INBOUND_MESSAGE_BYTES + " = 64 MiB)");
    FLAGS.put("--max-waiting-starts", "most StartWorker calls waiting for a free slot at once; more fail with"
        + " RESOURCE_EXHAUSTED (default 256)");
    FLAGS.put("--help", "print this help");
  }

  private RecyclerMain() {}

  public static void main(String[] args) {
    RecyclerConfig config;
    try {
      Map<String, String> opts = parse(args);
      if (opts.containsKey("--help")) {
        System.out.println(usage());
        return;
      }
      config = toConfig(opts);
    } catch (IllegalArgumentException | IllegalStateException e) {
      System.err.println("recycler: " + e.getMessage());
      System.err.println("run with --help for the flags");
      System.exit(2);
      return;
    }
    Recycler recycler;
    try {
      recycler = Recycler.start(config);
    } catch (Exception e) {
      System.err.println("recycler: " + e.getMessage());
      System.exit(1);
      return;
    }
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        recycler.close();
      } finally {
        stopped.countDown();
      }
    }, "recycler-shutdown"));
    System.out.println("recycler listening on " + recycler.endpoint()
        + (recycler.adminPort() >= 0 ? " admin http://" + config.bindHost() + ":" + recycler.adminPort() : ""));
    try {
      stopped.await();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  static String usage() {
    StringBuilder b = new StringBuilder("usage: java -jar recycler-core.jar [flags]\n\n");
    FLAGS.forEach((k, v) -> b.append(String.format(Locale.ROOT, "  %-28s %s%n", k, v)));
    b.append("\nDurations: 500ms, 30s, 5m, 1h or ISO-8601 (PT30S).");
    return b.toString();
  }

  static Map<String, String> parse(String[] args) {
    Map<String, String> opts = new LinkedHashMap<>();
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      String key = a;
      String value = null;
      int eq = a.indexOf('=');
      if (eq > 0) {
        key = a.substring(0, eq);
        value = a.substring(eq + 1);
      }
      if (!FLAGS.containsKey(key)) {
        throw new IllegalArgumentException("unknown flag " + key);
      }
      if (key.equals("--help")) {
        opts.put(key, "");
        continue;
      }
      if (value == null) {
        if (i + 1 >= args.length) {
          throw new IllegalArgumentException(key + " needs a value");
        }
        value = args[++i];
      }
      opts.put(key, value);
    }
    return opts;
  }

  static RecyclerConfig toConfig(Map<String, String> o) {
    RecyclerConfig.Builder b = RecyclerConfig.builder();
    int port = intFlag(o, "--port", 50000);
    b.port(port);
    if (o.containsKey("--slot-ids")) {
      if (o.containsKey("--slots")) {
        throw new IllegalArgumentException("use either --slots or --slot-ids, not both");
      }
      b.slotIds(Arrays.stream(o.get("--slot-ids").split(",")).map(String::trim).toList());
    } else {
      b.slots(intFlag(o, "--slots", 1), o.getOrDefault("--slot-prefix", "slot-"));
    }
    if (o.containsKey("--bind")) {
      b.bindHost(o.get("--bind"));
    }
    if (o.containsKey("--advertise-host")) {
      b.advertiseHost(o.get("--advertise-host"));
    }
    b.cacheDirectory(Path.of(o.getOrDefault("--cache-dir",
        Path.of(System.getProperty("java.io.tmpdir"), "recycler-cache-" + port).toString())));
    if (o.containsKey("--cache-max-bytes")) {
      b.cacheMaxBytes(longFlag(o, "--cache-max-bytes"));
    }
    if (o.containsKey("--memory-blob-max-bytes")) {
      b.memoryBlobMaxBytes(longFlag(o, "--memory-blob-max-bytes"));
    }
    if (o.containsKey("--local-artifact-dirs")) {
      b.localArtifactDirectories(Arrays.stream(o.get("--local-artifact-dirs").split(",")).map(String::trim)
          .filter(d -> !d.isEmpty()).map(Path::of).toList());
    }
    durationFlag(o, "--lease-wait-timeout", b::leaseWaitTimeout);
    durationFlag(o, "--worker-stall-timeout", b::workerStallTimeout);
    durationFlag(o, "--ready-timeout", b::readyTimeout);
    durationFlag(o, "--drain-timeout", b::drainTimeout);
    durationFlag(o, "--upstream-timeout", b::upstreamCallTimeout);
    durationFlag(o, "--artifact-fetch-timeout", b::artifactFetchTimeout);
    durationFlag(o, "--shutdown-timeout", b::shutdownTimeout);
    if (o.containsKey("--failure-backoff") || o.containsKey("--failure-backoff-max")) {
      b.failureBackoff(parseDuration("--failure-backoff", o.getOrDefault("--failure-backoff", "1s")),
          parseDuration("--failure-backoff-max", o.getOrDefault("--failure-backoff-max", "60s")));
    }
    b.adminPort(intFlag(o, "--admin-port", -1));
    if (o.containsKey("--attach-secret-file")) {
      b.attachSecretFile(Path.of(o.get("--attach-secret-file")));
    }
    if (o.containsKey("--max-inbound-message-bytes")) {
      b.maxInboundMessageBytes(longFlag(o, "--max-inbound-message-bytes"));
    }
    if (o.containsKey("--max-waiting-starts")) {
      b.maxWaitingStarts(intFlag(o, "--max-waiting-starts", 0));
    }
    return b.build();
  }

  private static int intFlag(Map<String, String> o, String key, int dflt) {
    String v = o.get(key);
    if (v == null) {
      return dflt;
    }
    try {
      return Integer.parseInt(v);
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(key + " must be a whole number, got '" + v + "'");
    }
  }

  private static long longFlag(Map<String, String> o, String key) {
    try {
      return Long.parseLong(o.get(key));
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(key + " must be a whole number of bytes, got '" + o.get(key) + "'");
    }
  }

  private static void durationFlag(Map<String, String> o, String key, java.util.function.Consumer<Duration> set) {
    if (o.containsKey(key)) {
      set.accept(parseDuration(key, o.get(key)));
    }
  }

  /** Parses {@code 500ms}, {@code 30s}, {@code 5m}, {@code 1h} or ISO-8601. */
  static Duration parseDuration(String key, String v) {
    String s = v.trim().toLowerCase(Locale.ROOT);
    try {
      for (String[] unit : List.of(new String[] {"ms", "MILLIS"}, new String[] {"s", "SECONDS"},
          new String[] {"m", "MINUTES"}, new String[] {"h", "HOURS"})) {
        String number = s.endsWith(unit[0]) ? s.substring(0, s.length() - unit[0].length()) : "";
        if (!number.isEmpty() && number.chars().allMatch(Character::isDigit)) {
          long n = Long.parseLong(number);
          return Duration.of(n, java.time.temporal.ChronoUnit.valueOf(unit[1]));
        }
      }
      return Duration.parse(v.trim().toUpperCase(Locale.ROOT));
    } catch (NumberFormatException | DateTimeParseException e) {
      throw new IllegalArgumentException(key + " must be a duration such as 500ms, 30s, 5m or PT30S, got '" + v + "'");
    }
  }
}
