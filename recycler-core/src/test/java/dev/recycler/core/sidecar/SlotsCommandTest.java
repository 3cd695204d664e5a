package dev.recycler.core.sidecar;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import com.google.protobuf.util.JsonFormat;
import dev.recycler.core.Recycler;
import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.testing.TestingRunner;
import dev.recycler.core.testing.TestingWrapper;
import dev.recycler.proto.v1.LeaseRecord;
import dev.recycler.proto.v1.SlotStatus;
import dev.recycler.proto.v1.SlotTable;
import io.grpc.ManagedChannel;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.fnexecution.v1.BeamFnExternalWorkerPoolGrpc;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.ProvisionInfo;
import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** {@code recycler-core.jar slots}: against a real recycler on loopback, and its rendering of a fixed table. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class SlotsCommandTest {
  private static final Instant NOW = Instant.parse("2026-12-07T10:00:00Z");

  @TempDir
  Path cacheDir;

  private Recycler recycler;
  private TestingWrapper wrapper;
  private TestingRunner runner;
  private final ByteArrayOutputStream out = new ByteArrayOutputStream();
  private final ByteArrayOutputStream err = new ByteArrayOutputStream();

  @AfterEach
  void tearDown() throws Exception {
    if (wrapper != null) {
      wrapper.close();
    }
    if (runner != null) {
      runner.close();
    }
    if (recycler != null) {
      recycler.close();
    }
  }

  private int run(String... args) {
    out.reset();
    err.reset();
    return SlotsCommand.run(args, new PrintStream(out, true, StandardCharsets.UTF_8),
        new PrintStream(err, true, StandardCharsets.UTF_8), Clock.fixed(NOW, ZoneOffset.UTC));
  }

  private String out() {
    return out.toString(StandardCharsets.UTF_8);
  }

  private String err() {
    return err.toString(StandardCharsets.UTF_8);
  }

  @Test
  void printsTheSlotTableOfARunningRecycler() throws Exception {
    recycler = Recycler.start(RecyclerConfig.builder().slots(2, "slot-").port(0).adminPort(0).cacheDirectory(cacheDir)
        .readyTimeout(Duration.ofSeconds(10)).shutdownTimeout(Duration.ofSeconds(5)).build(),
        new SimpleMeterRegistry(), TestingRunner::channel);
    byte[] binary = new byte[1000];
    runner = TestingRunner.builder()
        .provisionInfo(ProvisionInfo.newBuilder()
            .setPipelineOptions(Struct.newBuilder().putFields("beam:option:job_name:v1",
                Value.newBuilder().setStringValue("wordcount").build()))
            .setLoggingEndpoint(ApiServiceDescriptor.newBuilder().setUrl("runner-logging:1"))
            .addDependencies(TestingRunner.stagedFile("/staging/a/bin", "beam:artifact:role:go_worker_binary:v1")).build())
        .file("/staging/a/bin", binary).build();
    wrapper = new TestingWrapper("slot-0", "inc-1", recycler.endpoint()).attach();
    await().atMost(Duration.ofSeconds(15)).until(() -> state(recycler.slotTable(), "slot-0").equals("IDLE"));
    ManagedChannel channel = NettyChannelBuilder.forTarget(recycler.endpoint()).usePlaintext().build();
    try {
      BeamFnExternalWorkerPoolGrpc.newBlockingStub(channel).withDeadlineAfter(20, TimeUnit.SECONDS)
          .startWorker(runner.startRequest("1-1"));
    } finally {
      channel.shutdownNow();
    }

    assertThat(run("--admin", recycler.endpoint())).as(err()).isZero();

    String text = out();
    assertThat(text).startsWith("slots (2) at " + NOW);
    assertThat(line(text, "slot-0 ")).contains("ACTIVE", "wordcount", "slot-0.g1", "1001", " ago)");
    assertThat(line(text, "slot-1 ")).contains("DETACHED");
    assertThat(text).contains("recent leases (1, newest last)");
    assertThat(line(text, "slot-0    1")).contains("wordcount", "slot-0.g1", "1-1", "(running)");

    // --json is the table itself, parseable back, with the new columns filled.
    assertThat(run("--admin=" + recycler.endpoint(), "--json", "--leases", "0")).as(err()).isZero();
    SlotTable.Builder parsed = SlotTable.newBuilder();
    JsonFormat.parser().merge(out(), parsed);
    SlotStatus slot0 = parsed.getSlotsList().stream().filter(s -> s.getSlotId().equals("slot-0")).findFirst()
        .orElseThrow();
    assertThat(slot0.getWorkerPid()).isEqualTo(1001);
    assertThat(slot0.getStateSinceUnixMillis()).isBetween(System.currentTimeMillis() - 60_000,
        System.currentTimeMillis());
    assertThat(parsed.getLeasesList()).extracting(LeaseRecord::getWorkerId).containsExactly("slot-0.g1");

    // The admin HTTP port by mistake: exit 1 and a pointer to the right port.
    assertThat(run("--admin", "127.0.0.1:" + recycler.adminPort())).isEqualTo(1);
    assertThat(err()).contains("does not speak gRPC", "is it the admin HTTP port?");
  }

  @Test
  void anUnreachableRecyclerIsExitCodeOneWithWhatToCheck() throws Exception {
    int freePort;
    try (ServerSocket s = new ServerSocket(0)) {
      freePort = s.getLocalPort();
    }
    assertThat(run("--admin", "127.0.0.1:" + freePort, "--timeout", "2s")).isEqualTo(1);
    assertThat(err()).contains("cannot reach a recycler at 127.0.0.1:" + freePort, "gRPC port");
    assertThat(out()).isEmpty();
  }

  @Test
  void badArgumentsAreExitCodeTwo() {
    assertThat(run("--admin", "localhost")).isEqualTo(2);
    assertThat(err()).contains("--admin must be HOST:PORT");
    assertThat(run("--leases", "-1")).isEqualTo(2);
    assertThat(err()).contains("--leases must be a whole number >= 0");
    assertThat(run("--nope")).isEqualTo(2);
    assertThat(err()).contains("unknown flag --nope");
    assertThat(run("--help")).isZero();
    assertThat(out()).contains("--admin HOST:PORT", "--json");
  }

  @Test
  void rendersSlotsAndLeasesAsAlignedRows() {
    long now = NOW.toEpochMilli();
    SlotTable table = SlotTable.newBuilder()
        .addSlots(SlotStatus.newBuilder().setSlotId("slot-0").setState("ACTIVE").setGeneration(7)
            .setJobName("wordcount").setWorkerId("slot-0.g7").setWorkerPid(4242).setWrapperPid(17)
            .setStateSinceUnixMillis(now - 42_000).setLeasesServed(7))
        .addSlots(SlotStatus.newBuilder().setSlotId("slot-1").setState("BACKOFF").setGeneration(3)
            .setWrapperPid(18).setConsecutiveFailures(2).setStateSinceUnixMillis(now - 1_500).setLeasesServed(3))
        .addSlots(SlotStatus.newBuilder().setSlotId("slot-2").setState("IDLE").setGeneration(5).setWrapperPid(19)
            .setStateSinceUnixMillis(now - 3_000).setLeasesServed(4).setStandbyGeneration(5)
            .setStandbyJobName("wordcount"))
        .addLeases(LeaseRecord.newBuilder().setSlotId("slot-1").setGeneration(3).setWorkerId("slot-1.g3")
            .setRunnerWorkerId("1-1").setStartUnixMillis(now - 10_000).setEndUnixMillis(now - 8_000)
            .setReadyLatencyMillis(-1).setEndReason("BOOT_FAILED").setOutcome("BOOT_FAILED")
            .setMessage("no worker binary"))
        .addLeases(LeaseRecord.newBuilder().setSlotId("slot-0").setGeneration(7).setWorkerId("slot-0.g7")
            .setRunnerWorkerId("1-1").setJobName("wordcount").setWorkerPid(4242).setStartUnixMillis(now - 42_500)
            .setReadyLatencyMillis(480))
        .addLeases(LeaseRecord.newBuilder().setSlotId("slot-2").setGeneration(4).setWorkerId("slot-2.g4")
            .setRunnerWorkerId("2-1").setJobName("wordcount").setWorkerPid(4300).setStartUnixMillis(now - 6_000)
            .setEndUnixMillis(now - 3_000).setReadyLatencyMillis(12).setStandby(true).setEndReason("RUNNER_CLOSED")
            .setOutcome("EXITED_ON_INSTRUCTION").setExitCode(0))
        .build();

    String text = SlotsCommand.render(table, NOW);

    assertThat(text).isEqualTo("""
        slots (3) at 2026-12-07T10:00:00Z
        slot    state    gen  job        worker id  worker pid  wrapper pid  since                     failures  leases  standby
        slot-0  ACTIVE     7  wordcount  slot-0.g7        4242           17  09:59:18.000 (42.0s ago)         0       7  -
        slot-1  BACKOFF    3  -          -                   -           18  09:59:58.500 (1.5s ago)          2       3  -
        slot-2  IDLE       5  -          -                   -           19  09:59:57.000 (3.0s ago)          0       4  g5 wordcount

        recent leases (3, newest last)
        slot    gen  job        worker id  runner   pid  start (UTC)            ready             held  end reason     outcome
        slot-1    3  -          slot-1.g3  1-1        -  09:59:50.000               -             2.0s  BOOT_FAILED    BOOT_FAILED: no worker binary
        slot-0    7  wordcount  slot-0.g7  1-1     4242  09:59:17.500           480ms  42.5s (running)  -              -
        slot-2    4  wordcount  slot-2.g4  2-1     4300  09:59:54.000  12ms (standby)             3.0s  RUNNER_CLOSED  EXITED_ON_INSTRUCTION
        """);
  }

  private static String state(SlotTable t, String slot) {
    return t.getSlotsList().stream().filter(s -> s.getSlotId().equals(slot)).findFirst().orElseThrow().getState();
  }

  private static String line(String text, String prefix) {
    return text.lines().filter(l -> l.startsWith(prefix)).findFirst()
        .orElseThrow(() -> new AssertionError("no line starting with '" + prefix + "' in\n" + text));
  }
}
