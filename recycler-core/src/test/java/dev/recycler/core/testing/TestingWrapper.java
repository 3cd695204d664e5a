package dev.recycler.core.testing;

import dev.recycler.proto.v1.BootStage;
import dev.recycler.proto.v1.Hello;
import dev.recycler.proto.v1.LeaseEnded;
import dev.recycler.proto.v1.Outcome;
import dev.recycler.proto.v1.Pong;
import dev.recycler.proto.v1.RecyclerMessage;
import dev.recycler.proto.v1.SlotControlGrpc;
import dev.recycler.proto.v1.WorkerStarted;
import dev.recycler.proto.v1.WrapperMessage;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall.SimpleForwardingClientCall;
import io.grpc.ForwardingClientCallListener.SimpleForwardingClientCallListener;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import java.io.ByteArrayOutputStream;
import java.security.MessageDigest;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.LogControl;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.LogEntry;
import org.apache.beam.model.fnexecution.v1.BeamFnControlGrpc;
import org.apache.beam.model.fnexecution.v1.BeamFnLoggingGrpc;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.GetProvisionInfoRequest;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.ProvisionInfo;
import org.apache.beam.model.fnexecution.v1.ProvisionServiceGrpc;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.GetArtifactRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.GetArtifactResponse;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.ResolveArtifactsRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactRetrievalServiceGrpc;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactFilePayload;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactInformation;

/**
 * A fake go-boot-wrapper plus its inner worker, speaking the real protocols to a recycler over loopback: attaches,
 * boots each lease (provision, resolve, download missing digests, verify), "starts" the worker by connecting its control
 * stream, echoes instructions, and on Exit stops the worker and reports. Scriptable with {@link Behavior}.
 */
public final class TestingWrapper implements AutoCloseable {
  /** What the next leases do. */
  public enum Behavior {
    /** Boot and connect the worker. */
    NORMAL,
    /** Report a boot failure at the artifact stage. */
    BOOT_FAIL,
    /** Report the worker exited with code 2 before connecting. */
    CRASH_BEFORE_CONNECT,
    /** Start "the worker" but never connect it. */
    NEVER_CONNECT
  }

  private static final Metadata.Key<String> WORKER_ID = Metadata.Key.of("worker_id", Metadata.ASCII_STRING_MARSHALLER);
  private static final Metadata.Key<String> GENERATION =
      Metadata.Key.of("recycler-generation", Metadata.ASCII_STRING_MARSHALLER);
  private static final Metadata.Key<String> LENGTH =
      Metadata.Key.of("recycler-content-length", Metadata.ASCII_STRING_MARSHALLER);
  private static final Metadata.Key<String> CREDENTIAL =
      Metadata.Key.of("recycler-lease-credential", Metadata.ASCII_STRING_MARSHALLER);
  private static final Metadata.Key<String> ATTACH_SECRET =
      Metadata.Key.of("recycler-attach-secret", Metadata.ASCII_STRING_MARSHALLER);

  private final String slot;
  private final String incarnation;
  private final ManagedChannel channel;
  private final ExecutorService boots = Executors.newSingleThreadExecutor();
  private volatile Behavior behavior = Behavior.NORMAL;
  private volatile boolean answerPings = true;
  private volatile String attachSecret = "";
  private StreamObserver<WrapperMessage> toRecycler;

  public final List<RecyclerMessage> received = new CopyOnWriteArrayList<>();
  public final Set<String> held = ConcurrentHashMap.newKeySet();
  public final AtomicInteger downloads = new AtomicInteger();
  public final List<String> contentLengths = new CopyOnWriteArrayList<>();
  public final List<ProvisionInfo> provisioned = new CopyOnWriteArrayList<>();
  /** GetProvisionInfo and ResolveArtifacts calls this wrapper made (none for a lease that came prepared). */
  public final AtomicInteger bootCalls = new AtomicInteger();
  private volatile boolean usePrepared = true;
  public final List<String> bootErrors = new CopyOnWriteArrayList<>();
  public final List<InstructionRequest> instructions = new CopyOnWriteArrayList<>();
  public final AtomicInteger workerEofs = new AtomicInteger();
  public volatile Status attachStatus;
  private final Map<Long, ClientCallStreamObserver<InstructionResponse>> workers = new ConcurrentHashMap<>();
  /** The full worker id (with its credential) of each started worker, by generation. */
  private final Map<Long, String> workerIds = new ConcurrentHashMap<>();
  private final Set<Long> frozen = ConcurrentHashMap.newKeySet();
  private volatile boolean standbys;
  /** Generations of standby workers running (started, not yet adopted or stopped). */
  private final Set<Long> standbyGenerations = ConcurrentHashMap.newKeySet();
  /** Each started worker's binary digests, by generation. */
  public final Map<Long, List<String>> binaries = new ConcurrentHashMap<>();
  /** Instructions each worker received, by generation. */
  public final Map<Long, List<String>> instructionsByGeneration = new ConcurrentHashMap<>();
  /** The generation of each worker whose control call ended with an error, and the error. */
  public final Map<Long, Status> workerErrors = new ConcurrentHashMap<>();
  private final Set<Long> deaf = ConcurrentHashMap.newKeySet();

