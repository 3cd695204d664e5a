package dev.recycler.e2e;

import static java.util.concurrent.TimeUnit.SECONDS;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.recycler.e2e.itjobs.EndpointProbe;
import dev.recycler.proto.v1.GetSlotTableRequest;
import dev.recycler.proto.v1.RecyclerAdminGrpc;
import dev.recycler.proto.v1.SlotStatus;
import dev.recycler.proto.v1.SlotTable;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import java.io.IOException;
import java.io.StringReader;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;

/**
 * The recycler plugin in a real Flink 1.19.3 session cluster (JobManager and TaskManager as separate JVMs, the plugin
 * in plugins/recycler/): it serves on the TaskManager, operators of successive jobs read its endpoint, it stops with
 * the TaskManager and frees its port, and a TaskManager whose recycler cannot start fails loudly.
 *
 * <p>One cluster for the whole class; the steps build on each other, hence the order.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class RecyclerPluginIT {
  private static final int SLOTS = 2;
  private static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();

  private static FlinkSessionCluster cluster;
  private static int port;
  private static int adminPort;
  private static Path probes;
  private static long firstTaskManagerPid;

  @BeforeAll
  static void startCluster() throws Exception {
    Path work = Path.of(System.getProperty("recycler.e2e.workDir", "target/it-work")).toAbsolutePath()
        .resolve("plugin-it-" + System.currentTimeMillis());
    probes = Files.createDirectories(work.resolve("probes"));
    port = FlinkSessionCluster.freePort();
    adminPort = FlinkSessionCluster.freePort();
    cluster = FlinkSessionCluster.builder()
        .workDirectory(work)
        .taskManagerSlots(SLOTS)
        .plugin(RecyclerPlugin.DIRECTORY, BuildPaths.recyclerPluginJar())
        .config(RecyclerPlugin.config(SLOTS, port, adminPort))
        .config(RecyclerPlugin.param("cache-dir"), work.resolve("recycler-cache").toString())
        .stopTimeout(Duration.ofSeconds(60))
        .start();
    firstTaskManagerPid = cluster.taskManagerPid().orElseThrow();
    System.out.printf("figures: cold start %d ms, TaskManager RSS after start %d MB, plugin jar %d KB%n",
        cluster.coldStartTime().toMillis(), rssMegabytes(firstTaskManagerPid),
        Files.size(BuildPaths.recyclerPluginJar()) / 1024);
  }

  @AfterAll
  static void stopCluster() {
    if (cluster != null) {
      cluster.close();
    }
  }

  @Test
  @Order(1)
  void recyclerServesOnTheTaskManager() throws Exception {
    SlotTable table = slotTable();
    assertThat(table.getSlotsList()).extracting(SlotStatus::getSlotId).containsExactly("slot-0", "slot-1");
    // no wrapper runs in this test: the slots are configured but never attached
    assertThat(table.getSlotsList()).extracting(SlotStatus::getState).containsOnly("DETACHED");

    HttpResponse<String> metrics = adminGet("/metrics");
    assertThat(metrics.statusCode()).isEqualTo(200);
    assertThat(metrics.body()).contains("recycler_");
    assertThat(adminGet("/healthz").statusCode()).isEqualTo(200);

    assertThat(Files.readString(cluster.taskManagerLog()))
        .contains("recycler started endpoint=127.0.0.1:" + port)
        .doesNotContain("RECYCLER NOT STARTED");
    assertThat(Files.readString(cluster.jobManagerLog())).doesNotContain("recycler started");
  }

  @Test
  @Order(2)
  void operatorsOfTwoSuccessiveJobsReadTheEndpoint() throws Exception {
    for (int job = 1; job <= 2; job++) {
      String tag = "job-" + job;
      long started = System.nanoTime();
      JobExecutionResult result = runProbeJob(tag);
      System.out.printf("figures: probe job %d took %d ms%n", job, (System.nanoTime() - started) / 1_000_000);

      assertThat(cluster.job(result.getJobID().toHexString()).state()).isEqualTo("FINISHED");
      Properties seen = readProperties(probes.resolve(tag + ".properties"));
      assertThat(seen.getProperty("infos")).isEqualTo("1");
      assertThat(seen.getProperty("endpoint")).isEqualTo("127.0.0.1:" + port);
      assertThat(seen.getProperty("host")).isEqualTo("127.0.0.1");
      assertThat(seen.getProperty("port")).isEqualTo(Integer.toString(port));
      assertThat(seen.getProperty("slots")).isEqualTo(Integer.toString(SLOTS));
      assertThat(seen.getProperty("slot-ids")).isEqualTo("slot-0,slot-1");
      assertThat(seen.getProperty("admin-endpoint")).isEqualTo("127.0.0.1:" + adminPort);
      // the operator ran inside the TaskManager process that hosts the recycler
      assertThat(seen.getProperty("pid")).isEqualTo(Long.toString(firstTaskManagerPid));
    }
    assertThat(cluster.jobs()).hasSize(2).allSatisfy(j -> assertThat(j.state()).isEqualTo("FINISHED"));
    // the same recycler still serves after both jobs
    assertThat(slotTable().getSlotsCount()).isEqualTo(SLOTS);
    System.out.printf("figures: TaskManager RSS after two jobs %d MB%n", rssMegabytes(firstTaskManagerPid));
  }

  @Test
  @Order(3)
  void stoppingTheTaskManagerStopsTheRecyclerAndReleasesItsPorts() throws Exception {
    Path log = cluster.taskManagerLog();
    long started = System.nanoTime();
    int exit = cluster.stopTaskManager();
    System.out.printf("figures: TaskManager stop took %d ms%n", (System.nanoTime() - started) / 1_000_000);

    assertThat(exit).as("exit code after SIGTERM").isEqualTo(143);
    assertThat(ProcessHandle.of(firstTaskManagerPid).map(ProcessHandle::isAlive)).isNotEqualTo(
        java.util.Optional.of(true));
    assertThat(canBind(port)).as("recycler port %d free", port).isTrue();
    assertThat(canBind(adminPort)).as("admin port %d free", adminPort).isTrue();
    String text = Files.readString(log);
    // stopped by the companion reporter, i.e. in Flink's shutdown order, after the task executor
    assertThat(text).contains("recycler stopping reason=flink-shutdown").contains("recycler stopped endpoint=");
    assertThat(text.indexOf("recycler stopping reason=flink-shutdown"))
        .isGreaterThan(text.indexOf("Stopping TaskExecutor"));
  }

  @Test
  @Order(4)
  void aTaskManagerWhoseRecyclerCannotStartFailsLoudlyAndANewOneRecovers() throws Exception {
    try (ServerSocket squatter = new ServerSocket(port, 1, InetAddress.getByName("127.0.0.1"))) {
      assertThatThrownBy(cluster::startTaskManager)
          .isInstanceOf(IllegalStateException.class)
          .hasMessageContaining("exited with code 1 before registering");
      String log = Files.readString(cluster.taskManagerLog());
      assertThat(log)
          .contains("RECYCLER NOT STARTED")
          .contains("cannot listen on 127.0.0.1:" + port)
          .contains("external-resource.<name>.param.port")
          .contains("Terminating TaskManagerRunner with exit code 1");
    }

    cluster.startTaskManager();
    assertThat(slotTable().getSlotsList()).extracting(SlotStatus::getState).containsOnly("DETACHED");
    assertThat(cluster.stopTaskManager()).isEqualTo(143);
    assertThat(canBind(port)).isTrue();
  }

  @Test
  @Order(5)
  void withoutTheCompanionReporterTheShutdownHookStopsTheRecycler() throws Exception {
    // "none" matches no configured reporter name: Flink then creates no reporter at all
    cluster.startTaskManager(Map.of("metrics.reporters", "none"));
    assertThat(slotTable().getSlotsCount()).isEqualTo(SLOTS);
    Path log = cluster.taskManagerLog();

    assertThat(cluster.stopTaskManager()).isEqualTo(143);

    assertThat(canBind(port)).as("recycler port %d free", port).isTrue();
    assertThat(canBind(adminPort)).as("admin port %d free", adminPort).isTrue();
    assertThat(Files.readString(log))
        .doesNotContain("Reporting metrics for reporter recycler")
        .contains("recycler stopping reason=jvm-shutdown")
        .contains("recycler stopped endpoint=");
  }

  private static JobExecutionResult runProbeJob(String tag) throws Exception {
    Path jobsJar = Path.of(System.getProperty("recycler.e2e.itJobsJar"));
    StreamExecutionEnvironment env = StreamExecutionEnvironment.createRemoteEnvironment(
        "127.0.0.1", cluster.restPort(), jobsJar.toString());
    env.fromSequence(1, 1)
        .map(new EndpointProbe(RecyclerPlugin.RESOURCE_NAME, probes.toString(), tag))
        .sinkTo(new DiscardingSink<>());
    return env.execute("endpoint-probe-" + tag);
  }

  private static SlotTable slotTable() throws InterruptedException {
    ManagedChannel channel = ManagedChannelBuilder.forAddress("127.0.0.1", port).usePlaintext().build();
    try {
      return RecyclerAdminGrpc.newBlockingStub(channel).withDeadlineAfter(10, SECONDS)
          .getSlotTable(GetSlotTableRequest.getDefaultInstance());
    } finally {
      channel.shutdownNow().awaitTermination(5, SECONDS);
    }
  }

  private static HttpResponse<String> adminGet(String path) throws IOException, InterruptedException {
    return HTTP.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + adminPort + path))
        .timeout(Duration.ofSeconds(10)).GET().build(), HttpResponse.BodyHandlers.ofString());
  }

  private static Properties readProperties(Path file) throws IOException {
    Properties p = new Properties();
    p.load(new StringReader(Files.readString(file)));
    return p;
  }

  private static boolean canBind(int p) {
    try (ServerSocket s = new ServerSocket(p, 1, InetAddress.getByName("127.0.0.1"))) {
      return true;
    } catch (IOException e) {
      return false;
    }
  }

  private static long rssMegabytes(long pid) throws IOException {
    for (String line : Files.readAllLines(Path.of("/proc", Long.toString(pid), "status"))) {
      if (line.startsWith("VmRSS:")) {
        return Long.parseLong(line.replaceAll("\\D", "")) / 1024;
      }
    }
    return -1;
  }
}
