package dev.recycler.e2e;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The launcher's checks that need no cluster; RecyclerPluginIT starts real ones. */
@Timeout(30)
class FlinkSessionClusterTest {
  @TempDir
  Path tmp;

  @Test
  void settersRejectBadValues() {
    FlinkSessionCluster.Builder b = FlinkSessionCluster.builder();
    assertThatThrownBy(() -> b.taskManagerSlots(0)).hasMessageContaining("between 1 and 64");
    assertThatThrownBy(() -> b.plugin("../evil", tmp.resolve("x.jar"))).hasMessageContaining("simple name");
    assertThatThrownBy(() -> b.plugin("recycler", tmp.resolve("missing.jar")))
        .hasMessageContaining("plugin jar not found at " + tmp.resolve("missing.jar"));
    assertThatThrownBy(() -> b.config("", "x")).hasMessageContaining("must be set");
    assertThatThrownBy(() -> b.startTimeout(Duration.ZERO)).hasMessageContaining("positive");
  }

  @Test
  void anIncompleteFlinkClasspathIsReportedBeforeAnythingStarts() throws Exception {
    Path lib = Files.createDirectories(tmp.resolve("lib"));
    Files.createFile(lib.resolve("flink-runtime-1.19.3.jar"));
    assertThatThrownBy(() -> FlinkSessionCluster.builder().flinkLibDirectory(lib).workDirectory(tmp.resolve("w"))
            .start())
        .isInstanceOf(IllegalStateException.class)
        .hasMessageContaining("no flink-rpc-akka-loader-*.jar in " + lib);
    assertThatThrownBy(() -> FlinkSessionCluster.builder().flinkLibDirectory(tmp.resolve("nope")).start())
        .isInstanceOf(IllegalStateException.class)
        .hasMessageContaining("-pl recycler-flink/e2e -am package");
    assertThat(tmp.resolve("w")).doesNotExist();
  }

  @Test
  void theBuildRecordsWhereTheFlinkJarsAre() {
    assertThat(BuildPaths.flinkVersion()).isEqualTo("1.19.3");
    assertThat(BuildPaths.flinkLibDirectory().resolve("flink-runtime-1.19.3.jar")).isRegularFile();
    assertThat(BuildPaths.recyclerPluginJar().getFileName()).hasToString("recycler-flink-plugin.jar");
  }

  @Test
  void recyclerPluginConfigurationNamesTheDriverAndTheReporter() {
    assertThat(RecyclerPlugin.config(3, 50001, -1))
        .containsEntry("external-resources", "recycler")
        .containsEntry("external-resource.recycler.driver-factory.class",
            dev.recycler.flink.RecyclerExternalResourceDriverFactory.class.getName())
        .containsEntry("external-resource.recycler.amount", "3")
        .containsEntry("external-resource.recycler.param.port", "50001")
        .containsEntry("external-resource.recycler.param.admin-port", "-1")
        .containsEntry("metrics.reporter.recycler.factory.class",
            dev.recycler.flink.RecyclerLifecycleReporterFactory.class.getName());
    assertThat(RecyclerPlugin.param("cache-dir"))
        .isEqualTo(dev.recycler.flink.RecyclerOptions.paramKey("recycler", dev.recycler.flink.RecyclerOptions.CACHE_DIR));
  }
}
