package dev.recycler.core;

import dev.recycler.core.api.RecyclerConfig;
import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import dev.recycler.core.testing.TestingRunner;
import dev.recycler.core.testing.TestingWrapper;
import dev.recycler.proto.v1.GetSlotTableRequest;
import dev.recycler.proto.v1.RecyclerAdminGrpc;
import dev.recycler.proto.v1.RecyclerMessage.KindCase;
import dev.recycler.proto.v1.RecyclerMessage;
import io.grpc.ManagedChannel;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.HarnessMonitoringInfosRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnExternalWorkerPoolGrpc;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.ProvisionInfo;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactFilePayload;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * What a lease's worker binary is: always the content the runner's job staged, whatever path it came under.
 *
 * <p>Regression: the cache keyed a staged artifact by its path, so a job whose binary was staged at a path that had
 * held other content ran the old binary (reproduced with a 17-byte script replaced by wordcount at the same path: the
 * next two jobs still ran the script).
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class ArtifactIdentityTest {
  private static final String BINARY_ROLE = "beam:artifact:role:go_worker_binary:v1";
  private static final Duration AWAIT = Duration.ofSeconds(15);

  @TempDir
  Path cacheDir;
  @TempDir
  Path staging;

  private final List<AutoCloseable> closeables = new ArrayList<>();
  private Recycler recycler;
  private final SimpleMeterRegistry registry = new SimpleMeterRegistry();
  private ManagedChannel channel;
  private TestingWrapper wrapper;
  private int jobs;

  @AfterEach
  void tearDown() throws Exception {
    for (AutoCloseable c : closeables) {
      c.close();
    }
    if (channel != null) {
      channel.shutdownNow();
    }
    if (recycler != null) {
      recycler.close();
    }
  }

  @Test
  void aStreamedPathThatNowHoldsOtherContentRunsTheNewContent() throws Exception {
    start(List.of());
    byte[] script = "#!/bin/sh\nexit 1\n".getBytes(StandardCharsets.UTF_8);
    byte[] wordcount = new byte[200_000];
    new java.util.Random(3).nextBytes(wordcount);

    TestingRunner first = runJob("/staging/shared/worker", script, "job-1");
    TestingRunner second = runJob("/staging/shared/worker", wordcount, "job-2");
    TestingRunner third = runJob("/staging/shared/worker", wordcount, "job-3");

    assertThat(leaseDigests()).containsExactly(sha(script), sha(wordcount), sha(wordcount));
    assertThat(List.of(first.artifactDownloads.get(), second.artifactDownloads.get(), third.artifactDownloads.get()))
        .as("each job's content crosses from its runner: a path is no identity across jobs")
        .containsExactly(1, 1, 1);
  }

  @Test
  void aStagedFileReadInPlaceIsIdentifiedByItsContentWithoutTheRunner() throws Exception {
    // Lease-time reads only, what the byte count below describes: no staging-time hash, and no speculative start,
    // whose probe of both ends races the lease's own read (it reads nothing once that read has filled the memo).
    start(List.of(staging), false, false);
    Path file = staging.resolve("job-a/worker");
    Files.createDirectories(file.getParent());
    byte[] v1 = bytes(300_000, 1);
    byte[] v2 = bytes(300_000, 2);
    Files.write(file, v1);

    TestingRunner a = runJob(file.toString(), v1, "job-a");
    TestingRunner aAgain = runJob(file.toString(), v1, "job-a");
    Files.write(file, v2); // the same path now holds other content (rewritten in place)
    TestingRunner b = runJob(file.toString(), v2, "job-b");
    byte[] v3 = v2.clone();
    v3[150_000] ^= 1; // same size and ends as v2: the guess "cached" is wrong, the digest says so
    Files.write(file, v3);
    TestingRunner c = runJob(file.toString(), v3, "job-c");

    assertThat(leaseDigests()).containsExactly(sha(v1), sha(v1), sha(v2), sha(v3));
    assertThat(a.artifactDownloads.get() + aAgain.artifactDownloads.get() + b.artifactDownloads.get()
        + c.artifactDownloads.get()).as("no artifact byte crosses the runner's gRPC service").isZero();
    assertThat(wrapper.downloads.get()).as("the wrapper fetched each content once").isEqualTo(3);
    System.gc(); // the meter must not lose its state object (Micrometer holds it weakly)
    assertThat(registry.get("recycler.artifact.local.read").functionCounter().count())
        .as("bytes read in place: v1 hashed while copied (no content of its size cached: one read), v1 again from"
            + " the memo, v2 (the size of v1) probed at both ends, unlike v1, so hashed while copied (one read), v3"
            + " probed, like v2 at both ends, so compared with v2 (a read), then hashed while copied (a second)")
        .isEqualTo(4.0 * 300_000 + 2 * 2 * 65_536);
    assertThat(hashes("LEASE")).isEqualTo(3.0);
    assertThat(hashes("STAGING")).isZero();
  }

  @Test
  void newJobsWithTheSameContentUnderFreshPathsSendNoBytesAnywhere() throws Exception {
    start(List.of(staging));
    byte[] binary = bytes(500_000, 4);
    for (int i = 0; i < 3; i++) {
      Path file = staging.resolve("job-" + i + "/worker");
      Files.createDirectories(file.getParent());
      Files.write(file, binary);
      TestingRunner r = runJob(file.toString(), binary, "job-" + i);
      assertThat(r.artifactDownloads.get()).isZero();
    }
    assertThat(leaseDigests()).containsOnly(sha(binary)).hasSize(3);
    assertThat(wrapper.downloads.get()).as("bytes reach the slot once").isEqualTo(1);
  }

  @Test
  void unreadableOrOutsidePathsFallBackToStreamingFromTheRunner() throws Exception {
    start(List.of(staging));
    byte[] binary = bytes(100_000, 5);
    // Under the directory but not on this machine (the runner has it elsewhere): streamed.
    TestingRunner missing = runJob(staging.resolve("gone/worker").toString(), binary, "job-missing");
    // A link under the directory that leads outside it: not read in place.
    Path outside = Files.createTempFile("outside", ".bin");
    closeables.add(() -> Files.deleteIfExists(outside));
    Files.write(outside, binary);
    Path link = staging.resolve("link-worker");
    Files.createSymbolicLink(link, outside);
    TestingRunner linked = runJob(link.toString(), binary, "job-link");

    assertThat(missing.artifactDownloads.get()).isEqualTo(1);
    assertThat(linked.artifactDownloads.get()).isEqualTo(1);
    assertThat(leaseDigests()).containsOnly(sha(binary));
  }

  /**
   * Speculative start, refuted: a new job's binary has the size and both 64 KiB ends of content the slot holds but
   * differs in between (in the second half, which the recycler compares on its second thread). The worker started
   * from the probe's match never gets an instruction and its stream never reaches the runner: the runner's one control
   * connection is the worker booted on the verified content, which answers its instruction.
   */
  @Test
  void aSpeculativeStartTheComparisonRefutesNeverReachesTheRunner() throws Exception {
    start(List.of(staging), false); // lease-time identification: the lease comes before any staging-time hash
    wrapper.standbys();
    byte[] v1 = bytes(9 << 20, 11);
    byte[] v2 = v1.clone();
    v2[v2.length * 3 / 4] ^= 1;
    runJob(stage("job-1/worker", v1).toString(), v1, "job-1");

    TestingRunner runner = startJob(stage("job-2/worker", v2).toString(), v2, "job-2", "1-2");
    InstructionResponse answer = ask(runner, "1-2");

    assertThat(speculative("STARTED")).as("started from the probe's match").isEqualTo(1.0);
    assertThat(speculative("MISMATCHED")).isEqualTo(1.0);
    assertThat(runner.controlCallers).as("one control connection reached the runner").containsExactly("1-2");
    assertThat(answer.getHarnessMonitoringInfos().getMonitoringDataMap().get("binaries").toStringUtf8())
        .as("answered by the worker that runs the job's own binary").isEqualTo(sha(v2));
    long speculativeGeneration = wrapper.received(KindCase.STANDBY).get(1).getStandby().getGeneration();
    assertThat(wrapper.binaries.get(speculativeGeneration)).containsExactly(sha(v1));
    assertThat(wrapper.instructionsByGeneration.get(speculativeGeneration))
        .as("the worker started from the wrong binary received no instruction").isNull();
    assertThat(leaseDigests()).containsExactly(sha(v1), sha(v2));
  }

  /**
   * Speculative start, confirmed: a new job staging, under a fresh path, the content a slot holds gets the worker
   * started from the probe's match while the two are compared; the lease adopts it and it answers the runner.
   */
  @Test
  void aSpeculativeStartTheComparisonConfirmsServesTheLease() throws Exception {
    start(List.of(staging), false);
    wrapper.standbys();
    byte[] binary = bytes(9 << 20, 12);
    runJob(stage("job-1/worker", binary).toString(), binary, "job-1");

    TestingRunner runner = startJob(stage("job-2/worker", binary).toString(), binary, "job-2", "1-2");
    InstructionResponse answer = ask(runner, "1-2");

    assertThat(speculative("ADOPTED")).isEqualTo(1.0);
    long speculativeGeneration = wrapper.received(KindCase.STANDBY).get(1).getStandby().getGeneration();
    assertThat(answer.getHarnessMonitoringInfos().getMonitoringDataMap().get("generation").toStringUtf8())
        .as("the worker started ahead answered").isEqualTo(Long.toString(speculativeGeneration));
    assertThat(wrapper.received(KindCase.LEASE).get(1).getLease().getAdoptStandby()).isTrue();
    assertThat(wrapper.downloads.get()).as("the content crossed to the slot once, for the first job").isEqualTo(1);
    assertThat(runner.artifactDownloads.get()).isZero();
  }

  @Test
  void aFileHashedWhenStagedIsAMemoHitAtLeaseTimeWithNoSecondRead() throws Exception {
    start(List.of(staging));
    byte[] binary = bytes(400_000, 6);
    Path first = stage("job-1/worker", binary);
    await().atMost(AWAIT).until(() -> hashes("STAGING") == 1.0);
    TestingRunner r1 = runJob(first.toString(), binary, "job-1");
    // The first job's content was new: the lease copied it into the cache (one read, verified against the digest).
    double afterFirst = localRead();
    assertThat(afterFirst).isEqualTo(2.0 * 400_000);

    Path second = stage("job-2/worker", binary); // a new job: a fresh copy under a new path, a new inode
    await().atMost(AWAIT).until(() -> hashes("STAGING") == 2.0);
    double beforeLease = localRead();
    TestingRunner r2 = runJob(second.toString(), binary, "job-2");

    assertThat(localRead()).as("the lease read nothing: the digest was ready, the content cached; at staging the"
        + " file's ends matched the cached content, so it was compared with it (no hash)")
        .isEqualTo(beforeLease).isEqualTo(afterFirst + 2 * 65_536 + 400_000);
    assertThat(hashes("LEASE")).as("no hash on a lease's path").isZero();
    assertThat(leaseDigests()).containsExactly(sha(binary), sha(binary));
    assertThat(r1.artifactDownloads.get() + r2.artifactDownloads.get()).isZero();
  }

  @Test
  void aFileRewrittenAfterItsStagingHashIsHashedAgainNeverTrustedStale() throws Exception {
    start(List.of(staging));
    byte[] v1 = bytes(300_000, 7);
    byte[] v2 = bytes(300_000, 8);
    byte[] v3 = bytes(300_000, 9);
    Path file = stage("job-x/worker", v1);
    await().atMost(AWAIT).until(() -> hashes("STAGING") == 1.0);

    // Rewritten in place and leased at once, before the watcher could see it quiet: the lease must not take v1's
    // digest from the memo (the file's identity changed), whoever hashes v2.
    Files.write(file, v2);
    runJob(file.toString(), v2, "job-x");
    // Rewritten again and left alone: the watcher hashes the new content too.
    double before = hashes("STAGING");
    Files.write(file, v3);
    await().atMost(AWAIT).until(() -> hashes("STAGING") > before);
    runJob(file.toString(), v3, "job-y");

    assertThat(leaseDigests()).containsExactly(sha(v2), sha(v3));
  }

  @Test
  void aFileInADirectoryCreatedAfterTheWatchStartedIsHashedAhead() throws Exception {
    start(List.of(staging));
    byte[] binary = bytes(200_000, 10);
    // Beam's job server creates a directory per job (and below it more) when the job is submitted.
    Path file = stage("session-1/job-7/artifacts/worker", binary);
    await().atMost(AWAIT).until(() -> hashes("STAGING") == 1.0);
    runJob(file.toString(), binary, "job-7");
    assertThat(hashes("LEASE")).isZero();
    assertThat(leaseDigests()).containsExactly(sha(binary));
  }

  @Test
  void theStagingWatcherStopsWithTheRecyclerLeavingNoThread() throws Exception {
    long jdkWatchersBefore = threads("FileSystemWatcher");
    start(List.of(staging));
    await().atMost(AWAIT).until(() -> threads("recycler-staging-") == 2);
    recycler.close();
    recycler = null;
    assertThat(threads("recycler-staging-")).as("watch and hash threads joined").isZero();
    await().atMost(AWAIT).until(() -> threads("FileSystemWatcher") <= jdkWatchersBefore);
  }

  private static long threads(String namePrefix) {
    return Thread.getAllStackTraces().keySet().stream()
        .filter(t -> t.isAlive() && t.getName().startsWith(namePrefix)).count();
  }

  private Path stage(String relative, byte[] content) throws Exception {
    Path file = staging.resolve(relative);
    Files.createDirectories(file.getParent());
    Files.write(file, content);
    return file;
  }

  private double hashes(String when) {
    return registry.get("recycler.artifact.local.hashes").tag("when", when).counter().count();
  }

  private double localRead() {
    return registry.get("recycler.artifact.local.read").functionCounter().count();
  }

  private void start(List<Path> localDirs) throws Exception {
    start(localDirs, true);
  }

  private void start(List<Path> localDirs, boolean hashAtStaging) throws Exception {
    start(localDirs, hashAtStaging, true);
  }

  private void start(List<Path> localDirs, boolean hashAtStaging, boolean speculativeStart) throws Exception {
    recycler = Recycler.start(RecyclerConfig.builder().slots(1, "slot-").port(0).cacheDirectory(cacheDir)
        .memoryBlobMaxBytes(100_000).localArtifactDirectories(localDirs).hashAtStaging(hashAtStaging)
        .speculativeStart(speculativeStart)
        .leaseWaitTimeout(Duration.ofSeconds(5))
        .readyTimeout(Duration.ofSeconds(10)).attachProbeTimeout(Duration.ofMillis(500))
        .shutdownTimeout(Duration.ofSeconds(5)).build(), registry, TestingRunner::channel);
    channel = NettyChannelBuilder.forTarget(recycler.endpoint()).usePlaintext().build();
    wrapper = new TestingWrapper("slot-0", "a", recycler.endpoint());
    closeables.add(wrapper);
    wrapper.attach();
    awaitIdle();
  }

  /** One job on the slot: the runner stages {@code bytes} at {@code path}; the lease runs and the runner closes it. */
  private TestingRunner runJob(String path, byte[] bytes, String token) throws Exception {
    TestingRunner runner = TestingRunner.builder()
        .provisionInfo(ProvisionInfo.newBuilder().setRetrievalToken(token)
            .addDependencies(TestingRunner.stagedFile(path, BINARY_ROLE)).build())
        .file(path, bytes).build();
    closeables.add(runner);
    String id = "1-" + (++jobs);
    BeamFnExternalWorkerPoolGrpc.newBlockingStub(channel).withDeadlineAfter(20, TimeUnit.SECONDS)
        .startWorker(runner.startRequest(id));
    await().atMost(AWAIT).until(() -> runner.controls.containsKey(id));
    runner.controls.get(id).onCompleted();
    awaitIdle();
    return runner;
  }

  /** Starts a job's lease on the slot (the runner stages {@code bytes} at {@code path}) and waits until it is ready. */
  private TestingRunner startJob(String path, byte[] bytes, String token, String id) throws Exception {
    TestingRunner runner = TestingRunner.builder()
        .provisionInfo(ProvisionInfo.newBuilder().setRetrievalToken(token)
            .addDependencies(TestingRunner.stagedFile(path, BINARY_ROLE)).build())
        .file(path, bytes).build();
    closeables.add(runner);
    BeamFnExternalWorkerPoolGrpc.newBlockingStub(channel).withDeadlineAfter(20, TimeUnit.SECONDS)
        .startWorker(runner.startRequest(id));
    await().atMost(AWAIT).until(() -> runner.controls.containsKey(id));
    return runner;
  }

  /** Sends a HarnessMonitoringInfos instruction, as Beam's runner may after StartWorker, and returns the answer. */
  private static InstructionResponse ask(TestingRunner runner, String id) {
    runner.controls.get(id).onNext(InstructionRequest.newBuilder().setInstructionId("probe-" + id)
        .setHarnessMonitoringInfos(HarnessMonitoringInfosRequest.getDefaultInstance()).build());
    await().atMost(AWAIT).until(() -> !runner.responses.getOrDefault(id, List.of()).isEmpty());
    return runner.responses.get(id).get(0);
  }

  private double speculative(String outcome) {
    return registry.get("recycler.speculative.starts").tag("outcome", outcome).counter().count();
  }

  /** The binary digest each Lease told the wrapper to run, in lease order. */
  private List<String> leaseDigests() throws Exception {
    List<String> out = new ArrayList<>();
    for (RecyclerMessage m : wrapper.received(KindCase.LEASE)) {
      out.add(ArtifactFilePayload.parseFrom(m.getLease().getPrepared().getArtifacts(0).getTypePayload()).getSha256());
    }
    return out;
  }

  private void awaitIdle() {
    await().atMost(AWAIT).until(() -> RecyclerAdminGrpc.newBlockingStub(channel)
        .getSlotTable(GetSlotTableRequest.getDefaultInstance()).getSlots(0).getState().equals("IDLE"));
  }

  private static byte[] bytes(int n, int seed) {
    byte[] b = new byte[n];
    new java.util.Random(seed).nextBytes(b);
    return b;
  }

  private static String sha(byte[] b) throws Exception {
    return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
  }
}
