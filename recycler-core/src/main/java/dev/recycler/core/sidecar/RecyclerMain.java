package dev.recycler.core.sidecar;

import dev.recycler.core.Recycler;
import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.options.RecyclerOption;
import java.time.Clock;
import java.util.Arrays;
import java.util.concurrent.CountDownLatch;

/**
 * The standalone sidecar: {@code java -jar recycler-core.jar --port 50000 --slots 4}, or the same from {@code
 * RECYCLER_PORT=50000 RECYCLER_SLOTS=4} (every flag has its variable, a flag wins; see {@link RecyclerOption}). {@code
 * java -jar recycler-core.jar slots --admin HOST:PORT} prints a running recycler's slot table instead.
 *
 * <p>Steps: 1. resolve the settings (flags over environment) and the log format; 2. start the recycler; 3. print the
 * {@code recycler listening on ...} line on stdout (scripts wait for it); 4. wait for SIGTERM, which stops it
 * gracefully (exit instructions to every leased slot first). Exit codes: 0 clean stop, 2 bad arguments, 1 failed to
 * start.
 */
public final class RecyclerMain {
  private RecyclerMain() {}

  public static void main(String[] args) {
    if (args.length > 0 && args[0].equals("slots")) {
      System.exit(SlotsCommand.run(Arrays.copyOfRange(args, 1, args.length), System.out, System.err,
          Clock.systemUTC()));
      return;
    }
    // 1. Settings. Nothing may create an SLF4J logger before the log format is installed.
    Settings settings;
    RecyclerConfig config;
    try {
      settings = Settings.resolve(args, System.getenv());
      if (settings.help()) {
        System.out.println(RecyclerOption.usage());
        return;
      }
      config = settings.toConfig();
    } catch (IllegalArgumentException | IllegalStateException e) {
      System.err.println("recycler: " + e.getMessage());
      System.err.println("run with --help for the flags and their RECYCLER_* environment variables");
      System.exit(2);
      return;
    }
    SidecarLog.install(settings.logFormat(), settings.logLevel());
    org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(RecyclerMain.class);
    settings.warnings().forEach(log::warn);
    log.info("recycler settings set={}", settings.origins().isEmpty() ? "(all defaults)" : settings.origins());

    // 2. Start.
    Recycler recycler;
    try {
      recycler = Recycler.start(config);
    } catch (Exception e) {
      log.error("recycler not started: {}", e.getMessage());
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
    // 3. The line scripts and the benchmark wait for.
    System.out.println("recycler listening on " + recycler.endpoint()
        + (recycler.adminPort() >= 0 ? " admin http://" + config.bindHost() + ":" + recycler.adminPort() : ""));
    // 4. Wait for SIGTERM.
    try {
      stopped.await();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
