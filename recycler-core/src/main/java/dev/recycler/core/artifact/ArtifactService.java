package dev.recycler.core.artifact;

import com.google.protobuf.UnsafeByteOperations;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.core.slot.Lease;
import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.wire.CallerContext;
import dev.recycler.core.wire.Headers;
import io.grpc.Metadata;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.io.InputStream;
import java.security.MessageDigest;
import java.util.HexFormat;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.GetArtifactRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.GetArtifactResponse;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.ResolveArtifactsRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.ResolveArtifactsResponse;
import org.apache.beam.model.jobmanagement.v1.ArtifactRetrievalServiceGrpc;

/**
 * Wrapper-facing {@code ArtifactRetrievalService}, fenced to the caller's current lease ({@code worker_id} = slot id,
 * {@code recycler-generation}). GetArtifact streams from the cache with flow control, 1 MiB per message, and announces
 * the length in the {@code recycler-content-length} response header. It hashes what it sends: content whose bytes no
 * longer match its sha256 (a cache file changed on disk) ends the call with DATA_LOSS instead of completing it, and
 * is dropped from the cache so that the next lease gets it fetched again rather than the same corrupt bytes.
 */
final class ArtifactService extends ArtifactRetrievalServiceGrpc.ArtifactRetrievalServiceImplBase {
  private static final int CHUNK = 1 << 20;

  private final SlotPool pool;
  private final Artifacts artifacts;
  private final RecyclerMetrics<?, ?> metrics;

  ArtifactService(SlotPool pool, Artifacts artifacts, RecyclerMetrics<?, ?> metrics) {
    this.pool = pool;
    this.artifacts = artifacts;
    this.metrics = metrics;
  }

  @Override
  public void resolveArtifacts(ResolveArtifactsRequest request, StreamObserver<ResolveArtifactsResponse> responses) {
    Lease lease;
    try {
      lease = pool.currentLease(CallerContext.workerId(), CallerContext.generation());
    } catch (RecyclerException e) {
      responses.onError(e.toStatusException());
      return;
    }
    artifacts.resolve(lease, request.getArtifactsList()).whenComplete((resolved, failure) -> {
      if (failure != null) {
        responses.onError(RecyclerException.toStatusException(failure, "ResolveArtifacts"));
      } else {
        responses.onNext(ResolveArtifactsResponse.newBuilder().addAllReplacements(resolved).build());
        responses.onCompleted();
      }
    });
  }

  @Override
  public void getArtifact(GetArtifactRequest request, StreamObserver<GetArtifactResponse> responses) {
    ServerCallStreamObserver<GetArtifactResponse> call = (ServerCallStreamObserver<GetArtifactResponse>) responses;
    Metadata headers = CallerContext.responseHeaders();
    Pump pump = new Pump(call);
    call.setOnReadyHandler(pump::drain);
    call.setOnCancelHandler(pump::cancel);
    String prefetch = CallerContext.prefetchDigest();
    if (!prefetch.isEmpty()) {
      prefetch(request, prefetch, headers, pump);
      return;
    }
    try {
      Lease lease = pool.currentLease(CallerContext.workerId(), CallerContext.generation());
      artifacts.blobForRequest(lease, request.getArtifact()).whenComplete((blob, failure) -> {
        if (failure != null) {
          pump.fail(RecyclerException.toStatusException(failure, "GetArtifact"));
          return;
        }
        synchronized (headers) {
          headers.put(Headers.CONTENT_LENGTH, Long.toString(blob.size()));
        }
        pump.start(blob);
      });
    } catch (RecyclerException e) {
      pump.fail(e.toStatusException());
    }
  }

  /**
   * A prefetch: the authenticator redeemed the call's ticket for {@code digest}. Served from the cache only (the
   * staging-time copy put it there); the blob stays pinned until the call ends.
   */
  private void prefetch(GetArtifactRequest request, String digest, Metadata headers, Pump pump) {
    String asked = Artifacts.digestOf(request.getArtifact());
    if (!asked.equals(digest)) {
      pump.fail(io.grpc.Status.PERMISSION_DENIED.withDescription("the prefetch ticket is for sha256 " + digest
          + ", not for the requested " + (asked.isEmpty() ? "artifact (no sha256 in it)" : "sha256 " + asked))
          .asException());
      return;
    }
    Blob blob = artifacts.cache().pinned(digest);
    if (blob == null) {
      pump.fail(io.grpc.Status.FAILED_PRECONDITION.withDescription("sha256 " + digest + " is no longer in the"
          + " recycler's cache; the lease that needs it fetches it then").asException());
      return;
    }
    synchronized (headers) {
      headers.put(Headers.CONTENT_LENGTH, Long.toString(blob.size()));
    }
    pump.start(blob, () -> artifacts.cache().unpin(digest));
  }

  /** Sends a blob as fast as the wrapper reads it. Concurrency: all methods synchronise on the pump. */
  private final class Pump {
    private final ServerCallStreamObserver<GetArtifactResponse> call;
    private InputStream in;
    private Blob blob;
    private MessageDigest sent;
    private boolean finished;
    private Runnable release = () -> { };

    Pump(ServerCallStreamObserver<GetArtifactResponse> call) {
      this.call = call;
    }

    synchronized void start(Blob b) {
      start(b, () -> { });
    }

    /** Starts sending {@code b}; {@code onEnd} runs once when the call ends, however it ends. */
    synchronized void start(Blob b, Runnable onEnd) {
      if (finished) {
        onEnd.run();
        return;
      }
      this.release = onEnd;
      try {
        this.blob = b;
        this.sent = Sha256.newDigest();
        this.in = b.open();
      } catch (IOException e) {
        fail(io.grpc.Status.UNAVAILABLE.withDescription("artifact " + b.sha256()
            + " was evicted from the cache while being requested; retry").asException());
        return;
      }
      drain();
    }

    synchronized void drain() {
      if (in == null || finished) {
        return;
      }
      try {
        while (call.isReady()) {
          byte[] buf = in.readNBytes(CHUNK);
          if (buf.length == 0) {
            String actual = HexFormat.of().formatHex(sent.digest());
            if (!actual.equals(blob.sha256())) {
              artifacts.discardCorrupt(blob, actual);
              fail(io.grpc.Status.DATA_LOSS.withDescription("cached artifact sha256:" + blob.sha256()
                  + " is corrupt (its bytes hash to sha256:" + actual + "); it was dropped from the recycler's cache"
                  + " and the next lease fetches it again").asException());
              return;
            }
            finished = true;
            in.close();
            releaseOnce();
            metrics.served(blob.size());
            call.onCompleted();
            return;
          }
          sent.update(buf);
          // readNBytes returns a fresh array that nothing writes again: wrap it instead of copying each MiB.
          call.onNext(GetArtifactResponse.newBuilder().setData(UnsafeByteOperations.unsafeWrap(buf)).build());
        }
      } catch (IOException e) {
        fail(io.grpc.Status.INTERNAL.withDescription("reading cached artifact " + blob.sha256() + " failed")
            .asException());
      }
    }

    synchronized void fail(io.grpc.StatusException status) {
      if (finished) {
        return;
      }
      finished = true;
      closeQuietly();
      call.onError(status);
    }

    synchronized void cancel() {
      finished = true;
      closeQuietly();
    }

    private void releaseOnce() {
      Runnable r = release;
      release = () -> { };
      r.run();
    }

    private void closeQuietly() {
      releaseOnce();
      if (in != null) {
        try {
          in.close();
        } catch (IOException e) {
          // nothing to do: the stream is abandoned
        }
      }
    }
  }
}
