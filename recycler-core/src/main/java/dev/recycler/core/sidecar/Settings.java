package dev.recycler.core.sidecar;

import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.options.RecyclerOption;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeSet;

/**
 * The sidecar's settings, resolved from its command line and environment through the option table ({@link
 * RecyclerOption}): {@code --<key> value}, {@code --<key>=value} or {@code RECYCLER_<KEY>=value}; a flag wins over
 * its variable, old spellings are aliases. Immutable. Errors are {@link IllegalArgumentException}s that name the flag
 * or variable to fix.
 */
final class Settings {
  /** Where a value came from, for messages and precedence. */
  record Source(String name, boolean flag) {}

  private record Setting(Object value, Source source) {}

  private final Map<RecyclerOption, Setting> values;
  private final boolean help;
  private final List<String> warnings;

  private Settings(Map<RecyclerOption, Setting> values, boolean help, List<String> warnings) {
    this.values = values;
    this.help = help;
    this.warnings = List.copyOf(warnings);
  }

  /** Resolves {@code args} over {@code env}; unknown {@code RECYCLER_*} variables become {@link #warnings()}. */
  static Settings resolve(String[] args, Map<String, String> env) {
    Map<String, RecyclerOption> byKey = new LinkedHashMap<>();
    for (RecyclerOption o : RecyclerOption.values()) {
      byKey.put(o.key(), o);
      o.aliases().forEach(a -> byKey.put(a, o));
    }
    List<String> warnings = new ArrayList<>();
    Map<RecyclerOption, Setting> fromEnv = new EnumMap<>(RecyclerOption.class);
    for (Map.Entry<String, String> e : new java.util.TreeMap<>(env).entrySet()) {
      if (!e.getKey().startsWith("RECYCLER_")) {
        continue;
      }
      RecyclerOption o = byEnv(byKey, e.getKey());
      if (o == null) {
        warnings.add("ignoring unknown environment variable " + e.getKey() + " (not a recycler option; see --help)");
        continue;
      }
      put(fromEnv, o, e.getValue(), new Source(e.getKey(), false));
    }

    Map<RecyclerOption, Setting> fromFlags = new EnumMap<>(RecyclerOption.class);
    boolean help = false;
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (a.equals("--help") || a.equals("-h")) {
        help = true;
        continue;
      }
      int eq = a.indexOf('=');
      String flag = eq > 0 ? a.substring(0, eq) : a;
      RecyclerOption o = flag.startsWith("--") ? byKey.get(flag.substring(2)) : null;
      if (o == null) {
        throw new IllegalArgumentException("unknown flag " + flag);
      }
      String value;
      if (eq > 0) {
        value = a.substring(eq + 1);
      } else if (i + 1 < args.length) {
        value = args[++i];
      } else {
        throw new IllegalArgumentException(flag + " needs a value");
      }
      put(fromFlags, o, value, new Source(flag, true));
    }

