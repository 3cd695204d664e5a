package dev.recycler.core.testing;

import com.google.protobuf.ByteString;
import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.Elements;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.GetProcessBundleDescriptorRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.ProcessBundleDescriptor;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.ProcessBundleRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.RemoteGrpcPort;
import org.apache.beam.model.fnexecution.v1.BeamFnDataGrpc;
import org.apache.beam.model.pipeline.v1.RunnerApi.FunctionSpec;
import org.apache.beam.model.pipeline.v1.RunnerApi.PTransform;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.LogControl;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.LogEntry;
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
 * A fake of one Beam runner environment, as Flink's TaskManager sets it up per job: control, provision and artifact
 * services (in-process), reading {@code worker_id} like Beam's own. Build with {@link #builder()}.
 */
public final class TestingRunner implements AutoCloseable {
  private static final Metadata.Key<String> WORKER_ID = Metadata.Key.of("worker_id", Metadata.ASCII_STRING_MARSHALLER);
  private static final Context.Key<String> CALLER = Context.key("caller");
  private static final AtomicInteger NAMES = new AtomicInteger();

  private final String name = "runner-" + NAMES.incrementAndGet();
  private final ProvisionInfo info;
  private final Map<String, byte[]> files;
  private final int truncateAfter;
  private final Server server;

  /** Worker ids seen on each service, in call order. */
  public final List<String> controlCallers = new CopyOnWriteArrayList<>();
  public final List<String> provisionCallers = new CopyOnWriteArrayList<>();
  public final AtomicInteger artifactDownloads = new AtomicInteger();
  public final AtomicInteger resolveCalls = new AtomicInteger();
  /** Control streams by worker id: send instructions, close them. */
  public final Map<String, StreamObserver<InstructionRequest>> controls = new ConcurrentHashMap<>();
  public final Map<String, List<InstructionResponse>> responses = new ConcurrentHashMap<>();
  public final Map<String, Status> controlErrors = new ConcurrentHashMap<>();
  /** Process bundle descriptors the runner registered, by id (served by GetProcessBundleDescriptor). */
  public final Map<String, ProcessBundleDescriptor> descriptors = new ConcurrentHashMap<>();
  /** Worker ids of GetProcessBundleDescriptor calls, in call order. */
  public final List<String> descriptorCallers = new CopyOnWriteArrayList<>();
  /**
   * Worker ids of data clients, in connection order. Beam's {@code GrpcDataService} makes the runner wait (minutes)
   * for the first one before it sends a bundle's input, whatever the bundle's response says.
   */
  public final List<String> dataClients = new CopyOnWriteArrayList<>();
  /** Data streams closed by their client (OK) or broken (the status), in order. */
  public final List<Status> dataStreamEnds = new CopyOnWriteArrayList<>();
  /** Log messages received, and the worker id of each logging stream, in order. */
  public final List<String> logMessages = new CopyOnWriteArrayList<>();
  public final List<String> loggingCallers = new CopyOnWriteArrayList<>();
  private final List<StreamObserver<LogControl>> loggingStreams = new CopyOnWriteArrayList<>();
  private volatile boolean loggingClosed;

  private TestingRunner(Builder b) throws IOException {
    this.info = b.info;
    this.files = b.files;
    this.truncateAfter = b.truncateAfter;
    ServerInterceptor capture = new ServerInterceptor() {
      @Override
      public <Q, R> io.grpc.ServerCall.Listener<Q> interceptCall(io.grpc.ServerCall<Q, R> call, Metadata headers,
          io.grpc.ServerCallHandler<Q, R> next) {
        String id = headers.get(WORKER_ID);
        return Contexts.interceptCall(Context.current().withValue(CALLER, id == null ? "" : id), call, headers, next);
      }
    };
    this.server = InProcessServerBuilder.forName(name).directExecutor()
        .addService(ServerInterceptors.intercept(new Control(), capture))
        .addService(ServerInterceptors.intercept(new Provision(), capture))
        .addService(ServerInterceptors.intercept(new Artifacts(), capture))
        .addService(ServerInterceptors.intercept(new Data(), capture))
        .addService(ServerInterceptors.intercept(new Logging(), capture))
        .build().start();
  }

