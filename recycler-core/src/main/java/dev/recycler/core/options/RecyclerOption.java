package dev.recycler.core.options;

import java.time.Duration;
import java.util.List;
import java.util.Locale;

/**
 * The one option table of the recycler: each constant is one setting with its key, type, default and meaning. It
 * drives the sidecar's flags ({@code --<key>}), its environment variables ({@code RECYCLER_<KEY>}), {@code --help} and
 * the reference in docs/operations.md (a test keeps that section equal to {@link #markdownReference()}). The Flink
 * plugin's {@code RecyclerOptions} use the same keys and defaults for every option that is not {@link Scope#SIDECAR}
 * (a recycler-flink test keeps them in step).
 *
 * <p>Keys are lowercase words joined by hyphens. Old flag spellings stay accepted as aliases, each with its
 * environment variable form too ({@code --bind} and {@code RECYCLER_BIND} for {@code bind-host}).
 */
public enum RecyclerOption {
  PORT("port", Type.INT, "50000", Scope.SHARED,
      "The fixed gRPC port: the Beam runner's worker pool, the wrappers' attach, provision and artifact services and"
          + " the inner workers' control proxy. Pipelines use `--environment_config=localhost:<port>`. `0` picks a free"
          + " port (tests)."),
  SLOTS("slots", Type.INT, "1", Scope.SIDECAR,
      "Number of slots, named `<slot-id-prefix>0 … <slot-id-prefix>(slots-1)`; one go-boot-wrapper per slot. (In"
          + " Flink: `external-resource.<name>.amount`.)"),
  SLOT_ID_PREFIX("slot-id-prefix", Type.STRING, "slot-", Scope.SHARED,
      "Prefix of the generated slot ids. Ignored when `slot-ids` is set.", "slot-prefix"),
  SLOT_IDS("slot-ids", Type.LIST, null, Scope.SHARED,
      "Explicit slot ids separated by `,` or `;` (instead of `slots`). Ids: 1-63 letters, digits, `.`, `_`, `-`."),
  BIND_HOST("bind-host", Type.STRING, "127.0.0.1", Scope.SHARED,
      "Address the gRPC port and the admin port bind to. Loopback suffices when the wrappers share the network"
          + " namespace (sidecars in the same pod); `0.0.0.0` to serve other hosts.", "bind"),
  ADVERTISE_HOST("advertise-host", Type.STRING, null, Scope.SHARED,
      "Host the wrappers and inner workers dial for the recycler's services."),
  CACHE_DIR("cache-dir", Type.STRING, null, Scope.SHARED,
      "Directory for artifacts too large to keep in memory (worker binaries); default"
          + " `<java.io.tmpdir>/recycler-cache-<port>`. The recycler's own: a new or empty directory is marked with a"
          + " `.recycler-artifact-cache` file, a non-empty directory without it is refused (nothing deleted) unless"
          + " it holds only an older recycler's files. Its"
          + " content survives restarts and is re-hashed before first use."),
  LOCAL_ARTIFACT_DIRS("local-artifact-dirs", Type.LIST, null, Scope.SHARED,
      "Absolute directories, separated by `,` or `;`, whose staged files the recycler reads in place: the Beam job"
          + " server's `--artifacts-dir`, which the TaskManager mounts anyway. A job's worker binary under one of them"
          + " is identified from disk (compared byte for byte with cached content of its size and first and last"
          + " 64 KiB, else hashed) instead of streaming it through the runner's gRPC service. Unset: every artifact is"
          + " streamed."),
  HASH_AT_STAGING("hash-at-staging", Type.BOOLEAN, "true", Scope.SHARED,
      "With `local-artifact-dirs` set: watch those directories (inotify) and identify each file the job server"
          + " stages there (compared with cached content whose size and ends it has, else hashed) in the background,"
          + " once it has been quiet (size and modification time unchanged) for 1 s, so that a new job's first lease"
          + " finds its binary's digest ready instead of reading it on the lease's path. One thread; a file changed"
          + " after that is read again (or at lease time), never trusted stale. `false`: at lease time only. No"
          + " effect without `local-artifact-dirs`."),
  PREFETCH_SLOTS("prefetch-slots", Type.INT, "-1", Scope.SHARED,
      "With `hash-at-staging`: when the job server stages a worker binary (an ELF file) that idle slots' wrappers"
          + " lack, the recycler copies it into its cache and asks up to this many of those wrappers to fetch it"
          + " right away, in the seconds before the job's first StartWorker, so that the lease finds it there instead"
          + " of downloading it. `-1`: every such idle slot; `0`: off. Costs one copy of the binary per asked wrapper"
          + " (each wrapper's cache stays bounded by its own limit); every TaskManager that mounts the job server's"
          + " directory does this for every new binary, also those whose jobs it will not run: on large clusters"
          + " `1` bounds the cost to one copy per TaskManager."),
  STANDBY_TTL("standby-ttl", Type.DURATION, "5 min", Scope.SHARED,
      "When a lease ends normally, its slot's wrapper starts the same job's worker again at once (a standby), so"
          + " that the job's next environment on this TaskManager gets a worker that is already running: the runner"
          + " sees nothing of a standby until a StartWorker whose provision info and artifacts are identical to its"
          + " lease's adopts it. A standby nobody adopts is stopped after this long (and whenever its slot is"
          + " needed for another job). Costs one idle worker process per free slot, within the memory a slot has"
          + " anyway, and a worker start when it is not used: a job's first lease gets one only while at least one"
          + " in eight recent jobs came back for another lease (docs/architecture.md, standby admission). `0`: off."),
  SPECULATIVE_START("speculative-start", Type.BOOLEAN, "true", Scope.SHARED,
      "With `local-artifact-dirs` set: when a new job's staged binary is not identified yet as its lease"
          + " arrives (the lease came within about a second of staging), and cached content has its size and"
          + " first and last 64 KiB, an idle slot whose wrapper holds that content starts the worker from it at"
          + " once, while the staged file is compared with it byte for byte. The worker's control and logging"
          + " streams are held at the recycler: it gets the lease only if the content is equal, and is stopped"
          + " unused, never having received an instruction, if not. `false`: a worker is started only once its"
          + " content is verified."),
  CACHE_MAX_SIZE("cache-max-size", Type.SIZE, "2 gb", Scope.SHARED,
      "Upper bound of the artifact cache, memory and disk together; least recently used content is evicted beyond"
          + " it.", "cache-max-bytes"),
  MEMORY_BLOB_MAX_SIZE("memory-blob-max-size", Type.SIZE, "8 mb", Scope.SHARED,
      "Artifacts up to this size (and 1/32 of the heap) stay in memory, in total at most 8 times this size and a"
          + " quarter of the heap; larger ones, and the rest, go to `cache-dir`.", "memory-blob-max-bytes"),
  WORKER_STALL_TIMEOUT("worker-stall-timeout", Type.DURATION, "60 s", Scope.SHARED,
      "How long a worker may leave the runner's instructions unread (its control stream not ready for more) before"
          + " its lease ends as lost, the worker is stopped and the runner's bundle fails instead of waiting."),
  LEASE_WAIT_TIMEOUT("lease-wait-timeout", Type.DURATION, "60 s", Scope.SHARED,
      "Longest a StartWorker call waits for a free slot before it fails with RESOURCE_EXHAUSTED."),
  READY_TIMEOUT("ready-timeout", Type.DURATION, "120 s", Scope.SHARED,
      "Longest from leasing a slot to the inner worker's control connection before StartWorker fails (covers"
          + " provisioning, the artifact download and the worker's start)."),
  DRAIN_TIMEOUT("drain-timeout", Type.DURATION, "60 s", Scope.SHARED,
      "After an exit instruction, how long to wait for the wrapper to report the lease ended before re-sending it"
          + " and warning."),
  ATTACH_PROBE_TIMEOUT("attach-probe-timeout", Type.DURATION, "2 s", Scope.SHARED,
      "How long the current holder of a slot has to answer a ping when another wrapper claims the same slot id."),
  FAILURE_BACKOFF_BASE("failure-backoff-base", Type.DURATION, "1 s", Scope.SHARED,
      "First back-off of a slot whose lease failed before its worker was ready; doubles per consecutive failure.",
      "failure-backoff"),
  FAILURE_BACKOFF_MAX("failure-backoff-max", Type.DURATION, "60 s", Scope.SHARED, "Cap of that back-off."),
  UPSTREAM_CALL_TIMEOUT("upstream-call-timeout", Type.DURATION, "30 s", Scope.SHARED,
      "Deadline of unary calls to the Beam runner (provision info, artifact resolution).", "upstream-timeout"),
  ARTIFACT_FETCH_TIMEOUT("artifact-fetch-timeout", Type.DURATION, "10 min", Scope.SHARED,
      "Deadline of one artifact download from the Beam runner."),
  SHUTDOWN_TIMEOUT("shutdown-timeout", Type.DURATION, "30 s", Scope.SHARED,
      "On SIGTERM: how long to wait for the wrappers to report their leases ended after the exit instructions"
          + " before the port closes anyway."),
  ADMIN_PORT("admin-port", Type.INT, "-1", Scope.SHARED,
      "Port of the admin HTTP endpoint on the bind host: `/metrics` (Prometheus text), `/slots` (slot table, JSON),"
          + " `/healthz` (live), `/readyz` (ready). `-1` disables it, `0` picks a free port."),
  LEASE_HISTORY_SIZE("lease-history-size", Type.INT, "1000", Scope.SHARED,
      "How many ended leases the slot table (`RecyclerAdmin/GetSlotTable`, `/slots`) keeps."),
  ATTACH_SECRET_FILE("attach-secret-file", Type.STRING, null, Scope.SHARED,
      "File holding the shared secret every go-boot-wrapper must present to attach (the wrappers'"
          + " `--attach_secret_file`), e.g. a mounted Kubernetes Secret. Unset: any local process may attach (a WARN"
          + " says so). See docs/security.md."),
  MAX_INBOUND_MESSAGE_SIZE("max-inbound-message-size", Type.SIZE, "64 mb", Scope.SHARED,
      "Largest gRPC message the fixed port accepts (from wrappers, inner workers and the runner's StartWorker).",
      "max-inbound-message-bytes"),
  MAX_WAITING_STARTS("max-waiting-starts", Type.INT, "256", Scope.SHARED,
      "Most StartWorker calls that may wait for a free slot at once; more fail at once with RESOURCE_EXHAUSTED"
          + " naming this option."),
  LOG_FORMAT("log-format", Type.CHOICE, "text", Scope.SIDECAR,
      "`text`: one line per event, `<UTC timestamp> <LEVEL> [<thread>] <logger>: <message>`; `json`: one JSON"
          + " object per line (`time`, `level`, `thread`, `logger`, `message`, `error`).", List.of("text", "json")),
  LOG_LEVEL("log-level", Type.CHOICE, "info", Scope.SIDECAR,
      "Least severe level logged: `error`, `warn`, `info` or `debug`.", List.of("error", "warn", "info", "debug"));