    // Flags win over variables. slots and slot-ids exclude each other within one layer; across layers the flag wins.
    Map<RecyclerOption, Setting> merged = new EnumMap<>(fromEnv);
    if (fromFlags.containsKey(RecyclerOption.SLOTS) || fromFlags.containsKey(RecyclerOption.SLOT_IDS)) {
      merged.remove(RecyclerOption.SLOTS);
      merged.remove(RecyclerOption.SLOT_IDS);
    }
    merged.putAll(fromFlags);
    if (merged.containsKey(RecyclerOption.SLOTS) && merged.containsKey(RecyclerOption.SLOT_IDS)) {
      throw new IllegalArgumentException("use either " + merged.get(RecyclerOption.SLOTS).source().name() + " or "
          + merged.get(RecyclerOption.SLOT_IDS).source().name() + ", not both");
    }
    return new Settings(merged, help, warnings);
  }

  private static RecyclerOption byEnv(Map<String, RecyclerOption> byKey, String var) {
    for (Map.Entry<String, RecyclerOption> e : byKey.entrySet()) {
      if (("RECYCLER_" + e.getKey().toUpperCase(Locale.ROOT).replace('-', '_')).equals(var)) {
        return e.getValue();
      }
    }
    return null;
  }

  private static void put(Map<RecyclerOption, Setting> layer, RecyclerOption o, String raw, Source source) {
    Setting before = layer.get(o);
    if (before != null) {
      throw new IllegalArgumentException(before.source().name().equals(source.name())
          ? source.name() + " is given twice"
          : source.name() + " and " + before.source().name() + " both set " + o.key() + ": keep one");
    }
    layer.put(o, new Setting(o.parse(source.name(), raw), source));
  }

  boolean help() {
    return help;
  }

  /** One line per ignored environment variable, for the caller to print. */
  List<String> warnings() {
    return warnings;
  }

  /** The value of {@code o}: as given, else its default (null when it has none). */
  Object get(RecyclerOption o) {
    Setting s = values.get(o);
    return s != null ? s.value() : o.parsedDefault();
  }

  String logFormat() {
    return (String) get(RecyclerOption.LOG_FORMAT);
  }

  String logLevel() {
    return (String) get(RecyclerOption.LOG_LEVEL);
  }

  /** Names of the options that were set, with where from, e.g. {@code port=--port}; never their values. */
  String origins() {
    TreeSet<String> s = new TreeSet<>();
    values.forEach((o, v) -> s.add(o.key() + "=" + v.source().name()));
    return String.join(" ", s);
  }

  /**
   * The core configuration.
   *
   * @throws IllegalArgumentException for a value the core rejects, prefixed with the flag or variable that set it
   * @throws IllegalStateException for a combination the core rejects
   */
  @SuppressWarnings("unchecked")
  RecyclerConfig toConfig() {
    RecyclerConfig.Builder b = RecyclerConfig.builder();
    int port = (Integer) get(RecyclerOption.PORT);
    apply(RecyclerOption.PORT, () -> b.port(port));
    if (values.containsKey(RecyclerOption.SLOT_IDS)) {
      apply(RecyclerOption.SLOT_IDS, () -> b.slotIds((List<String>) get(RecyclerOption.SLOT_IDS)));
    } else {
      apply(RecyclerOption.SLOTS, () -> b.slots((Integer) get(RecyclerOption.SLOTS),
          (String) get(RecyclerOption.SLOT_ID_PREFIX)));
    }
    apply(RecyclerOption.BIND_HOST, () -> b.bindHost((String) get(RecyclerOption.BIND_HOST)));
    if (values.containsKey(RecyclerOption.ADVERTISE_HOST)) {
      apply(RecyclerOption.ADVERTISE_HOST, () -> b.advertiseHost((String) get(RecyclerOption.ADVERTISE_HOST)));
    }
    String cacheDir = values.containsKey(RecyclerOption.CACHE_DIR) ? (String) get(RecyclerOption.CACHE_DIR)
        : Path.of(System.getProperty("java.io.tmpdir"), "recycler-cache-" + port).toString();
    b.cacheDirectory(Path.of(cacheDir));
    apply(RecyclerOption.CACHE_MAX_SIZE, () -> b.cacheMaxBytes((Long) get(RecyclerOption.CACHE_MAX_SIZE)));
    apply(RecyclerOption.MEMORY_BLOB_MAX_SIZE,
        () -> b.memoryBlobMaxBytes((Long) get(RecyclerOption.MEMORY_BLOB_MAX_SIZE)));
    apply(RecyclerOption.LEASE_WAIT_TIMEOUT, () -> b.leaseWaitTimeout(duration(RecyclerOption.LEASE_WAIT_TIMEOUT)));
    apply(RecyclerOption.READY_TIMEOUT, () -> b.readyTimeout(duration(RecyclerOption.READY_TIMEOUT)));
    apply(RecyclerOption.DRAIN_TIMEOUT, () -> b.drainTimeout(duration(RecyclerOption.DRAIN_TIMEOUT)));
    apply(RecyclerOption.ATTACH_PROBE_TIMEOUT,
        () -> b.attachProbeTimeout(duration(RecyclerOption.ATTACH_PROBE_TIMEOUT)));
    apply(values.containsKey(RecyclerOption.FAILURE_BACKOFF_BASE) ? RecyclerOption.FAILURE_BACKOFF_BASE
            : RecyclerOption.FAILURE_BACKOFF_MAX,
        () -> b.failureBackoff(duration(RecyclerOption.FAILURE_BACKOFF_BASE),
            duration(RecyclerOption.FAILURE_BACKOFF_MAX)));
    apply(RecyclerOption.UPSTREAM_CALL_TIMEOUT,
        () -> b.upstreamCallTimeout(duration(RecyclerOption.UPSTREAM_CALL_TIMEOUT)));
    apply(RecyclerOption.ARTIFACT_FETCH_TIMEOUT,
        () -> b.artifactFetchTimeout(duration(RecyclerOption.ARTIFACT_FETCH_TIMEOUT)));
    apply(RecyclerOption.SHUTDOWN_TIMEOUT, () -> b.shutdownTimeout(duration(RecyclerOption.SHUTDOWN_TIMEOUT)));
    apply(RecyclerOption.ADMIN_PORT, () -> b.adminPort((Integer) get(RecyclerOption.ADMIN_PORT)));
    apply(RecyclerOption.LEASE_HISTORY_SIZE,
        () -> b.leaseHistorySize((Integer) get(RecyclerOption.LEASE_HISTORY_SIZE)));
    if (values.containsKey(RecyclerOption.LOCAL_ARTIFACT_DIRS)) {
      apply(RecyclerOption.LOCAL_ARTIFACT_DIRS, () -> b.localArtifactDirectories(
          ((List<String>) get(RecyclerOption.LOCAL_ARTIFACT_DIRS)).stream().filter(d -> !d.isEmpty())
              .map(Path::of).toList()));
    }
    apply(RecyclerOption.HASH_AT_STAGING, () -> b.hashAtStaging((Boolean) get(RecyclerOption.HASH_AT_STAGING)));
    apply(RecyclerOption.PREFETCH_SLOTS, () -> b.prefetchSlots((Integer) get(RecyclerOption.PREFETCH_SLOTS)));
    apply(RecyclerOption.STANDBY_TTL, () -> b.standbyTtl(duration(RecyclerOption.STANDBY_TTL)));
    apply(RecyclerOption.SPECULATIVE_START,
        () -> b.speculativeStart((Boolean) get(RecyclerOption.SPECULATIVE_START)));
    apply(RecyclerOption.WORKER_STALL_TIMEOUT,
        () -> b.workerStallTimeout(duration(RecyclerOption.WORKER_STALL_TIMEOUT)));
    if (values.containsKey(RecyclerOption.ATTACH_SECRET_FILE)) {
      apply(RecyclerOption.ATTACH_SECRET_FILE,
          () -> b.attachSecretFile(Path.of((String) get(RecyclerOption.ATTACH_SECRET_FILE))));
    }
    apply(RecyclerOption.MAX_INBOUND_MESSAGE_SIZE,
        () -> b.maxInboundMessageBytes((Long) get(RecyclerOption.MAX_INBOUND_MESSAGE_SIZE)));
    apply(RecyclerOption.MAX_WAITING_STARTS,
        () -> b.maxWaitingStarts((Integer) get(RecyclerOption.MAX_WAITING_STARTS)));
    return b.build();
  }

  private Duration duration(RecyclerOption o) {
    return (Duration) get(o);
  }

  /** Runs a builder call; a rejected value is reported under the flag or variable that set it. */
  private void apply(RecyclerOption o, Runnable set) {
    try {
      set.run();
    } catch (IllegalArgumentException e) {
      Setting s = values.get(o);
      throw new IllegalArgumentException((s != null ? s.source().name() : o.flag() + " (default)") + ": "
          + e.getMessage(), e);
    }
  }
}
