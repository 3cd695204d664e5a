package dev.recycler.core.api;

import static java.util.Objects.requireNonNull;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * Immutable configuration of one recycler. Built with {@link #builder()}: setters reject a bad value at once, {@link
 * Builder#build()} rejects cross-field mistakes. Every time setting is a {@link Duration}.
 */
public final class RecyclerConfig {
  /** Slot ids become metadata values, directory names and log keys: keep them simple. */
  static final Pattern SLOT_ID = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,62}");

  /**
   * Default bound of one inbound message on the fixed port: 64 MiB. Beam's runner and SDKs use no bound; the largest
   * messages the recycler receives are InstructionResponses from workers (e.g. split residuals carrying encoded
   * elements, monitoring data), usually far below a MiB. Outbound messages (process bundle descriptors to workers) and
   * responses the recycler receives from the runner are not limited by it.
   */
  public static final int DEFAULT_MAX_INBOUND_MESSAGE_BYTES = 64 << 20;

  private final List<String> slotIds;
  private final String bindHost;
  private final int port;
  private final String advertiseHost;
  private final Path cacheDirectory;
  private final long cacheMaxBytes;
  private final long memoryBlobMaxBytes;
  private final List<Path> localArtifactDirectories;
  private final boolean hashAtStaging;
  private final int prefetchSlots;
  private final Duration workerStallTimeout;
  private final Duration standbyTtl;
  private final boolean speculativeStart;
  private final Duration leaseWaitTimeout;
  private final Duration readyTimeout;
  private final Duration drainTimeout;
  private final Duration attachProbeTimeout;
  private final Duration failureBackoffBase;
  private final Duration failureBackoffMax;
  private final Duration upstreamCallTimeout;
  private final Duration artifactFetchTimeout;
  private final Duration shutdownTimeout;
  private final int adminPort;
  private final int leaseHistorySize;
  private final Path attachSecretFile;
  private final int maxInboundMessageBytes;
  private final int maxWaitingStarts;

  private RecyclerConfig(Builder b) {
    this.slotIds = List.copyOf(b.slotIds);
    this.bindHost = b.bindHost;
    this.port = b.port;
    this.advertiseHost = b.advertiseHost != null ? b.advertiseHost : defaultAdvertiseHost(b.bindHost);
    this.cacheDirectory = b.cacheDirectory;
    this.cacheMaxBytes = b.cacheMaxBytes;
    this.memoryBlobMaxBytes = b.memoryBlobMaxBytes;
    this.localArtifactDirectories = List.copyOf(b.localArtifactDirectories);
    this.hashAtStaging = b.hashAtStaging;
    this.prefetchSlots = b.prefetchSlots;
    this.workerStallTimeout = b.workerStallTimeout;
    this.standbyTtl = b.standbyTtl;
    this.speculativeStart = b.speculativeStart;
    this.leaseWaitTimeout = b.leaseWaitTimeout;
    this.readyTimeout = b.readyTimeout;
    this.drainTimeout = b.drainTimeout;
    this.attachProbeTimeout = b.attachProbeTimeout;
    this.failureBackoffBase = b.failureBackoffBase;
    this.failureBackoffMax = b.failureBackoffMax;
    this.upstreamCallTimeout = b.upstreamCallTimeout;
    this.artifactFetchTimeout = b.artifactFetchTimeout;
    this.shutdownTimeout = b.shutdownTimeout;
    this.adminPort = b.adminPort;
    this.leaseHistorySize = b.leaseHistorySize;
    this.attachSecretFile = b.attachSecretFile;
    this.maxInboundMessageBytes = b.maxInboundMessageBytes;
    this.maxWaitingStarts = b.maxWaitingStarts;
  }

  private static String defaultAdvertiseHost(String bindHost) {
    // A wildcard bind cannot be dialled; the wrappers and workers share the network namespace, so loopback works.
    return bindHost.equals("0.0.0.0") || bindHost.equals("::") ? "127.0.0.1" : bindHost;
  }

  public static Builder builder() {
    return new Builder();
  }

  /** Ids of the fixed slots, in configuration order (the order in which idle slots are handed out). */
  public List<String> slotIds() {
    return slotIds;
  }

  /** Address the fixed port binds to (default {@code 127.0.0.1}). */
  public String bindHost() {
    return bindHost;
  }

  /** The fixed port; 0 picks a free port (tests). */
  public int port() {
    return port;
  }

  /** Host wrappers and inner workers dial for the recycler's services (control proxy, provision, artifacts). */
  public String advertiseHost() {
    return advertiseHost;
  }

  /** Directory for artifact content too large to keep in memory; {@code null} keeps everything in memory. */
  public Path cacheDirectory() {
    return cacheDirectory;
  }

  public long cacheMaxBytes() {
    return cacheMaxBytes;
  }

  /**
   * Directories whose staged files the recycler may read in place (the job server's artifacts directory, on
   * Kubernetes a volume shared with the TaskManagers): a file artifact under one of them is identified by hashing it
   * from disk instead of streaming it through the runner. Empty: every artifact is streamed from the runner.
   */
  public List<Path> localArtifactDirectories() {
    return localArtifactDirectories;
  }

  /**
   * Whether files staged under {@link #localArtifactDirectories()} are hashed in the background as they appear
   * (default true), so that a job's first lease finds the digest ready; without local directories it has no effect.
   */
  public boolean hashAtStaging() {
    return hashAtStaging;
  }

  /**
   * How many idle slots whose wrappers lack a worker binary that a job just staged are asked to fetch it at once
   * (prefetch), so that the job's first lease finds it there: {@code -1} every such slot (default), {@code 0} none.
   * Needs {@link #hashAtStaging()} (the staging-time hash finds the binaries).
   */
  public int prefetchSlots() {
    return prefetchSlots;
  }

  /**
   * How long a worker may leave the runner's instructions unread (its control stream not ready for more) before its
   * lease ends as lost, so that the runner fails the bundle instead of waiting on it.
   */
  public Duration workerStallTimeout() {
    return workerStallTimeout;
  }

  /**
   * How long a standby worker (the same job's worker, started when its lease ended, for the job's next lease on the
   * slot) waits to be adopted before it is stopped; {@link Duration#ZERO}: no standbys.
   */
  public Duration standbyTtl() {
    return standbyTtl;
  }

  /**
   * Whether a new job's worker may be started from cached content whose probe matches its staged binary while the
   * two are compared (adopted only if equal).
   */
  public boolean speculativeStart() {
    return speculativeStart;
  }

  /** Artifacts up to this size stay in memory; larger ones are spilled to {@link #cacheDirectory()}. */
  public long memoryBlobMaxBytes() {
    return memoryBlobMaxBytes;
  }

  /** Longest a StartWorker call waits for a free slot before RESOURCE_EXHAUSTED. */
  public Duration leaseWaitTimeout() {
    return leaseWaitTimeout;
  }

  /** Longest from slot assignment to the inner worker's control connection before the StartWorker call fails. */
  public Duration readyTimeout() {
    return readyTimeout;
  }

  /** After an exit instruction, how long to wait for the wrapper's LeaseEnded before re-sending it (and warning). */
  public Duration drainTimeout() {
    return drainTimeout;
  }

  /** How long the current holder of a slot has to answer a ping when another incarnation claims the slot. */
  public Duration attachProbeTimeout() {
    return attachProbeTimeout;
  }

  public Duration failureBackoffBase() {
    return failureBackoffBase;
  }

  public Duration failureBackoffMax() {
    return failureBackoffMax;
  }

  /** Deadline of unary calls to the runner (provision, resolve, process bundle descriptors). */
  public Duration upstreamCallTimeout() {
    return upstreamCallTimeout;
  }

  /** Deadline of one artifact download from the runner. */
  public Duration artifactFetchTimeout() {
    return artifactFetchTimeout;
  }

  /** On close: how long to wait for wrappers to report their leases ended before closing the server anyway. */
  public Duration shutdownTimeout() {
    return shutdownTimeout;
  }

  /** Port of the admin HTTP endpoint ({@code /slots}, {@code /metrics}, {@code /healthz}); -1 disables it, 0 picks one. */
  public int adminPort() {
    return adminPort;
  }

  /** How many ended leases the slot table keeps. */
  public int leaseHistorySize() {
    return leaseHistorySize;
  }

  /**
   * File holding the shared secret wrappers must present to attach (as a Kubernetes Secret mounts it); read at start.
   * {@code null}: no secret, any process that can reach the port may attach (the recycler warns at start).
   */
  public Path attachSecretFile() {
    return attachSecretFile;
  }

  /** Largest inbound gRPC message on the fixed port, in bytes ({@link #DEFAULT_MAX_INBOUND_MESSAGE_BYTES}). */
  public int maxInboundMessageBytes() {
    return maxInboundMessageBytes;
  }

  /** Most StartWorker calls that may wait for a free slot at once; more fail at once with RESOURCE_EXHAUSTED. */
  public int maxWaitingStarts() {
    return maxWaitingStarts;
  }

  @Override
  public String toString() {
    return "RecyclerConfig{slots=" + slotIds + ", bind=" + bindHost + ":" + port + ", advertise=" + advertiseHost
        + ", cacheDirectory=" + cacheDirectory + ", cacheMaxBytes=" + cacheMaxBytes
        + ", localArtifactDirectories=" + localArtifactDirectories + ", hashAtStaging=" + hashAtStaging
        + ", prefetchSlots=" + prefetchSlots
        + ", standbyTtl=" + standbyTtl + ", speculativeStart=" + speculativeStart
        + ", leaseWaitTimeout=" + leaseWaitTimeout + ", readyTimeout=" + readyTimeout
        + ", drainTimeout=" + drainTimeout + ", adminPort=" + adminPort + ", attachSecretFile=" + attachSecretFile
        + ", maxInboundMessageBytes=" + maxInboundMessageBytes + ", maxWaitingStarts=" + maxWaitingStarts + "}";
  }

  /** Strict builder: each setter validates its argument; {@link #build()} checks the combination. */
  public static final class Builder {
    private final List<String> slotIds = new ArrayList<>();
    private String bindHost = "127.0.0.1";
    private int port = 50000;
    private String advertiseHost;
    private Path cacheDirectory;
    private long cacheMaxBytes = 2L << 30;
    private long memoryBlobMaxBytes = 8L << 20;
    private final List<Path> localArtifactDirectories = new ArrayList<>();
    private boolean hashAtStaging = true;
    private int prefetchSlots = -1;
    private Duration workerStallTimeout = Duration.ofSeconds(60);
    private Duration standbyTtl = Duration.ofMinutes(5);
    private boolean speculativeStart = true;
    private Duration leaseWaitTimeout = Duration.ofSeconds(60);
    private Duration readyTimeout = Duration.ofSeconds(120);
    private Duration drainTimeout = Duration.ofSeconds(60);
    private Duration attachProbeTimeout = Duration.ofSeconds(2);
    private Duration failureBackoffBase = Duration.ofSeconds(1);
    private Duration failureBackoffMax = Duration.ofSeconds(60);
    private Duration upstreamCallTimeout = Duration.ofSeconds(30);
    private Duration artifactFetchTimeout = Duration.ofMinutes(10);
    private Duration shutdownTimeout = Duration.ofSeconds(30);
    private int adminPort = -1;
    private int leaseHistorySize = 1000;
    private Path attachSecretFile;
    private int maxInboundMessageBytes = DEFAULT_MAX_INBOUND_MESSAGE_BYTES;
    private int maxWaitingStarts = 256;

    private Builder() {}

    /** Slots {@code <prefix>0 … <prefix>(count-1)}; replaces any ids set before. */
    public Builder slots(int count, String prefix) {
      if (count < 1 || count > 1024) {
        throw new IllegalArgumentException("slot count must be between 1 and 1024, got " + count);
      }
      requireNonNull(prefix, "prefix");
      List<String> ids = new ArrayList<>();
      for (int i = 0; i < count; i++) {
        ids.add(prefix + i);
      }
      return slotIds(ids);
    }

    /** Explicit slot ids; replaces any ids set before. */
    public Builder slotIds(List<String> ids) {
      requireNonNull(ids, "ids");
      if (ids.isEmpty()) {
        throw new IllegalArgumentException("at least one slot id is required");
      }
      Set<String> seen = new HashSet<>();
      for (String id : ids) {
        if (id == null || !SLOT_ID.matcher(id).matches()) {
          throw new IllegalArgumentException("slot id '" + id
              + "' is invalid: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit");
        }
        if (!seen.add(id)) {
          throw new IllegalArgumentException("slot id '" + id + "' is listed twice");
        }
      }
      slotIds.clear();
      slotIds.addAll(ids);
      return this;
    }

    public Builder bindHost(String host) {
      if (host == null || host.isBlank()) {
        throw new IllegalArgumentException("bind host must not be empty");
      }
      this.bindHost = host;
      return this;
    }

    public Builder port(int port) {
      this.port = checkPort("port", port, false);
      return this;
    }

    public Builder advertiseHost(String host) {
      if (host == null || host.isBlank()) {
        throw new IllegalArgumentException("advertise host must not be empty");
      }
      this.advertiseHost = host;
      return this;
    }

    public Builder cacheDirectory(Path dir) {
      this.cacheDirectory = dir;
      return this;
    }

    public Builder cacheMaxBytes(long bytes) {
      if (bytes < 1 << 20) {
        throw new IllegalArgumentException("cache max bytes must be at least 1 MiB, got " + bytes);
      }
      this.cacheMaxBytes = bytes;
      return this;
    }

    public Builder memoryBlobMaxBytes(long bytes) {
      if (bytes < 0) {
        throw new IllegalArgumentException("memory blob max bytes must be >= 0, got " + bytes);
      }
      this.memoryBlobMaxBytes = bytes;
      return this;
    }

    /** Directories whose staged files may be read in place; replaces any set before. Each must be absolute. */
    public Builder localArtifactDirectories(List<Path> dirs) {
      requireNonNull(dirs, "dirs");
      for (Path d : dirs) {
        if (d == null || !d.isAbsolute()) {
          throw new IllegalArgumentException("local artifact directory '" + d + "' must be an absolute path");
        }
      }
      localArtifactDirectories.clear();
      localArtifactDirectories.addAll(dirs);
      return this;
    }

    /** Whether staged files under the local directories are hashed in the background as they appear. */
    public Builder hashAtStaging(boolean on) {
      this.hashAtStaging = on;
      return this;
    }

    /** How many idle slots are asked to prefetch a newly staged worker binary: -1 all, 0 none. */
    public Builder prefetchSlots(int n) {
      if (n < -1) {
        throw new IllegalArgumentException("prefetch slots must be -1 (every idle slot), 0 (off) or a positive count,"
            + " not " + n);
      }
      this.prefetchSlots = n;
      return this;
    }

    public Builder workerStallTimeout(Duration d) {
      this.workerStallTimeout = positive("worker stall timeout", d);
      return this;
    }

    /** Whether a worker may be started from a probed digest while the content is verified. */
    public Builder speculativeStart(boolean on) {
      this.speculativeStart = on;
      return this;
    }

    /** How long an unadopted standby worker lives; zero turns standbys off. */
    public Builder standbyTtl(Duration d) {
      if (d == null || d.isNegative()) {
        throw new IllegalArgumentException("standby ttl must be zero (off) or positive, not " + d);
      }
      this.standbyTtl = d;
      return this;
    }

    public Builder leaseWaitTimeout(Duration d) {
      this.leaseWaitTimeout = positive("lease wait timeout", d);
      return this;
    }

    public Builder readyTimeout(Duration d) {
      this.readyTimeout = positive("ready timeout", d);
      return this;
    }

    public Builder drainTimeout(Duration d) {
      this.drainTimeout = positive("drain timeout", d);
      return this;
    }

    public Builder attachProbeTimeout(Duration d) {
      this.attachProbeTimeout = positive("attach probe timeout", d);
      return this;
    }

    public Builder failureBackoff(Duration base, Duration max) {
      this.failureBackoffBase = positive("failure backoff base", base);
      this.failureBackoffMax = positive("failure backoff max", max);
      return this;
    }

    public Builder upstreamCallTimeout(Duration d) {
      this.upstreamCallTimeout = positive("upstream call timeout", d);
      return this;
    }

    public Builder artifactFetchTimeout(Duration d) {
      this.artifactFetchTimeout = positive("artifact fetch timeout", d);
      return this;
    }

    public Builder shutdownTimeout(Duration d) {
      this.shutdownTimeout = positive("shutdown timeout", d);
      return this;
    }

    public Builder adminPort(int port) {
      this.adminPort = checkPort("admin port", port, true);
      return this;
    }

    public Builder leaseHistorySize(int size) {
      if (size < 0 || size > 1_000_000) {
        throw new IllegalArgumentException("lease history size must be between 0 and 1000000, got " + size);
      }
      this.leaseHistorySize = size;
      return this;
    }

    /** See {@link RecyclerConfig#attachSecretFile()}; {@code null} turns the check off. */
    public Builder attachSecretFile(Path file) {
      this.attachSecretFile = file;
      return this;
    }

    public Builder maxInboundMessageBytes(long bytes) {
      if (bytes < 1 << 20 || bytes > Integer.MAX_VALUE) {
        throw new IllegalArgumentException("max inbound message bytes must be between 1 MiB (1048576) and "
            + Integer.MAX_VALUE + ", got " + bytes);
      }
      this.maxInboundMessageBytes = (int) bytes;
      return this;
    }

    public Builder maxWaitingStarts(int count) {
      if (count < 1 || count > 1_000_000) {
        throw new IllegalArgumentException("max waiting starts must be between 1 and 1000000, got " + count);
      }
      this.maxWaitingStarts = count;
      return this;
    }

    public RecyclerConfig build() {
      if (slotIds.isEmpty()) {
        throw new IllegalStateException("no slots configured: set slots(count, prefix) or slotIds(ids)");
      }
      if (failureBackoffMax.compareTo(failureBackoffBase) < 0) {
        throw new IllegalStateException("failure backoff max (" + failureBackoffMax + ") is below its base ("
            + failureBackoffBase + ")");
      }
      if (memoryBlobMaxBytes > cacheMaxBytes) {
        throw new IllegalStateException("memory blob max bytes (" + memoryBlobMaxBytes
            + ") exceeds the cache size (" + cacheMaxBytes + ")");
      }
      if (adminPort > 0 && adminPort == port) {
        throw new IllegalStateException("admin port and gRPC port are both " + port);
      }
      return new RecyclerConfig(this);
    }

    private static int checkPort(String what, int port, boolean allowDisabled) {
      if ((allowDisabled && port == -1) || (port >= 0 && port <= 65535)) {
        return port;
      }
      throw new IllegalArgumentException(what + " must be between 0 and 65535" + (allowDisabled ? " or -1" : "")
          + ", got " + port);
    }

    private static Duration positive(String what, Duration d) {
      requireNonNull(d, what);
      if (d.isNegative() || d.isZero()) {
        throw new IllegalArgumentException(what + " must be positive, got " + d);
      }
      return d;
    }
  }
}
