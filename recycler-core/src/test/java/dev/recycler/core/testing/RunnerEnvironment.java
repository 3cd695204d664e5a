package dev.recycler.core.testing;

import com.google.protobuf.ByteString;
import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.BindableService;
import io.grpc.Status;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.HarnessMonitoringInfosRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.LogControl;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.LogEntry;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnControlGrpc;
import org.apache.beam.model.fnexecution.v1.BeamFnLoggingGrpc;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.GetProvisionInfoRequest;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.GetProvisionInfoResponse;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.ProvisionInfo;
import org.apache.beam.model.fnexecution.v1.ProvisionServiceGrpc;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.GetArtifactRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.GetArtifactResponse;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.ResolveArtifactsRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.ResolveArtifactsResponse;
import org.apache.beam.model.jobmanagement.v1.ArtifactRetrievalServiceGrpc;
import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactFilePayload;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactInformation;

/**
 * One Beam runner environment as the Flink TaskManager creates it for an EXTERNAL environment: fresh control, logging,
 * provision and artifact servers, each on its own loopback port advertised as {@code localhost:<port>}, each reading
 * {@code worker_id} like Beam's own (control and provision refuse calls without it). Serves a real Go worker binary as
 * a staged file without sha256, as Beam's job server does. Used by integration tests and the lease benchmark.
 */
public final class RunnerEnvironment implements AutoCloseable {
  private static final Metadata.Key<String> WORKER_ID = Metadata.Key.of("worker_id", Metadata.ASCII_STRING_MARSHALLER);
  private static final Context.Key<String> CALLER = Context.key("runner-caller");
  private static final String BINARY_ROLE = "beam:artifact:role:go_worker_binary:v1";

  private final String workerId;
  private final Path binary;
  private final List<Server> servers = new ArrayList<>();
  private final Server control;
  private final Server logging;
  private final Server provision;
  private final Server artifacts;
  private final CompletableFuture<Long> connectedAtNanos = new CompletableFuture<>();
  private final CompletableFuture<Status> controlEnded = new CompletableFuture<>();
  private final AtomicLong artifactBytes = new AtomicLong();
  private volatile StreamObserver<InstructionRequest> controlStream;
  private final java.util.Map<String, CompletableFuture<InstructionResponse>> responses =
      new java.util.concurrent.ConcurrentHashMap<>();
  private final java.util.Map<String, CompletableFuture<Long>> answeredAt =
      new java.util.concurrent.ConcurrentHashMap<>();

  /**
   * @param workerId the runner's worker id (Beam's {@code <factory>-<n>}, e.g. {@code 1-1})
   * @param binary the Go worker binary to stage
   * @param stagingPath the path the "job server" staged it under (a new one per job)
   */
  public RunnerEnvironment(String workerId, Path binary, String stagingPath) throws IOException {
    this.workerId = workerId;
    this.binary = binary;
    this.control = serve(new Control());
    this.logging = serve(new Logging());
    this.provision = serve(new Provision(stagingPath));
    this.artifacts = serve(new Artifacts(stagingPath));
  }