  /** The kind of value, which decides how it is parsed. */
  public enum Type {
    INT, STRING, LIST, DURATION, SIZE, CHOICE, BOOLEAN
  }

  /** Where an option exists. */
  public enum Scope {
    /** The sidecar and the Flink plugin (as {@code external-resource.<name>.param.<key>}). */
    SHARED,
    /** Only the standalone sidecar. */
    SIDECAR
  }

  private final String key;
  private final Type type;
  private final String defaultValue;
  private final Scope scope;
  private final String description;
  private final List<String> aliases;
  private final List<String> choices;

  RecyclerOption(String key, Type type, String defaultValue, Scope scope, String description, String... aliases) {
    this(key, type, defaultValue, scope, description, List.of(), aliases);
  }

  RecyclerOption(String key, Type type, String defaultValue, Scope scope, String description, List<String> choices,
      String... aliases) {
    this.key = key;
    this.type = type;
    this.defaultValue = defaultValue;
    this.scope = scope;
    this.description = description;
    this.aliases = List.of(aliases);
    this.choices = choices;
  }

  /** Lowercase hyphenated key, e.g. {@code lease-wait-timeout}; the Flink key under {@code ...param.}. */
  public String key() {
    return key;
  }

  public Type type() {
    return type;
  }

  public Scope scope() {
    return scope;
  }

