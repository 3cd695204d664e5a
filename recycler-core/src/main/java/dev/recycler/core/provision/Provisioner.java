package dev.recycler.core.provision;

import static dev.recycler.core.wire.WorkerIds.withWorkerId;

import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.slot.Lease;
import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.wire.Detached;
import dev.recycler.core.wire.RunnerChannels;
import dev.recycler.core.wire.UnaryCalls;
import io.grpc.BindableService;
import io.grpc.Status;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.GetProvisionInfoRequest;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.GetProvisionInfoResponse;
import org.apache.beam.model.fnexecution.v1.ProvisionApi.ProvisionInfo;
import org.apache.beam.model.fnexecution.v1.ProvisionServiceGrpc;
import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;

/**
 * Fetches each lease's {@link ProvisionInfo} from the runner (with the runner's worker id) once, as soon as a slot is
 * assigned, and rewrites it for the wrapper: control, artifact and logging endpoints point at the recycler (control
 * proxy, artifact cache, logging proxy); a runner that names no logging endpoint in StartWorker keeps its own.
 * Pipeline options are passed through, never logged.
 *
 * <p>Concurrency: one future per lease in a {@link ConcurrentHashMap}, removed when the lease ends.
 */
public final class Provisioner {
  private final SlotPool pool;
  private final RunnerChannels channels;
  private final Supplier<String> advertisedEndpoint;
  private final Duration timeout;
  private final Map<Lease, CompletableFuture<ProvisionInfo>> byLease = new ConcurrentHashMap<>();

  /** @param advertisedEndpoint the recycler's endpoint as wrappers and workers dial it */
  public Provisioner(SlotPool pool, RunnerChannels channels, Supplier<String> advertisedEndpoint, Duration timeout) {
    this.pool = pool;
    this.channels = channels;
    this.advertisedEndpoint = advertisedEndpoint;
    this.timeout = timeout;
  }

  /** The wrapper-facing {@code ProvisionService} over this provisioner, for the server on the fixed port. */
  public BindableService service() {
    return new ProvisionService(pool, this);
  }

  public void onEnded(Lease lease) {
    byLease.remove(lease);
  }

  /** The lease's rewritten provision info, fetched once (again after a failure). */
  public CompletableFuture<ProvisionInfo> provisionInfo(Lease lease) {
    CompletableFuture<ProvisionInfo> f =
        byLease.compute(lease, (l, old) -> old == null || old.isCompletedExceptionally() ? fetch(l) : old);
    if (!lease.isOpen()) {
      byLease.remove(lease); // it ended meanwhile; onEnded may have run already
    }
    return f;
  }

  private CompletableFuture<ProvisionInfo> fetch(Lease lease) {
    ProvisionServiceGrpc.ProvisionServiceStub stub = withWorkerId(ProvisionServiceGrpc.newStub(
        channels.channel(lease, lease.request().getProvisionEndpoint().getUrl())), lease.runnerWorkerId());
    return UnaryCalls.<GetProvisionInfoResponse, ProvisionInfo>call(observer -> Detached.run(() -> stub
        .withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS)
        .getProvisionInfo(GetProvisionInfoRequest.getDefaultInstance(), observer)), (response, failure) -> {
          if (failure != null) {
            Status s = Status.fromThrowable(failure);
            throw new RecyclerException(RecyclerException.Kind.UNAVAILABLE, "the runner's provision service failed"
                + " for worker " + lease.runnerWorkerId() + ": " + s.getCode()
                + (s.getDescription() == null ? "" : " " + s.getDescription()));
          }
          if (response == null) {
            throw new RecyclerException(RecyclerException.Kind.UNAVAILABLE,
                "the runner's provision service answered without provision info");
          }
          ProvisionInfo upstream = response.getInfo();
          pool.jobName(lease, jobName(upstream.getPipelineOptions()));
          pool.retrievalToken(lease, upstream.getRetrievalToken());
          return rewrite(upstream, lease);
        });
  }

  ProvisionInfo rewrite(ProvisionInfo upstream, Lease lease) {
    ApiServiceDescriptor self = ApiServiceDescriptor.newBuilder().setUrl(advertisedEndpoint.get()).build();
    ProvisionInfo.Builder b = upstream.toBuilder().setControlEndpoint(self).setArtifactEndpoint(self);
    if (!lease.request().getLoggingEndpoint().getUrl().isEmpty()) {
      // The logging proxy forwards to the StartWorker request's logging endpoint (see LoggingProxyService).
      b.setLoggingEndpoint(self);
    }
    return b.build();
  }

  /** The job name from Beam's pipeline options (URN-keyed or nested under "options"), or "". */
  static String jobName(Struct options) {
    for (String key : new String[] {"beam:option:job_name:v1", "job_name"}) {
      Value v = options.getFieldsOrDefault(key, null);
      if (v != null && v.hasStringValue()) {
        return v.getStringValue();
      }
    }
    Value nested = options.getFieldsOrDefault("options", null);
    if (nested != null && nested.hasStructValue()) {
      return jobName(nested.getStructValue());
    }
    return "";
  }
}