  public TestingWrapper(String slot, String incarnation, String endpoint) {
    this.slot = slot;
    this.incarnation = incarnation;
    this.channel = NettyChannelBuilder.forTarget(endpoint).usePlaintext().build();
  }

  public TestingWrapper behavior(Behavior b) {
    this.behavior = b;
    return this;
  }

  /**
   * Start Standby workers as go-boot-wrapper does: from the prepared inputs if every artifact is held (else decline
   * with StandbyEnded), their control streams opened at once; a Lease that adopts one only reports it started; an
   * Exit of its generation, or a Lease of a later one, stops it (StandbyEnded). Off by default: Standby is ignored.
   */
  public TestingWrapper standbys() {
    this.standbys = true;
    return this;
  }

  /** Ignore Lease.prepared and ask GetProvisionInfo and ResolveArtifacts, as a wrapper of the first release does. */
  public TestingWrapper ignorePrepared() {
    this.usePrepared = false;
    return this;
  }

  /** Present {@code secret} on Attach ("" presents none). */
  public TestingWrapper attachSecret(String secret) {
    this.attachSecret = secret;
    return this;
  }

  /** Stop answering pings, as a hung or half-dead wrapper would. */
  public TestingWrapper silent() {
    this.answerPings = false;
    return this;
  }

