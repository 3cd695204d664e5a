package dev.recycler.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.metrics.MetricNames;
import dev.recycler.core.testing.TestingRunner;
import dev.recycler.core.testing.TestingWrapper;
import dev.recycler.proto.v1.GetSlotTableRequest;
import dev.recycler.proto.v1.Prefetch;
import dev.recycler.proto.v1.RecyclerAdminGrpc;
import dev.recycler.proto.v1.RecyclerMessage;
import dev.recycler.proto.v1.RecyclerMessage.KindCase;
import io.grpc.Channel;
import io.grpc.ClientInterceptors;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.MetadataUtils;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.io.ByteArrayOutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.GetArtifactRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.GetArtifactResponse;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.ResolveArtifactsRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactRetrievalServiceGrpc;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactFilePayload;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactInformation;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Prefetch on the wire: a worker binary staged under a local artifact directory reaches the idle slot's wrapper as a
 * {@code Prefetch} with a ticket, and that ticket opens one GetArtifact of that content, by that slot, and nothing
 * else.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class PrefetchGrpcTest {
  private static final Duration AWAIT = Duration.ofSeconds(15);
  private static final Metadata.Key<String> WORKER_ID = Metadata.Key.of("worker_id", Metadata.ASCII_STRING_MARSHALLER);
  private static final Metadata.Key<String> TICKET =
      Metadata.Key.of("recycler-prefetch-ticket", Metadata.ASCII_STRING_MARSHALLER);
  private static final Metadata.Key<String> LENGTH =
      Metadata.Key.of("recycler-content-length", Metadata.ASCII_STRING_MARSHALLER);

  @TempDir
  Path cacheDir;
  @TempDir
  Path staging;

  private final SimpleMeterRegistry registry = new SimpleMeterRegistry();
  private final List<AutoCloseable> closeables = new ArrayList<>();
  private Recycler recycler;
  private ManagedChannel channel;
  private TestingWrapper wrapper;
  private byte[] binary;

  @BeforeEach
  void setUp() throws Exception {
    binary = elf(400_000, 11);
    start(2L << 30); // the default cache-max-size
  }

  private static byte[] elf(int size, long seed) {
    byte[] b = new byte[size];
    new Random(seed).nextBytes(b);
    System.arraycopy(new byte[] {0x7f, 'E', 'L', 'F'}, 0, b, 0, 4);
    return b;
  }

  private void start(long cacheMaxBytes) throws Exception {
    recycler = Recycler.start(RecyclerConfig.builder().slots(1, "slot-").port(0).cacheDirectory(cacheDir)
        .cacheMaxBytes(cacheMaxBytes).memoryBlobMaxBytes(100_000).localArtifactDirectories(List.of(staging))
        .hashAtStaging(true).leaseWaitTimeout(Duration.ofSeconds(5)).readyTimeout(Duration.ofSeconds(10))
        .attachProbeTimeout(Duration.ofMillis(500)).shutdownTimeout(Duration.ofSeconds(5)).build(), registry,
        TestingRunner::channel);
    channel = NettyChannelBuilder.forTarget(recycler.endpoint()).usePlaintext().build();
    wrapper = new TestingWrapper("slot-0", "a", recycler.endpoint());
    closeables.add(wrapper);
    wrapper.attach();
    await().atMost(AWAIT).until(() -> RecyclerAdminGrpc.newBlockingStub(channel)
        .getSlotTable(GetSlotTableRequest.getDefaultInstance()).getSlots(0).getState().equals("IDLE"));
  }

  @AfterEach
  void tearDown() throws Exception {
    for (AutoCloseable c : closeables) {
      c.close();
    }
    channel.shutdownNow();
    recycler.close();
  }

  private Prefetch awaitPrefetch(int count) {
    await().atMost(AWAIT).until(() -> prefetches().size() >= count);
    return prefetches().get(count - 1);
  }

  private List<Prefetch> prefetches() {
    return wrapper.received.stream().filter(m -> m.getKindCase() == KindCase.PREFETCH)
        .map(RecyclerMessage::getPrefetch).toList();
  }

  private Channel withTicket(String slot, String ticket) {
    Metadata md = new Metadata();
    md.put(WORKER_ID, slot);
    md.put(TICKET, ticket);
    return ClientInterceptors.intercept(channel, MetadataUtils.newAttachHeadersInterceptor(md));
  }

  private static ArtifactInformation byDigest(String hex) {
    return ArtifactInformation.newBuilder().setTypeUrn("beam:artifact:type:file:v1")
        .setTypePayload(ArtifactFilePayload.newBuilder().setPath("sha256/" + hex).setSha256(hex).build()
            .toByteString()).build();
  }

  private byte[] fetchWithLength(Channel ch, String hex, String[] length) {
    java.util.concurrent.atomic.AtomicReference<Metadata> headers = new java.util.concurrent.atomic.AtomicReference<>();
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    Iterator<GetArtifactResponse> it = ArtifactRetrievalServiceGrpc.newBlockingStub(ch)
        .withInterceptors(MetadataUtils.newCaptureMetadataInterceptor(headers,
            new java.util.concurrent.atomic.AtomicReference<>()))
        .withDeadlineAfter(10, TimeUnit.SECONDS)
        .getArtifact(GetArtifactRequest.newBuilder().setArtifact(byDigest(hex)).build());
    while (it.hasNext()) {
      out.writeBytes(it.next().getData().toByteArray());
    }
    length[0] = headers.get().get(LENGTH);
    return out.toByteArray();
  }

  private static String sha(byte[] b) throws Exception {
    return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
  }

  private double prefetchCount(String outcome) {
    return registry.get(MetricNames.PREFETCHES).tag(MetricNames.OUTCOME, outcome).counter().count();
  }

  private static Status.Code codeOf(Throwable t) {
    return ((StatusRuntimeException) t).getStatus().getCode();
  }

  @Test
  void aStagedWorkerBinaryReachesTheIdleSlotWithATicketGoodForOneFetch() throws Exception {
    Path staged = staging.resolve("job-1/artifacts/worker");
    Files.createDirectories(staged.getParent());
    Files.write(staged, binary);

    Prefetch p = awaitPrefetch(1);
    assertThat(p.getDigest()).isEqualTo("sha256:" + sha(binary));
    assertThat(p.getSize()).isEqualTo(binary.length);
    assertThat(prefetchCount("SENT")).isEqualTo(1);

    String[] length = new String[1];
    byte[] got = fetchWithLength(withTicket("slot-0", p.getTicket()), sha(binary), length);
    assertThat(got).isEqualTo(binary);
    assertThat(length[0]).isEqualTo(Integer.toString(binary.length));

    // Used once: a second fetch with the same ticket is refused, and the message never repeats the ticket.
    assertThatThrownBy(() -> fetchWithLength(withTicket("slot-0", p.getTicket()), sha(binary), length))
        .satisfies(t -> {
          assertThat(codeOf(t)).isEqualTo(Status.Code.PERMISSION_DENIED);
          assertThat(t.getMessage()).doesNotContain(p.getTicket());
        });
  }

  @Test
  void aTicketOpensNoOtherCallAndNoOtherContent() throws Exception {
    Path staged = staging.resolve("job-2/worker");
    Files.createDirectories(staged.getParent());
    Files.write(staged, binary);
    Prefetch p = awaitPrefetch(1);
    Channel ch = withTicket("slot-0", p.getTicket());

    // Another method: refused before the ticket is looked at, so it stays good.
    assertThatThrownBy(() -> ArtifactRetrievalServiceGrpc.newBlockingStub(ch).withDeadlineAfter(10, TimeUnit.SECONDS)
        .resolveArtifacts(ResolveArtifactsRequest.newBuilder().addArtifacts(byDigest(sha(binary))).build()))
        .satisfies(t -> assertThat(codeOf(t)).isEqualTo(Status.Code.PERMISSION_DENIED));
    // Another slot's id: refused (and the ticket is used up by the attempt).
    String other = "cd".repeat(32);
    assertThatThrownBy(() -> fetchWithLength(withTicket("slot-9", p.getTicket()), sha(binary), new String[1]))
        .satisfies(t -> assertThat(codeOf(t)).isEqualTo(Status.Code.PERMISSION_DENIED));
    assertThatThrownBy(() -> fetchWithLength(ch, sha(binary), new String[1]))
        .satisfies(t -> assertThat(codeOf(t)).isEqualTo(Status.Code.PERMISSION_DENIED));

    // A fresh ticket (the wrapper declined, so it is asked again on the next staging) for other content: refused.
    wrapper.send(dev.recycler.proto.v1.WrapperMessage.newBuilder().setPrefetched(dev.recycler.proto.v1.Prefetched
        .newBuilder().setDigest(p.getDigest()).setOk(false).setMessage("test declined")).build());
    await().atMost(AWAIT).until(() -> prefetchCount("FAILED") == 1);
    Path again = staging.resolve("job-3/worker");
    Files.createDirectories(again.getParent());
    Files.write(again, binary);
    Prefetch second = awaitPrefetch(2);
    assertThatThrownBy(() -> fetchWithLength(withTicket("slot-0", second.getTicket()), other, new String[1]))
        .satisfies(t -> {
          assertThat(codeOf(t)).isEqualTo(Status.Code.PERMISSION_DENIED);
          assertThat(t.getMessage()).contains(sha(binary)).contains(other);
        });
  }

  @Test
  void onlyWorkerBinariesArePrefetchedAndAHeldBinaryIsNotSentAgain() throws Exception {
    byte[] notBinary = "a staged jar or text, not an ELF file".getBytes(java.nio.charset.StandardCharsets.UTF_8);
    Files.createDirectories(staging.resolve("job-4"));
    Files.write(staging.resolve("job-4/options.txt"), notBinary);
    Files.write(staging.resolve("job-4/worker"), binary);
    Prefetch p = awaitPrefetch(1);
    await().atMost(AWAIT).until(() -> registry.get(MetricNames.LOCAL_HASHES).tag(MetricNames.WHEN, "STAGING")
        .counter().count() == 2);
    assertThat(prefetches()).hasSize(1);
    assertThat(p.getDigest()).isEqualTo("sha256:" + sha(binary));

    // The wrapper reports it holds the binary: a later job staging the same content sends nothing.
    wrapper.send(dev.recycler.proto.v1.WrapperMessage.newBuilder().setPrefetched(dev.recycler.proto.v1.Prefetched
        .newBuilder().setDigest(p.getDigest()).setOk(true).addHeldDigests(p.getDigest())).build());
    await().atMost(AWAIT).until(() -> prefetchCount("FETCHED") == 1);
    Files.createDirectories(staging.resolve("job-5"));
    Files.write(staging.resolve("job-5/worker"), binary);
    await().atMost(AWAIT).until(() -> registry.get(MetricNames.LOCAL_HASHES).tag(MetricNames.WHEN, "STAGING")
        .counter().count() == 3);
    assertThat(prefetches()).hasSize(1);
  }

  @Test
  void aNewBinaryStaysFetchableWhileItsPrefetchRunsEvenInAFullCache() throws Exception {
    // A cache that holds one binary: each new one evicts (Caffeine's admission may evict the newest entry at once;
    // it did, for every new binary, in a benchmark with a full cache, before the staging copy was pinned).
    for (AutoCloseable c : closeables) {
      c.close();
    }
    closeables.clear();
    channel.shutdownNow();
    recycler.close();
    start(1 << 20);
    for (int job = 0; job < 4; job++) {
      byte[] content = elf(700_000, 100 + job);
      Path staged = staging.resolve("job-full-" + job + "/worker");
      Files.createDirectories(staged.getParent());
      Files.write(staged, content);
      Prefetch p = awaitPrefetch(job + 1);
      assertThat(p.getDigest()).isEqualTo("sha256:" + sha(content));
      assertThat(fetchWithLength(withTicket("slot-0", p.getTicket()), sha(content), new String[1]))
          .as("job %d's binary, fetched with its ticket", job).isEqualTo(content);
      // As a wrapper would: it holds only the newest content.
      wrapper.send(dev.recycler.proto.v1.WrapperMessage.newBuilder().setPrefetched(dev.recycler.proto.v1.Prefetched
          .newBuilder().setDigest(p.getDigest()).setOk(true).addHeldDigests(p.getDigest())).build());
    }
  }
}