  /** The default as text in the documented syntax ({@code 60 s}, {@code 2 gb}), or null when it is derived. */
  public String defaultValue() {
    return defaultValue;
  }

  /** The meaning, in Markdown (backticks for literals). */
  public String description() {
    return description;
  }

  /** The allowed values of a {@link Type#CHOICE}; empty otherwise. */
  public List<String> choices() {
    return choices;
  }

  /** {@code --<key>}. */
  public String flag() {
    return "--" + key;
  }

  /** {@code RECYCLER_<KEY>}, e.g. {@code RECYCLER_LEASE_WAIT_TIMEOUT}. */
  public String envVar() {
    return envVar(key);
  }

  /** Old spellings still accepted, as keys (e.g. {@code bind} for {@code bind-host}). */
  public List<String> aliases() {
    return aliases;
  }

  static String envVar(String key) {
    return "RECYCLER_" + key.toUpperCase(Locale.ROOT).replace('-', '_');
  }

  /**
   * Parses and checks the type of {@code raw}; {@code source} (a flag or variable name) starts the error message.
   *
   * @return an Integer, String, List of String, Duration, Long (bytes) or Boolean
   * @throws IllegalArgumentException that names {@code source}, the value and the expected form
   */
  public Object parse(String source, String raw) {
    String v = raw.trim();
    return switch (type) {
      case INT -> {
        try {
          yield Integer.parseInt(v);
        } catch (NumberFormatException e) {
          throw new IllegalArgumentException(source + " must be a whole number, got '" + raw + "'");
        }
      }
      case STRING -> {
        if (v.isEmpty()) {
          throw new IllegalArgumentException(source + " must not be empty");
        }
        yield v;
      }
      case LIST -> List.of(v.split("\\s*[,;]\\s*"));
      case DURATION -> Values.duration(source, v);
      case SIZE -> Values.bytes(source, v);
      case CHOICE -> {
        String lower = v.toLowerCase(Locale.ROOT);
        if (!choices.contains(lower)) {
          throw new IllegalArgumentException(source + " must be one of " + String.join(", ", choices) + ", got '"
              + raw + "'");
        }
        yield lower;
      }
      case BOOLEAN -> switch (v.toLowerCase(Locale.ROOT)) {
        case "true" -> Boolean.TRUE;
        case "false" -> Boolean.FALSE;
        default -> throw new IllegalArgumentException(source + " must be true or false, got '" + raw + "'");
      };
    };
  }

