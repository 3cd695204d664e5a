package dev.recycler.flink;

import dev.recycler.core.api.RecyclerConfig;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;
import java.util.function.Consumer;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.IllegalConfigurationException;
import org.apache.flink.configuration.ReadableConfig;

/**
 * The one place that maps the Flink configuration of the external resource to the core {@link RecyclerConfig}.
 *
 * <p>Errors: every bad value becomes an {@link IllegalConfigurationException} whose message starts with the key as
 * written in the Flink configuration ({@code external-resource.<name>.param.<key>}) and says what is wrong; the
 * resource name is not known to a driver (Flink strips the prefix), so messages spell it as {@code <name>}.
 */
final class FlinkRecyclerConfig {
  /** Key of the slot count, owned by Flink. */
  static final String AMOUNT_KEY = "external-resource.<name>.amount";

  private FlinkRecyclerConfig() {}

  /**
   * Builds the core configuration.
   *
   * @param params the driver's configuration: the keys under {@code external-resource.<name>.param.}, prefix removed
   * @param amount Flink's {@code external-resource.<name>.amount}: the number of slots
   * @throws IllegalConfigurationException naming the key to fix
   */
  static RecyclerConfig toRecyclerConfig(ReadableConfig params, long amount) {
    RecyclerConfig.Builder b = RecyclerConfig.builder();
    if (amount < 1 || amount > Integer.MAX_VALUE) {
      throw new IllegalConfigurationException(
          AMOUNT_KEY + " must be the number of harness slots (at least 1), got " + amount);
    }
    int slots = (int) amount;
    Optional<List<String>> ids = read(params, RecyclerOptions.SLOT_IDS);
    if (ids.isPresent()) {
      if (ids.get().size() != slots) {
        throw new IllegalConfigurationException(key(RecyclerOptions.SLOT_IDS) + " lists " + ids.get().size()
            + " slot ids but " + AMOUNT_KEY + " is " + slots + ": make them agree");
      }
      apply(RecyclerOptions.SLOT_IDS, ids.get(), b::slotIds);
    } else {
      String prefix = get(params, RecyclerOptions.SLOT_ID_PREFIX);
      apply(RecyclerOptions.SLOT_ID_PREFIX, prefix, p -> b.slots(slots, p));
    }

    int port = get(params, RecyclerOptions.PORT);
    apply(RecyclerOptions.PORT, port, b::port);
    apply(RecyclerOptions.BIND_HOST, get(params, RecyclerOptions.BIND_HOST), b::bindHost);
    read(params, RecyclerOptions.ADVERTISE_HOST).ifPresent(h -> apply(RecyclerOptions.ADVERTISE_HOST, h, b::advertiseHost));

    Path cacheDir = read(params, RecyclerOptions.CACHE_DIR)
        .map(Path::of)
        .orElseGet(() -> Path.of(System.getProperty("java.io.tmpdir"), "recycler-cache-" + port));
    b.cacheDirectory(cacheDir);
    read(params, RecyclerOptions.LOCAL_ARTIFACT_DIRS).ifPresent(dirs -> apply(RecyclerOptions.LOCAL_ARTIFACT_DIRS,
        dirs, d -> b.localArtifactDirectories(d.stream().map(String::trim).filter(x -> !x.isEmpty()).map(Path::of)
            .toList())));
    apply(RecyclerOptions.HASH_AT_STAGING, get(params, RecyclerOptions.HASH_AT_STAGING), b::hashAtStaging);
    apply(RecyclerOptions.PREFETCH_SLOTS, get(params, RecyclerOptions.PREFETCH_SLOTS), b::prefetchSlots);
    apply(RecyclerOptions.STANDBY_TTL, get(params, RecyclerOptions.STANDBY_TTL), b::standbyTtl);
    apply(RecyclerOptions.SPECULATIVE_START, get(params, RecyclerOptions.SPECULATIVE_START), b::speculativeStart);
    apply(RecyclerOptions.CACHE_MAX_SIZE, get(params, RecyclerOptions.CACHE_MAX_SIZE).getBytes(), b::cacheMaxBytes);
    apply(RecyclerOptions.MEMORY_BLOB_MAX_SIZE, get(params, RecyclerOptions.MEMORY_BLOB_MAX_SIZE).getBytes(),
        b::memoryBlobMaxBytes);

    apply(RecyclerOptions.WORKER_STALL_TIMEOUT, get(params, RecyclerOptions.WORKER_STALL_TIMEOUT),
        b::workerStallTimeout);
    apply(RecyclerOptions.LEASE_WAIT_TIMEOUT, get(params, RecyclerOptions.LEASE_WAIT_TIMEOUT), b::leaseWaitTimeout);
    apply(RecyclerOptions.READY_TIMEOUT, get(params, RecyclerOptions.READY_TIMEOUT), b::readyTimeout);
    apply(RecyclerOptions.DRAIN_TIMEOUT, get(params, RecyclerOptions.DRAIN_TIMEOUT), b::drainTimeout);
    apply(RecyclerOptions.ATTACH_PROBE_TIMEOUT, get(params, RecyclerOptions.ATTACH_PROBE_TIMEOUT),
        b::attachProbeTimeout);
    apply(RecyclerOptions.FAILURE_BACKOFF_BASE, get(params, RecyclerOptions.FAILURE_BACKOFF_BASE),
        base -> b.failureBackoff(base, get(params, RecyclerOptions.FAILURE_BACKOFF_MAX)));
    apply(RecyclerOptions.UPSTREAM_CALL_TIMEOUT, get(params, RecyclerOptions.UPSTREAM_CALL_TIMEOUT),
        b::upstreamCallTimeout);
    apply(RecyclerOptions.ARTIFACT_FETCH_TIMEOUT, get(params, RecyclerOptions.ARTIFACT_FETCH_TIMEOUT),
        b::artifactFetchTimeout);
    apply(RecyclerOptions.SHUTDOWN_TIMEOUT, get(params, RecyclerOptions.SHUTDOWN_TIMEOUT), b::shutdownTimeout);
    apply(RecyclerOptions.ADMIN_PORT, get(params, RecyclerOptions.ADMIN_PORT), b::adminPort);
    apply(RecyclerOptions.LEASE_HISTORY_SIZE, get(params, RecyclerOptions.LEASE_HISTORY_SIZE), b::leaseHistorySize);
    read(params, RecyclerOptions.ATTACH_SECRET_FILE)
        .ifPresent(f -> apply(RecyclerOptions.ATTACH_SECRET_FILE, f, v -> b.attachSecretFile(Path.of(v))));
    apply(RecyclerOptions.MAX_INBOUND_MESSAGE_SIZE, get(params, RecyclerOptions.MAX_INBOUND_MESSAGE_SIZE).getBytes(),
        b::maxInboundMessageBytes);
    apply(RecyclerOptions.MAX_WAITING_STARTS, get(params, RecyclerOptions.MAX_WAITING_STARTS), b::maxWaitingStarts);

    try {
      return b.build();
    } catch (IllegalStateException | IllegalArgumentException e) {
      // Cross-field mistakes (backoff max below base, admin port equal to port, ...): core names the settings.
      throw new IllegalConfigurationException("external-resource.<name>.param.*: " + e.getMessage(), e);
    }
  }

  /** Whether a start failure should stop the TaskManager; a malformed value counts as the safe default (true). */
  static boolean failTaskManagerOnError(ReadableConfig params) {
    try {
      return params.get(RecyclerOptions.FAIL_TASK_MANAGER_ON_ERROR);
    } catch (IllegalArgumentException e) {
      return true;
    }
  }

  static String key(ConfigOption<?> option) {
    return RecyclerOptions.paramKey("<name>", option);
  }

  private static <T> T get(ReadableConfig params, ConfigOption<T> option) {
    try {
      return params.get(option);
    } catch (IllegalArgumentException e) {
      throw new IllegalConfigurationException(key(option) + ": " + e.getMessage(), e);
    }
  }

  private static <T> Optional<T> read(ReadableConfig params, ConfigOption<T> option) {
    try {
      return params.getOptional(option);
    } catch (IllegalArgumentException e) {
      throw new IllegalConfigurationException(key(option) + ": " + e.getMessage(), e);
    }
  }

  private static <T> void apply(ConfigOption<?> option, T value, Consumer<T> setter) {
    try {
      setter.accept(value);
    } catch (IllegalArgumentException e) {
      throw new IllegalConfigurationException(key(option) + ": " + e.getMessage(), e);
    }
  }
}
