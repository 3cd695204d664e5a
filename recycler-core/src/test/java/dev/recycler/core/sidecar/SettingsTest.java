package dev.recycler.core.sidecar;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.options.RecyclerOption;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 10, unit = TimeUnit.SECONDS)
class SettingsTest {
  private static RecyclerConfig parse(String... args) {
    return Settings.resolve(args, Map.of()).toConfig();
  }

  private static RecyclerConfig parse(Map<String, String> env, String... args) {
    return Settings.resolve(args, env).toConfig();
  }

  @Test
  void flagsMapToTheConfig() {
    RecyclerConfig c = parse("--port", "0", "--slots=2", "--slot-id-prefix", "h", "--ready-timeout", "90s",
        "--lease-wait-timeout", "PT5M", "--drain-timeout", "500ms", "--admin-port", "0", "--cache-dir", "/tmp/x",
        "--attach-probe-timeout", "3 s", "--lease-history-size", "7", "--cache-max-size", "1gb",
        "--memory-blob-max-size", "4 mb", "--artifact-fetch-timeout", "2 min");

    assertThat(c.port()).isZero();
    assertThat(c.slotIds()).containsExactly("h0", "h1");
    assertThat(c.readyTimeout()).isEqualTo(Duration.ofSeconds(90));
    assertThat(c.leaseWaitTimeout()).isEqualTo(Duration.ofMinutes(5));
    assertThat(c.drainTimeout()).isEqualTo(Duration.ofMillis(500));
    assertThat(c.adminPort()).isZero();
    assertThat(c.cacheDirectory()).hasToString("/tmp/x");
    assertThat(c.attachProbeTimeout()).isEqualTo(Duration.ofSeconds(3));
    assertThat(c.leaseHistorySize()).isEqualTo(7);
    assertThat(c.cacheMaxBytes()).isEqualTo(1L << 30);
    assertThat(c.memoryBlobMaxBytes()).isEqualTo(4L << 20);
    assertThat(c.artifactFetchTimeout()).isEqualTo(Duration.ofMinutes(2));
  }

  @Test
  void oldFlagSpellingsStillWork() {
    // The spellings before the option table (the benchmark and existing deployments use them).
    RecyclerConfig c = parse("--bind", "0.0.0.0", "--slot-prefix", "h", "--slots", "1", "--cache-max-bytes",
        "1048576000", "--memory-blob-max-bytes", "1024", "--upstream-timeout", "5s", "--failure-backoff", "2s");

    assertThat(c.bindHost()).isEqualTo("0.0.0.0");
    assertThat(c.slotIds()).containsExactly("h0");
    assertThat(c.cacheMaxBytes()).isEqualTo(1_048_576_000L);
    assertThat(c.memoryBlobMaxBytes()).isEqualTo(1024);
    assertThat(c.upstreamCallTimeout()).isEqualTo(Duration.ofSeconds(5));
    assertThat(c.failureBackoffBase()).isEqualTo(Duration.ofSeconds(2));
    assertThat(c.failureBackoffMax()).isEqualTo(Duration.ofSeconds(60));
  }

  @Test
  void environmentVariablesSetEveryOptionAndFlagsWin() {
    RecyclerConfig c = parse(Map.of("RECYCLER_PORT", "51000", "RECYCLER_SLOTS", "3", "RECYCLER_ADMIN_PORT", "9464",
        "RECYCLER_BIND", "0.0.0.0", "RECYCLER_READY_TIMEOUT", "30s", "PATH", "/bin"), "--port", "52000");

    assertThat(c.port()).as("flag wins").isEqualTo(52000);
    assertThat(c.slotIds()).containsExactly("slot-0", "slot-1", "slot-2");
    assertThat(c.adminPort()).isEqualTo(9464);
    assertThat(c.bindHost()).isEqualTo("0.0.0.0");
    assertThat(c.readyTimeout()).isEqualTo(Duration.ofSeconds(30));
    assertThat(c.cacheDirectory()).as("default follows the flag's port")
        .isEqualTo(Path.of(System.getProperty("java.io.tmpdir"), "recycler-cache-52000"));

    // A --slot-ids flag overrides RECYCLER_SLOTS rather than colliding with it.
    assertThat(parse(Map.of("RECYCLER_SLOTS", "3"), "--slot-ids", "a;b").slotIds()).containsExactly("a", "b");
    assertThat(Settings.resolve(new String[0], Map.of("RECYCLER_LOG_FORMAT", "JSON")).logFormat()).isEqualTo("json");
  }

  @Test
  void everyOptionHasAVariableThatReachesIt() {
    for (RecyclerOption o : RecyclerOption.values()) {
      String value = switch (o.type()) {
        case INT -> "7";
        case STRING -> "h";
        case LIST -> "a,b";
        case DURATION -> "7s";
        case SIZE -> "7mb";
        case CHOICE -> o.choices().get(0);
        case BOOLEAN -> "false";
      };
      Settings s = Settings.resolve(new String[0], Map.of(o.envVar(), value));
      assertThat(s.get(o)).as("%s via %s", o.key(), o.envVar()).isEqualTo(o.parse(o.envVar(), value));
      assertThat(s.origins()).isEqualTo(o.key() + "=" + o.envVar());
      assertThat(RecyclerOption.usage()).contains(o.flag(), o.envVar());
    }
  }

