package dev.recycler.flink;

import java.time.Duration;
import java.util.List;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.MemorySize;

/**
 * Options of the recycler inside a Flink TaskManager.
 *
 * <p>Flink hands an external resource driver only the keys under {@code external-resource.<name>.param.}, with that
 * prefix removed, so every key here is written in the Flink configuration as {@code
 * external-resource.<name>.param.<key>} (for example {@code external-resource.recycler.param.port: 50000}). The number
 * of slots is not an option of this class: it is Flink's own {@code external-resource.<name>.amount}.
 *
 * <p>{@link FlinkRecyclerConfig} maps these options to the core {@code RecyclerConfig}; the defaults here equal the
 * core defaults (checked by {@code FlinkRecyclerConfigTest}). The keys and defaults are those of recycler-core's option
 * table, {@code dev.recycler.core.options.RecyclerOption}, which also drives the sidecar's flags (checked by {@code
 * OptionTableAgreementTest}). The configuration reference in {@code docs/flink.md} lists the same keys.
 */
public final class RecyclerOptions {

  public static final ConfigOption<Integer> PORT =
      ConfigOptions.key("port")
          .intType()
          .defaultValue(50000)
          .withDescription("The fixed gRPC port of the recycler: the Beam runner's worker pool, the wrappers' attach,"
              + " provision and artifact services and the inner workers' control proxy. Pipelines use"
              + " --environment_config=localhost:<port>. Must be free on every TaskManager host (pod).");

  public static final ConfigOption<String> BIND_HOST =
      ConfigOptions.key("bind-host")
          .stringType()
          .defaultValue("127.0.0.1")
          .withDescription("Address the fixed port binds to. Loopback suffices when the harness containers share the"
              + " TaskManager's network namespace (sidecars in the same pod); 0.0.0.0 to serve other hosts.");

  public static final ConfigOption<String> ADVERTISE_HOST =
      ConfigOptions.key("advertise-host")
          .stringType()
          .noDefaultValue()
          .withDescription("Host the wrappers and inner workers dial for the recycler's services. Default: the bind"
              + " host, or 127.0.0.1 when binding to a wildcard address.");

  public static final ConfigOption<String> SLOT_ID_PREFIX =
      ConfigOptions.key("slot-id-prefix")
          .stringType()
          .defaultValue("slot-")
          .withDescription("Slots are named <prefix>0 ... <prefix>(amount-1); each go-boot-wrapper is started with"
              + " --slot <id>. Ignored when slot-ids is set.");

  public static final ConfigOption<List<String>> SLOT_IDS =
      ConfigOptions.key("slot-ids")
          .stringType()
          .asList()
          .noDefaultValue()
          .withDescription("Explicit slot ids, separated by ';' (for example a;b). Their number must equal"
              + " external-resource.<name>.amount.");

  public static final ConfigOption<String> CACHE_DIR =
      ConfigOptions.key("cache-dir")
          .stringType()
          .noDefaultValue()
          .withDescription("Directory for artifacts too large to keep in memory (worker binaries). Default:"
              + " <java.io.tmpdir>/recycler-cache-<port>.");

  public static final ConfigOption<List<String>> LOCAL_ARTIFACT_DIRS =
      ConfigOptions.key("local-artifact-dirs")
          .stringType()
          .asList()
          .noDefaultValue()
          .withDescription("Absolute directories, separated by ';', whose staged files the recycler reads in place:"
              + " the Beam job server's --artifacts-dir, which the TaskManager mounts anyway (Beam's own artifact"
              + " service reads each job's files from there). A job's worker binary under one of them is identified"
              + " from disk (compared byte for byte with cached content of its size and first and last 64 KiB, else"
              + " hashed) instead of streaming it through the runner's gRPC service and the TaskManager heap. Unset:"
              + " every artifact is streamed.");

  public static final ConfigOption<Boolean> HASH_AT_STAGING =
      ConfigOptions.key("hash-at-staging")
          .booleanType()
          .defaultValue(true)
          .withDescription("With local-artifact-dirs set: watch those directories (inotify) and identify each file"
              + " the job server stages there (compared with cached content whose size and ends it has, else hashed)"
              + " in the background, once it has been quiet for 1 s, so that a new job's first lease finds its"
              + " binary's digest ready instead of reading it on the lease's path. A file changed after that is read"
              + " again (or at lease time), never trusted stale. false: at lease time only. No effect without"
              + " local-artifact-dirs.");

