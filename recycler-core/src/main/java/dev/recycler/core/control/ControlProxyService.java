package dev.recycler.core.control;

import static dev.recycler.core.wire.WorkerIds.withWorkerId;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.slot.ControlLink;
import dev.recycler.core.slot.EndReason;
import dev.recycler.core.slot.Lease;
import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.wire.CallerContext;
import dev.recycler.core.wire.Detached;
import dev.recycler.core.wire.RunnerChannels;
import dev.recycler.core.wire.UnaryCalls;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.GetProcessBundleDescriptorRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.ProcessBundleDescriptor;
import org.apache.beam.model.fnexecution.v1.BeamFnControlGrpc;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code BeamFnControl} for inner workers, proxied 1:1 to the runner's control endpoint of the worker's lease. The
 * worker calls with its minted id ({@code <slot>.g<generation>}); the runner is called with its own worker id.
 *
 * <p>Why a proxy: the lease is ready exactly when the worker's control stream is connected (then StartWorker returns),
 * the runner's close is seen at once (then the slot gets its exit instruction), and a worker that dies fails the
 * runner's bundles instead of leaving them waiting. Data and state go from the worker to the runner directly; logging
 * through {@link LoggingProxyService}.
 *
 * <p>When the worker is lost (crash, SIGKILL, wrapper gone) the runner's side is <b>not</b> closed: Beam's {@code
 * FnApiControlClient.handle} never completes a request sent on a closed client, and a stream cancelled before it
 * reached Beam leaves the runner waiting for a client forever. Instead the proxy stays as an orphan responder: every
 * instruction the worker left unanswered, and every later one, gets an {@code InstructionResponse} with an error, so
 * Beam fails the bundle and tears the environment down, closing the stream itself. For a ProcessBundle among them the
 * {@link OrphanDataSink} also connects a data client in the worker's place, because Beam's runner waits minutes for
 * one before it looks at the bundle's response.
 */
final class ControlProxyService extends BeamFnControlGrpc.BeamFnControlImplBase {
  private static final Logger LOG = LoggerFactory.getLogger(ControlProxyService.class);

  private final SlotPool pool;
  private final RunnerChannels channels;
  private final Duration upstreamTimeout;
  private final ScheduledExecutorService timer;
  private final Duration stallTimeout;

  /**
   * @param stallTimeout how long a worker may leave the runner's instructions unread (its stream not ready for more)
   *     before its lease ends as {@link EndReason#WORKER_LOST}, so that the runner fails the bundle instead of waiting
   */
  ControlProxyService(SlotPool pool, RunnerChannels channels, Duration upstreamTimeout, ScheduledExecutorService timer,
      Duration stallTimeout) {
    this.pool = pool;
    this.channels = channels;
    this.upstreamTimeout = upstreamTimeout;
    this.timer = timer;
    this.stallTimeout = stallTimeout;
  }

  @Override
  public StreamObserver<InstructionResponse> control(StreamObserver<InstructionRequest> toWorker) {
    String workerId = CallerContext.workerId();
    ServerCallStreamObserver<InstructionRequest> worker = (ServerCallStreamObserver<InstructionRequest>) toWorker;
    // Manual flow control (HeldStream disables automatic requests): a message is requested from one side only when
    // the other side can take it. A standby worker's stream waits until a lease adopts it.
    try {
      return HeldStream.open(pool, workerId, worker, lease -> connect(lease, workerId, worker));
    } catch (RecyclerException e) {
      LOG.warn("refused control connection worker={} peer={}: {}", workerId, CallerContext.peer(), e.getMessage());
      toWorker.onError(e.toStatusException());
      return new Ignoring<>();
    }
  }

  /** Opens the runner's side of the worker's control stream and makes the lease ready. */
  private HeldStream.Opened<InstructionResponse> connect(Lease lease, String workerId,
      ServerCallStreamObserver<InstructionRequest> worker) {
    Proxy proxy = new Proxy(lease, worker,
        new OrphanDataSink(channels, lease.request().getControlEndpoint().getUrl(), lease.runnerWorkerId(),
            upstreamTimeout, "slot=" + lease.slotId() + " generation=" + lease.generation()));
    BeamFnControlGrpc.BeamFnControlStub runner = withWorkerId(BeamFnControlGrpc.newStub(
        channels.channel(lease, lease.request().getControlEndpoint().getUrl())), lease.runnerWorkerId());
    Detached.run(() -> runner.control(proxy.fromRunner));
    try {
      pool.controlConnected(workerId, proxy);
    } catch (RecyclerException e) {
      proxy.abort(e);
      return HeldStream.Opened.refused();
    }
    LOG.info("control connected slot={} generation={} worker={}", lease.slotId(), lease.generation(), workerId);
    worker.request(1);
    return new HeldStream.Opened<>(proxy.fromWorker,
        () -> proxy.fromWorker.onError(Status.CANCELLED.asRuntimeException()), proxy::workerReady);
  }