  /** Parses a duration as {@link Type#DURATION} options do; the message of a bad value starts with {@code source}. */
  public static Duration parseDuration(String source, String value) {
    return Values.duration(source, value.trim());
  }

  /** The default, parsed; null when the option has no plain default. */
  public Object parsedDefault() {
    return defaultValue == null ? null : parse(key, defaultValue);
  }

  /** What {@code --help} prints: one entry per option with its flag, variable, aliases, default and meaning. */
  public static String usage() {
    StringBuilder b = new StringBuilder("usage: java -jar recycler-core.jar [flags]\n"
        + "       java -jar recycler-core.jar slots --admin HOST:PORT [--json]   (print a running recycler's slots)\n\n"
        + "Every flag can also be set by its environment variable; a flag wins over the variable.\n\n");
    for (RecyclerOption o : values()) {
      b.append("  ").append(o.flag()).append(" ").append(o.placeholder()).append("   (").append(o.envVar())
          .append(")\n");
      b.append(wrap(plain(o.description()) + " Default: " + plain(o.defaultText()) + "."
          + (o.aliases.isEmpty() ? "" : " Old spelling: " + o.aliasText() + "."), 6, 112));
    }
    b.append("  --help\n      Print this help.\n\n");
    b.append("Durations: 500ms, 30s, 30 s, 5 min, 1h or ISO-8601 (PT30S). Sizes: bytes, or 512kb, 8 mb, 2gb.");
    return b.toString();
  }

  /** The reference table of docs/operations.md: flag, environment variable, default, meaning. */
  public static String markdownReference() {
    StringBuilder b = new StringBuilder("| flag | environment variable | default | meaning |\n|---|---|---|---|\n");
    for (RecyclerOption o : values()) {
      b.append("| `").append(o.flag()).append("`");
      o.aliases.forEach(a -> b.append(" (old: `--").append(a).append("`)"));
      b.append(" | `").append(o.envVar()).append("`");
      o.aliases.forEach(a -> b.append(" (old: `").append(envVar(a)).append("`)"));
      b.append(" | ").append(o.defaultValue == null ? o.defaultText() : "`" + o.defaultValue + "`")
          .append(" | ").append(o.description()).append(o.scope == Scope.SIDECAR ? " Sidecar only." : "")
          .append(" |\n");
    }
    return b.toString();
  }

  private String defaultText() {
    if (defaultValue != null) {
      return defaultValue;
    }
    return switch (this) {
      case SLOT_IDS -> "none";
      case ADVERTISE_HOST -> "the bind host, or `127.0.0.1` for a wildcard bind";
      case CACHE_DIR -> "`<java.io.tmpdir>/recycler-cache-<port>`";
      default -> "none";
    };
  }

