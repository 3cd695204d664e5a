package dev.recycler.core;

import dev.recycler.core.admin.AdminHttpServer;
import dev.recycler.core.admin.AdminServices;
import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.artifact.ArtifactCache;
import dev.recycler.core.artifact.Artifacts;
import dev.recycler.core.auth.AttachSecret;
import dev.recycler.core.auth.Authenticator;
import dev.recycler.core.control.ControlServices;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.core.provision.Provisioner;
import dev.recycler.core.slot.EndReason;
import dev.recycler.core.slot.Lease;
import dev.recycler.core.slot.LeaseListener;
import dev.recycler.core.slot.Scheduler;
import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.slot.SlotState;
import dev.recycler.core.slot.WrapperLink;
import dev.recycler.core.wire.CallerContext;
import dev.recycler.core.wire.ChannelFactory;
import dev.recycler.core.wire.ChannelOwner;
import dev.recycler.core.wire.RunnerChannels;
import dev.recycler.proto.v1.PreparedLease;
import dev.recycler.proto.v1.SlotTable;
import io.grpc.BindableService;
import io.grpc.Server;
import io.grpc.ServerInterceptors;
import io.grpc.ServerServiceDefinition;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.prometheusmetrics.PrometheusConfig;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import java.io.IOException;
import java.net.BindException;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One recycler: a fixed set of harness slots served on one gRPC port. Start with {@link #start}; stop with {@link
 * #closeAsync()}.
 *
 * <p>Lifecycle: {@code closeAsync()} is idempotent. It stops leasing, fails waiting StartWorker calls, sends every
 * leased slot its exit instruction, waits up to the shutdown timeout for the wrappers to report their leases ended,
 * then closes the wrapper streams, the server, the runner channels, the admin endpoint and the timer, each even if an
 * earlier step failed (failures are collected as suppressed exceptions).
 */
public final class Recycler implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(Recycler.class);

  private final RecyclerConfig config;
  private final MeterRegistry registry;
  private final ScheduledExecutorService timer;
  private final SlotPool pool;
  private final RunnerChannels channels;
  private final Artifacts artifacts;
  private final Server server;
  private final AdminHttpServer admin;
  private volatile String endpoint = "";
  private final CompletableFuture<Void> closed = new CompletableFuture<>();
  private volatile boolean closing;
  private final Provisioner provisioner;

  private Recycler(RecyclerConfig config, MeterRegistry registry, ChannelFactory channelFactory)
      throws IOException {
    this.config = config;
    this.registry = registry;
    // Read first: a bad secret file fails the start before anything is bound or spawned.
    AttachSecret attachSecret = config.attachSecretFile() == null ? null : AttachSecret.read(config.attachSecretFile());
    this.timer = Executors.newSingleThreadScheduledExecutor(r -> {
      Thread t = new Thread(r, "recycler-timer");
      t.setDaemon(true);
      return t;
    });
    RecyclerMetrics<SlotState, EndReason> metrics = new RecyclerMetrics<>(registry, SlotState.class, EndReason.class);
    // A lease's channels live as long as the lease; other owners (a lost worker's stand-in data client) say themselves.
    this.channels = new RunnerChannels(channelFactory, owner -> owner instanceof Lease l
        ? l.state() != Lease.State.ENDED : owner instanceof ChannelOwner o && o.holdsChannels());
    this.artifacts = new Artifacts(
        new ArtifactCache(config.cacheDirectory(), config.cacheMaxBytes(), config.memoryBlobMaxBytes()),
        config.localArtifactDirectories(), config.hashAtStaging(), config.speculativeStart(), channels,
        metrics, config.upstreamCallTimeout(), config.artifactFetchTimeout());
    LeaseListener listener = new LeaseListener() {
      @Override
      public CompletableFuture<PreparedLease> prepare(Lease lease) {
        return Recycler.this.prepare(lease);
      }

      @Override
      public CompletableFuture<PreparedLease> provisional(Lease lease) {
        return Recycler.this.provisional(lease);
      }

      @Override
      public void onEnded(Lease lease) {
        provisioner.onEnded(lease);
        artifacts.onEnded(lease);
        channels.release(lease);
      }
    };
    String recyclerId = UUID.randomUUID().toString().substring(0, 8);
    this.pool = new SlotPool(config, Scheduler.system(timer), metrics, listener, recyclerId);
    if (config.prefetchSlots() != 0) {
      artifacts.onStagedBinary(pool::prefetch);
    }
    // The advertised endpoint needs the bound port (port 0 picks one), so the provisioner reads it lazily.
    this.provisioner = new Provisioner(pool, channels, this::endpoint, config.upstreamCallTimeout());
    List<BindableService> services = new ArrayList<>(
        ControlServices.create(pool, channels, config.upstreamCallTimeout(), timer, config.workerStallTimeout(),
            registry));
    services.add(provisioner.service());
    services.add(artifacts.service(pool, metrics));
    services.add(AdminServices.create(pool));
    NettyServerBuilder builder = NettyServerBuilder
        .forAddress(new InetSocketAddress(config.bindHost(), config.port()))
        .maxInboundMessageSize(config.maxInboundMessageBytes())
        .permitKeepAliveTime(5, TimeUnit.SECONDS)
        .permitKeepAliveWithoutCalls(true)
        .keepAliveTime(keepAlive(config.workerStallTimeout(), 20), TimeUnit.MILLISECONDS)
        .keepAliveTimeout(keepAlive(config.workerStallTimeout(), 10), TimeUnit.MILLISECONDS);
    CallerContext callerContext = new CallerContext();
    Authenticator authenticator = new Authenticator(pool, attachSecret);
    for (BindableService s : services) {
      ServerServiceDefinition definition = s.bindService();
      // The last interceptor runs first: the caller context is set up before the authenticator checks the call.
      builder.addService(ServerInterceptors.intercept(definition,
          authenticator.interceptorFor(definition.getServiceDescriptor().getName()), callerContext));
    }
    try {
      this.server = builder.build().start();
    } catch (IOException e) {
      timer.shutdownNow();
      // A typed BindException whatever Netty's transport threw, so callers need not match message text.
      BindException bind = new BindException("cannot bind the recycler port " + config.bindHost() + ":"
          + config.port() + ": " + e.getMessage() + " (is another recycler or worker pool running? choose a free port)");
      bind.initCause(e);
      throw bind;
    }
    this.endpoint = config.advertiseHost() + ":" + server.getPort();
    if (attachSecret == null) {
      LOG.warn("no attach secret configured: any local process that can reach {} may attach as a wrapper and receive"
          + " leases with their pipeline options; set attach-secret-file (see docs/security.md)", endpoint);
    }
    AdminHttpServer http = null;
    if (config.adminPort() >= 0) {
      try {
        http = new AdminHttpServer(config.bindHost(), config.adminPort(), pool,
            registry instanceof PrometheusMeterRegistry p ? p : null);
      } catch (IOException e) {
        server.shutdownNow();
        timer.shutdownNow();
        BindException bind = new BindException("cannot bind the admin port " + config.bindHost() + ":"
            + config.adminPort() + ": " + e.getMessage() + " (choose a free admin port or -1 to disable it)");
        bind.initCause(e);
        throw bind;
      }
    }
    this.admin = http;
    LOG.info("recycler serving endpoint={} bind={}:{} slots={} admin_port={} id={} attach_secret={}"
        + " max_inbound_message_bytes={} max_waiting_starts={}", endpoint, config.bindHost(), server.getPort(),
        config.slotIds().size(), adminPort(), recyclerId, attachSecret != null, config.maxInboundMessageBytes(),
        config.maxWaitingStarts());
  }

  /**
   * The lease's boot inputs with its staged binaries named by the digests their probes matched, before {@link
   * #prepare} has verified them (see {@link Artifacts#provisional}), or null. Never fails.
   */
  private CompletableFuture<PreparedLease> provisional(Lease lease) {
    return provisioner.provisionInfo(lease)
        .thenCompose(info -> artifacts.provisional(lease, info.getDependenciesList())
            .thenApply(probed -> probed == null ? null
                : PreparedLease.newBuilder().setProvisionInfo(info).addAllArtifacts(probed).build()))
        .exceptionally(failure -> null);
  }

  /**
   * A new lease's boot inputs (fetched while it waits for its slot), so that its wrapper needs no call before starting
   * the worker: the runner's provision info (rewritten) and its dependencies resolved into the cache. Meanwhile the channels to the runner's
   * artifact and control endpoints connect, so the artifact call and the worker's control stream find them ready.
   */
  private CompletableFuture<PreparedLease> prepare(Lease lease) {
    channels.connect(lease, lease.request().getArtifactEndpoint().getUrl());
    channels.connect(lease, lease.request().getControlEndpoint().getUrl());
    return provisioner.provisionInfo(lease)
        .thenCompose(info -> artifacts.resolve(lease, info.getDependenciesList())
            .thenApply(resolved -> PreparedLease.newBuilder().setProvisionInfo(info).addAllArtifacts(resolved).build()))
        .whenComplete((prepared, failure) -> {
          if (failure != null) {
            LOG.warn("could not prepare lease runner_worker={} (the wrapper will ask itself): {}",
                lease.runnerWorkerId(), RecyclerException.unwrap(failure).getMessage());
          }
        });
  }

  /**
   * HTTP/2 keepalive of the fixed port, in ms: a ping after half the worker stall timeout of silence, and the other
   * half for its answer (at least 5 s each, at most {@code capSeconds}). A worker that answers nothing (stopped,
   * wedged) loses its connection, and its lease ends as lost, within about {@code worker-stall-timeout} even when
   * the runner has no instruction pending for it (the stall timer itself only sees unread instructions).
   */
  static long keepAlive(Duration stallTimeout, long capSeconds) {
    long half = stallTimeout.toMillis() / 2;
    return Math.max(5_000, Math.min(half, capSeconds * 1000));
  }

  /** Starts a recycler with its own Prometheus registry (scraped at the admin endpoint's {@code /metrics}). */
  public static Recycler start(RecyclerConfig config) throws IOException {
    return start(config, new PrometheusMeterRegistry(PrometheusConfig.DEFAULT));
  }

  /**
   * Starts a recycler reporting into {@code registry}.
   *
   * @throws java.net.BindException when the port (or admin port) cannot be bound; the message says which and what to do
   * @throws IOException when the cache directory cannot be prepared or the attach secret file cannot be read or is
   *     unusable (the message names the file, never its content)
   */
  public static Recycler start(RecyclerConfig config, MeterRegistry registry) throws IOException {
    return start(config, registry, ChannelFactory.netty());
  }

  /** As {@link #start(RecyclerConfig, MeterRegistry)} with a custom way of dialling the runner (tests). */
  public static Recycler start(RecyclerConfig config, MeterRegistry registry, ChannelFactory channels)
      throws IOException {
    return new Recycler(config, registry, channels);
  }

  /** The bound port. */
  public int port() {
    return server.getPort();
  }

  /** {@code advertiseHost:port}: what pipelines pass as {@code --environment_config} and wrappers as --recycler. */
  public String endpoint() {
    return endpoint;
  }

  /** The admin HTTP port, or -1 when disabled. */
  public int adminPort() {
    return admin == null ? -1 : admin.port();
  }

  public MeterRegistry meterRegistry() {
    return registry;
  }

  public RecyclerConfig config() {
    return config;
  }

  /** Current slots and all kept lease records. */
  public SlotTable slotTable() {
    return pool.slotTable(0);
  }

  /** Idempotent graceful stop; see the class comment. */
  public CompletableFuture<Void> closeAsync() {
    synchronized (this) {
      if (closing) {
        return closed;
      }
      closing = true;
    }
    LOG.info("recycler stopping endpoint={}", endpoint);
    pool.shutdown()
        .orTimeout(config.shutdownTimeout().toMillis(), TimeUnit.MILLISECONDS)
        .whenComplete((v, drainFailure) -> {
          List<Throwable> failures = new ArrayList<>();
          if (drainFailure instanceof TimeoutException) {
            LOG.warn("wrappers did not report all leases ended within {}s; closing anyway",
                config.shutdownTimeout().toSeconds());
          }
          for (WrapperLink link : pool.attachedLinks()) {
            run(failures, () -> link.close(new RecyclerException(RecyclerException.Kind.UNAVAILABLE,
                "the recycler stopped")));
          }
          run(failures, () -> {
            server.shutdown();
            if (!server.awaitTermination(5, TimeUnit.SECONDS)) {
              server.shutdownNow();
              server.awaitTermination(5, TimeUnit.SECONDS);
            }
          });
          run(failures, () -> channels.closeAll(2000));
          if (admin != null) {
            run(failures, admin::close);
          }
          // The cache directory is kept: its content is reused, after verification, by the next start.
          run(failures, artifacts::close);
          run(failures, timer::shutdownNow);
          if (failures.isEmpty()) {
            LOG.info("recycler stopped endpoint={}", endpoint);
            closed.complete(null);
          } else {
            IllegalStateException e = new IllegalStateException("recycler stopped with errors");
            failures.forEach(e::addSuppressed);
            LOG.error("recycler stopped with errors endpoint={}", endpoint, e);
            closed.completeExceptionally(e);
          }
        });
    return closed;
  }

  /** {@link #closeAsync()} and wait. */
  @Override
  public void close() {
    closeAsync().join();
  }

  private interface Step {
    void run() throws Exception;
  }

  private static void run(List<Throwable> failures, Step step) {
    try {
      step.run();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      failures.add(e);
    } catch (Exception e) {
      failures.add(e);
    }
  }
}
