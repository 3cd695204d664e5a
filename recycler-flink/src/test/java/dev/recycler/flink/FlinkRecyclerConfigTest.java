package dev.recycler.flink;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.recycler.core.api.RecyclerConfig;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.DelegatingConfiguration;
import org.apache.flink.configuration.IllegalConfigurationException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(30)
class FlinkRecyclerConfigTest {

  /**
   * What the driver holds: Flink hands the factory a view of external-resource.recycler.param.* with the prefix
   * removed, and the factory copies it.
   */
  private static Configuration params(Map<String, String> keys) {
    Configuration full = new Configuration();
    keys.forEach((k, v) -> full.setString("external-resource.recycler.param." + k, v));
    full.setString("external-resource.recycler.amount", "99"); // never seen by the driver
    full.setString("port", "1"); // outside the prefix: must not leak in
    full.setString("external-resource.other.param.port", "2"); // another resource's: must not leak in
    DelegatingConfiguration view = new DelegatingConfiguration(full, "external-resource.recycler.param.");
    RecyclerExternalResourceDriver driver = (RecyclerExternalResourceDriver)
        new RecyclerExternalResourceDriverFactory().createExternalResourceDriver(view);
    full.setString("external-resource.recycler.param.port", "3"); // later changes do not reach the driver
    return driver.params();
  }

  @Test
  void theDriverSeesItsOwnParametersOnly() {
    assertThat(params(Map.of("port", "50001", "ready-timeout", "5 s")).toMap())
        .containsOnly(Map.entry("port", "50001"), Map.entry("ready-timeout", "5 s"));
  }

