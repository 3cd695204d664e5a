package dev.recycler.core;

import dev.recycler.core.api.RecyclerConfig;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import dev.recycler.core.testing.TestingRunner;
import dev.recycler.core.testing.TestingWrapper;
import dev.recycler.proto.v1.ExitReason;
import dev.recycler.proto.v1.GetSlotTableRequest;
import dev.recycler.proto.v1.RecyclerAdminGrpc;
import dev.recycler.proto.v1.RecyclerMessage.KindCase;
import dev.recycler.proto.v1.SlotTable;
import io.grpc.Channel;
import io.grpc.ClientInterceptors;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import dev.recycler.core.metrics.MetricNames;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse.BodyHandlers;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Consumer;
import java.util.function.UnaryOperator;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.GetProcessBundleDescriptorRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StopWorkerRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.LogControl;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.LogEntry;
import org.apache.beam.model.fnexecution.v1.BeamFnControlGrpc;
import org.apache.beam.model.fnexecution.v1.BeamFnLoggingGrpc;
import org.apache.beam.model.fnexecution.v1.BeamFnExternalWorkerPoolGrpc;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.GetProvisionInfoRequest;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.ProvisionInfo;
import org.apache.beam.model.fnexecution.v1.ProvisionServiceGrpc;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.GetArtifactRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.ResolveArtifactsRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactRetrievalServiceGrpc;
import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactFilePayload;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactInformation;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The recycler's services end to end in one JVM: a fake runner (in-process), fake wrappers over loopback. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class RecyclerGrpcTest {
  private static final String BINARY_ROLE = "beam:artifact:role:go_worker_binary:v1";
  private static final Duration AWAIT = Duration.ofSeconds(15);

  @TempDir
  Path cacheDir;

  private final List<AutoCloseable> closeables = new ArrayList<>();
  private Recycler recycler;
  private SimpleMeterRegistry registry;
  private ManagedChannel runnerChannel;
  private byte[] binary;

  @BeforeEach
  void setUp() throws Exception {
    binary = new byte[300_000];
    new Random(7).nextBytes(binary);
  }

  @AfterEach
  void tearDown() throws Exception {
    for (AutoCloseable c : closeables) {
      c.close();
    }
    if (runnerChannel != null) {
      runnerChannel.shutdownNow();
    }
    if (recycler != null) {
      recycler.close();
    }
  }

  private Recycler start(int slots, Duration readyTimeout) throws Exception {
    return start(slots, readyTimeout, b -> b);
  }

  private Recycler start(int slots, Duration readyTimeout, UnaryOperator<RecyclerConfig.Builder> more)
      throws Exception {
    recycler = Recycler.start(more.apply(RecyclerConfig.builder().slots(slots, "slot-").port(0).cacheDirectory(cacheDir)
        .memoryBlobMaxBytes(100_000).leaseWaitTimeout(Duration.ofSeconds(5)).readyTimeout(readyTimeout)
        .attachProbeTimeout(Duration.ofMillis(500)).shutdownTimeout(Duration.ofSeconds(5))).build(),
        registry = new SimpleMeterRegistry(), TestingRunner::channel);
    runnerChannel = NettyChannelBuilder.forTarget(recycler.endpoint()).usePlaintext().build();
    return recycler;
  }

  private TestingRunner runner(String stagedPath) throws Exception {
    Struct options = Struct.newBuilder()
        .putFields("beam:option:job_name:v1", Value.newBuilder().setStringValue("wordcount").build()).build();
    TestingRunner r = TestingRunner.builder()
        // Beam's job server hands each job's staging token to the runner as its retrieval token.
        .provisionInfo(ProvisionInfo.newBuilder().setPipelineOptions(options).setRetrievalToken("token-" + stagedPath)
            .setLoggingEndpoint(ApiServiceDescriptor.newBuilder().setUrl("runner-logging:1"))
            .addDependencies(TestingRunner.stagedFile(stagedPath, BINARY_ROLE)).build())
        .file(stagedPath, binary).build();
    closeables.add(r);
    return r;
  }

  private TestingWrapper wrapper(String slot, String incarnation) {
    TestingWrapper w = new TestingWrapper(slot, incarnation, recycler.endpoint());
    closeables.add(0, w);
    return w;
  }

  private BeamFnExternalWorkerPoolGrpc.BeamFnExternalWorkerPoolBlockingStub pool() {
    return BeamFnExternalWorkerPoolGrpc.newBlockingStub(runnerChannel).withDeadlineAfter(20, TimeUnit.SECONDS);
  }

  private SlotTable table() {
    return RecyclerAdminGrpc.newBlockingStub(runnerChannel).getSlotTable(GetSlotTableRequest.getDefaultInstance());
  }

  private String state(String slot) {
    return table().getSlotsList().stream().filter(s -> s.getSlotId().equals(slot)).findFirst().orElseThrow()
        .getState();
  }

  private String sha(byte[] b) throws Exception {
    return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
  }

  @Test
  void leaseRunsTheWholeContractAndRecyclesTheSlot() throws Exception {
    start(1, Duration.ofSeconds(10));
    TestingRunner runner = runner("/staging/job-a/go-worker-binary");
    TestingWrapper w = wrapper("slot-0", "inc-1").attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));

    StartWorkerResponse response = pool().startWorker(runner.startRequest("1-1"));

    assertThat(response.getError()).isEmpty();
    // Upstream calls carry the runner's worker id; the worker used the minted one.
    assertThat(runner.controlCallers).containsExactly("1-1");
    assertThat(runner.provisionCallers).containsExactly("1-1");
    assertThat(runner.resolveCalls.get()).isEqualTo(1);
    // The Lease carried the provision info and the resolved binary: the wrapper asked for nothing but the bytes.
    assertThat(w.bootCalls.get()).isZero();
    assertThat(w.received(KindCase.LEASE)).singleElement().satisfies(m -> {
      assertThat(m.getLease().getJobName()).isEqualTo("wordcount");
      assertThat(m.getLease().getPrepared().getArtifactsList()).singleElement().satisfies(a -> {
        assertThat(a.getRoleUrn()).isEqualTo(BINARY_ROLE);
        assertThat(ArtifactFilePayload.parseFrom(a.getTypePayload()).getSha256()).isEqualTo(sha(binary));
      });
    });
    ProvisionInfo seen = w.provisioned.get(0);
    assertThat(seen.getControlEndpoint().getUrl()).isEqualTo(recycler.endpoint());
    assertThat(seen.getArtifactEndpoint().getUrl()).isEqualTo(recycler.endpoint());
    // Logging too goes through the recycler (LoggingProxyService), which forwards to the runner's endpoint.
    assertThat(seen.getLoggingEndpoint().getUrl()).isEqualTo(recycler.endpoint());
    assertThat(w.held).containsExactly(sha(binary));
    assertThat(w.contentLengths).containsExactly(Integer.toString(binary.length));
    assertThat(table().getSlots(0)).satisfies(s -> {
      assertThat(s.getState()).isEqualTo("ACTIVE");
      assertThat(s.getWorkerId()).isEqualTo("slot-0.g1");
      assertThat(s.getJobName()).isEqualTo("wordcount");
    });

    // Instructions flow runner -> worker and responses back through the proxy.
    runner.controls.get("1-1").onNext(InstructionRequest.newBuilder().setInstructionId("i-1").build());
    await().atMost(AWAIT).until(() -> runner.responses.getOrDefault("1-1", List.of()).size() == 1);
    assertThat(w.instructions).extracting(InstructionRequest::getInstructionId).containsExactly("i-1");

    // The runner closes control: the worker sees EOF, the slot gets its exit at once, then is idle again.
    runner.controls.get("1-1").onCompleted();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    assertThat(w.workerEofs.get()).isEqualTo(1);
    assertThat(w.received(KindCase.EXIT)).singleElement()
        .satisfies(m -> assertThat(m.getExit().getReason()).isEqualTo(ExitReason.EXIT_REASON_RUNNER_CLOSED));

    // StopWorker after the close is acknowledged, twice; an unknown id is NOT_FOUND.
    pool().stopWorker(StopWorkerRequest.newBuilder().setWorkerId("1-1").build());
    pool().stopWorker(StopWorkerRequest.newBuilder().setWorkerId("1-1").build());
    assertThatThrownBy(() -> pool().stopWorker(StopWorkerRequest.newBuilder().setWorkerId("7-7").build()))
        .isInstanceOfSatisfying(StatusRuntimeException.class,
            e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND));

    assertThat(table().getLeasesList()).singleElement().satisfies(r -> {
      assertThat(r.getEndReason()).isEqualTo("RUNNER_CLOSED");
      assertThat(r.getWorkerPid()).isEqualTo(1001);
      assertThat(r.getReadyLatencyMillis()).isBetween(0L, 10_000L);
    });
  }

  @Test
  void unchangedBinaryCrossesToTheRecyclerOncePerJobAndToAWrapperOncePerSlot() throws Exception {
    start(2, Duration.ofSeconds(10));
    TestingRunner jobA = runner("/staging/job-a/go-worker-binary");
    TestingWrapper w0 = wrapper("slot-0", "a").attach();
    TestingWrapper w1 = wrapper("slot-1", "b").attach();
    await().atMost(AWAIT).until(() -> state("slot-1").equals("IDLE"));

    // Two concurrent environments of the same job: one upstream download, coalesced.
    var f1 = BeamFnExternalWorkerPoolGrpc.newFutureStub(runnerChannel).startWorker(jobA.startRequest("1-1"));
    var f2 = BeamFnExternalWorkerPoolGrpc.newFutureStub(runnerChannel).startWorker(jobA.startRequest("1-2"));
    f1.get(20, TimeUnit.SECONDS);
    f2.get(20, TimeUnit.SECONDS);
    assertThat(jobA.artifactDownloads.get()).isEqualTo(1);
    assertThat(w0.downloads.get() + w1.downloads.get()).isEqualTo(2);

    jobA.controls.get("1-1").onCompleted();
    jobA.controls.get("1-2").onCompleted();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE") && state("slot-1").equals("IDLE"));

    // A second job with the same binary: staged under a new path, so fetched again from the runner (Beam's job
    // server strips sha256), but no wrapper receives the bytes again.
    TestingRunner jobB = runner("/staging/job-b/go-worker-binary");
    pool().startWorker(jobB.startRequest("1-1"));
    assertThat(jobB.artifactDownloads.get()).isEqualTo(1);
    assertThat(w0.downloads.get() + w1.downloads.get()).isEqualTo(2);
    assertThat(jobB.resolveCalls.get()).as("a new job asks its runner to resolve its artifacts").isEqualTo(1);

    // A later environment of job A (a warm lease): the job's resolution is reused, no ResolveArtifacts round trip.
    int resolvedA = jobA.resolveCalls.get();
    pool().startWorker(jobA.startRequest("1-3"));
    assertThat(jobA.resolveCalls.get()).isEqualTo(resolvedA);
    assertThat(jobA.artifactDownloads.get()).isEqualTo(1);
  }

  @Test
  void aWrapperThatIgnoresThePreparedLeaseGetsTheSameAnswersFromOneUpstreamResolution() throws Exception {
    start(1, Duration.ofSeconds(10));
    TestingRunner runner = runner("/staging/job-a/go-worker-binary");
    TestingWrapper w = wrapper("slot-0", "a").ignorePrepared().attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));

    assertThat(pool().startWorker(runner.startRequest("1-1")).getError()).isEmpty();

    assertThat(w.bootCalls.get()).isEqualTo(2);
    assertThat(w.provisioned).singleElement()
        .isEqualTo(w.received(KindCase.LEASE).get(0).getLease().getPrepared().getProvisionInfo());
    assertThat(w.held).containsExactly(sha(binary));
    // The recycler's preparation and the wrapper's ResolveArtifacts share one upstream call and one download.
    assertThat(runner.provisionCallers).hasSize(1);
    assertThat(runner.resolveCalls.get()).isEqualTo(1);
    assertThat(runner.artifactDownloads.get()).isEqualTo(1);
  }

  @Test
  void anUpstreamThatStatesACachedDigestIsNotDownloadedAgain() throws Exception {
    start(1, Duration.ofSeconds(10));
    TestingRunner first = runner("/staging/job-a/go-worker-binary");
    TestingWrapper w = wrapper("slot-0", "a").attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    pool().startWorker(first.startRequest("1-1"));
    first.controls.get("1-1").onCompleted();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));

    ArtifactInformation stated = ArtifactInformation.newBuilder().setTypeUrn("beam:artifact:type:file:v1")
        .setTypePayload(ArtifactFilePayload.newBuilder().setPath("/staging/job-b/bin").setSha256(sha(binary)).build()
            .toByteString()).setRoleUrn(BINARY_ROLE).build();
    TestingRunner second = TestingRunner.builder()
        .provisionInfo(ProvisionInfo.newBuilder().addDependencies(stated).build())
        .file("/staging/job-b/bin", binary).build();
    closeables.add(second);
    pool().startWorker(second.startRequest("1-1"));

    assertThat(first.artifactDownloads.get()).isEqualTo(1);
    assertThat(second.artifactDownloads.get()).isZero();
    assertThat(w.downloads.get()).isEqualTo(1);
  }

  @Test
  void truncatedOrMismatchedUpstreamNeverReachesAWrapper() throws Exception {
    start(1, Duration.ofSeconds(10));
    TestingRunner truncating = TestingRunner.builder()
        .provisionInfo(ProvisionInfo.newBuilder()
            .addDependencies(TestingRunner.stagedFile("/staging/t/bin", BINARY_ROLE)).build())
        .file("/staging/t/bin", binary).truncateAfter(128 * 1024).build();
    closeables.add(truncating);
    TestingWrapper w = wrapper("slot-0", "a").attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));

    assertThatThrownBy(() -> pool().startWorker(truncating.startRequest("1-1")))
        .isInstanceOfSatisfying(StatusRuntimeException.class,
            e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION));
    assertThat(w.bootErrors).singleElement().asString().startsWith("UNAVAILABLE").contains("failed after");
    assertThat(w.held).isEmpty();

    ArtifactInformation lying = ArtifactInformation.newBuilder().setTypeUrn("beam:artifact:type:file:v1")
        .setTypePayload(ArtifactFilePayload.newBuilder().setPath("/staging/m/bin").setSha256("ab".repeat(32)).build()
            .toByteString()).setRoleUrn(BINARY_ROLE).build();
    TestingRunner mismatching = TestingRunner.builder()
        .provisionInfo(ProvisionInfo.newBuilder().addDependencies(lying).build())
        .file("/staging/m/bin", binary).build();
    closeables.add(mismatching);
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    assertThatThrownBy(() -> pool().startWorker(mismatching.startRequest("1-1")))
        .isInstanceOf(StatusRuntimeException.class);
    assertThat(w.bootErrors.get(1)).contains("sha256 mismatch");
    assertThat(w.held).isEmpty();
  }

  /**
   * Regression (fault suite, 2026-12-07): a cache file overwritten on disk was served to every later wrapper that
   * lacked the content, each failing its boot with a digest mismatch, until the recycler restarted.
   */
  @Test
  void aCacheFileCorruptedOnDiskIsDroppedAndFetchedAgainForTheNextLease() throws Exception {
    start(1, Duration.ofSeconds(10), b -> b.failureBackoff(Duration.ofMillis(50), Duration.ofMillis(100)));
    TestingRunner runner = runner("/staging/job-a/go-worker-binary");
    TestingWrapper w = wrapper("slot-0", "a").attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    pool().startWorker(runner.startRequest("1-1"));
    runner.controls.get("1-1").onCompleted();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    Path file = cacheDir.resolve("sha256-" + sha(binary));
    assertThat(file).isRegularFile();
    byte[] corrupt = Files.readAllBytes(file);
    corrupt[corrupt.length / 2] ^= 0x5a;
    Files.write(file, corrupt);
    w.held.clear(); // the wrapper's own copy is gone too: it must fetch from the recycler

    assertThatThrownBy(() -> pool().startWorker(runner.startRequest("1-2")))
        .isInstanceOf(StatusRuntimeException.class);
    assertThat(w.bootErrors).singleElement().asString().startsWith("DATA_LOSS").contains(sha(binary))
        .contains("corrupt");
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));

    assertThat(pool().startWorker(runner.startRequest("1-3")).getError()).isEmpty();
    assertThat(w.held).containsExactly(sha(binary));
    assertThat(runner.artifactDownloads.get()).as("fetched again from the runner").isEqualTo(2);
    assertThat(Files.readAllBytes(file)).isEqualTo(binary);
  }

  @Test
  void wrapperCallsAreFencedToTheCurrentGeneration() throws Exception {
    start(1, Duration.ofSeconds(10));
    TestingRunner runner = runner("/staging/a/bin");
    TestingWrapper w = wrapper("slot-0", "a").attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    pool().startWorker(runner.startRequest("1-1"));
    String cred = w.received(KindCase.LEASE).get(0).getLease().getCredential();

    assertThat(provisionCode("slot-0", "1", cred)).isEqualTo(Status.Code.OK);
    assertThat(provisionCode("slot-0", "0", cred)).isEqualTo(Status.Code.FAILED_PRECONDITION);
    assertThat(provisionCode("slot-0", "", cred)).isEqualTo(Status.Code.INVALID_ARGUMENT);
    assertThat(provisionCode("slot-9", "1", cred)).isEqualTo(Status.Code.NOT_FOUND);

    runner.controls.get("1-1").onCompleted();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    assertThat(provisionCode("slot-0", "1", cred)).isEqualTo(Status.Code.FAILED_PRECONDITION);
  }

  private Status.Code provisionCode(String slot, String generation, String credential) {
    return call(wrapperHeaders(slot, generation, credential), ch -> ProvisionServiceGrpc.newBlockingStub(ch)
        .withDeadlineAfter(5, TimeUnit.SECONDS).getProvisionInfo(GetProvisionInfoRequest.getDefaultInstance()))
        .getCode();
  }

  private static Metadata wrapperHeaders(String slot, String generation, String credential) {
    Metadata md = new Metadata();
    md.put(Metadata.Key.of("worker_id", Metadata.ASCII_STRING_MARSHALLER), slot);
    if (!generation.isEmpty()) {
      md.put(Metadata.Key.of("recycler-generation", Metadata.ASCII_STRING_MARSHALLER), generation);
    }
    if (!credential.isEmpty()) {
      md.put(Metadata.Key.of("recycler-lease-credential", Metadata.ASCII_STRING_MARSHALLER), credential);
    }
    return md;
  }

  private static Metadata workerHeaders(String workerId) {
    Metadata md = new Metadata();
    if (!workerId.isEmpty()) {
      md.put(Metadata.Key.of("worker_id", Metadata.ASCII_STRING_MARSHALLER), workerId);
    }
    return md;
  }

  /** The status of {@code call} made on the recycler's port with the headers {@code md}. */
  private Status call(Metadata md, Consumer<Channel> call) {
    try {
      call.accept(ClientInterceptors.intercept(runnerChannel, MetadataUtils.newAttachHeadersInterceptor(md)));
      return Status.OK;
    } catch (StatusRuntimeException e) {
      return e.getStatus();
    }
  }

  /** How a control stream opened with {@code md} ends (or OK when it stays open and gets an instruction). */
  private Status controlStream(Metadata md) throws Exception {
    CompletableFuture<Status> ended = new CompletableFuture<>();
    BeamFnControlGrpc.newStub(runnerChannel).withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md))
        .control(new StreamObserver<InstructionRequest>() {
          @Override
          public void onNext(InstructionRequest r) {
            ended.complete(Status.OK.withDescription("received instruction " + r.getInstructionId()));
          }

          @Override
          public void onError(Throwable t) {
            ended.complete(Status.fromThrowable(t));
          }

          @Override
          public void onCompleted() {
            ended.complete(Status.OK);
          }
        });
    return ended.get(10, TimeUnit.SECONDS);
  }

  @Test
  void aRogueLocalClientWithoutTheLeaseCredentialGetsNothingOfALiveLease() throws Exception {
    start(1, Duration.ofSeconds(10), b -> b.adminPort(0));
    TestingRunner runner = runner("/staging/a/bin");
    TestingWrapper w = wrapper("slot-0", "a").attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    pool().startWorker(runner.startRequest("1-1"));
    dev.recycler.proto.v1.Lease lease = w.received(KindCase.LEASE).get(0).getLease();
    String cred = lease.getCredential();
    assertThat(cred).matches("[0-9a-f]{32}");
    assertThat(lease.getWorkerId()).isEqualTo("slot-0.g1." + cred);
    String wrong = cred.equals("0".repeat(32)) ? "1".repeat(32) : "0".repeat(32);
    List<ArtifactInformation> upstream = lease.getPrepared().getProvisionInfo().getDependenciesList();
    ArtifactInformation resolved = lease.getPrepared().getArtifacts(0);
    List<Status> refusals = new ArrayList<>();

    // Wrapper-facing services: the slot id and generation are public (slot table), the credential is not.
    Map<String, Consumer<Channel>> wrapperCalls = Map.of(
        "GetProvisionInfo", ch -> ProvisionServiceGrpc.newBlockingStub(ch).withDeadlineAfter(5, TimeUnit.SECONDS)
            .getProvisionInfo(GetProvisionInfoRequest.getDefaultInstance()),
        "ResolveArtifacts", ch -> ArtifactRetrievalServiceGrpc.newBlockingStub(ch)
            .withDeadlineAfter(5, TimeUnit.SECONDS)
            .resolveArtifacts(ResolveArtifactsRequest.newBuilder().addAllArtifacts(upstream).build()),
        "GetArtifact", ch -> ArtifactRetrievalServiceGrpc.newBlockingStub(ch).withDeadlineAfter(5, TimeUnit.SECONDS)
            .getArtifact(GetArtifactRequest.newBuilder().setArtifact(resolved).build()).forEachRemaining(r -> { }));
    wrapperCalls.forEach((name, c) -> {
      Status none = call(wrapperHeaders("slot-0", "1", ""), c);
      Status bad = call(wrapperHeaders("slot-0", "1", wrong), c);
      assertThat(none.getCode()).as(name + " without a credential").isEqualTo(Status.Code.UNAUTHENTICATED);
      assertThat(none.getDescription()).as(name).contains("recycler-lease-credential header is missing");
      assertThat(bad.getCode()).as(name + " with a wrong credential").isEqualTo(Status.Code.PERMISSION_DENIED);
      assertThat(call(wrapperHeaders("slot-0", "1", cred), c).getCode()).as(name + " with the credential")
          .isEqualTo(Status.Code.OK);
      refusals.addAll(List.of(none, bad));
    });

    // The worker-facing control service: the credential rides in the worker id (the Go worker sends nothing else).
    GetProcessBundleDescriptorRequest pbd =
        GetProcessBundleDescriptorRequest.newBuilder().setProcessBundleDescriptorId("1").build();
    Consumer<Channel> descriptor = ch -> BeamFnControlGrpc.newBlockingStub(ch).withDeadlineAfter(5, TimeUnit.SECONDS)
        .getProcessBundleDescriptor(pbd);
    for (String id : List.of("", "slot-0.g1", "slot-0.g1." + wrong)) {
      refusals.add(call(workerHeaders(id), descriptor));
      refusals.add(controlStream(workerHeaders(id)));
    }
    assertThat(refusals.subList(6, 12)).extracting(Status::getCode).containsExactly(
        Status.Code.UNAUTHENTICATED, Status.Code.UNAUTHENTICATED, Status.Code.UNAUTHENTICATED,
        Status.Code.UNAUTHENTICATED, Status.Code.PERMISSION_DENIED, Status.Code.PERMISSION_DENIED);
    assertThat(refusals.get(8).getDescription()).contains("slot-0.g1", "carries no lease credential");
    // With the credential the descriptor call passes the recycler and reaches the runner (whose fake lacks it).
    assertThat(call(workerHeaders(lease.getWorkerId()), descriptor).getDescription())
        .startsWith("runner GetProcessBundleDescriptor");
    assertThat(refusals).allSatisfy(s -> assertThat(String.valueOf(s.getDescription())).doesNotContain(cred));

    // None of it reached the runner or disturbed the lease: one control stream upstream, the worker still serves.
    assertThat(runner.controlCallers).containsExactly("1-1");
    runner.controls.get("1-1").onNext(InstructionRequest.newBuilder().setInstructionId("after").build());
    await().atMost(AWAIT).until(() -> runner.responses.getOrDefault("1-1", List.of()).size() == 1);
    assertThat(state("slot-0")).isEqualTo("ACTIVE");

    // The admin views show the public worker id, never the credential.
    assertThat(table().getSlots(0).getWorkerId()).isEqualTo("slot-0.g1");
    assertThat(table().toString()).doesNotContain(cred);
    HttpResponse<String> slots = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
        URI.create("http://127.0.0.1:" + recycler.adminPort() + "/slots")).build(), BodyHandlers.ofString());
    assertThat(slots.body()).contains("slot-0.g1").doesNotContain(cred);
  }

  /**
   * Beam's runner closes its logging server before it closes the environment, and the Go SDK keeps sending queued
   * entries after its control stream closed: those entries land in the recycler's own log, and the exit instruction
   * waits until the worker's log stream is quiet (bounded), so the wrapper does not stop a worker with entries queued.
   */
  @Test
  void workerLogLinesOutliveTheRunnersLoggingServerAndTheExitWaitsForThem() throws Exception {
    start(1, Duration.ofSeconds(10));
    TestingRunner runner = runner("/staging/logs/bin");
    TestingWrapper w = wrapper("slot-0", "a").attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    pool().startWorker(runner.startRequest("1-1"));
    String fullId = w.received(KindCase.LEASE).get(0).getLease().getWorkerId();

    // Without the credential in the worker id, no log stream: the same rule as the worker's control stream.
    for (String id : List.of("", "slot-0.g1")) {
      Status refused = logStream(id);
      assertThat(refused.getCode()).as("log stream as '%s'", id).isEqualTo(Status.Code.UNAUTHENTICATED);
    }
    // With the credential: a client that half-closes gets the call finished (the wrapper's boot log waits for that,
    // holding its connection open until then).
    assertThat(logStream(fullId).getCode()).isEqualTo(Status.Code.OK);

    // While the runner's logging server is up, entries go there, under the runner's worker id.
    StreamObserver<LogEntry.List> log = w.workerLog(1);
    log.onNext(entries("before the end"));
    await().atMost(AWAIT).until(() -> runner.logMessages.contains("before the end"));
    assertThat(runner.loggingCallers).hasSize(2).containsOnly("1-1");
    assertThat(runner.loggingCallers.toString()).doesNotContain(fullId);

    // The job ends as Beam ends it: logging server first, then the control stream, while the worker is still sending
    // its queue (the Go SDK sends back to back from one goroutine, and goes on after its control stream closed).
    List<Integer> exitsWhileLogging = new CopyOnWriteArrayList<>();
    java.util.concurrent.atomic.AtomicBoolean closed = new java.util.concurrent.atomic.AtomicBoolean();
    Thread sender = new Thread(() -> {
      for (int i = 0; i < 30; i++) {
        log.onNext(entries("queued " + i));
        if (closed.get()) {
          exitsWhileLogging.add(w.received(KindCase.EXIT).size());
        }
        LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(20));
      }
    });
    sender.start();
    await().atMost(AWAIT).until(() -> runner.logMessages.contains("queued 2"));
    runner.closeLogging();
    runner.controls.get("1-1").onCompleted();
    closed.set(true);
    sender.join();
    assertThat(exitsWhileLogging).as("exit instructions seen while the worker's log stream was busy")
        .isNotEmpty().containsOnly(0);
    await().atMost(AWAIT).until(() -> w.received(KindCase.EXIT).size() == 1);
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    double toRunner = registry.get(MetricNames.WORKER_LOG_ENTRIES).tag(MetricNames.ROUTE, "runner").counter().count();
    double kept = registry.get(MetricNames.WORKER_LOG_ENTRIES).tag(MetricNames.ROUTE, "local").counter().count();
    assertThat(kept).as("entries after the runner's logging server closed, kept in the recycler's log").isPositive();
    assertThat(toRunner + kept).as("every entry went somewhere (1 + 1 + 30)").isEqualTo(32);
    assertThat(runner.logMessages).hasSizeLessThanOrEqualTo((int) toRunner).contains("before the end", "queued 2");
    log.onCompleted();

    // A worker that never stops logging does not hold its exit instruction beyond the bound.
    pool().startWorker(runner.startRequest("2-1"));
    StreamObserver<LogEntry.List> busy = w.workerLog(2);
    runner.controls.get("2-1").onCompleted();
    long exitsBefore = w.received(KindCase.EXIT).size();
    long t0 = System.nanoTime();
    while (w.received(KindCase.EXIT).size() == exitsBefore
        && System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(20)) {
      busy.onNext(entries("busy"));
      LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(10)); // the pace of a worker that never stops logging
    }
    assertThat(w.received(KindCase.EXIT)).as("exit sent while the worker still logs").hasSize(2);
    busy.onCompleted();
  }

  private static LogEntry.List entries(String message) {
    return LogEntry.List.newBuilder().addLogEntries(LogEntry.newBuilder().setMessage(message)
        .setSeverity(LogEntry.Severity.Enum.INFO)).build();
  }

  /** Opens a logging stream as {@code workerId}, sends one entry and half-closes; the status the call ends with. */
  private Status logStream(String workerId) throws InterruptedException {
    CompletableFuture<Status> end = new CompletableFuture<>();
    StreamObserver<LogEntry.List> s = BeamFnLoggingGrpc.newStub(runnerChannel)
        .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(workerHeaders(workerId)))
        .logging(new StreamObserver<LogControl>() {
          @Override
          public void onNext(LogControl c) {}

          @Override
          public void onError(Throwable t) {
            end.complete(Status.fromThrowable(t));
          }

          @Override
          public void onCompleted() {
            end.complete(Status.OK);
          }
        });
    s.onNext(entries("rogue"));
    s.onCompleted();
    try {
      return end.get(10, TimeUnit.SECONDS);
    } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
      throw new AssertionError("log stream as '" + workerId + "' neither refused nor ended", e);
    }
  }

  @Test
  void workerIdsStayUniqueAcrossARecyclerRestart() throws Exception {
    List<String> workerIds = new ArrayList<>();
    for (int run = 0; run < 2; run++) {
      start(1, Duration.ofSeconds(10));
      TestingRunner runner = runner("/staging/a/bin");
      TestingWrapper w = wrapper("slot-0", "inc-" + run).attach();
      await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
      pool().startWorker(runner.startRequest("1-1"));
      workerIds.add(w.received(KindCase.LEASE).get(0).getLease().getWorkerId());
      assertThat(table().getSlots(0).getWorkerId()).isEqualTo("slot-0.g1");
      recycler.close();
      w.close();
      runnerChannel.shutdownNow();
    }
    // Both recyclers numbered the lease generation 1 of slot-0; the ids the workers got still differ.
    assertThat(workerIds).allSatisfy(id -> assertThat(id).startsWith("slot-0.g1.")).doesNotHaveDuplicates();
  }

  @Test
  void attachNeedsTheConfiguredSecret(@TempDir Path secrets) throws Exception {
    String secret = "a-very-secret-attach-token";
    Path file = Files.writeString(secrets.resolve("attach-secret"), secret + "\n");
    start(1, Duration.ofSeconds(10), b -> b.attachSecretFile(file));
    TestingRunner runner = runner("/staging/a/bin");

    TestingWrapper none = wrapper("slot-0", "a").attach();
    TestingWrapper wrong = wrapper("slot-0", "b").attachSecret("not-the-attach-token-0").attach();
    await().atMost(AWAIT).until(() -> none.attachStatus != null && wrong.attachStatus != null);

    assertThat(none.attachStatus.getCode()).isEqualTo(Status.Code.UNAUTHENTICATED);
    assertThat(none.attachStatus.getDescription()).contains("recycler-attach-secret header is missing");
    assertThat(wrong.attachStatus.getCode()).isEqualTo(Status.Code.PERMISSION_DENIED);
    assertThat(wrong.attachStatus.getDescription()).contains("attach secret is wrong")
        .doesNotContain(secret, "not-the-attach-token-0");
    assertThat(none.received).isEmpty();
    assertThat(wrong.received).isEmpty();
    assertThat(state("slot-0")).isEqualTo("DETACHED");

    TestingWrapper right = wrapper("slot-0", "c").attachSecret(secret).attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    assertThat(pool().startWorker(runner.startRequest("1-1")).getError()).isEmpty();
    assertThat(right.received(KindCase.LEASE)).hasSize(1);
  }

  @Test
  void anUnusableAttachSecretFileFailsTheStartNamingTheFile(@TempDir Path secrets) throws Exception {
    Path shortSecret = Files.writeString(secrets.resolve("short"), "tiny\n");
    Path missing = secrets.resolve("missing");
    for (Path file : List.of(shortSecret, missing)) {
      assertThatThrownBy(() -> Recycler.start(RecyclerConfig.builder().slots(1, "s").port(0).attachSecretFile(file)
          .build(), new SimpleMeterRegistry()))
          .isInstanceOf(java.io.IOException.class)
          .hasMessageContaining(file.toString())
          .hasMessageNotContaining("tiny");
    }
  }

  @Test
  void aMessageAboveTheInboundBoundIsRefused() throws Exception {
    start(1, Duration.ofSeconds(10), b -> b.maxInboundMessageBytes(1 << 20));
    TestingRunner runner = runner("/staging/a/bin");

    assertThatThrownBy(() -> pool().startWorker(runner.startRequest("x".repeat(2 << 20))))
        .isInstanceOfSatisfying(StatusRuntimeException.class,
            e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED));
    // The port still serves calls within the bound.
    assertThat(table().getSlotsCount()).isEqualTo(1);
  }

  @Test
  void cancelledStartWorkerReleasesItsLease() throws Exception {
    start(1, Duration.ofSeconds(30));
    TestingRunner runner = runner("/staging/a/bin");
    TestingWrapper w = wrapper("slot-0", "a").behavior(TestingWrapper.Behavior.NEVER_CONNECT).attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));

    assertThatThrownBy(() -> BeamFnExternalWorkerPoolGrpc.newBlockingStub(runnerChannel)
        .withDeadlineAfter(1500, TimeUnit.MILLISECONDS).startWorker(runner.startRequest("1-1")))
        .isInstanceOfSatisfying(StatusRuntimeException.class,
            e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED));

    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    assertThat(w.received(KindCase.EXIT)).singleElement()
        .satisfies(m -> assertThat(m.getExit().getReason()).isEqualTo(ExitReason.EXIT_REASON_CANCELLED));
  }

  @Test
  void crashesAndBootFailuresFailStartWorkerWithinBoundedTime() throws Exception {
    start(1, Duration.ofSeconds(2));
    TestingRunner runner = runner("/staging/a/bin");
    TestingWrapper w = wrapper("slot-0", "a").behavior(TestingWrapper.Behavior.CRASH_BEFORE_CONNECT).attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));

    assertThatThrownBy(() -> pool().startWorker(runner.startRequest("1-1")))
        .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
          assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
          assertThat(e.getStatus().getDescription()).contains("exited with code 2 before connecting");
        });

    w.behavior(TestingWrapper.Behavior.BOOT_FAIL);
    assertThatThrownBy(() -> pool().startWorker(runner.startRequest("1-2")))
        .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
          assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
          assertThat(e.getStatus().getDescription()).contains("go_worker_binary");
        });

    // After two failures the slot backs off; once it is idle again, a worker that never connects times out.
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    w.behavior(TestingWrapper.Behavior.NEVER_CONNECT);
    assertThatThrownBy(() -> pool().startWorker(runner.startRequest("1-3")))
        .isInstanceOfSatisfying(StatusRuntimeException.class,
            e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED));
  }

  /**
   * Regression: the proxy used to cancel the runner's control stream when the worker died. Beam's FnApiControlClient
   * never completes requests sent on a closed client (and a stream cancelled before it reached Beam left the runner
   * waiting for a client), so jobs hung. Now every unanswered and later instruction gets an error response.
   */
  @Test
  void workerKilledMidJobAnswersTheRunnersInstructionsWithErrors() throws Exception {
    start(1, Duration.ofSeconds(10));
    TestingRunner runner = runner("/staging/a/bin");
    TestingWrapper w = wrapper("slot-0", "a").attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    pool().startWorker(runner.startRequest("1-1"));
    await().atMost(AWAIT).until(() -> runner.controls.containsKey("1-1"));

    w.freezeWorker(1);
    runner.controls.get("1-1").onNext(InstructionRequest.newBuilder().setInstructionId("in-flight").build());
    await().atMost(AWAIT).until(() -> w.instructions.size() == 1);
    w.reportExited(1, 137);
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    runner.controls.get("1-1").onNext(InstructionRequest.newBuilder().setInstructionId("later").build());

    await().atMost(AWAIT).until(() -> runner.responses.getOrDefault("1-1", List.of()).size() == 2);
    assertThat(runner.responses.get("1-1")).extracting(r -> r.getInstructionId()).containsExactly("in-flight", "later");
    assertThat(runner.responses.get("1-1")).allSatisfy(r -> assertThat(r.getError()).contains("slot-0"));
    assertThat(runner.controlErrors).as("the runner closes the stream itself").doesNotContainKey("1-1");
    assertThat(table().getLeasesList()).singleElement()
        .satisfies(r -> assertThat(r.getEndReason()).isIn("WORKER_LOST", "WORKER_EXITED"));
  }

  @Test
  void secondLiveWrapperForASlotIsRefusedAndMalformedStartIsInvalid() throws Exception {
    start(1, Duration.ofSeconds(10));
    wrapper("slot-0", "a").attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));

    TestingWrapper dup = wrapper("slot-0", "b").attach();

    await().atMost(AWAIT).until(() -> dup.attachStatus != null);
    assertThat(dup.attachStatus.getCode()).isEqualTo(Status.Code.ALREADY_EXISTS);
    assertThat(table().getSlots(0).getIncarnationId()).isEqualTo("a");

    assertThatThrownBy(() -> pool().startWorker(StartWorkerRequest.newBuilder().setWorkerId("1-1").build()))
        .isInstanceOfSatisfying(StatusRuntimeException.class,
            e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT));
  }

  @Test
  void aTakenPortIsATypedBindErrorThatSaysWhatToDo() throws Exception {
    try (ServerSocket taken = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
      assertThatThrownBy(() -> Recycler.start(RecyclerConfig.builder().slots(1, "s").port(taken.getLocalPort())
          .build(), new SimpleMeterRegistry()))
          .isInstanceOf(java.net.BindException.class)
          .hasMessageContaining("cannot bind the recycler port 127.0.0.1:" + taken.getLocalPort())
          .hasMessageContaining("choose a free port");
    }
  }

  @Test
  void closeSendsExitInstructionsAndReleasesThePort() throws Exception {
    start(1, Duration.ofSeconds(10));
    TestingRunner runner = runner("/staging/a/bin");
    TestingWrapper w = wrapper("slot-0", "a").attach();
    await().atMost(AWAIT).until(() -> state("slot-0").equals("IDLE"));
    pool().startWorker(runner.startRequest("1-1"));
    int port = recycler.port();

    recycler.closeAsync().get(20, TimeUnit.SECONDS);

    assertThat(w.received(KindCase.EXIT)).singleElement()
        .satisfies(m -> assertThat(m.getExit().getReason()).isEqualTo(ExitReason.EXIT_REASON_SHUTDOWN));
    assertThat(runner.controlErrors.get("1-1")).isNotNull();
    try (ServerSocket s = new ServerSocket(port, 1, java.net.InetAddress.getLoopbackAddress())) {
      assertThat(s.getLocalPort()).isEqualTo(port);
    }
    assertThat(recycler.closeAsync()).isCompleted();
  }
}