  @Override
  public void getProcessBundleDescriptor(GetProcessBundleDescriptorRequest request,
      StreamObserver<ProcessBundleDescriptor> responses) {
    Lease lease;
    try {
      lease = pool.leaseForWorker(CallerContext.workerId());
    } catch (RecyclerException e) {
      responses.onError(e.toStatusException());
      return;
    }
    UnaryCalls.<ProcessBundleDescriptor, Void>call(observer -> withWorkerId(BeamFnControlGrpc.newStub(
        channels.channel(lease, lease.request().getControlEndpoint().getUrl())), lease.runnerWorkerId())
        .withDeadlineAfter(upstreamTimeout.toMillis(), TimeUnit.MILLISECONDS)
        .getProcessBundleDescriptor(request, observer), (descriptor, failure) -> {
          if (failure != null) {
            responses.onError(RecyclerException.toStatusException(failure, "runner GetProcessBundleDescriptor"));
            return null;
          }
          if (descriptor != null) {
            responses.onNext(descriptor);
          }
          responses.onCompleted();
          return null;
        });
  }

  /**
   * One proxied control stream. Concurrency: both directions and {@link #close} synchronise on this object, because
   * stream observers are not thread-safe and the pool may close from another thread.
   *
   * <p>Flow control: neither direction buffers without bound. The next runner instruction is requested only when the
   * worker's stream is ready for it, the next worker response only when the runner's is; a side that was not ready
   * gets the owed request from its {@code onReady} handler. A worker whose stream stays unready (it stopped reading)
   * for {@code stallTimeout} is treated as lost: its lease ends, the wrapper kills it, and the runner's instructions
   * are answered with errors.
   */
  private final class Proxy implements ControlLink {
    private final Lease lease;
    private final ServerCallStreamObserver<InstructionRequest> toWorker;
    private ClientCallStreamObserver<InstructionResponse> toRunner;
    private boolean workerOpen = true;
    private boolean runnerOpen = true;
    /** Set when the worker is gone: answer every instruction with this error. */
    private String orphanError;
    /** Instructions forwarded to the worker and not answered yet, by instruction id. */
    private final java.util.Map<String, InstructionRequest> pending = new java.util.LinkedHashMap<>();
    /** Connects data clients in a lost worker's place; closed when the runner ends the stream. */
    private final OrphanDataSink dataSink;
    /** A runner instruction was taken while the worker could not take more: request the next one on its onReady. */
    private boolean runnerRequestOwed;
    /** A worker response was taken while the runner could not take more: request the next one on its onReady. */
    private boolean workerRequestOwed;
    /** Fires when the worker has not been ready for the runner's instructions for the stall timeout. */
    private java.util.concurrent.ScheduledFuture<?> stall;

    Proxy(Lease lease, ServerCallStreamObserver<InstructionRequest> toWorker, OrphanDataSink dataSink) {
      this.lease = lease;
      this.toWorker = toWorker;
      this.dataSink = dataSink;
    }

    /** The worker can take instructions again: pass on the request owed to the runner. */
    private synchronized void workerReady() {
      if (runnerRequestOwed && toWorker.isReady() && runnerOpen) {
        runnerRequestOwed = false;
        cancelStall();
        toRunner.request(1);
      }
    }

    /** The runner can take responses again: pass on the request owed to the worker. */
    private synchronized void runnerReady() {
      if (workerRequestOwed && toRunner.isReady() && workerOpen) {
        workerRequestOwed = false;
        toWorker.request(1);
      }
    }

    private void cancelStall() {
      if (stall != null) {
        stall.cancel(false);
        stall = null;
      }
    }

    private void stalled() {
      synchronized (this) {
        stall = null;
        if (!runnerRequestOwed || !workerOpen) {
          return;
        }
        toWorker.onError(Status.ABORTED.withDescription("the worker did not read its control stream for "
            + stallTimeout.toSeconds() + " s").asRuntimeException());
      }
      workerGone("it stopped reading its control stream for " + stallTimeout.toSeconds()
          + " s (worker-stall-timeout)");
    }

    final ClientResponseObserver<InstructionResponse, InstructionRequest> fromRunner = new ClientResponseObserver<>() {
      @Override
      public void beforeStart(ClientCallStreamObserver<InstructionResponse> requestStream) {
        synchronized (Proxy.this) {
          toRunner = requestStream;
          requestStream.disableAutoRequestWithInitial(1);
          requestStream.setOnReadyHandler(Proxy.this::runnerReady);
        }
      }

      @Override
      public void onNext(InstructionRequest request) {
        synchronized (Proxy.this) {
          if (orphanError != null || !workerOpen) {
            answerWithError(request);
            toRunner.request(1); // answered here: nothing waits on the worker
          } else {
            pending.put(request.getInstructionId(), request);
            toWorker.onNext(request);
            if (toWorker.isReady()) {
              toRunner.request(1);
            } else {
              runnerRequestOwed = true;
              if (stall == null) {
                stall = timer.schedule(Proxy.this::stalled, stallTimeout.toMillis(), TimeUnit.MILLISECONDS);
              }
            }
          }
        }
      }

      @Override
      public void onError(Throwable t) {
        runnerEnded(Status.fromThrowable(t));
      }

      @Override
      public void onCompleted() {
        runnerEnded(Status.OK);
      }
    };