  @Test
  void localArtifactDirectoriesAreASemicolonListOfAbsolutePaths() {
    RecyclerConfig none = FlinkRecyclerConfig.toRecyclerConfig(params(Map.of()), 1);
    RecyclerConfig two = FlinkRecyclerConfig.toRecyclerConfig(
        params(Map.of("local-artifact-dirs", "/beam/artifacts;/mnt/staging")), 1);

    assertThat(none.localArtifactDirectories()).isEmpty();
    assertThat(two.localArtifactDirectories()).extracting(java.nio.file.Path::toString)
        .containsExactly("/beam/artifacts", "/mnt/staging");
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> FlinkRecyclerConfig.toRecyclerConfig(
        params(Map.of("local-artifact-dirs", "relative/dir")), 1)).hasMessageContaining("local-artifact-dirs")
        .hasMessageContaining("absolute");
  }

  @Test
  void defaultsAreCoreDefaults() {
    RecyclerConfig mapped = FlinkRecyclerConfig.toRecyclerConfig(params(Map.of()), 3);
    RecyclerConfig core = RecyclerConfig.builder().slots(3, "slot-").build();

    assertThat(mapped.slotIds()).containsExactly("slot-0", "slot-1", "slot-2").isEqualTo(core.slotIds());
    assertThat(mapped.port()).isEqualTo(core.port()).isEqualTo(50000);
    assertThat(mapped.bindHost()).isEqualTo(core.bindHost());
    assertThat(mapped.advertiseHost()).isEqualTo(core.advertiseHost());
    assertThat(mapped.cacheMaxBytes()).isEqualTo(core.cacheMaxBytes());
    assertThat(mapped.memoryBlobMaxBytes()).isEqualTo(core.memoryBlobMaxBytes());
    assertThat(mapped.leaseWaitTimeout()).isEqualTo(core.leaseWaitTimeout());
    assertThat(mapped.readyTimeout()).isEqualTo(core.readyTimeout());
    assertThat(mapped.speculativeStart()).isEqualTo(core.speculativeStart()).isTrue();
    assertThat(mapped.drainTimeout()).isEqualTo(core.drainTimeout());
    assertThat(mapped.attachProbeTimeout()).isEqualTo(core.attachProbeTimeout());
    assertThat(mapped.failureBackoffBase()).isEqualTo(core.failureBackoffBase());
    assertThat(mapped.failureBackoffMax()).isEqualTo(core.failureBackoffMax());
    assertThat(mapped.upstreamCallTimeout()).isEqualTo(core.upstreamCallTimeout());
    assertThat(mapped.artifactFetchTimeout()).isEqualTo(core.artifactFetchTimeout());
    assertThat(mapped.shutdownTimeout()).isEqualTo(core.shutdownTimeout());
    assertThat(mapped.adminPort()).isEqualTo(core.adminPort());
    assertThat(mapped.leaseHistorySize()).isEqualTo(core.leaseHistorySize());
    assertThat(mapped.attachSecretFile()).isEqualTo(core.attachSecretFile()).isNull();
    assertThat(mapped.maxInboundMessageBytes()).isEqualTo(core.maxInboundMessageBytes());
    assertThat(mapped.maxWaitingStarts()).isEqualTo(core.maxWaitingStarts());
    // the one deliberate difference: inside a TaskManager large artifacts go to disk, not to the heap
    assertThat(mapped.cacheDirectory())
        .isEqualTo(Path.of(System.getProperty("java.io.tmpdir"), "recycler-cache-50000"));
  }

  @Test
  void mapsEveryOption() {
    RecyclerConfig c = FlinkRecyclerConfig.toRecyclerConfig(params(Map.ofEntries(
        Map.entry("port", "50123"),
        Map.entry("bind-host", "0.0.0.0"),
        Map.entry("advertise-host", "10.1.2.3"),
        Map.entry("slot-id-prefix", "go-"),
        Map.entry("cache-dir", "/var/cache/recycler"),
        Map.entry("cache-max-size", "512 mb"),
        Map.entry("memory-blob-max-size", "1 mb"),
        Map.entry("lease-wait-timeout", "5 s"),
        Map.entry("ready-timeout", "2 min"),
        Map.entry("drain-timeout", "7s"),
        Map.entry("attach-probe-timeout", "500 ms"),
        Map.entry("failure-backoff-base", "2 s"),
        Map.entry("failure-backoff-max", "30 s"),
        Map.entry("upstream-call-timeout", "11 s"),
        Map.entry("artifact-fetch-timeout", "3 min"),
        Map.entry("shutdown-timeout", "9 s"),
        Map.entry("admin-port", "0"),
        Map.entry("lease-history-size", "17"),
        Map.entry("attach-secret-file", "/etc/recycler/attach-secret"),
        Map.entry("max-inbound-message-size", "16 mb"),
        Map.entry("max-waiting-starts", "9"))), 2);

    assertThat(c.slotIds()).containsExactly("go-0", "go-1");
    assertThat(c.port()).isEqualTo(50123);
    assertThat(c.bindHost()).isEqualTo("0.0.0.0");
    assertThat(c.advertiseHost()).isEqualTo("10.1.2.3");
    assertThat(c.cacheDirectory()).isEqualTo(Path.of("/var/cache/recycler"));
    assertThat(c.cacheMaxBytes()).isEqualTo(512L << 20);
    assertThat(c.memoryBlobMaxBytes()).isEqualTo(1L << 20);
    assertThat(c.leaseWaitTimeout()).isEqualTo(Duration.ofSeconds(5));
    assertThat(c.readyTimeout()).isEqualTo(Duration.ofMinutes(2));
    assertThat(c.drainTimeout()).isEqualTo(Duration.ofSeconds(7));
    assertThat(c.attachProbeTimeout()).isEqualTo(Duration.ofMillis(500));
    assertThat(c.failureBackoffBase()).isEqualTo(Duration.ofSeconds(2));
    assertThat(c.failureBackoffMax()).isEqualTo(Duration.ofSeconds(30));
    assertThat(c.upstreamCallTimeout()).isEqualTo(Duration.ofSeconds(11));
    assertThat(c.artifactFetchTimeout()).isEqualTo(Duration.ofMinutes(3));
    assertThat(c.shutdownTimeout()).isEqualTo(Duration.ofSeconds(9));
    assertThat(c.adminPort()).isZero();
    assertThat(c.leaseHistorySize()).isEqualTo(17);
    assertThat(c.attachSecretFile()).isEqualTo(Path.of("/etc/recycler/attach-secret"));
    assertThat(c.maxInboundMessageBytes()).isEqualTo(16 << 20);
    assertThat(c.maxWaitingStarts()).isEqualTo(9);
  }

  @Test
  void explicitSlotIdsMustMatchTheAmount() {
    RecyclerConfig c = FlinkRecyclerConfig.toRecyclerConfig(params(Map.of("slot-ids", "a;b")), 2);
    assertThat(c.slotIds()).containsExactly("a", "b");

    assertThatThrownBy(() -> FlinkRecyclerConfig.toRecyclerConfig(params(Map.of("slot-ids", "a;b")), 3))
        .isInstanceOf(IllegalConfigurationException.class)
        .hasMessageContaining("external-resource.<name>.param.slot-ids lists 2 slot ids")
        .hasMessageContaining("external-resource.<name>.amount is 3");
  }

  @Test
  void badValuesNameTheKeyToFix() {
    assertThatThrownBy(() -> FlinkRecyclerConfig.toRecyclerConfig(params(Map.of("port", "70000")), 1))
        .isInstanceOf(IllegalConfigurationException.class)
        .hasMessageStartingWith("external-resource.<name>.param.port: ")
        .hasMessageContaining("70000");
    assertThatThrownBy(() -> FlinkRecyclerConfig.toRecyclerConfig(params(Map.of("port", "fifty")), 1))
        .isInstanceOf(IllegalConfigurationException.class)
        .hasMessageStartingWith("external-resource.<name>.param.port: ");
    assertThatThrownBy(() -> FlinkRecyclerConfig.toRecyclerConfig(params(Map.of("ready-timeout", "soon")), 1))
        .isInstanceOf(IllegalConfigurationException.class)
        .hasMessageStartingWith("external-resource.<name>.param.ready-timeout: ");
    assertThatThrownBy(() -> FlinkRecyclerConfig.toRecyclerConfig(params(Map.of("ready-timeout", "0 s")), 1))
        .isInstanceOf(IllegalConfigurationException.class)
        .hasMessageStartingWith("external-resource.<name>.param.ready-timeout: ")
        .hasMessageContaining("positive");
    assertThatThrownBy(() -> FlinkRecyclerConfig.toRecyclerConfig(params(Map.of("slot-ids", "ok;not ok")), 2))
        .isInstanceOf(IllegalConfigurationException.class)
        .hasMessageStartingWith("external-resource.<name>.param.slot-ids: ")
        .hasMessageContaining("not ok");
    assertThatThrownBy(() -> FlinkRecyclerConfig.toRecyclerConfig(params(Map.of("cache-max-size", "1 kb")), 1))
        .isInstanceOf(IllegalConfigurationException.class)
        .hasMessageStartingWith("external-resource.<name>.param.cache-max-size: ");
  }

  @Test
  void crossFieldMistakesAreReported() {
    assertThatThrownBy(() -> FlinkRecyclerConfig.toRecyclerConfig(
            params(Map.of("failure-backoff-base", "10 s", "failure-backoff-max", "1 s")), 1))
        .isInstanceOf(IllegalConfigurationException.class)
        .hasMessageContaining("failure backoff max");
    assertThatThrownBy(() -> FlinkRecyclerConfig.toRecyclerConfig(
            params(Map.of("port", "50100", "admin-port", "50100")), 1))
        .isInstanceOf(IllegalConfigurationException.class)
        .hasMessageContaining("admin port");
  }

  @Test
  void amountMustBePositive() {
    assertThatThrownBy(() -> FlinkRecyclerConfig.toRecyclerConfig(params(Map.of()), 0))
        .isInstanceOf(IllegalConfigurationException.class)
        .hasMessageContaining("external-resource.<name>.amount");
  }

  @Test
  void failFastIsTheDefaultAndSurvivesATypo() {
    assertThat(FlinkRecyclerConfig.failTaskManagerOnError(params(Map.of()))).isTrue();
    assertThat(FlinkRecyclerConfig.failTaskManagerOnError(params(Map.of("fail-task-manager-on-error", "false"))))
        .isFalse();
    assertThat(FlinkRecyclerConfig.failTaskManagerOnError(params(Map.of("fail-task-manager-on-error", "nope"))))
        .isTrue();
  }

  @Test
  void everyOptionKeyIsLowercaseDottedWithHyphens() throws IllegalAccessException {
    List<String> keys = new java.util.ArrayList<>();
    for (var f : RecyclerOptions.class.getFields()) {
      if (f.get(null) instanceof org.apache.flink.configuration.ConfigOption<?> o) {
        keys.add(o.key());
        assertThat(o.description().getBlocks()).as(o.key()).isNotEmpty();
      }
    }
    assertThat(keys).hasSize(29).allMatch(k -> k.matches("[a-z0-9]+(-[a-z0-9]+)*(\\.[a-z0-9]+(-[a-z0-9]+)*)*"));
  }
}
