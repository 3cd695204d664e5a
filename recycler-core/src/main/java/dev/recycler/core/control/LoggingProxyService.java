package dev.recycler.core.control;

import static dev.recycler.core.wire.WorkerIds.withWorkerId;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.metrics.MetricNames;
import dev.recycler.core.slot.ExitGate;
import dev.recycler.core.slot.Lease;
import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.wire.CallerContext;
import dev.recycler.core.wire.Detached;
import dev.recycler.core.wire.RunnerChannels;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.LongSupplier;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.LogControl;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.LogEntry;
import org.apache.beam.model.fnexecution.v1.BeamFnLoggingGrpc;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code BeamFnLogging} for inner workers and their wrappers, forwarded to the runner's logging endpoint of the lease,
 * so that a worker's log lines are not lost at the end of a job.
 *
 * <p>Why: Beam's runner closes an environment by closing its <b>logging server first</b> and the environment last
 * ({@code DefaultJobBundleFactory.WrappedSdkHarnessClient.close}), and the Go SDK queues log entries (2,000) and sends
 * them from one goroutine, which keeps running after the worker's control stream closed. Entries still queued when the
 * job's last bundle completes therefore reach no one in Beam's own environments. Here, entries the runner can no longer
 * take are written to the recycler's own log (logger {@value #WORKER_LOGGER}: the TaskManager log with the plugin, the
 * sidecar's log otherwise), and a lease's exit instruction waits ({@link #beforeExit}) until its log streams have been
 * quiet for {@link #QUIET}, at most {@link #DRAIN_BOUND}, so that the worker is not stopped with entries queued.
 *
 * <p>Flow control: the next entry list is requested from the worker only when the runner's stream is ready for it
 * (or at once while writing locally). Concurrency: each stream synchronises on itself; the activity map is
 * concurrent; the exit gate polls on the recycler's timer and never blocks a gRPC thread.
 */
final class LoggingProxyService extends BeamFnLoggingGrpc.BeamFnLoggingImplBase implements ExitGate {
  /** The logger that receives worker entries the runner could not take. */
  static final String WORKER_LOGGER = "dev.recycler.worker";
  /** A log stream without an entry for this long has drained the worker's queue (the Go SDK sends back to back). */
  static final Duration QUIET = Duration.ofMillis(100);
  /** The longest an exit instruction waits for a busy log stream. */
  static final Duration DRAIN_BOUND = Duration.ofSeconds(2);
  private static final Duration POLL = Duration.ofMillis(20);
  private static final Logger LOG = LoggerFactory.getLogger(LoggingProxyService.class);
  private static final Logger WORKER_LOG = LoggerFactory.getLogger(WORKER_LOGGER);

  private final SlotPool pool;
  private final RunnerChannels channels;
  private final ScheduledExecutorService timer;
  private final LongSupplier nanoTime;
  private final Map<Lease, Activity> activity = new ConcurrentHashMap<>();
  private final Counter forwarded;
  private final Counter keptLocally;

  LoggingProxyService(SlotPool pool, RunnerChannels channels, ScheduledExecutorService timer, MeterRegistry registry,
      LongSupplier nanoTime) {
    this.pool = pool;
    this.channels = channels;
    this.timer = timer;
    this.nanoTime = nanoTime;
    this.forwarded = Counter.builder(MetricNames.WORKER_LOG_ENTRIES).tag(MetricNames.ROUTE, "runner")
        .description("Worker log entries, by where they went: the runner, or the recycler's own log because the"
            + " runner's logging service had closed").register(registry);
    this.keptLocally = Counter.builder(MetricNames.WORKER_LOG_ENTRIES).tag(MetricNames.ROUTE, "local")
        .description("Worker log entries, by where they went: the runner, or the recycler's own log because the"
            + " runner's logging service had closed").register(registry);
  }

  @Override
  public StreamObserver<LogEntry.List> logging(StreamObserver<LogControl> toWorker) {
    ServerCallStreamObserver<LogControl> worker = (ServerCallStreamObserver<LogControl>) toWorker;
    try {
      // A standby worker's stream waits until a lease adopts it; nothing is requested from it meanwhile.
      return HeldStream.open(pool, CallerContext.workerId(), worker, lease -> open(lease, worker));
    } catch (RecyclerException e) {
      toWorker.onError(e.toStatusException());
      return new Ignoring<>();
    }
  }

  private HeldStream.Opened<LogEntry.List> open(Lease lease, ServerCallStreamObserver<LogControl> toWorker) {
    Activity a = activity.computeIfAbsent(lease, l -> new Activity());
    a.streams.incrementAndGet();
    a.touch(nanoTime.getAsLong());
    Stream stream = new Stream(lease, a, toWorker);
    String runnerUrl = lease.request().getLoggingEndpoint().getUrl();
    if (runnerUrl.isEmpty()) {
      stream.runnerGone(Status.OK); // nothing to forward to: everything goes to the local log
    } else {
      BeamFnLoggingGrpc.BeamFnLoggingStub runner = withWorkerId(BeamFnLoggingGrpc.newStub(
          channels.channel(lease, runnerUrl)), lease.runnerWorkerId());
      Detached.run(() -> runner.logging(stream.fromRunner));
    }
    stream.toWorker.request(1);
    return new HeldStream.Opened<>(stream.fromWorker, () -> stream.workerEnded(false), () -> {});
  }

  /**
   * Completes once every log stream of {@code lease} has been quiet for {@link #QUIET} (or closed), at most {@link
   * #DRAIN_BOUND} from now; at once for a lease that never opened one.
   */
  @Override
  public CompletableFuture<Void> beforeExit(Lease lease) {
    Activity a = activity.get(lease);
    CompletableFuture<Void> done = new CompletableFuture<>();
    if (a == null) {
      done.complete(null);
      return done;
    }
    long deadline = nanoTime.getAsLong() + DRAIN_BOUND.toNanos();
    poll(lease, a, deadline, done);
    return done;
  }

  private void poll(Lease lease, Activity a, long deadline, CompletableFuture<Void> done) {
    long now = nanoTime.getAsLong();
    if (a.quietSince(now) >= QUIET.toNanos() || a.streams.get() == 0) {
      forget(lease, a);
      done.complete(null);
    } else if (now >= deadline) {
      LOG.warn("worker log stream still busy after {} ms, exit instruction goes out now slot={} generation={}",
          DRAIN_BOUND.toMillis(), lease.slotId(), lease.generation());
      forget(lease, a);
      done.complete(null);
    } else {
      try {
        timer.schedule(() -> poll(lease, a, deadline, done), POLL.toMillis(), TimeUnit.MILLISECONDS);
      } catch (java.util.concurrent.RejectedExecutionException e) {
        done.complete(null); // the recycler is stopping
      }
    }
  }

  private void forget(Lease lease, Activity a) {
    if (!lease.isLive() || a.streams.get() == 0) {
      activity.remove(lease, a);
    }
  }

  /** When a lease's streams were last used; how many are open. */
  private static final class Activity {
    final AtomicInteger streams = new AtomicInteger();
    volatile long lastNanos;

    void touch(long now) {
      lastNanos = now;
    }

    long quietSince(long now) {
      return now - lastNanos;
    }
  }

  /** One worker (or wrapper) log stream and its runner-side twin. */
  private final class Stream {
    private final Lease lease;
    private final Activity activity;
    final ServerCallStreamObserver<LogControl> toWorker;
    private ClientCallStreamObserver<LogEntry.List> toRunner;
    private boolean runnerOpen = true;
    private boolean workerOpen = true;
    /** An entry list was taken while the runner could not take more: request the next one on its onReady. */
    private boolean workerRequestOwed;

    Stream(Lease lease, Activity activity, ServerCallStreamObserver<LogControl> toWorker) {
      this.lease = lease;
      this.activity = activity;
      this.toWorker = toWorker;
    }

    final ClientResponseObserver<LogEntry.List, LogControl> fromRunner = new ClientResponseObserver<>() {
      @Override
      public void beforeStart(ClientCallStreamObserver<LogEntry.List> requestStream) {
        synchronized (Stream.this) {
          toRunner = requestStream;
          requestStream.setOnReadyHandler(Stream.this::runnerReady);
        }
      }

      @Override
      public void onNext(LogControl control) {
        synchronized (Stream.this) {
          if (workerOpen) {
            toWorker.onNext(control);
          }
        }
      }

      @Override
      public void onError(Throwable t) {
        runnerGone(Status.fromThrowable(t));
      }

      @Override
      public void onCompleted() {
        runnerGone(Status.OK);
      }
    };

    final StreamObserver<LogEntry.List> fromWorker = new StreamObserver<>() {
      @Override
      public void onNext(LogEntry.List entries) {
        activity.touch(nanoTime.getAsLong());
        synchronized (Stream.this) {
          if (runnerOpen && toRunner != null) {
            toRunner.onNext(entries);
            forwarded.increment(entries.getLogEntriesCount());
            if (toRunner.isReady()) {
              toWorker.request(1);
            } else {
              workerRequestOwed = true;
            }
            return;
          }
        }
        keep(entries);
        toWorker.request(1);
      }

      @Override
      public void onError(Throwable t) {
        workerEnded(false);
      }

      @Override
      public void onCompleted() {
        workerEnded(true);
      }
    };

    private synchronized void runnerReady() {
      if (workerRequestOwed && toRunner.isReady() && workerOpen) {
        workerRequestOwed = false;
        toWorker.request(1);
      }
    }

    /** The runner's logging service closed (Beam does so before it ends the environment): keep entries locally. */
    void runnerGone(Status status) {
      synchronized (this) {
        if (!runnerOpen) {
          return;
        }
        runnerOpen = false;
        if (workerRequestOwed && workerOpen) {
          workerRequestOwed = false;
          toWorker.request(1);
        }
      }
      LOG.debug("runner logging stream ended status={} slot={} generation={}; further worker entries go to {}",
          status.getCode(), lease.slotId(), lease.generation(), WORKER_LOGGER);
    }

    private void workerEnded(boolean clean) {
      synchronized (this) {
        if (!workerOpen) {
          return;
        }
        workerOpen = false;
        if (clean) {
          // The client half-closed: finish the call, or it waits for our end (the wrapper's boot log does, bounded)
          // and keeps its connection open.
          toWorker.onCompleted();
        }
        if (runnerOpen && toRunner != null) {
          runnerOpen = false;
          if (clean) {
            toRunner.onCompleted();
          } else {
            toRunner.onError(Status.CANCELLED.withDescription("the worker's log stream ended").asRuntimeException());
          }
        }
      }
      activity.touch(nanoTime.getAsLong());
      if (activity.streams.decrementAndGet() == 0 && !lease.isLive()) {
        LoggingProxyService.this.activity.remove(lease, activity);
      }
    }

    /** Writes entries the runner cannot take any more into the recycler's log, at their own severity. */
    private void keep(LogEntry.List entries) {
      keptLocally.increment(entries.getLogEntriesCount());
      for (LogEntry e : entries.getLogEntriesList()) {
        String where = e.getLogLocation().isEmpty() ? "" : " " + e.getLogLocation();
        switch (e.getSeverity()) {
          case CRITICAL, ERROR -> WORKER_LOG.error("worker={}{} {}", lease.workerId(), where, e.getMessage());
          case WARN -> WORKER_LOG.warn("worker={}{} {}", lease.workerId(), where, e.getMessage());
          case INFO, NOTICE -> WORKER_LOG.info("worker={}{} {}", lease.workerId(), where, e.getMessage());
          case DEBUG -> WORKER_LOG.debug("worker={}{} {}", lease.workerId(), where, e.getMessage());
          default -> WORKER_LOG.trace("worker={}{} {}", lease.workerId(), where, e.getMessage());
        }
      }
    }
  }
}
