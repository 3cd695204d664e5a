package dev.recycler.flink;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.util.Map;
import org.apache.flink.configuration.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The start, failure and stop paths of the per-TaskManager recycler, in-process with a real core recycler. */
@Timeout(60)
class TaskManagerRecyclerTest {
  @TempDir
  java.nio.file.Path cacheDir;

  @AfterEach
  void forget() {
    TaskManagerRecycler.stopAndForgetForTesting();
  }

  private Configuration params(Map<String, String> values) {
    Configuration c = Configuration.fromMap(values);
    c.setString(RecyclerOptions.CACHE_DIR.key(), cacheDir.toString());
    return c;
  }

  @Test
  void startsOnceDescribesItselfAndReleasesThePortOnStop() throws Exception {
    ClassLoader before = Thread.currentThread().getContextClassLoader();
    RecyclerResourceInfo info = TaskManagerRecycler.startOnce(params(Map.of("port", "0", "admin-port", "0")), 2);

    int port = Integer.parseInt(info.getProperty("port").orElseThrow());
    assertThat(port).isPositive();
    assertThat(info.getProperty("endpoint")).contains("127.0.0.1:" + port);
    assertThat(info.getProperty("host")).contains("127.0.0.1");
    assertThat(info.getProperty("slots")).contains("2");
    assertThat(info.getProperty("slot-ids")).contains("slot-0,slot-1");
    assertThat(info.getProperty("admin-endpoint")).hasValueSatisfying(a -> assertThat(a).startsWith("127.0.0.1:"));
    assertThat(Thread.currentThread().getContextClassLoader()).isSameAs(before);
    assertThat(canBind(port)).isFalse();

    // Flink asks once per TaskManager; a repeated call must not start a second server
    assertThat(TaskManagerRecycler.startOnce(params(Map.of("port", "0")), 2)).isSameAs(info);
    assertThatThrownBy(() -> TaskManagerRecycler.startOnce(params(Map.of("port", "0")), 3))
        .isInstanceOf(IllegalStateException.class)
        .hasMessageContaining("one external resource only");

    TaskManagerRecycler.stop("test");
    TaskManagerRecycler.stop("test again"); // idempotent
    assertThat(canBind(port)).isTrue();
  }

  @Test
  void aTakenPortStopsTheTaskManagerByDefault() throws Exception {
    try (ServerSocket squatter = new ServerSocket(0, 1, InetAddress.getByName("127.0.0.1"))) {
      int port = squatter.getLocalPort();
      assertThatThrownBy(() -> TaskManagerRecycler.startOnce(params(Map.of("port", Integer.toString(port))), 1))
          .isInstanceOf(RecyclerStartupError.class) // an Error: Flink's driver loading catches only Exceptions
          .hasMessageContaining("cannot listen on 127.0.0.1:" + port)
          .hasMessageContaining("external-resource.<name>.param.port");
    }
  }

  @Test
  void withFailFastOffAFailureIsAnExceptionFlinkLogsAndSurvives() throws Exception {
    try (ServerSocket squatter = new ServerSocket(0, 1, InetAddress.getByName("127.0.0.1"))) {
      int port = squatter.getLocalPort();
      assertThatThrownBy(() -> TaskManagerRecycler.startOnce(params(Map.of("port", Integer.toString(port),
              "fail-task-manager-on-error", "false")), 1))
          .isInstanceOf(IllegalStateException.class)
          .hasMessageContaining("cannot listen on 127.0.0.1:" + port);
    }
  }

  @Test
  void aBadOptionNamesTheKeyToFix() {
    assertThatThrownBy(() -> TaskManagerRecycler.startOnce(params(Map.of("lease-wait-timeout", "-1 s")), 1))
        .isInstanceOf(RecyclerStartupError.class)
        .hasMessageContaining("external-resource.<name>.param.lease-wait-timeout");
  }

  @Test
  void stopWithoutARecyclerDoesNothing() {
    // what the companion reporter does in a JobManager
    new RecyclerLifecycleReporterFactory().createMetricReporter(new java.util.Properties()).close();
  }

  private static boolean canBind(int port) {
    try (ServerSocket s = new ServerSocket(port, 1, InetAddress.getByName("127.0.0.1"))) {
      return s.isBound();
    } catch (IOException e) {
      return false;
    }
  }
}