  public static final ConfigOption<Integer> PREFETCH_SLOTS =
      ConfigOptions.key("prefetch-slots")
          .intType()
          .defaultValue(-1)
          .withDescription("With hash-at-staging: when the job server stages a worker binary (an ELF file) that idle"
              + " slots' wrappers lack, the recycler copies it into its cache and asks up to this many of those"
              + " wrappers to fetch it right away, in the seconds before the job's first StartWorker, so that the"
              + " lease finds it there instead of downloading it. -1: every such idle slot; 0: off. Costs one copy"
              + " of the binary per asked wrapper (each wrapper's cache stays bounded by its own limit); every"
              + " TaskManager that mounts the job server's directory does this for every new binary, also those"
              + " whose jobs it will not run: on large clusters 1 bounds the cost to one copy per TaskManager.");

  public static final ConfigOption<Duration> WORKER_STALL_TIMEOUT =
      ConfigOptions.key("worker-stall-timeout")
          .durationType()
          .defaultValue(Duration.ofSeconds(60))
          .withDescription("How long a worker may leave the runner's instructions unread (its control stream not"
              + " ready for more) before its lease ends as lost, the worker is stopped and the runner's bundle fails"
              + " instead of waiting.");

  public static final ConfigOption<Duration> STANDBY_TTL =
      ConfigOptions.key("standby-ttl")
          .durationType()
          .defaultValue(Duration.ofMinutes(5))
          .withDescription("When a lease ends normally, its slot's wrapper starts the same job's worker again at once"
              + " (a standby), so that the job's next environment on this TaskManager gets a worker that is already"
              + " running: the runner sees nothing of a standby until a StartWorker whose provision info and"
              + " artifacts are identical to its lease's adopts it. A standby nobody adopts is stopped after this"
              + " long (and whenever its slot is needed for another job). Costs one idle worker process per free"
              + " slot, within the memory a slot has anyway, and a worker start when it is not used: a job's first"
              + " lease gets one only while at least one in eight recent jobs came back for another lease"
              + " (docs/architecture.md, standby admission). 0: off.");

  public static final ConfigOption<Boolean> SPECULATIVE_START =
      ConfigOptions.key("speculative-start")
          .booleanType()
          .defaultValue(true)
          .withDescription("With local-artifact-dirs set: when a new job's staged binary is not identified yet as"
              + " its lease arrives (the lease came within about a second of staging), and cached content has its"
              + " size and first and last 64 KiB, an idle slot whose wrapper holds that content starts the worker"
              + " from it at once, while the staged file is compared with it byte for byte. The worker's control"
              + " and logging streams are held at the recycler: it gets the lease only if the content is equal, and"
              + " is stopped unused, never having received an instruction, if not. false: a worker is started only"
              + " once its content is verified.");

  public static final ConfigOption<MemorySize> CACHE_MAX_SIZE =
      ConfigOptions.key("cache-max-size")
          .memoryType()
          .defaultValue(MemorySize.parse("2gb"))
          .withDescription("Upper bound of the artifact cache (memory and disk together); least recently used content"
              + " is evicted beyond it.");

  public static final ConfigOption<MemorySize> MEMORY_BLOB_MAX_SIZE =
      ConfigOptions.key("memory-blob-max-size")
          .memoryType()
          .defaultValue(MemorySize.parse("8mb"))
          .withDescription("Artifacts up to this size (and 1/32 of the heap) stay in the TaskManager's heap, in total"
              + " at most 8 times this size and a quarter of the heap; larger ones, and the rest, go to cache-dir.");

  public static final ConfigOption<Duration> LEASE_WAIT_TIMEOUT =
      ConfigOptions.key("lease-wait-timeout")
          .durationType()
          .defaultValue(Duration.ofSeconds(60))
          .withDescription("Longest a StartWorker call waits for a free slot before it fails with"
              + " RESOURCE_EXHAUSTED.");

  public static final ConfigOption<Duration> READY_TIMEOUT =
      ConfigOptions.key("ready-timeout")
          .durationType()
          .defaultValue(Duration.ofSeconds(120))
          .withDescription("Longest from leasing a slot to the inner worker's control connection before the"
              + " StartWorker call fails (covers provisioning, the artifact download and the worker's start).");

  public static final ConfigOption<Duration> DRAIN_TIMEOUT =
      ConfigOptions.key("drain-timeout")
          .durationType()
          .defaultValue(Duration.ofSeconds(60))
          .withDescription("After an exit instruction, how long to wait for the wrapper to report the lease ended"
              + " before re-sending it and warning.");

  public static final ConfigOption<Duration> ATTACH_PROBE_TIMEOUT =
      ConfigOptions.key("attach-probe-timeout")
          .durationType()
          .defaultValue(Duration.ofSeconds(2))
          .withDescription("How long the current holder of a slot has to answer a ping when another wrapper claims"
              + " the same slot id.");

