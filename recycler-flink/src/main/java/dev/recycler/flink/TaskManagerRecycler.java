package dev.recycler.flink;

import dev.recycler.core.Recycler;
import dev.recycler.core.api.RecyclerConfig;
import java.net.BindException;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import javax.annotation.concurrent.GuardedBy;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.IllegalConfigurationException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The one recycler of this TaskManager process.
 *
 * <p><b>Lifecycle.</b> {@link #startOnce} starts it while Flink starts the TaskManager (before slots are offered).
 * It is stopped, exit instructions to the wrappers first and then the server (that order is core's {@code
 * closeAsync}), by whichever comes first of:
 * <ol>
 *   <li>the companion {@link RecyclerLifecycleReporter}'s {@code close()}: Flink closes metric reporters after the
 *       task executor, so running tasks (and the Beam runner's leases) are gone by then: the preferred order;
 *   <li>a JVM shutdown hook (SIGTERM, pod deletion, {@code System.exit}). When the companion reporter is configured,
 *       the hook first gives Flink's own shutdown hook up to {@code shutdown-timeout} to reach the reporter, so both
 *       paths end in the same order.
 * </ol>
 * Nothing listens once the process is gone either way.
 *
 * <p><b>Concurrency.</b> The class monitor {@link #LOCK} guards {@link #running}; the start runs on Flink's
 * TaskManager start thread, the close may come concurrently from the reporter and the hook: core's {@code closeAsync}
 * is idempotent and returns the same future.
 *
 * <p><b>Failure handling.</b> A failed start is logged at ERROR with what to fix, then either stops the TaskManager
 * ({@link RecyclerStartupError}, the default) or is thrown as an exception Flink logs as WARN (option {@code
 * fail-task-manager-on-error: false}). Static state is per plugin classloader, that is per TaskManager process.
 */
final class TaskManagerRecycler {
  private static final Logger LOG = LoggerFactory.getLogger(TaskManagerRecycler.class);
  private static final Object LOCK = new Object();

  @GuardedBy("LOCK")
  private static Running running;

  /** Set when Flink opened the companion reporter in this process (it also does so in the JobManager). */
  private static volatile boolean reporterPresent;

  private TaskManagerRecycler() {}

  private record Running(Recycler recycler, RecyclerResourceInfo info, long amount, Duration shutdownTimeout,
      AtomicBoolean closing, CompletableFuture<Void> stopped) {}

  /**
   * Starts the recycler with {@code amount} slots, or returns the information of the one already running.
   *
   * @throws RecyclerStartupError or {@link IllegalStateException}: see the class comment
   */
  static RecyclerResourceInfo startOnce(Configuration params, long amount) throws Exception {
    synchronized (LOCK) {
      if (running != null) {
        if (running.amount() != amount) {
          throw new IllegalStateException("a recycler with " + running.amount() + " slots already runs in this"
              + " TaskManager: configure dev.recycler.flink.RecyclerExternalResourceDriverFactory for one external"
              + " resource only");
        }
        return running.info();
      }
      boolean failFast = FlinkRecyclerConfig.failTaskManagerOnError(params);
      RecyclerConfig config;
      try {
        config = FlinkRecyclerConfig.toRecyclerConfig(params, amount);
      } catch (IllegalConfigurationException e) {
        throw startFailed(failFast, e.getMessage(),
            "correct that key in the Flink configuration (reference: docs/flink.md)", e);
      }

      Recycler recycler;
      Thread thread = Thread.currentThread();
      ClassLoader previous = thread.getContextClassLoader();
      // gRPC and Netty look providers up through the context classloader, which is Flink's here; and every thread
      // they create inherits it. Both must be the plugin's own loader, where our gRPC lives.
      thread.setContextClassLoader(TaskManagerRecycler.class.getClassLoader());
      try {
        recycler = Recycler.start(config);
      } catch (Exception | LinkageError e) {
        if (isBindFailure(e)) {
          throw startFailed(failFast, "cannot listen on " + config.bindHost() + ":" + config.port()
                  + (config.adminPort() > 0 ? " or admin port " + config.adminPort() : "") + ": " + e.getMessage(),
              "stop what holds the port, or set " + FlinkRecyclerConfig.key(RecyclerOptions.PORT) + " (and "
                  + FlinkRecyclerConfig.key(RecyclerOptions.ADMIN_PORT) + ") to a port that is free on every"
                  + " TaskManager host; check " + FlinkRecyclerConfig.key(RecyclerOptions.BIND_HOST), e);
        }
        throw startFailed(failFast, e.toString(),
            "check the external-resource.<name>.param.* keys and the plugin jar in plugins/<dir>/ (it must hold"
                + " recycler-core and gRPC); the cause follows", e);
      } finally {
        thread.setContextClassLoader(previous);
      }

      RecyclerResourceInfo info = describe(recycler, config);
      running = new Running(recycler, info, amount, config.shutdownTimeout(), new AtomicBoolean(),
          new CompletableFuture<>());
      Thread hook = new Thread(TaskManagerRecycler::onJvmShutdown, "recycler-shutdown-hook");
      hook.setContextClassLoader(TaskManagerRecycler.class.getClassLoader());
      Runtime.getRuntime().addShutdownHook(hook);
      LOG.info("recycler started endpoint={} slots={} admin={} cacheDir={}", recycler.endpoint(),
          config.slotIds(), info.getProperty(RecyclerResourceInfo.ADMIN_ENDPOINT).orElse("disabled"),
          config.cacheDirectory());
      return info;
    }
  }

  /** Marks that the companion reporter exists in this process. */
  static void reporterOpened() {
    reporterPresent = true;
  }

  /**
   * Stops the recycler if this process runs one (never in a JobManager) and waits for it, at most its shutdown
   * timeout plus a margin. Idempotent: later and concurrent calls wait for the same stop.
   */
  static void stop(String reason) {
    Running r;
    synchronized (LOCK) {
      r = running;
      if (r == null) {
        return;
      }
      if (!r.closing().getAndSet(true)) {
        LOG.info("recycler stopping reason={} endpoint={}", reason, r.recycler().endpoint());
        r.recycler().closeAsync().whenComplete((ok, err) -> {
          if (err != null) {
            LOG.warn("recycler stopped with an error endpoint={}", r.recycler().endpoint(), err);
            r.stopped().completeExceptionally(err);
          } else {
            LOG.info("recycler stopped endpoint={}", r.recycler().endpoint());
            r.stopped().complete(null);
          }
        });
      }
    }
    await(r.stopped(), r.shutdownTimeout().plusSeconds(10), "stop");
  }

  /** Tests only: stops the recycler and forgets it, so the next {@link #startOnce} starts a new one. */
  static void stopAndForgetForTesting() {
    stop("test");
    synchronized (LOCK) {
      running = null;
    }
  }

  private static void onJvmShutdown() {
    Running r;
    synchronized (LOCK) {
      r = running;
    }
    if (r == null) {
      return;
    }
    if (reporterPresent) {
      // Flink's TaskManagerRunner hook closes the task executor, then the reporters: let that order win.
      try {
        r.stopped().get(r.shutdownTimeout().toMillis(), TimeUnit.MILLISECONDS);
        return;
      } catch (TimeoutException e) {
        LOG.warn("Flink's shutdown did not close the recycler within {}; closing it from the shutdown hook",
            r.shutdownTimeout());
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      } catch (ExecutionException e) {
        return; // already stopped (with an error that was logged)
      }
    }
    stop("jvm-shutdown");
  }

  private static void await(CompletableFuture<Void> f, Duration timeout, String what) {
    try {
      f.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (ExecutionException e) {
      // logged where it completed
    } catch (TimeoutException e) {
      LOG.warn("recycler {} did not finish within {}", what, timeout);
    }
  }

  private static RecyclerResourceInfo describe(Recycler recycler, RecyclerConfig config) {
    Map<String, String> p = new LinkedHashMap<>();
    p.put(RecyclerResourceInfo.ENDPOINT, recycler.endpoint());
    p.put(RecyclerResourceInfo.HOST, config.advertiseHost());
    p.put(RecyclerResourceInfo.PORT, Integer.toString(recycler.port()));
    p.put(RecyclerResourceInfo.SLOTS, Integer.toString(config.slotIds().size()));
    p.put(RecyclerResourceInfo.SLOT_IDS, String.join(",", config.slotIds()));
    if (recycler.adminPort() >= 0) {
      p.put(RecyclerResourceInfo.ADMIN_ENDPOINT, config.advertiseHost() + ":" + recycler.adminPort());
    }
    return new RecyclerResourceInfo(p);
  }

  /** Logs the failure loudly, then throws {@link RecyclerStartupError} or returns the exception to throw. */
  private static IllegalStateException startFailed(boolean failFast, String problem, String fix, Throwable cause) {
    String banner = "\n========================================================================\n"
        + " RECYCLER NOT STARTED on this TaskManager: Beam jobs that use its port will fail here.\n"
        + " Problem: " + problem + "\n"
        + " Fix:     " + fix + "\n"
        + (failFast
            ? " The TaskManager now stops (external-resource.<name>.param.fail-task-manager-on-error: true).\n"
            : " The TaskManager goes on WITHOUT the recycler (fail-task-manager-on-error: false).\n")
        + "========================================================================";
    LOG.error(banner, cause);
    String message = "recycler could not start: " + problem + "; fix: " + fix;
    if (failFast) {
      throw new RecyclerStartupError(message, cause);
    }
    return new IllegalStateException(message, cause);
  }

  /** Port in use or not bindable: a BindException, or Netty's native "bind(..) failed" (an IOException). */
  private static boolean isBindFailure(Throwable t) {
    for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
      String m = String.valueOf(c.getMessage());
      if (c instanceof BindException || m.contains("Address already in use") || m.contains("Failed to bind")
          || m.contains("Cannot assign requested address")) {
        return true;
      }
    }
    return false;
  }
}