  public static Builder builder() {
    return new Builder();
  }

  /** The in-process "url" of every endpoint of this environment. */
  public String url() {
    return name;
  }

  /** A StartWorker request as Beam's ExternalEnvironmentFactory sends it. */
  public StartWorkerRequest startRequest(String workerId) {
    ApiServiceDescriptor d = ApiServiceDescriptor.newBuilder().setUrl(name).build();
    return StartWorkerRequest.newBuilder().setWorkerId(workerId).setControlEndpoint(d).setLoggingEndpoint(d)
        .setArtifactEndpoint(d).setProvisionEndpoint(d).build();
  }

  /**
   * Registers a descriptor whose input comes from, and output goes to, this environment's data endpoint, as Beam's
   * runner does before it sends the ProcessBundle request that names it; returns that request.
   */
  public InstructionRequest processBundle(String instructionId, String descriptorId) {
    RemoteGrpcPort port = RemoteGrpcPort.newBuilder()
        .setApiServiceDescriptor(ApiServiceDescriptor.newBuilder().setUrl(name)).build();
    descriptors.put(descriptorId, ProcessBundleDescriptor.newBuilder().setId(descriptorId)
        .putTransforms("read", PTransform.newBuilder().setSpec(FunctionSpec.newBuilder()
            .setUrn("beam:runner:source:v1").setPayload(port.toByteString())).build())
        .putTransforms("write", PTransform.newBuilder().setSpec(FunctionSpec.newBuilder()
            .setUrn("beam:runner:sink:v1").setPayload(port.toByteString())).build())
        .build());
    return InstructionRequest.newBuilder().setInstructionId(instructionId)
        .setProcessBundle(ProcessBundleRequest.newBuilder().setProcessBundleDescriptorId(descriptorId)).build();
  }

  /** Channel factory resolving this fake's url in-process (and any other TestingRunner's). */
  public static ManagedChannel channel(String url) {
    return InProcessChannelBuilder.forName(url).directExecutor().build();
  }

  /** A staged file dependency as Beam's job server describes it: a path, no sha256. */
  public static ArtifactInformation stagedFile(String path, String role) {
    return ArtifactInformation.newBuilder().setTypeUrn("beam:artifact:type:file:v1")
        .setTypePayload(ArtifactFilePayload.newBuilder().setPath(path).build().toByteString()).setRoleUrn(role).build();
  }

  /**
   * Closes the logging service as Beam's runner does first when it closes an environment: every connected client's
   * stream is completed, later streams are refused.
   */
  public void closeLogging() {
    loggingClosed = true;
    for (StreamObserver<LogControl> s : loggingStreams) {
      s.onCompleted();
    }
  }

  @Override
  public void close() {
    server.shutdownNow();
  }

  private final class Logging extends BeamFnLoggingGrpc.BeamFnLoggingImplBase {
    @Override
    public StreamObserver<LogEntry.List> logging(StreamObserver<LogControl> out) {
      loggingCallers.add(CALLER.get());
      if (loggingClosed) {
        out.onError(Status.UNAVAILABLE.withDescription("logging server closed").asException());
      } else {
        loggingStreams.add(out);
      }
      return new StreamObserver<>() {
        @Override
        public void onNext(LogEntry.List entries) {
          if (!loggingClosed) {
            entries.getLogEntriesList().forEach(e -> logMessages.add(e.getMessage()));
          }
        }

        @Override
        public void onError(Throwable t) {}

        @Override
        public void onCompleted() {}
      };
    }
  }

  /** Builder of a fake runner environment. */
  public static final class Builder {
    private ProvisionInfo info = ProvisionInfo.getDefaultInstance();
    private final Map<String, byte[]> files = new ConcurrentHashMap<>();
    private int truncateAfter = -1;

    public Builder provisionInfo(ProvisionInfo info) {
      this.info = info;
      return this;
    }

    /** Serves {@code bytes} for a file artifact with this path. */
    public Builder file(String path, byte[] bytes) {
      files.put(path, bytes);
      return this;
    }

