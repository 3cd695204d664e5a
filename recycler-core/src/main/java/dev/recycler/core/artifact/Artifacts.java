package dev.recycler.core.artifact;

import static dev.recycler.core.wire.WorkerIds.withWorkerId;

import com.google.protobuf.InvalidProtocolBufferException;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.core.slot.Lease;
import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.wire.Detached;
import dev.recycler.core.wire.RunnerChannels;
import dev.recycler.core.wire.UnaryCalls;
import io.grpc.BindableService;
import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.GetArtifactRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.GetArtifactResponse;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.ResolveArtifactsRequest;
import org.apache.beam.model.jobmanagement.v1.ArtifactApi.ResolveArtifactsResponse;
import org.apache.beam.model.jobmanagement.v1.ArtifactRetrievalServiceGrpc;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactFilePayload;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactInformation;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactUrlPayload;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Resolves a lease's runner artifacts into content-addressed blobs and scopes them to the lease: a wrapper may fetch
 * only digests that its current lease resolved.
 *
 * <p>Identity of a runner artifact, in order: the sha256 the runner states (Beam's job server states none); for a
 * staged file readable in place under a configured directory, the sha256 of the file hashed from disk ({@link
 * LocalArtifacts}); else the content streamed from the runner and hashed on the way, where the path stands for its
 * content only within one job (the lease's {@link Lease#artifactScope()}), never across jobs.
 *
 * <p>Concurrency: lease scopes live in a {@link ConcurrentHashMap}; fetches are coalesced by {@link ArtifactCache}.
 */
public final class Artifacts {
  private static final Logger LOG = LoggerFactory.getLogger(Artifacts.class);
  static final String FILE_URN = "beam:artifact:type:file:v1";
  static final String URL_URN = "beam:artifact:type:url:v1";

  private final ArtifactCache cache;
  private final LocalArtifacts locals;
  private final RunnerChannels channels;
  private final RecyclerMetrics<?, ?> metrics;
  private final Duration callTimeout;
  private final Duration fetchTimeout;
  private final boolean probe;
  /** Per lease: sha256 → the runner artifact it came from (to fetch again if evicted). */
  private final Map<Lease, Map<String, ArtifactInformation>> scopes = new ConcurrentHashMap<>();
  /** Per lease: the one resolution of its dependencies, shared by the Lease message and the wrapper's own call. */
  private final Map<Lease, Resolution> resolutions = new ConcurrentHashMap<>();

  /**
   * One resolution: {@code result} the verified artifacts; {@code provisional} the same artifacts named by digests
   * that are partly only probed (see {@link #provisional}), or null, completed no later than {@code result}.
   */
  private record Resolution(List<ArtifactInformation> request, CompletableFuture<List<ArtifactInformation>> result,
      CompletableFuture<List<ArtifactInformation>> provisional) {}

  /**
   * Per job: the runner's answer to ResolveArtifacts for one dependency list. A job's staged artifacts and their
   * resolution do not change while it runs, so a later environment of the same job (a warm lease) skips that round
   * trip. Keyed by the job's scope ({@link Lease#artifactScope()}, its retrieval token), never shared across jobs;
   * what the resolved paths hold is still established per lease (the in-place memo checks each file's identity).
   */
  private final com.github.benmanes.caffeine.cache.Cache<ResolvedKey, List<ArtifactInformation>> resolvedByJob =
      com.github.benmanes.caffeine.cache.Caffeine.newBuilder().maximumSize(1000).build();

  private record ResolvedKey(String scope, List<ArtifactInformation> request) {}

  /**
   * @param localDirectories directories whose staged files may be read in place (empty: stream everything from the
   *     runner)
   * @param hashAtStaging watch {@code localDirectories} and hash files as they are staged, ahead of their leases
   * @param probe name staged files by their probe match for {@link #provisional} (option {@code
   *     speculative-start}); without it {@link #provisional} always completes with null
   */
  public Artifacts(ArtifactCache cache, List<java.nio.file.Path> localDirectories, boolean hashAtStaging, boolean probe,
      RunnerChannels channels, RecyclerMetrics<?, ?> metrics, Duration callTimeout, Duration fetchTimeout) {
    this.probe = probe;
    this.cache = cache;
    this.locals = new LocalArtifacts(localDirectories, cache, metrics::localHashed);
    if (hashAtStaging) {
      locals.watchStaging();
    }
    this.channels = channels;
    this.metrics = metrics;
    this.callTimeout = callTimeout;
    this.fetchTimeout = fetchTimeout;
    metrics.cacheSize(cache::sizeBytes);
    metrics.localBytes(locals.bytesReadCounter());
  }
  /** The wrapper-facing {@code ArtifactRetrievalService} over these artifacts, for the server on the fixed port. */
  public BindableService service(SlotPool pool, RecyclerMetrics<?, ?> metrics) {
    return new ArtifactService(pool, this, metrics);
  }


  /**
   * Tells {@code listener} (sha256, size) of each worker binary the staging watcher finds, once its content is in the
   * cache, so idle slots can prefetch it; set once, at start. Without it staged files are only hashed.
   */
  public void onStagedBinary(java.util.function.BiConsumer<String, Long> listener) {
    locals.onStagedBinary(listener);
  }

  /** Stops the staging watcher and the hashing threads. */
  public void close() {
    locals.close();
  }

  public ArtifactCache cache() {
    return cache;
  }

  /** Forgets the lease's scope and releases its pinned blobs. */
  public void onEnded(Lease lease) {
    resolutions.remove(lease);
    Map<String, ArtifactInformation> scope = scopes.remove(lease);
    if (scope != null) {
      scope.keySet().forEach(cache::unpin);
    }
  }

  /**
   * Content served from the cache did not hash to its sha256 (its file changed on disk after it was verified): it is
   * dropped from the cache, so that the next lease copies or fetches it again instead of failing the same way.
   */
  void discardCorrupt(Blob blob, String actualSha256) {
    LOG.warn("cached artifact sha256={} is corrupt (its bytes hash to {}): dropped from the cache, fetched again on"
        + " next use", blob.sha256(), actualSha256);
    cache.discardCorrupt(blob);
  }

  /**
   * Adds a blob, pinned for this call, to the lease's scope: the lease keeps one pin per blob until it ends, so
   * eviction cannot take it from a booting wrapper; a second pin for a blob already in scope is released.
   */
  private void admit(Lease lease, Blob blob, ArtifactInformation origin) {
    if (scope(lease).putIfAbsent(blob.sha256(), origin) == null) {
      if (!lease.isOpen()) {
        // The lease ended while this blob was fetched; onEnded may have run already.
        onEnded(lease);
      }
    } else {
      cache.unpin(blob.sha256());
    }
  }

  /**
   * Resolves runner artifacts for the lease: asks the runner to resolve them (as Beam's boot does), fetches each into
   * the cache (once per upstream identity), and answers with file artifacts that carry the sha256. A lease's
   * resolution of the same list is done once (again after a failure).
   */
  public CompletableFuture<List<ArtifactInformation>> resolve(Lease lease, List<ArtifactInformation> artifacts) {
    return resolution(lease, artifacts).result();
  }

  /**
   * The lease's artifacts as {@link #resolve} will name them, known before their content is verified, for a worker
   * started speculatively: each digest is one the runner states (content cached), one the in-place memo holds, or,
   * for a staged file read in place, that of the cached content its probe matches (same size, same first and last
   * 64 KiB: {@code LocalArtifacts#candidate}), which {@link #resolve} then confirms or refutes by comparing the two
   * byte for byte. Completes with null when there is nothing to gain (every digest already verified) or nothing to
   * start from (an artifact with no cached candidate, or one streamed from the runner); never exceptionally.
   */
  public CompletableFuture<List<ArtifactInformation>> provisional(Lease lease, List<ArtifactInformation> artifacts) {
    return resolution(lease, artifacts).provisional();
  }

  private Resolution resolution(Lease lease, List<ArtifactInformation> artifacts) {
    Resolution r = resolutions.compute(lease, (l, old) -> {
      if (old != null && old.request().equals(artifacts) && !old.result().isCompletedExceptionally()) {
        return old;
      }
      CompletableFuture<List<ArtifactInformation>> provisional = new CompletableFuture<>();
      CompletableFuture<List<ArtifactInformation>> result = resolveOnce(l, artifacts, provisional);
      result.whenComplete((v, f) -> provisional.complete(null)); // no-op once it had its value
      return new Resolution(artifacts, result, provisional);
    });
    if (!lease.isOpen()) {
      resolutions.remove(lease); // onEnded may have run already
    }
    return r;
  }

  /** See {@link #provisional}: the probed names of {@code resolved}, or null. */
  private List<ArtifactInformation> probed(Lease lease, List<ArtifactInformation> resolved) {
    List<ArtifactInformation> out = new ArrayList<>();
    boolean unverified = false;
    for (ArtifactInformation a : resolved) {
      String stated = digestOf(a);
      if (!stated.isEmpty() && cache.blob(stated) != null) {
        out.add(named(a, stated));
        continue;
      }
      java.nio.file.Path local = locals.localPath(a);
      LocalArtifacts.Candidate c = local == null ? null : locals.candidate(local);
      if (c == null) {
        return null;
      }
      unverified |= !c.verified();
      out.add(named(a, c.sha256()));
    }
    if (!unverified) {
      return null;
    }
    LOG.info("artifacts probed for a speculative start lease={} runner_worker={} digests={}", lease.sequence(),
        lease.runnerWorkerId(), out.stream().map(Artifacts::digestOf).toList());
    return out;
  }

  private CompletableFuture<List<ArtifactInformation>> resolveOnce(Lease lease, List<ArtifactInformation> artifacts,
      CompletableFuture<List<ArtifactInformation>> provisional) {
    return resolveUpstream(lease, artifacts).thenCompose(resolved -> {
      // Probed first (both ends of each file, well under a millisecond): the worker started from it, the critical path
      // once the file is compared on two threads, starts before the reads, and the probe always sees the memo as it
      // was before them.
      try {
        provisional.complete(probe ? probed(lease, resolved) : null);
      } catch (RuntimeException e) {
        provisional.complete(null);
      }
      List<CompletableFuture<ArtifactInformation>> each = new ArrayList<>();
      for (ArtifactInformation a : resolved) {
        each.add(blobFor(lease, a).thenApply(blob -> {
          admit(lease, blob, a);
          return named(a, blob);
        }));
      }
      return CompletableFuture.allOf(each.toArray(CompletableFuture[]::new))
          .thenApply(v -> each.stream().map(CompletableFuture::join).toList());
    });
  }

  /**
   * The blob a wrapper asked for: one of the lease's resolved digests, or (for a request with a runner artifact) that
   * artifact resolved on the spot.
   *
   * @throws RecyclerException UNKNOWN_ID for a digest outside the lease's scope
   */
  public CompletableFuture<Blob> blobForRequest(Lease lease, ArtifactInformation requested) throws RecyclerException {
    String digest = digestOf(requested);
    if (digest.isEmpty()) {
      return blobFor(lease, requested).thenApply(b -> {
        admit(lease, b, requested);
        return b;
      });
    }
    ArtifactInformation origin = scope(lease).get(digest);
    if (origin == null) {
      throw new RecyclerException(RecyclerException.Kind.UNKNOWN_ID, "artifact sha256 " + digest
          + " is not part of the lease of slot '" + lease.slotId() + "' generation " + lease.generation()
          + ": call ResolveArtifacts for this lease first");
    }
    Blob blob = cache.blob(digest);
    if (blob != null) {
      metrics.cacheHit(); // the lease's pin keeps it
      return CompletableFuture.completedFuture(blob);
    }
    return blobFor(lease, origin).thenApply(b -> {
      admit(lease, b, origin);
      return b;
    });
  }

  private Map<String, ArtifactInformation> scope(Lease lease) {
    return scopes.computeIfAbsent(lease, l -> new ConcurrentHashMap<>());
  }

  private CompletableFuture<List<ArtifactInformation>> resolveUpstream(Lease lease,
      List<ArtifactInformation> artifacts) {
    if (artifacts.stream().allMatch(a -> !digestOf(a).isEmpty() && cache.blob(digestOf(a)) != null)) {
      return CompletableFuture.completedFuture(artifacts);
    }
    String scope = lease.artifactScope();
    ResolvedKey key = scope.startsWith("job:") ? new ResolvedKey(scope, List.copyOf(artifacts)) : null;
    List<ArtifactInformation> known = key == null ? null : resolvedByJob.getIfPresent(key);
    if (known != null) {
      return CompletableFuture.completedFuture(known);
    }
    CompletableFuture<List<ArtifactInformation>> result = UnaryCalls.<ResolveArtifactsResponse,
        List<ArtifactInformation>>call(observer -> Detached.run(() ->
        stub(lease).withDeadlineAfter(callTimeout.toMillis(), TimeUnit.MILLISECONDS).resolveArtifacts(
            ResolveArtifactsRequest.newBuilder().addAllArtifacts(artifacts).build(), observer)), (r, failure) -> {
              if (failure == null) {
                return r == null ? artifacts : r.getReplacementsList();
              }
              Status s = Status.fromThrowable(failure);
              if (s.getCode() == Status.Code.UNIMPLEMENTED) {
                return artifacts;
              }
              throw new RecyclerException(RecyclerException.Kind.UNAVAILABLE,
                  "the runner's ResolveArtifacts failed: " + s.getCode() + " " + s.getDescription());
            });
    if (key != null) {
      result.thenAccept(resolved -> resolvedByJob.put(key, List.copyOf(resolved)));
    }
    return result;
  }

  /** The artifact's blob, pinned for the caller (who hands the pin to {@link #admit}). */
  private CompletableFuture<Blob> blobFor(Lease lease, ArtifactInformation artifact) {
    String stated = digestOf(artifact);
    Blob known = stated.isEmpty() ? null : cache.pinned(stated);
    if (known != null) {
      // The upstream states its content (Beam's job server does not, other runners may): no download needed.
      metrics.cacheHit();
      return CompletableFuture.completedFuture(known);
    }
    java.nio.file.Path local = locals.localPath(artifact);
    if (local != null) {
      // Identified while the lease waits for its slot: named by its sequence number, which "lease assigned" logs.
      return locals.blob(local, "lease=" + lease.sequence() + " runner_worker=" + lease.runnerWorkerId())
          .exceptionallyCompose(failure -> {
        LOG.warn("could not read artifact {} in place, streaming it from the runner lease={} runner_worker={}: {}",
            describe(artifact), lease.sequence(), lease.runnerWorkerId(),
            RecyclerException.unwrap(failure).getMessage());
        return streamed(lease, artifact);
      });
    }
    return streamed(lease, artifact);
  }

  /** The artifact's blob from the runner's retrieval service, once per job scope and path. */
  private CompletableFuture<Blob> streamed(Lease lease, ArtifactInformation artifact) {
    String key = upstreamKey(lease.artifactScope(), artifact);
    if (cache.contains(key)) {
      metrics.cacheHit();
    } else {
      metrics.cacheMiss();
    }
    return cache.get(key, () -> fetch(lease, artifact));
  }

  private CompletableFuture<Blob> fetch(Lease lease, ArtifactInformation artifact) {
    CompletableFuture<Blob> result = new CompletableFuture<>();
    ArtifactCache.Writer writer = cache.newWriter();
    String expected = digestOf(artifact);
    long started = System.nanoTime();
    Detached.run(() -> stub(lease).withDeadlineAfter(fetchTimeout.toMillis(), TimeUnit.MILLISECONDS).getArtifact(
        GetArtifactRequest.newBuilder().setArtifact(artifact).build(), new StreamObserver<>() {
          private IOException failed;

          @Override
          public void onNext(GetArtifactResponse chunk) {
            if (failed == null) {
              try {
                writer.write(chunk.getData());
              } catch (IOException e) {
                failed = e;
              }
            }
          }

          @Override
          public void onError(Throwable t) {
            writer.abort();
            metrics.upstreamFailed();
            Status s = Status.fromThrowable(t);
            result.completeExceptionally(new RecyclerException(RecyclerException.Kind.UNAVAILABLE,
                "downloading artifact " + describe(artifact) + " from the runner failed after " + writer.size()
                    + " bytes: " + s.getCode() + (s.getDescription() == null ? "" : " " + s.getDescription())));
          }

          @Override
          public void onCompleted() {
            try {
              if (failed != null) {
                throw failed;
              }
              Blob blob = writer.commit(expected);
              metrics.upstreamFetched(blob.size());
              LOG.info("artifact fetched from runner lease={} runner_worker={} sha256={} bytes={} ms={}",
                  lease.sequence(), lease.runnerWorkerId(), blob.sha256(), blob.size(),
                  (System.nanoTime() - started) / 1_000_000);
              result.complete(blob);
            } catch (IOException e) {
              writer.abort();
              metrics.upstreamFailed();
              result.completeExceptionally(new RecyclerException(RecyclerException.Kind.UNAVAILABLE,
                  "artifact " + describe(artifact) + " from the runner is unusable: " + e.getMessage()));
            }
          }
        }));
    return result;
  }

  private ArtifactRetrievalServiceGrpc.ArtifactRetrievalServiceStub stub(Lease lease) {
    return withWorkerId(ArtifactRetrievalServiceGrpc.newStub(
        channels.channel(lease, lease.request().getArtifactEndpoint().getUrl())), lease.runnerWorkerId());
  }

  /** The artifact as wrappers see it: a file named by its digest, with the sha256 Beam's job server left out. */
  static ArtifactInformation named(ArtifactInformation original, Blob blob) {
    return named(original, blob.sha256());
  }

  private static ArtifactInformation named(ArtifactInformation original, String sha256) {
    return ArtifactInformation.newBuilder()
        .setTypeUrn(FILE_URN)
        .setTypePayload(ArtifactFilePayload.newBuilder().setPath("sha256/" + sha256).setSha256(sha256)
            .build().toByteString())
        .setRoleUrn(original.getRoleUrn())
        .setRolePayload(original.getRolePayload())
        .build();
  }

  /** The sha256 an artifact states (file or url payload), or "". */
  static String digestOf(ArtifactInformation a) {
    try {
      if (FILE_URN.equals(a.getTypeUrn())) {
        return ArtifactFilePayload.parseFrom(a.getTypePayload()).getSha256().toLowerCase(java.util.Locale.ROOT);
      }
      if (URL_URN.equals(a.getTypeUrn())) {
        return ArtifactUrlPayload.parseFrom(a.getTypePayload()).getSha256().toLowerCase(java.util.Locale.ROOT);
      }
    } catch (InvalidProtocolBufferException e) {
      return "";
    }
    return "";
  }

  /**
   * Upstream identity of a streamed artifact: its type and payload (for staged files, the job's staging path) within
   * {@code scope}. A path may hold other content in another job, so the scope is one job (or one lease).
   */
  static String upstreamKey(String scope, ArtifactInformation a) {
    MessageDigest md = Sha256.newDigest();
    md.update(scope.getBytes(java.nio.charset.StandardCharsets.UTF_8));
    md.update((byte) 0);
    md.update(a.getTypeUrn().getBytes(java.nio.charset.StandardCharsets.UTF_8));
    md.update((byte) 0);
    md.update(a.getTypePayload().asReadOnlyByteBuffer());
    return HexFormat.of().formatHex(md.digest());
  }

  private static String describe(ArtifactInformation a) {
    try {
      if (FILE_URN.equals(a.getTypeUrn())) {
        String path = ArtifactFilePayload.parseFrom(a.getTypePayload()).getPath();
        return "'" + path.substring(path.lastIndexOf('/') + 1) + "'";
      }
    } catch (InvalidProtocolBufferException e) {
      // fall through
    }
    return a.getTypeUrn();
  }
}
