package dev.recycler.core.control;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.slot.WrapperLink;
import dev.recycler.core.wire.CallerContext;
import dev.recycler.proto.v1.RecyclerMessage;
import dev.recycler.proto.v1.SlotControlGrpc;
import dev.recycler.proto.v1.WrapperMessage;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** The wrapper-facing {@code SlotControl.Attach} stream: one per attached wrapper, feeding the pool. */
final class SlotControlService extends SlotControlGrpc.SlotControlImplBase {
  private static final Logger LOG = LoggerFactory.getLogger(SlotControlService.class);

  private final SlotPool pool;

  SlotControlService(SlotPool pool) {
    this.pool = pool;
  }

  @Override
  public StreamObserver<WrapperMessage> attach(StreamObserver<RecyclerMessage> responses) {
    Link link = new Link((ServerCallStreamObserver<RecyclerMessage>) responses, CallerContext.peer());
    return new StreamObserver<>() {
      private boolean helloSeen;

      @Override
      public void onNext(WrapperMessage message) {
        if (!helloSeen) {
          if (!message.hasHello()) {
            link.close(new RecyclerException(RecyclerException.Kind.BAD_REQUEST,
                "the first message on Attach must be a Hello"));
            return;
          }
          helloSeen = true;
          pool.attach(message.getHello(), link);
          return;
        }
        switch (message.getKindCase()) {
          case WORKER_STARTED -> pool.workerStarted(link, message.getWorkerStarted());
          case LEASE_ENDED -> pool.leaseEnded(link, message.getLeaseEnded());
          case PONG -> pool.pong(link, message.getPong().getNonce());
          case PREFETCHED -> pool.prefetched(link, message.getPrefetched());
          case STANDBY_ENDED -> pool.standbyEnded(link, message.getStandbyEnded());
          case HELLO -> link.close(new RecyclerException(RecyclerException.Kind.BAD_REQUEST,
              "Hello was sent twice on one Attach stream"));
          default -> LOG.warn("ignoring unknown wrapper message kind={} peer={}", message.getKindCase(), link.peer());
        }
      }

      @Override
      public void onError(Throwable t) {
        link.markClosed();
        pool.detached(link);
      }

      @Override
      public void onCompleted() {
        link.close(new RecyclerException(RecyclerException.Kind.CANCELLED, "the wrapper closed the stream"));
        pool.detached(link, true);
      }
    };
  }

  /** Thread-safe, idempotent sending end of one Attach stream. */
  private static final class Link implements WrapperLink {
    private final ServerCallStreamObserver<RecyclerMessage> out;
    private final String peer;
    private boolean closed;

    Link(ServerCallStreamObserver<RecyclerMessage> out, String peer) {
      this.out = out;
      this.peer = peer;
      out.setOnCancelHandler(this::markClosed);
    }

    @Override
    public synchronized void send(RecyclerMessage message) {
      if (closed) {
        return;
      }
      try {
        out.onNext(message);
      } catch (RuntimeException e) {
        LOG.warn("send to wrapper failed peer={}: {}", peer, e.toString());
        closed = true;
      }
    }

    @Override
    public synchronized void close(RecyclerException reason) {
      if (closed) {
        return;
      }
      closed = true;
      try {
        out.onError(reason.toStatusException());
      } catch (RuntimeException e) {
        LOG.debug("closing wrapper stream failed peer={}", peer, e);
      }
    }

    synchronized void markClosed() {
      closed = true;
    }

    @Override
    public String peer() {
      return peer;
    }
  }
}