  /** Opens the Attach stream and says Hello. */
  public TestingWrapper attach() {
    Metadata md = new Metadata();
    if (!attachSecret.isEmpty()) {
      md.put(ATTACH_SECRET, attachSecret);
    }
    SlotControlGrpc.SlotControlStub stub =
        SlotControlGrpc.newStub(channel).withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md));
    toRecycler = stub.attach(new StreamObserver<>() {
      @Override
      public void onNext(RecyclerMessage m) {
        received.add(m);
        switch (m.getKindCase()) {
          case LEASE -> boots.execute(() -> boot(m.getLease()));
          case EXIT -> boots.execute(() -> exit(m.getExit().getGeneration()));
          case STANDBY -> {
            if (standbys) {
              boots.execute(() -> standby(m.getStandby()));
            }
          }
          case PING -> {
            if (answerPings) {
              send(WrapperMessage.newBuilder().setPong(Pong.newBuilder().setNonce(m.getPing().getNonce())).build());
            }
          }
          default -> { }
        }
      }

      @Override
      public void onError(Throwable t) {
        attachStatus = Status.fromThrowable(t);
      }

      @Override
      public void onCompleted() {
        attachStatus = Status.OK;
      }
    });
    send(WrapperMessage.newBuilder().setHello(Hello.newBuilder().setSlotId(slot).setIncarnationId(incarnation)
        .addAllHeldDigests(held.stream().map(d -> "sha256:" + d).toList()).setWrapperPid(4000)).build());
    return this;
  }

  /** Sends a message on the attach stream as this wrapper (tests that play a report themselves). */
  public synchronized void send(WrapperMessage m) {
    toRecycler.onNext(m);
  }

  private Channel fenced(long generation, String credential) {
    Metadata md = new Metadata();
    md.put(WORKER_ID, slot);
    md.put(GENERATION, Long.toString(generation));
    md.put(CREDENTIAL, credential);
    return io.grpc.ClientInterceptors.intercept(channel, MetadataUtils.newAttachHeadersInterceptor(md));
  }

  private void standby(dev.recycler.proto.v1.Standby standby) {
    long gen = standby.getGeneration();
    List<String> needs = digests(standby.getPrepared().getArtifactsList());
    if (!held.containsAll(needs)) {
      standbyEnded(gen, "declined: an artifact is not in the cache");
      return;
    }
    standbyGenerations.add(gen);
    binaries.put(gen, needs);
    startWorker(gen, standby.getWorkerId());
  }

  private void standbyEnded(long gen, String message) {
    send(WrapperMessage.newBuilder().setStandbyEnded(dev.recycler.proto.v1.StandbyEnded.newBuilder()
        .setGeneration(gen).setMessage(message)).build());
  }

  private static List<String> digests(List<ArtifactInformation> artifacts) {
    return artifacts.stream().map(a -> {
      try {
        return ArtifactFilePayload.parseFrom(a.getTypePayload()).getSha256();
      } catch (com.google.protobuf.InvalidProtocolBufferException e) {
        return "?";
      }
    }).toList();
  }

  private void boot(dev.recycler.proto.v1.Lease lease) {
    long gen = lease.getGeneration();
    String cred = lease.getCredential();
    if (lease.getAdoptStandby() && standbyGenerations.remove(gen)) {
      send(WrapperMessage.newBuilder()
          .setWorkerStarted(WorkerStarted.newBuilder().setGeneration(gen).setPid(1000 + gen)).build());
      return;
    }
    for (Long other : List.copyOf(standbyGenerations)) {
      // A Lease that does not adopt the running standby stops it first.
      standbyGenerations.remove(other);
      killWorker(other);
      standbyEnded(other, "replaced by the lease of generation " + gen);
    }
    try {
      ProvisionInfo info;
      List<ArtifactInformation> resolved;
      if (usePrepared && lease.hasPrepared()) {
        info = lease.getPrepared().getProvisionInfo();
        resolved = lease.getPrepared().getArtifactsList();
      } else {
        bootCalls.incrementAndGet();
        info = ProvisionServiceGrpc.newBlockingStub(fenced(gen, cred)).withDeadlineAfter(10, TimeUnit.SECONDS)
            .getProvisionInfo(GetProvisionInfoRequest.getDefaultInstance()).getInfo();
        bootCalls.incrementAndGet();
        resolved = ArtifactRetrievalServiceGrpc.newBlockingStub(fenced(gen, cred)).withDeadlineAfter(10, TimeUnit.SECONDS)
            .resolveArtifacts(ResolveArtifactsRequest.newBuilder().addAllArtifacts(info.getDependenciesList()).build())
            .getReplacementsList();
      }
      provisioned.add(info);
      binaries.put(gen, digests(resolved));
      for (ArtifactInformation a : resolved) {
        String sha = ArtifactFilePayload.parseFrom(a.getTypePayload()).getSha256();
        if (!held.contains(sha)) {
          fetch(gen, cred, a, sha);
        }
      }
    } catch (Exception e) {
      bootErrors.add(Status.fromThrowable(e).getCode() + ": " + Status.fromThrowable(e).getDescription());
      ended(gen, Outcome.OUTCOME_BOOT_FAILED, 0, "artifacts: " + e.getMessage());
      return;
    }
    switch (behavior) {
      case BOOT_FAIL -> ended(gen, Outcome.OUTCOME_BOOT_FAILED, 0, "no artifact has role go_worker_binary");
      case CRASH_BEFORE_CONNECT -> ended(gen, Outcome.OUTCOME_WORKER_EXITED, 2, "");
      case NEVER_CONNECT -> send(WrapperMessage.newBuilder()
          .setWorkerStarted(WorkerStarted.newBuilder().setGeneration(gen).setPid(1000 + gen)).build());
      case NORMAL -> {
        send(WrapperMessage.newBuilder()
            .setWorkerStarted(WorkerStarted.newBuilder().setGeneration(gen).setPid(1000 + gen)).build());
        startWorker(gen, lease.getWorkerId());
      }
    }
  }

  private void fetch(long gen, String cred, ArtifactInformation a, String sha) throws Exception {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    String[] length = new String[1];
    ClientInterceptor headers = new ClientInterceptor() {
      @Override
      public <Q, R> ClientCall<Q, R> interceptCall(MethodDescriptor<Q, R> m, CallOptions o, Channel next) {
        return new SimpleForwardingClientCall<>(next.newCall(m, o)) {
          @Override
          public void start(Listener<R> l, Metadata h) {
            super.start(new SimpleForwardingClientCallListener<>(l) {
              @Override
              public void onHeaders(Metadata md) {
                length[0] = md.get(LENGTH);
                super.onHeaders(md);
              }
            }, h);
          }
        };
      }
    };
    java.util.Iterator<GetArtifactResponse> it = ArtifactRetrievalServiceGrpc
        .newBlockingStub(io.grpc.ClientInterceptors.intercept(fenced(gen, cred), headers))
        .withDeadlineAfter(10, TimeUnit.SECONDS).getArtifact(GetArtifactRequest.newBuilder().setArtifact(a).build());
    while (it.hasNext()) {
      it.next().getData().writeTo(bytes);
    }
    downloads.incrementAndGet();
    contentLengths.add(length[0]);
    String actual = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes.toByteArray()));
    if (!actual.equals(sha) || !Long.toString(bytes.size()).equals(length[0])) {
      throw new IllegalStateException("artifact does not match its digest or length");
    }
    held.add(sha);
  }

  private void startWorker(long gen, String workerId) {
    workerIds.put(gen, workerId);
    Metadata md = new Metadata();
    md.put(WORKER_ID, workerId);
    BeamFnControlGrpc.BeamFnControlStub stub = BeamFnControlGrpc.newStub(channel)
        .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md));
    stub.control(new ClientResponseObserver<InstructionResponse, InstructionRequest>() {
      private ClientCallStreamObserver<InstructionResponse> out;

      @Override
      public void beforeStart(ClientCallStreamObserver<InstructionResponse> requestStream) {
        out = requestStream;
        workers.put(gen, requestStream);
        if (deaf.contains(gen)) {
          requestStream.disableAutoRequestWithInitial(0); // never reads an instruction
        }
      }

      @Override
      public void onNext(InstructionRequest r) {
        instructions.add(r);
        instructionsByGeneration.computeIfAbsent(gen, k -> new CopyOnWriteArrayList<>()).add(r.getInstructionId());
        if (frozen.contains(gen)) {
          return;
        }
        InstructionResponse.Builder answer = InstructionResponse.newBuilder().setInstructionId(r.getInstructionId());
        if (r.hasHarnessMonitoringInfos()) {
          // Says which worker answered, and what it runs: the generation and its binaries' digests.
          answer.setHarnessMonitoringInfos(org.apache.beam.model.fnexecution.v1.BeamFnApi
              .HarnessMonitoringInfosResponse.newBuilder()
              .putMonitoringData("generation", com.google.protobuf.ByteString.copyFromUtf8(Long.toString(gen)))
              .putMonitoringData("binaries", com.google.protobuf.ByteString.copyFromUtf8(
                  String.join(",", binaries.getOrDefault(gen, List.of())))));
        }
        synchronized (out) {
          out.onNext(answer.build());
        }
      }

      @Override
      public void onError(Throwable t) {
        workerErrors.put(gen, Status.fromThrowable(t));
        workerEofs.incrementAndGet();
      }

      @Override
      public void onCompleted() {
        // The real Go worker prints "Worker exited successfully!" and sleeps forever here.
        workerEofs.incrementAndGet();
      }
    });
  }

  /**
   * Opens a log stream as the worker of {@code generation} does (its full worker id); send entry lists on the result.
   * What the recycler sends back is dropped.
   */
  public StreamObserver<LogEntry.List> workerLog(long generation) {
    Metadata md = new Metadata();
    md.put(WORKER_ID, workerIds.getOrDefault(generation, ""));
    return BeamFnLoggingGrpc.newStub(channel).withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md))
        .logging(new StreamObserver<LogControl>() {
          @Override
          public void onNext(LogControl c) {}

          @Override
          public void onError(Throwable t) {}

          @Override
          public void onCompleted() {}
        });
  }

  /** The worker of {@code generation} (not started yet) will never read its control stream: a stalled process. */
  public void deafWorker(long generation) {
    deaf.add(generation);
  }

  /** The worker of {@code generation} stops answering instructions (it is busy, then dies). */
  public void freezeWorker(long generation) {
    frozen.add(generation);
  }

  /** Kills the running worker of {@code generation} as SIGKILL would: its control stream breaks. */
  public void killWorker(long generation) {
    ClientCallStreamObserver<InstructionResponse> w = workers.remove(generation);
    if (w != null) {
      w.cancel("killed", null);
    }
  }

  private void exit(long generation) {
    killWorker(generation);
    if (standbyGenerations.remove(generation)) {
      standbyEnded(generation, "stopped on the exit instruction");
      return;
    }
    ended(generation, Outcome.OUTCOME_EXITED_ON_INSTRUCTION, -1, "");
  }

  /** Reports that the worker of {@code generation} exited on its own with {@code code}. */
  public void reportExited(long generation, int code) {
    killWorker(generation);
    ended(generation, Outcome.OUTCOME_WORKER_EXITED, code, "");
  }

  private void ended(long gen, Outcome outcome, int code, String message) {
    send(WrapperMessage.newBuilder().setLeaseEnded(LeaseEnded.newBuilder().setGeneration(gen).setOutcome(outcome)
        .setExitCode(code).setMessage(message).setStage(outcome == Outcome.OUTCOME_BOOT_FAILED
            ? BootStage.BOOT_STAGE_ARTIFACTS : BootStage.BOOT_STAGE_UNSPECIFIED)
        .addAllHeldDigests(held.stream().map(d -> "sha256:" + d).toList())).build());
  }

  /** Messages of one kind received so far. */
  public List<RecyclerMessage> received(RecyclerMessage.KindCase kind) {
    return received.stream().filter(m -> m.getKindCase() == kind).toList();
  }

  @Override
  public void close() {
    workers.values().forEach(w -> w.cancel("wrapper closed", null));
    boots.shutdownNow();
    channel.shutdownNow();
  }
}
