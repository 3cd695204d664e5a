package dev.recycler.core.control;

import static dev.recycler.core.wire.WorkerIds.withWorkerId;

import com.google.protobuf.InvalidProtocolBufferException;
import dev.recycler.core.wire.ChannelOwner;
import dev.recycler.core.wire.Detached;
import dev.recycler.core.wire.UnaryCalls;
import dev.recycler.core.wire.RunnerChannels;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import javax.annotation.concurrent.GuardedBy;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.Elements;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.GetProcessBundleDescriptorRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.ProcessBundleDescriptor;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.RemoteGrpcPort;
import org.apache.beam.model.fnexecution.v1.BeamFnControlGrpc;
import org.apache.beam.model.fnexecution.v1.BeamFnDataGrpc;
import org.apache.beam.model.pipeline.v1.RunnerApi.PTransform;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Stands in for a lost worker's data stream, so that Beam's runner can fail the bundles the worker left behind.
 *
 * <p>Why: Beam's {@code SdkHarnessClient.newBundle} sends the ProcessBundle request and then waits up to three minutes
 * in {@code GrpcDataService.createOutboundAggregator} for the environment's first data client. A worker killed before
 * it opened its data stream (while it fetched its process bundle descriptors, say) never connects, so the runner sat
 * there although the proxy had already answered the bundle with an error: the demo's "worker SIGKILLed mid-job" job
 * hung for minutes. Once the worker is gone, this opens one data stream per data endpoint the bundle's descriptor names
 * (as the worker would have), discards what the runner sends on it, and closes it when the runner ends the
 * environment. The runner then reaches the bundle's error response at once. If the worker had connected before it
 * died, the extra client is one of Beam's "additional multiplexers" and changes nothing.
 *
 * <p>Concurrency: one lock guards the endpoint set and the open streams; gRPC calls start after it is released.
 * Lifecycle: created per proxied control stream; {@link #close} is idempotent and ends every stream it opened.
 * Channels are owned by this object (not by the lease, whose channels close when the lease ends, which is usually
 * before the runner asks for the bundle).
 */
final class OrphanDataSink implements ChannelOwner {
  private static final Logger LOG = LoggerFactory.getLogger(OrphanDataSink.class);
  static final String DATA_SOURCE_URN = "beam:runner:source:v1";
  static final String DATA_SINK_URN = "beam:runner:sink:v1";

  private final RunnerChannels channels;
  private final String controlUrl;
  private final String runnerWorkerId;
  private final Duration upstreamTimeout;
  private final String label;

  @GuardedBy("this")
  private final Set<String> descriptorsSeen = new HashSet<>();
  @GuardedBy("this")
  private final Set<String> endpoints = new LinkedHashSet<>();
  @GuardedBy("this")
  private final List<ClientCallStreamObserver<Elements>> streams = new ArrayList<>();
  @GuardedBy("this")
  private boolean closed;

  OrphanDataSink(RunnerChannels channels, String controlUrl, String runnerWorkerId, Duration upstreamTimeout,
      String label) {
    this.channels = channels;
    this.controlUrl = controlUrl;
    this.runnerWorkerId = runnerWorkerId;
    this.upstreamTimeout = upstreamTimeout;
    this.label = label;
  }

  /**
   * Makes sure a data client is connected to every data endpoint of descriptor {@code descriptorId}, fetching the
   * descriptor from the runner's control service (as the worker would have). Asynchronous; safe to call often.
   */
  void coverBundle(String descriptorId) {
    synchronized (this) {
      if (closed || descriptorId.isEmpty() || !descriptorsSeen.add(descriptorId)) {
        return;
      }
    }
    // Detached: this runs in the lost worker's cancelled call context, which would cancel the call at once.
    UnaryCalls.<ProcessBundleDescriptor, Void>call(observer -> Detached.run(() -> withWorkerId(
        BeamFnControlGrpc.newStub(channels.channel(this, controlUrl)), runnerWorkerId)
        .withDeadlineAfter(upstreamTimeout.toMillis(), TimeUnit.MILLISECONDS)
        .getProcessBundleDescriptor(GetProcessBundleDescriptorRequest.newBuilder()
            .setProcessBundleDescriptorId(descriptorId).build(), observer)), (descriptor, failure) -> {
              if (failure != null) {
                LOG.warn("{}: cannot fetch process bundle descriptor {} to stand in for the lost worker's data "
                    + "stream: {}", label, descriptorId, Status.fromThrowable(failure).getCode());
              } else if (descriptor != null) {
                dataEndpoints(descriptor).forEach(this::connect);
              }
              return null;
            });
  }

  /** The data endpoints a descriptor's runner-side ports and timers use (normally one: the environment's). */
  static Set<String> dataEndpoints(ProcessBundleDescriptor descriptor) {
    Set<String> urls = new LinkedHashSet<>();
    for (PTransform t : descriptor.getTransformsMap().values()) {
      String urn = t.getSpec().getUrn();
      if (DATA_SOURCE_URN.equals(urn) || DATA_SINK_URN.equals(urn)) {
        try {
          String url = RemoteGrpcPort.parseFrom(t.getSpec().getPayload()).getApiServiceDescriptor().getUrl();
          if (!url.isEmpty()) {
            urls.add(url);
          }
        } catch (InvalidProtocolBufferException e) {
          // Not a port we can use; the runner built it, so this does not happen with Beam.
        }
      }
    }
    if (!descriptor.getTimerApiServiceDescriptor().getUrl().isEmpty()) {
      urls.add(descriptor.getTimerApiServiceDescriptor().getUrl());
    }
    return urls;
  }

  private void connect(String url) {
    synchronized (this) {
      if (closed || !endpoints.add(url)) {
        return;
      }
    }
    // No deadline: the stream lives as long as the runner's environment; close() or the runner's end finish it.
    Detached.run(() -> withWorkerId(BeamFnDataGrpc.newStub(channels.channel(this, url)), runnerWorkerId)
        .data(new ClientResponseObserver<Elements, Elements>() {
          @Override
          public void beforeStart(ClientCallStreamObserver<Elements> stream) {
            boolean late;
            synchronized (OrphanDataSink.this) {
              late = closed;
              if (!late) {
                streams.add(stream);
              }
            }
            if (late) {
              stream.cancel("the runner's environment ended", null);
            }
          }

          @Override
          public void onNext(Elements discarded) {
            // The lost worker's input: nobody can process it; the bundle already has its error response.
          }

          @Override
          public void onError(Throwable t) {}

          @Override
          public void onCompleted() {}
        }));
    LOG.info("{}: standing in for the lost worker's data stream at {} so the runner can fail its bundle", label, url);
  }

  @Override
  public synchronized boolean holdsChannels() {
    return !closed;
  }

  /** Ends every stream this opened and releases its channels. Idempotent. */
  void close() {
    List<ClientCallStreamObserver<Elements>> open;
    synchronized (this) {
      if (closed) {
        return;
      }
      closed = true;
      open = new ArrayList<>(streams);
      streams.clear();
    }
    for (ClientCallStreamObserver<Elements> s : open) {
      try {
        s.onCompleted();
      } catch (RuntimeException e) {
        // Already cancelled by the runner: nothing left to end.
      }
    }
    channels.release(this);
  }
}
