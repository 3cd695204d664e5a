package dev.recycler.flink;

import static org.assertj.core.api.Assertions.assertThat;

import dev.recycler.core.api.RecyclerConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.DelegatingConfiguration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.snakeyaml.engine.v2.api.Load;
import org.snakeyaml.engine.v2.api.LoadSettings;

/**
 * docs/kubernetes/flink-session.yaml is consistent with this plugin: its Flink configuration maps to a valid recycler
 * configuration, and the harness sidecars hold exactly the configured slots at the configured port.
 */
@Timeout(30)
class KubernetesExampleTest {
  private static final Path EXAMPLE = Path.of("..", "docs", "kubernetes", "flink-session.yaml");

  @Test
  @SuppressWarnings("unchecked")
  void theSessionExampleHoldsTogether() throws IOException {
    Map<String, Object> deployment = (Map<String, Object>) new Load(LoadSettings.builder().build())
        .loadFromString(Files.readString(EXAMPLE));
    Map<String, Object> spec = map(deployment, "spec");
    Map<String, String> flinkConf = (Map<String, String>) spec.get("flinkConfiguration");

    assertThat(flinkConf)
        .containsEntry("external-resources", "recycler")
        .containsEntry("external-resource.recycler.driver-factory.class",
            RecyclerExternalResourceDriverFactory.class.getName())
        .containsEntry("metrics.reporter.recycler.factory.class", RecyclerLifecycleReporterFactory.class.getName())
        .doesNotContainKey("external-resource.recycler.kubernetes.config-key");

    Configuration full = Configuration.fromMap(flinkConf);
    long amount = Long.parseLong(flinkConf.get("external-resource.recycler.amount"));
    RecyclerConfig config = FlinkRecyclerConfig.toRecyclerConfig(
        new DelegatingConfiguration(full, "external-resource.recycler.param."), amount);

    Map<String, Object> podSpec = map(map(map(spec, "taskManager"), "podTemplate"), "spec");
    List<String> sidecarSlots = new ArrayList<>();
    // The attach secret is on: the recycler and every wrapper read the same file, from the same Secret.
    assertThat(config.attachSecretFile()).isNotNull();
    String secretDir = config.attachSecretFile().getParent().toString();
    String secretVolume = ((List<Map<String, Object>>) podSpec.get("volumes")).stream()
        .filter(v -> v.containsKey("secret")).map(v -> (String) v.get("name")).findFirst().orElseThrow();
    for (Object o : (List<Object>) podSpec.get("initContainers")) {
      List<String> args = (List<String>) ((Map<String, Object>) o).get("args");
      assertThat(args).contains("--recycler=localhost:" + config.port(),
          "--attach_secret_file=" + config.attachSecretFile());
      assertThat((List<Map<String, Object>>) ((Map<String, Object>) o).get("volumeMounts"))
          .anySatisfy(m -> assertThat(m).containsEntry("name", secretVolume).containsEntry("mountPath", secretDir));
      args.stream().filter(a -> a.startsWith("--slot=")).forEach(a -> sidecarSlots.add(a.substring(7)));
    }
    assertThat(sidecarSlots).as("one harness sidecar per configured slot").isEqualTo(config.slotIds());

    Map<String, Object> main = ((List<Map<String, Object>>) podSpec.get("containers")).get(0);
    assertThat(main.get("name")).isEqualTo("flink-main-container");
    assertThat((List<Map<String, Object>>) main.get("volumeMounts"))
        .anySatisfy(m -> assertThat(m).containsEntry("name", secretVolume).containsEntry("mountPath", secretDir));
    assertThat((List<Map<String, Object>>) main.get("ports")).extracting(p -> p.get("containerPort"))
        .containsExactlyInAnyOrder(config.port(), config.adminPort());
    // Probes on the admin endpoint: live while it serves, ready once a slot is attached (docs/operations.md).
    assertThat((List<Map<String, Object>>) main.get("ports"))
        .anyMatch(p -> "recycler-admin".equals(p.get("name")) && p.get("containerPort").equals(config.adminPort()));
    assertThat(map(map(main, "livenessProbe"), "httpGet")).containsEntry("path", "/healthz")
        .containsEntry("port", "recycler-admin");
    assertThat(map(map(main, "startupProbe"), "httpGet")).containsEntry("path", "/healthz");
    assertThat(map(map(main, "readinessProbe"), "httpGet")).containsEntry("path", "/readyz")
        .containsEntry("port", "recycler-admin");
    assertThat(map(map(map(spec, "taskManager"), "podTemplate"), "metadata").get("annotations"))
        .isEqualTo(Map.of("prometheus.io/scrape", "true", "prometheus.io/port",
            Integer.toString(config.adminPort()), "prometheus.io/path", "/metrics"));
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> map(Map<String, Object> m, String key) {
    return (Map<String, Object>) m.get(key);
  }
}