  public static final ConfigOption<Duration> FAILURE_BACKOFF_BASE =
      ConfigOptions.key("failure-backoff-base")
          .durationType()
          .defaultValue(Duration.ofSeconds(1))
          .withDescription("First back-off of a slot whose lease failed before its worker was ready; doubles per"
              + " consecutive failure.");

  public static final ConfigOption<Duration> FAILURE_BACKOFF_MAX =
      ConfigOptions.key("failure-backoff-max")
          .durationType()
          .defaultValue(Duration.ofSeconds(60))
          .withDescription("Cap of the failure back-off.");

  public static final ConfigOption<Duration> UPSTREAM_CALL_TIMEOUT =
      ConfigOptions.key("upstream-call-timeout")
          .durationType()
          .defaultValue(Duration.ofSeconds(30))
          .withDescription("Deadline of unary calls to the Beam runner (provision info, artifact resolution).");

  public static final ConfigOption<Duration> ARTIFACT_FETCH_TIMEOUT =
      ConfigOptions.key("artifact-fetch-timeout")
          .durationType()
          .defaultValue(Duration.ofMinutes(10))
          .withDescription("Deadline of one artifact download from the Beam runner.");

  public static final ConfigOption<Duration> SHUTDOWN_TIMEOUT =
      ConfigOptions.key("shutdown-timeout")
          .durationType()
          .defaultValue(Duration.ofSeconds(30))
          .withDescription("When the TaskManager stops: how long to wait for the wrappers to report their leases"
              + " ended after the exit instructions before the server closes anyway.");

  public static final ConfigOption<Integer> ADMIN_PORT =
      ConfigOptions.key("admin-port")
          .intType()
          .defaultValue(-1)
          .withDescription("Port of the admin HTTP endpoint on the bind host: GET /metrics (Prometheus text of the"
              + " recycler's meters), /slots (the slot table as JSON), /healthz (liveness), /readyz (readiness: a"
              + " slot is attached). -1 disables it, 0 picks a free port (reported as the admin-endpoint property).");

  public static final ConfigOption<Integer> LEASE_HISTORY_SIZE =
      ConfigOptions.key("lease-history-size")
          .intType()
          .defaultValue(1000)
          .withDescription("How many ended leases the slot table (RecyclerAdmin/GetSlotTable, /slots) keeps.");

  public static final ConfigOption<String> ATTACH_SECRET_FILE =
      ConfigOptions.key("attach-secret-file")
          .stringType()
          .noDefaultValue()
          .withDescription("File holding the shared secret every go-boot-wrapper must present to attach (the same"
              + " secret in the wrappers' --attach_secret_file), e.g. a mounted Kubernetes Secret; read when the"
              + " TaskManager starts. Unset: any process in the pod may attach as a wrapper and receive leases (a WARN"
              + " says so). See docs/security.md.");

  public static final ConfigOption<MemorySize> MAX_INBOUND_MESSAGE_SIZE =
      ConfigOptions.key("max-inbound-message-size")
          .memoryType()
          .defaultValue(MemorySize.parse("64mb"))
          .withDescription("Largest gRPC message the fixed port accepts (from wrappers, inner workers and the"
              + " runner's StartWorker). Beam's own messages to the recycler (instruction responses) are far"
              + " smaller; process bundle descriptors go the other way and are not limited by it.");

  public static final ConfigOption<Integer> MAX_WAITING_STARTS =
      ConfigOptions.key("max-waiting-starts")
          .intType()
          .defaultValue(256)
          .withDescription("Most StartWorker calls that may wait for a free slot at once; more fail at once with"
              + " RESOURCE_EXHAUSTED naming this option.");

  public static final ConfigOption<Boolean> FAIL_TASK_MANAGER_ON_ERROR =
      ConfigOptions.key("fail-task-manager-on-error")
          .booleanType()
          .defaultValue(true)
          .withDescription("If the recycler cannot start (port in use, bad option), stop the TaskManager process"
              + " with exit code 1 instead of letting it run without a recycler (Flink would only log a WARN and"
              + " every Beam job scheduled there would fail later). Either way the TaskManager log has an ERROR"
              + " that says what to fix.");

  /** The full key of {@code option} for external resource {@code resourceName}, as written in the Flink configuration. */
  public static String paramKey(String resourceName, ConfigOption<?> option) {
    return "external-resource." + resourceName + ".param." + option.key();
  }

  private RecyclerOptions() {}
}