  private String aliasText() {
    StringBuilder b = new StringBuilder();
    for (String a : aliases) {
      b.append(b.length() == 0 ? "" : ", ").append("--").append(a).append(" / ").append(envVar(a));
    }
    return b.toString();
  }

  private String placeholder() {
    return switch (type) {
      case INT -> "N";
      case STRING -> key.endsWith("host") ? "HOST" : key.endsWith("dir") ? "DIR" : "TEXT";
      case LIST -> "ID,ID,...";
      case DURATION -> "DURATION";
      case SIZE -> "SIZE";
      case CHOICE -> String.join("|", choices);
      case BOOLEAN -> "true|false";
    };
  }

  private static String plain(String markdown) {
    return markdown.replace("`", "");
  }

  private static String wrap(String text, int indent, int width) {
    StringBuilder out = new StringBuilder();
    StringBuilder line = new StringBuilder(" ".repeat(indent));
    for (String word : text.split(" ")) {
      if (line.length() + word.length() + 1 > width && line.length() > indent) {
        out.append(line.toString().stripTrailing()).append('\n');
        line = new StringBuilder(" ".repeat(indent));
      }
      line.append(word).append(' ');
    }
    return out.append(line.toString().stripTrailing()).append('\n').toString();
  }

  /** Parsers for durations and sizes, in the syntax Flink's configuration uses plus the sidecar's old short forms. */
  static final class Values {
    private Values() {}

    static Duration duration(String source, String v) {
      String s = v.toLowerCase(Locale.ROOT);
      if (s.startsWith("p")) {
        try {
          return positiveOrZero(source, Duration.parse(v.toUpperCase(Locale.ROOT)), v);
        } catch (java.time.format.DateTimeParseException e) {
          throw durationError(source, v);
        }
      }
      int i = 0;
      while (i < s.length() && Character.isDigit(s.charAt(i))) {
        i++;
      }
      String unit = s.substring(i).trim();
      if (unit.isEmpty() && i > 0 && s.chars().allMatch(c -> c == '0')) {
        return Duration.ZERO; // zero needs no unit ("0": off, for the options that allow it)
      }
      if (i == 0 || unit.isEmpty()) {
        throw durationError(source, v);
      }
      long n;
      try {
        n = Long.parseLong(s.substring(0, i));
      } catch (NumberFormatException e) {
        throw durationError(source, v);
      }
      return switch (unit) {
        case "ms", "milli", "millis", "millisecond", "milliseconds" -> Duration.ofMillis(n);
        case "s", "sec", "secs", "second", "seconds" -> Duration.ofSeconds(n);
        case "m", "min", "mins", "minute", "minutes" -> Duration.ofMinutes(n);
        case "h", "hour", "hours" -> Duration.ofHours(n);
        case "d", "day", "days" -> Duration.ofDays(n);
        default -> throw durationError(source, v);
      };
    }

    private static Duration positiveOrZero(String source, Duration d, String v) {
      if (d.isNegative()) {
        throw durationError(source, v);
      }
      return d;
    }

    private static IllegalArgumentException durationError(String source, String v) {
      return new IllegalArgumentException(source + " must be a duration such as 500ms, 30s, 30 s, 5 min or PT30S"
          + " (a number needs a unit), got '" + v + "'");
    }

    static long bytes(String source, String v) {
      String s = v.toLowerCase(Locale.ROOT);
      int i = 0;
      while (i < s.length() && Character.isDigit(s.charAt(i))) {
        i++;
      }
      String unit = s.substring(i).trim();
      if (i == 0) {
        throw sizeError(source, v);
      }
      long shift = switch (unit) {
        case "", "b", "bytes" -> 0;
        case "k", "kb", "kibibytes" -> 10;
        case "m", "mb", "mebibytes" -> 20;
        case "g", "gb", "gibibytes" -> 30;
        case "t", "tb", "tebibytes" -> 40;
        default -> throw sizeError(source, v);
      };
      try {
        long n = Long.parseLong(s.substring(0, i));
        if (shift > 0 && n > (Long.MAX_VALUE >> shift)) {
          throw sizeError(source, v);
        }
        return n << shift;
      } catch (NumberFormatException e) {
        throw sizeError(source, v);
      }
    }

    private static IllegalArgumentException sizeError(String source, String v) {
      return new IllegalArgumentException(source + " must be a size in bytes such as 1048576, 512kb, 8 mb or 2gb,"
          + " got '" + v + "'");
    }
  }
}