    final StreamObserver<InstructionResponse> fromWorker = new StreamObserver<>() {
      @Override
      public void onNext(InstructionResponse response) {
        synchronized (Proxy.this) {
          pending.remove(response.getInstructionId());
          if (!runnerOpen) {
            toWorker.request(1); // nobody to forward to; keep draining until the stream closes
          } else {
            toRunner.onNext(response);
            if (toRunner.isReady()) {
              toWorker.request(1);
            } else {
              workerRequestOwed = true;
            }
          }
        }
      }

      @Override
      public void onError(Throwable t) {
        workerGone("the worker's control stream failed: " + Status.fromThrowable(t).getCode());
      }

      @Override
      public void onCompleted() {
        workerGone("the worker closed its control stream");
      }
    };

    /**
     * The runner ended its side. Reported only when the runner did it first: cancelling the runner's side ourselves
     * (worker lost, lease ended) echoes back here and must not be taken for the runner closing.
     */
    private void runnerEnded(Status status) {
      synchronized (this) {
        if (!runnerOpen) {
          return;
        }
        runnerOpen = false;
        dataSink.close();
        if (workerOpen) {
          workerOpen = false;
          if (status.isOk()) {
            toWorker.onCompleted();
          } else {
            toWorker.onError(status.asRuntimeException());
          }
        }
      }
      LOG.info("runner closed control status={} slot={} generation={}", status.getCode(), lease.slotId(),
          lease.generation());
      pool.controlEnded(lease, EndReason.RUNNER_CLOSED);
    }

    /** The worker's side ended first (crash, kill, clean close): become the orphan responder for the runner. */
    private void workerGone(String why) {
      synchronized (this) {
        if (!workerOpen) {
          return;
        }
        workerOpen = false;
        orphan("the Go worker of slot " + lease.slotId() + " (generation " + lease.generation() + ") is gone: " + why);
      }
      LOG.warn("worker lost slot={} generation={}: {}", lease.slotId(), lease.generation(), why);
      pool.controlEnded(lease, EndReason.WORKER_LOST);
    }

    /** Answers what the worker left unanswered and everything that follows with {@code error}. */
    private void orphan(String error) {
      if (orphanError != null) {
        return;
      }
      orphanError = error;
      for (InstructionRequest request : pending.values()) {
        answerWithError(request);
      }
      pending.clear();
      cancelStall();
      if (runnerRequestOwed && runnerOpen) {
        runnerRequestOwed = false;
        toRunner.request(1);
      }
    }

    private void answerWithError(InstructionRequest request) {
      if (!runnerOpen) {
        return;
      }
      toRunner.onNext(InstructionResponse.newBuilder().setInstructionId(request.getInstructionId())
          .setError(orphanError).build());
      if (request.hasProcessBundle()) {
        dataSink.coverBundle(request.getProcessBundle().getProcessBundleDescriptorId());
      }
    }

    /** The lease could not become ready after all: refuse the worker, release the runner's stream. */
    void abort(RecyclerException e) {
      synchronized (this) {
        if (workerOpen) {
          workerOpen = false;
          toWorker.onError(e.toStatusException());
        }
        if (runnerOpen) {
          runnerOpen = false;
          toRunner.onError(Status.CANCELLED.withDescription(e.getMessage()).asRuntimeException());
        }
      }
      dataSink.close();
    }

    @Override
    public void close(EndReason reason) {
      synchronized (this) {
        if (workerOpen) {
          workerOpen = false;
          toWorker.onCompleted();
        }
        if (!runnerOpen) {
          return;
        }
        switch (reason) {
          case RUNNER_CLOSED, STOP_WORKER -> {
            runnerOpen = false;
            dataSink.close();
            toRunner.onCompleted();
          }
          case SHUTDOWN -> {
            // The recycler goes away with its port; nothing can answer for the worker any more.
            runnerOpen = false;
            dataSink.close();
            toRunner.onError(Status.UNAVAILABLE.withDescription("the harness recycler is shutting down")
                .asRuntimeException());
          }
          default -> orphan("the Go worker of slot " + lease.slotId() + " (generation " + lease.generation()
              + ") is gone: its lease ended with " + reason);
        }
      }
    }
  }
}