  private Server serve(BindableService service) throws IOException {
    ServerInterceptor capture = new ServerInterceptor() {
      @Override
      public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers,
          ServerCallHandler<Q, R> next) {
        String id = headers.get(WORKER_ID);
        return Contexts.interceptCall(Context.current().withValue(CALLER, id == null ? "" : id), call, headers, next);
      }
    };
    Server s = NettyServerBuilder.forAddress(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))
        .maxInboundMessageSize(Integer.MAX_VALUE)
        .addService(ServerInterceptors.intercept(service, capture)).build().start();
    servers.add(s);
    return s;
  }

  private static ApiServiceDescriptor url(Server s) {
    return ApiServiceDescriptor.newBuilder().setUrl("localhost:" + s.getPort()).build();
  }

  /** The StartWorker request Beam's ExternalEnvironmentFactory sends for this environment. */
  public StartWorkerRequest startRequest() {
    return StartWorkerRequest.newBuilder().setWorkerId(workerId).setControlEndpoint(url(control))
        .setLoggingEndpoint(url(logging)).setArtifactEndpoint(url(artifacts)).setProvisionEndpoint(url(provision))
        .build();
  }

  /** Completes with {@link System#nanoTime()} when a control stream with this environment's worker id connects. */
  public CompletableFuture<Long> connected() {
    return connectedAtNanos;
  }

  /** Completes with the status the control stream ended with (OK for a clean close by either side). */
  public CompletableFuture<Status> controlEnded() {
    return controlEnded;
  }

  /** Bytes of the binary this environment served. */
  public long artifactBytes() {
    return artifactBytes.get();
  }

  /** Sends an instruction to the worker, as Beam's FnApiControlClient.handle does; completes with the response. */
  public CompletableFuture<InstructionResponse> send(String instructionId) throws Exception {
    connectedAtNanos.get(30, TimeUnit.SECONDS);
    CompletableFuture<InstructionResponse> f = new CompletableFuture<>();
    responses.put(instructionId, f);
    StreamObserver<InstructionRequest> c = controlStream;
    synchronized (c) {
      c.onNext(InstructionRequest.newBuilder().setInstructionId(instructionId).build());
    }
    return f;
  }

  /**
   * Sends a harmless instruction (a {@code harness_monitoring_infos} request, which Beam's runner also sends to a live
   * worker) and completes with {@link System#nanoTime()} at the arrival of the worker's answer, whatever it says (an
   * SDK that does not support the request answers with an error, which is still an answer). Waits (bounded) for the
   * control connection first.
   */
  public CompletableFuture<Long> firstAnswer(String instructionId) throws Exception {
    connectedAtNanos.get(30, TimeUnit.SECONDS);
    CompletableFuture<InstructionResponse> f = new CompletableFuture<>();
    CompletableFuture<Long> at = new CompletableFuture<>();
    answeredAt.put(instructionId, at);
    responses.put(instructionId, f);
    StreamObserver<InstructionRequest> c = controlStream;
    synchronized (c) {
      c.onNext(InstructionRequest.newBuilder().setInstructionId(instructionId)
          .setHarnessMonitoringInfos(HarnessMonitoringInfosRequest.getDefaultInstance()).build());
    }
    return at;
  }

  /**
   * Closes the control stream as Beam's runner does when the job's work on this TaskManager is done. Waits (bounded)
   * for the stream to arrive first: StartWorker may return a moment before the proxied stream reaches this server.
   */
  public void closeControl() throws Exception {
    connectedAtNanos.get(30, TimeUnit.SECONDS);
    StreamObserver<InstructionRequest> c = controlStream;
    if (c != null) {
      synchronized (c) {
        c.onCompleted();
      }
    }
  }

  @Override
  public void close() throws InterruptedException {
    for (Server s : servers) {
      s.shutdownNow();
    }
    for (Server s : servers) {
      s.awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  private final class Control extends BeamFnControlGrpc.BeamFnControlImplBase {
    @Override
    public StreamObserver<InstructionResponse> control(StreamObserver<InstructionRequest> out) {
      long now = System.nanoTime();
      if (!workerId.equals(CALLER.get())) {
        out.onError(Status.FAILED_PRECONDITION.withDescription("unexpected worker id " + CALLER.get()).asException());
        return new Drain<>();
      }
      ((ServerCallStreamObserver<InstructionRequest>) out).setOnCancelHandler(
          () -> controlEnded.complete(Status.CANCELLED));
      controlStream = out;
      connectedAtNanos.complete(now);
      return new StreamObserver<>() {
        @Override
        public void onNext(InstructionResponse value) {
          long now = System.nanoTime();
          CompletableFuture<Long> at = answeredAt.get(value.getInstructionId());
          if (at != null) {
            at.complete(now);
          }
          CompletableFuture<InstructionResponse> f = responses.get(value.getInstructionId());
          if (f != null) {
            f.complete(value);
          }
        }

        @Override
        public void onError(Throwable t) {
          controlEnded.complete(Status.fromThrowable(t));
        }

        @Override
        public void onCompleted() {
          controlEnded.complete(Status.OK);
        }
      };
    }
  }

  private static final class Logging extends BeamFnLoggingGrpc.BeamFnLoggingImplBase {
    @Override
    public StreamObserver<LogEntry.List> logging(StreamObserver<LogControl> out) {
      ((ServerCallStreamObserver<LogControl>) out).setOnCancelHandler(() -> { });
      return new Drain<>() {
        @Override
        public void onCompleted() {
          out.onCompleted();
        }
      };
    }
  }

  private final class Provision extends ProvisionServiceGrpc.ProvisionServiceImplBase {
    private final String stagingPath;

    Provision(String stagingPath) {
      this.stagingPath = stagingPath;
    }

    @Override
    public void getProvisionInfo(GetProvisionInfoRequest request, StreamObserver<GetProvisionInfoResponse> out) {
      if (CALLER.get().isEmpty()) {
        out.onError(Status.INVALID_ARGUMENT.withDescription("missing worker_id").asException());
        return;
      }
      // Beam's job server gives each job a fresh staging directory and its staging token as the retrieval token;
      // every environment of a job gets the job's options (here: its name, after its staging directory).
      String job = stagingPath.contains("/") ? stagingPath.substring(0, stagingPath.lastIndexOf('/')) : stagingPath;
      Struct options = Struct.newBuilder().putFields("options", Value.newBuilder().setStructValue(Struct.newBuilder()
          .putFields("job_name", Value.newBuilder().setStringValue("job-" + Integer.toHexString(job.hashCode()))
              .build())).build()).build();
      ProvisionInfo info = ProvisionInfo.newBuilder().setPipelineOptions(options).setRetrievalToken("staged:" + job)
          .setLoggingEndpoint(url(logging)).setControlEndpoint(url(control)).setArtifactEndpoint(url(artifacts))
          .addDependencies(ArtifactInformation.newBuilder().setTypeUrn("beam:artifact:type:file:v1")
              .setTypePayload(ArtifactFilePayload.newBuilder().setPath(stagingPath).build().toByteString())
              .setRoleUrn(BINARY_ROLE))
          .build();
      out.onNext(GetProvisionInfoResponse.newBuilder().setInfo(info).build());
      out.onCompleted();
    }
  }

  private final class Artifacts extends ArtifactRetrievalServiceGrpc.ArtifactRetrievalServiceImplBase {
    private final String stagingPath;

    Artifacts(String stagingPath) {
      this.stagingPath = stagingPath;
    }

    @Override
    public void resolveArtifacts(ResolveArtifactsRequest request, StreamObserver<ResolveArtifactsResponse> out) {
      out.onNext(ResolveArtifactsResponse.newBuilder().addAllReplacements(request.getArtifactsList()).build());
      out.onCompleted();
    }

    @Override
    public void getArtifact(GetArtifactRequest request, StreamObserver<GetArtifactResponse> out) {
      try {
        String path = ArtifactFilePayload.parseFrom(request.getArtifact().getTypePayload()).getPath();
        if (!path.equals(stagingPath)) {
          out.onError(Status.NOT_FOUND.withDescription(path).asException());
          return;
        }
        // A real staged copy if the caller made one (as Beam's job server does), else the binary itself.
        Path staged = Path.of(stagingPath);
        try (InputStream in = Files.newInputStream(staged.isAbsolute() && Files.isRegularFile(staged) ? staged : binary)) {
          byte[] buf = new byte[2 << 20];
          int n;
          while ((n = in.readNBytes(buf, 0, buf.length)) > 0) {
            out.onNext(GetArtifactResponse.newBuilder().setData(ByteString.copyFrom(buf, 0, n)).build());
            artifactBytes.addAndGet(n);
          }
        }
        out.onCompleted();
      } catch (IOException e) {
        out.onError(Status.INTERNAL.withDescription(e.toString()).asException());
      }
    }
  }

  /** Discards a stream's messages. */
  private static class Drain<T> implements StreamObserver<T> {
    @Override
    public void onNext(T value) {}

    @Override
    public void onError(Throwable t) {}

    @Override
    public void onCompleted() {}
  }
}