    /** Breaks every artifact download after this many bytes. */
    public Builder truncateAfter(int bytes) {
      this.truncateAfter = bytes;
      return this;
    }

    public TestingRunner build() throws IOException {
      return new TestingRunner(this);
    }
  }

  private final class Control extends BeamFnControlGrpc.BeamFnControlImplBase {
    @Override
    public void getProcessBundleDescriptor(GetProcessBundleDescriptorRequest request,
        StreamObserver<ProcessBundleDescriptor> out) {
      descriptorCallers.add(CALLER.get());
      ProcessBundleDescriptor d = descriptors.get(request.getProcessBundleDescriptorId());
      if (d == null) {
        out.onError(Status.NOT_FOUND.withDescription(request.getProcessBundleDescriptorId()).asException());
        return;
      }
      out.onNext(d);
      out.onCompleted();
    }

    @Override
    public StreamObserver<InstructionResponse> control(StreamObserver<InstructionRequest> out) {
      String id = CALLER.get();
      controlCallers.add(id);
      controls.put(id, out);
      return new StreamObserver<>() {
        @Override
        public void onNext(InstructionResponse r) {
          responses.computeIfAbsent(id, k -> new CopyOnWriteArrayList<>()).add(r);
        }

        @Override
        public void onError(Throwable t) {
          controlErrors.put(id, Status.fromThrowable(t));
        }

        @Override
        public void onCompleted() {
          controlErrors.put(id, Status.OK);
        }
      };
    }
  }

  private final class Data extends BeamFnDataGrpc.BeamFnDataImplBase {
    @Override
    public StreamObserver<Elements> data(StreamObserver<Elements> out) {
      dataClients.add(CALLER.get());
      return new StreamObserver<>() {
        @Override
        public void onNext(Elements value) {}

        @Override
        public void onError(Throwable t) {
          dataStreamEnds.add(Status.fromThrowable(t));
        }

        @Override
        public void onCompleted() {
          dataStreamEnds.add(Status.OK);
          out.onCompleted();
        }
      };
    }
  }

  private final class Provision extends ProvisionServiceGrpc.ProvisionServiceImplBase {
    @Override
    public void getProvisionInfo(GetProvisionInfoRequest request, StreamObserver<GetProvisionInfoResponse> out) {
      provisionCallers.add(CALLER.get());
      if (CALLER.get().isEmpty()) {
        out.onError(Status.INVALID_ARGUMENT.withDescription("no worker_id").asException());
        return;
      }
      out.onNext(GetProvisionInfoResponse.newBuilder().setInfo(info).build());
      out.onCompleted();
    }
  }

  private final class Artifacts extends ArtifactRetrievalServiceGrpc.ArtifactRetrievalServiceImplBase {
    @Override
    public void resolveArtifacts(ResolveArtifactsRequest request, StreamObserver<ResolveArtifactsResponse> out) {
      resolveCalls.incrementAndGet();
      out.onNext(ResolveArtifactsResponse.newBuilder().addAllReplacements(request.getArtifactsList()).build());
      out.onCompleted();
    }

    @Override
    public void getArtifact(GetArtifactRequest request, StreamObserver<GetArtifactResponse> out) {
      artifactDownloads.incrementAndGet();
      String path;
      try {
        path = ArtifactFilePayload.parseFrom(request.getArtifact().getTypePayload()).getPath();
      } catch (com.google.protobuf.InvalidProtocolBufferException e) {
        out.onError(Status.INVALID_ARGUMENT.asException());
        return;
      }
      byte[] bytes = files.get(path);
      if (bytes == null) {
        out.onError(Status.NOT_FOUND.withDescription(path).asException());
        return;
      }
      int chunk = 64 * 1024;
      for (int off = 0; off < bytes.length; off += chunk) {
        if (truncateAfter >= 0 && off >= truncateAfter) {
          out.onError(Status.UNAVAILABLE.withDescription("connection reset").asException());
          return;
        }
        out.onNext(GetArtifactResponse.newBuilder()
            .setData(ByteString.copyFrom(bytes, off, Math.min(chunk, bytes.length - off))).build());
      }
      out.onCompleted();
    }
  }
}