  @Test
  void defaultsAreTheCoreDefaults() {
    RecyclerConfig fromTable = parse();
    RecyclerConfig core = RecyclerConfig.builder().slots(1, "slot-").build();
    assertThat(fromTable.port()).isEqualTo(core.port());
    assertThat(fromTable.slotIds()).isEqualTo(core.slotIds());
    assertThat(fromTable.bindHost()).isEqualTo(core.bindHost());
    assertThat(fromTable.advertiseHost()).isEqualTo(core.advertiseHost());
    assertThat(fromTable.cacheMaxBytes()).isEqualTo(core.cacheMaxBytes());
    assertThat(fromTable.memoryBlobMaxBytes()).isEqualTo(core.memoryBlobMaxBytes());
    assertThat(fromTable.leaseWaitTimeout()).isEqualTo(core.leaseWaitTimeout());
    assertThat(fromTable.readyTimeout()).isEqualTo(core.readyTimeout());
    assertThat(fromTable.drainTimeout()).isEqualTo(core.drainTimeout());
    assertThat(fromTable.attachProbeTimeout()).isEqualTo(core.attachProbeTimeout());
    assertThat(fromTable.failureBackoffBase()).isEqualTo(core.failureBackoffBase());
    assertThat(fromTable.failureBackoffMax()).isEqualTo(core.failureBackoffMax());
    assertThat(fromTable.upstreamCallTimeout()).isEqualTo(core.upstreamCallTimeout());
    assertThat(fromTable.artifactFetchTimeout()).isEqualTo(core.artifactFetchTimeout());
    assertThat(fromTable.shutdownTimeout()).isEqualTo(core.shutdownTimeout());
    assertThat(fromTable.adminPort()).isEqualTo(core.adminPort());
    assertThat(fromTable.leaseHistorySize()).isEqualTo(core.leaseHistorySize());
  }

  @Test
  void securityBoundsAndArtifactFlags() {
    RecyclerConfig c = parse("--attach-secret-file", "/etc/recycler/attach-secret", "--max-inbound-message-bytes",
        "16777216", "--max-waiting-starts=8", "--local-artifact-dirs", "/beam/artifacts;/mnt/staging",
        "--worker-stall-timeout", "5s");

    assertThat(c.attachSecretFile()).hasToString("/etc/recycler/attach-secret");
    assertThat(c.maxInboundMessageBytes()).isEqualTo(16 << 20);
    assertThat(c.maxWaitingStarts()).isEqualTo(8);
    assertThat(c.localArtifactDirectories()).extracting(Object::toString)
        .containsExactly("/beam/artifacts", "/mnt/staging");
    assertThat(c.workerStallTimeout()).hasSeconds(5);
    assertThat(parse().attachSecretFile()).isNull();
    assertThat(parse().localArtifactDirectories()).isEmpty();
    assertThatThrownBy(() -> parse("--max-waiting-starts", "0")).hasMessageContaining("--max-waiting-starts")
        .hasMessageContaining("max waiting starts");
    assertThatThrownBy(() -> parse("--local-artifact-dirs", "relative/dir"))
        .hasMessageContaining("--local-artifact-dirs").hasMessageContaining("absolute");
  }

  @Test
  void explicitSlotIds() {
    assertThat(parse("--slot-ids", "a, b,c").slotIds()).containsExactly("a", "b", "c");
    assertThat(parse("--slot-ids", "a;b").slotIds()).containsExactly("a", "b");
  }

  @Test
  void zeroNeedsNoUnitAndTurnsStandbysOff() {
    assertThat(parse().standbyTtl()).isEqualTo(java.time.Duration.ofMinutes(5));
    assertThat(parse("--standby-ttl", "0").standbyTtl()).isZero();
    assertThat(parse(Map.of("RECYCLER_STANDBY_TTL", "90s")).standbyTtl()).isEqualTo(java.time.Duration.ofSeconds(90));
    assertThatThrownBy(() -> parse("--ready-timeout", "0")).hasMessageContaining("ready timeout");
  }

  @Test
  void badSettingsSayWhatToFix() {
    assertThatThrownBy(() -> parse("--nope")).hasMessageContaining("unknown flag --nope");
    assertThatThrownBy(() -> parse("--port")).hasMessageContaining("--port needs a value");
    assertThatThrownBy(() -> parse("--ready-timeout", "soon")).hasMessageContaining("such as 500ms");
    assertThatThrownBy(() -> parse("--ready-timeout", "30")).hasMessageContaining("a number needs a unit");
    assertThatThrownBy(() -> parse("--slots", "2", "--slot-ids", "a")).hasMessageContaining("either --slots");
    assertThatThrownBy(() -> parse("--bind", "a", "--bind-host", "b"))
        .hasMessageContaining("--bind-host and --bind both set bind-host");
    assertThatThrownBy(() -> parse(Map.of("RECYCLER_PORT", "x"))).hasMessage("RECYCLER_PORT must be a whole number,"
        + " got 'x'");
    assertThatThrownBy(() -> parse(Map.of("RECYCLER_SLOTS", "0"))).hasMessageStartingWith("RECYCLER_SLOTS: slot count");
    assertThatThrownBy(() -> parse("--cache-max-size", "2 parsecs")).hasMessageContaining("512kb, 8 mb or 2gb");
    assertThatThrownBy(() -> parse("--log-format", "xml")).hasMessageContaining("one of text, json");
    assertThat(Settings.resolve(new String[0], Map.of("RECYCLER_SLOT", "4")).warnings())
        .containsExactly("ignoring unknown environment variable RECYCLER_SLOT (not a recycler option; see --help)");
  }
}
