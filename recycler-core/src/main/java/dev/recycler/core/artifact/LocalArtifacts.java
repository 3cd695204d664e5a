package dev.recycler.core.artifact;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import com.google.protobuf.InvalidProtocolBufferException;
import dev.recycler.core.metrics.RecyclerMetrics.HashedAt;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.FileTime;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.BiConsumer;
import java.util.function.Consumer;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactFilePayload;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactInformation;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Identifies staged files in place: a {@code beam:artifact:type:file:v1} artifact whose path lies under one of the
 * configured directories (the job server's artifacts directory, which on Kubernetes the TaskManagers mount anyway,
 * because Beam's own retrieval service reads it there) is hashed from disk, not streamed through the runner's gRPC
 * service and the JVM heap. Its bytes enter the cache (a copy, verified against the digest) only when the cache lacks
 * that content.
 *
 * <p>Identity rule: the content's sha256, established here from the file in one of two ways. If cached content has
 * the file's size and the same first and last {@link #PROBE_BYTES} (its <i>probe match</i>), the file is compared with
 * that content byte for byte, and if equal has its digest: the cached content was verified against its digest when it
 * entered the cache (and is re-hashed after a restart before first use), and a comparison reads at memory speed, about
 * three times faster than SHA-256 here. Otherwise the file is hashed. A path is never an identity: the memo that
 * spares a second environment of the same job a second read is keyed by the file's path <i>and</i> its device,
 * inode, size, modification and change times, so a file replaced or rewritten at the same path is read again. A file
 * that changes while it is read is not used (the caller falls back to streaming).
 *
 * <p>Speculation: {@link #candidate} names, from the memo or the probe match alone (128 KiB read), the digest a file
 * probably has, so that a worker can be started from it while the comparison runs; the lease adopts that worker only
 * if the comparison confirms it (see the slot package's {@code Standbys}).
 *
 * <p>When: a {@link StagingWatcher} (option {@code hash-at-staging}) hashes each file as the job server stages it,
 * long before the job's first lease ({@link #hashAhead}); the lease then finds the digest in the memo (under the same
 * identity rule, so a file written after that is read again). Otherwise the lease reads it ({@link #blob}), once:
 * compared with the cached content its probe matches, or, new content, hashed while it is copied into the cache.
 *
 * <p>Trust: the recycler reads, with its own privileges, only regular files whose real path (symbolic links resolved)
 * is under a configured directory; anything else is streamed from the runner as before. The runner (TaskManager) is
 * trusted to name the job's files; see docs/security.md.
 *
 * <p>Memory: reads go through one {@link #BUFFER_BYTES} buffer per hashing thread ({@link #THREADS} threads), so the
 * heap holds at most {@code THREADS * BUFFER_BYTES} artifact bytes here whatever the file size; a file larger than the
 * cache's memory-blob limit is copied to the cache directory, never held on the heap. Comparisons use two direct
 * (off-heap) buffers of {@code BUFFER_BYTES} per thread that compares: at most {@code (THREADS + 2) * 2 *
 * BUFFER_BYTES} (8 MiB), whatever the file size.
 *
 * <p>Concurrency: hashing runs on a small dedicated pool, never on a gRPC thread; concurrent requests for the same
 * file identity share one read ({@code inflight}).
 */
final class LocalArtifacts {
  private static final Logger LOG = LoggerFactory.getLogger(LocalArtifacts.class);
  static final int BUFFER_BYTES = 1 << 20;
  static final int THREADS = 2;

  private final List<Path> roots;
  private final ArtifactCache cache;
  private final ExecutorService hashing;
  private final Cache<FileIdentity, Known> memo = Caffeine.newBuilder().maximumSize(10_000).build();
  /** Lease-time reads in progress (hash, copy), shared by concurrent leases of one file identity. */
  private final Map<FileIdentity, CompletableFuture<Blob>> inflight = new ConcurrentHashMap<>();
  /** Staging-time hashes in progress: a lease for the same identity waits for it instead of reading again. */
  private final Map<FileIdentity, CompletableFuture<String>> ahead = new ConcurrentHashMap<>();
  private final Consumer<HashedAt> hashedAt;
  private volatile StagingWatcher watcher;
  private volatile BiConsumer<String, Long> stagedBinaries;
  /** How long the staging-time copy of a worker binary stays pinned for the prefetches it starts (their tickets'). */
  static final Duration PREFETCH_PIN = Duration.ofMinutes(2);
  private final ThreadLocal<byte[]> buffers = ThreadLocal.withInitial(() -> new byte[BUFFER_BYTES]);
  /** Per comparing thread: the staged file's chunk and the cached content's. */
  private final ThreadLocal<ByteBuffer[]> comparing = ThreadLocal.withInitial(() -> new ByteBuffer[] {
      ByteBuffer.allocateDirect(BUFFER_BYTES), ByteBuffer.allocateDirect(BUFFER_BYTES)});
  /** Compares the second half of a large file while the calling thread compares the first. */
  private final ExecutorService halves;
  /** Files at least this large are compared in two halves on two threads. */
  static final long SPLIT_BYTES = 8L << 20;
  private final AtomicLong bytesRead = new AtomicLong();

  /** What must stay the same for a path to keep naming the content hashed from it. */
  record FileIdentity(Path path, Object fileKey, long size, FileTime modified, Object changed) {}

  /** A memo entry: the digest of one file identity, whether it was hashed at staging, when, and if a lease used it. */
  private record Known(String digest, boolean ahead, long hashedAtMillis, AtomicBoolean firstUse) {
    Known(String digest, boolean ahead, long hashedAtMillis) {
      this(digest, ahead, hashedAtMillis, new AtomicBoolean());
    }
  }

  /** @param hashedAt told of each hash, staging-time or lease-time (the metric) */
  LocalArtifacts(List<Path> directories, ArtifactCache cache, Consumer<HashedAt> hashedAt) {
    this.hashedAt = hashedAt;
    List<Path> real = new ArrayList<>();
    for (Path d : directories) {
      try {
        real.add(d.toRealPath());
      } catch (IOException e) {
        // Not there yet (the job server may create it later): keep the normalized path; files resolve against it.
        real.add(d.toAbsolutePath().normalize());
      }
    }
    this.roots = List.copyOf(real);
    this.cache = cache;
    this.hashing = Executors.newFixedThreadPool(THREADS, r -> {
      Thread t = new Thread(r, "recycler-artifact-hash");
      t.setDaemon(true);
      return t;
    });
    this.halves = Executors.newSingleThreadExecutor(r -> {
      Thread t = new Thread(r, "recycler-artifact-compare");
      t.setDaemon(true);
      return t;
    });
    if (!roots.isEmpty()) {
      hashing.execute(LocalArtifacts::warmUp);
    }
  }

  /**
   * Hashes 16 MiB of zeros once at start, so that the JIT has compiled SHA-256's intrinsic path before the first job's
   * binary arrives: measured here, a cold JVM hashed an 84 MB binary in 955 ms, one warmed like this in 166 ms (then
   * about 135 ms). Costs about 140 ms of one hashing thread, off every lease's path.
   */
  private static void warmUp() {
    MessageDigest sha = Sha256.newDigest();
    byte[] zeros = new byte[64 * 1024];
    for (int i = 0; i < 256; i++) {
      sha.update(zeros);
    }
    sha.digest();
  }

  boolean enabled() {
    return !roots.isEmpty();
  }

  /** The configured directories, real paths where they exist. */
  List<Path> roots() {
    return roots;
  }

  /** Bytes read from local files so far (hashing and copying); the live counter, for the metric. */
  AtomicLong bytesReadCounter() {
    return bytesRead;
  }

  /**
   * The real path of the staged file {@code a} names, if this may read it in place: a file artifact with an absolute
   * path, resolving (links followed) to a readable regular file under a configured directory. Else null.
   */
  Path localPath(ArtifactInformation a) {
    if (roots.isEmpty() || !Artifacts.FILE_URN.equals(a.getTypeUrn())) {
      return null;
    }
    String name;
    try {
      name = ArtifactFilePayload.parseFrom(a.getTypePayload()).getPath();
    } catch (InvalidProtocolBufferException e) {
      return null;
    }
    if (name.isEmpty() || name.indexOf('\0') >= 0) {
      return null;
    }
    Path p = Path.of(name);
    return p.isAbsolute() ? underRoots(p) : null;
  }

  /**
   * The real path of {@code candidate} if this may read it in place: a readable regular file (links resolved, the
   * resolved path a regular file too) under a configured directory. Else null.
   */
  Path underRoots(Path candidate) {
    try {
      Path real = candidate.toRealPath();
      for (Path root : roots) {
        if (real.startsWith(root) && !real.equals(root) && Files.isRegularFile(real, LinkOption.NOFOLLOW_LINKS)
            && Files.isReadable(real)) {
          return real;
        }
      }
    } catch (IOException | SecurityException e) {
      return null;
    }
    return null;
  }

  /**
   * Hashes {@code candidate} now, on the calling thread (the {@link StagingWatcher}'s), unless its current identity is
   * known or being hashed: fills the memo a later lease reads. A file that changes while it is read is not recorded.
   *
   * @return whether this call hashed the file
   * @throws IOException if it cannot be read or changed while it was read
   */
  boolean hashAhead(Path candidate) throws IOException {
    Path file = underRoots(candidate);
    if (file == null) {
      return false;
    }
    FileIdentity id = identity(file);
    if (memo.getIfPresent(id) != null || inflight.containsKey(id)) {
      return false;
    }
    CompletableFuture<String> mine = new CompletableFuture<>();
    if (ahead.putIfAbsent(id, mine) != null) {
      return false;
    }
    try {
      long started = System.nanoTime();
      BiConsumer<String, Long> binaries = stagedBinaries;
      boolean binary = binaries != null && isElf(file);
      String digest = null;
      String how = "hashed";
      if (binary) {
        try {
          Cached c = intoCache(file, id, false);
          digest = c.blob().sha256();
          how = "worker binary, " + c.how() + ", pinned for prefetch";
        } catch (IOException e) {
          // The cache cannot take it (full, unwritable) or the file changed: hash only, and prefetch nothing.
          LOG.warn("could not copy staged worker binary {} into the cache for prefetch: {}", file, e.toString());
          binary = false;
        }
      }
      if (digest == null) {
        Blob same = sameAsProbeMatch(file, id, false);
        if (same != null) {
          digest = same.sha256();
          cache.unpin(digest);
          how = "matched cached content byte for byte";
        } else {
          digest = hash(file, id);
        }
      }
      memo.put(id, new Known(digest, true, System.currentTimeMillis()));
      hashedAt.accept(HashedAt.STAGING);
      LOG.info("staged file hashed ahead of its lease sha256={} bytes={} ms={} ({})", digest, id.size(),
          (System.nanoTime() - started) / 1_000_000, how);
      // Removed before completing: a lease that joined re-reads the memo, never this entry again.
      ahead.remove(id, mine);
      mine.complete(digest);
      if (binary) {
        // intoCache left the content pinned: a size-bounded cache may evict a newly added entry at once (Caffeine's
        // admission policy did, for every new binary, in a benchmark whose cache was full), and the wrappers asked
        // now fetch it within seconds. The pin lasts as long as their tickets.
        String pinned = digest;
        try {
          binaries.accept(digest, id.size());
        } finally {
          CompletableFuture.delayedExecutor(PREFETCH_PIN.toMillis(), TimeUnit.MILLISECONDS)
              .execute(() -> cache.unpin(pinned));
        }
      }
      return true;
    } catch (IOException | RuntimeException e) {
      ahead.remove(id, mine);
      mine.completeExceptionally(e);
      throw e;
    }
  }

  /**
   * Where staging-time hashes report the worker binaries they found (sha256, size), after the content is in the
   * cache: the pool's prefetch. Null (the default): staged files are only hashed, never copied ahead.
   */
  void onStagedBinary(BiConsumer<String, Long> listener) {
    this.stagedBinaries = listener;
  }

  /**
   * Whether the file starts with the ELF magic: a Go worker binary (other staged files are never prefetched). These
   * four bytes are not counted in {@link #bytesReadCounter()}.
   */
  private boolean isElf(Path file) throws IOException {
    byte[] magic = new byte[4];
    try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
      ByteBuffer bb = ByteBuffer.wrap(magic);
      while (bb.hasRemaining() && ch.read(bb) >= 0) {
        // read the first four bytes, or fewer for a shorter file
      }
      if (bb.hasRemaining()) {
        return false;
      }
    }
    return magic[0] == 0x7f && magic[1] == 'E' && magic[2] == 'L' && magic[3] == 'F';
  }

  /**
   * The content of {@code file} (a path from {@link #localPath}) as a cached blob, pinned for the caller (release with
   * {@link ArtifactCache#unpin}). Fails if the file cannot be read or changes while it is read. {@code lease} names
   * the lease in the log line that says whether the digest was ready ({@code digest_ready}) and when the file was
   * staged ({@code staged_at}, its modification time in epoch ms).
   */
  CompletableFuture<Blob> blob(Path file, String lease) {
    FileIdentity id;
    try {
      id = identity(file);
    } catch (IOException e) {
      return CompletableFuture.failedFuture(e);
    }
    Known known = memo.getIfPresent(id);
    if (known != null) {
      if (known.ahead() && known.firstUse().compareAndSet(false, true)) {
        LOG.info("artifact identified in place sha256={} bytes={} {} staged_at={} digest_ready=true (hashed at"
            + " staging {} ms before this lease)", known.digest(), id.size(), lease, id.modified().toMillis(),
            System.currentTimeMillis() - known.hashedAtMillis());
      }
      Blob b = cache.pinned(known.digest());
      if (b != null) {
        return CompletableFuture.completedFuture(b);
      }
    }
    CompletableFuture<String> staging = ahead.get(id);
    if (known == null && staging != null) {
      long joined = System.nanoTime();
      // The staging-time hash of this very file is under way: wait for it rather than read the file a second time.
      return staging.handle((digest, failure) -> {
        LOG.info("artifact in place: lease joined the staging-time hash {} staged_at={} digest_ready=false waited_ms={}"
            + "{}", lease, id.modified().toMillis(), (System.nanoTime() - joined) / 1_000_000,
            failure == null ? "" : " (it failed; hashing again)");
        return (Void) null;
      }).thenCompose(v -> blob(file, lease));
    }
    CompletableFuture<Blob> shared = new CompletableFuture<>();
    CompletableFuture<Blob> existing = inflight.putIfAbsent(id, shared);
    if (existing != null) {
      // Each caller needs its own pin; the sharer's pin still holds the blob when this runs.
      return existing.thenCompose(b -> {
        Blob mine = cache.pinned(b.sha256());
        return mine != null ? CompletableFuture.completedFuture(mine) : blob(file, lease);
      });
    }
    String digest = known == null ? null : known.digest();
    hashing.execute(() -> {
      try {
        shared.complete(read(file, id, digest, lease));
      } catch (IOException | RuntimeException e) {
        shared.completeExceptionally(e);
      } finally {
        inflight.remove(id, shared);
      }
    });
    return shared;
  }

  /**
   * The file's content into the cache, in one read where it can: with a known digest (hashed at staging, content not
   * cached) a verified copy; else as {@link #intoCache}: compared with the cached content its probe matches, or hashed
   * while copied.
   */
  private Blob read(Path file, FileIdentity id, String knownDigest, String lease) throws IOException {
    long started = System.nanoTime();
    String digest;
    Blob blob;
    String how;
    if (knownDigest != null) {
      digest = knownDigest;
      blob = copy(file, id, knownDigest);
      how = "digest known from staging, copied";
    } else {
      hashedAt.accept(HashedAt.LEASE);
      Cached c = intoCache(file, id, true);
      blob = c.blob();
      digest = blob.sha256();
      how = c.how();
    }
    memo.put(id, new Known(digest, false, System.currentTimeMillis()));
    LOG.info("artifact identified in place sha256={} bytes={} {} staged_at={} digest_ready={} ms={} ({})", digest,
        id.size(), lease, id.modified().toMillis(), knownDigest != null, (System.nanoTime() - started) / 1_000_000,
        how);
    return blob;
  }

  /** A file's content in the cache, pinned once for the caller, and how it got there (for the log). */
  private record Cached(Blob blob, String how) {}

  /**
   * The file's content into the cache, pinned for the caller, in one read where it can: content whose probe matches
   * cached content ({@link #probeMatch}) is compared with it byte for byte, and if equal is that content (nothing
   * copied); anything else is new content, hashed while copied (after a failed comparison: two reads).
   */
  private Cached intoCache(Path file, FileIdentity id, boolean split) throws IOException {
    Blob like = probeMatch(file, id.size());
    if (like == null) {
      return new Cached(copy(file, id, null), "new content: hashed while copied");
    }
    Blob same = sameContent(file, id, like, split);
    return same != null ? new Cached(same, "matched cached content byte for byte")
        : new Cached(copy(file, id, null), "probe matched other content: hashed while copied");
  }

  /** The cached content the file is byte for byte, pinned for the caller, if its probe matches one; else null. */
  private Blob sameAsProbeMatch(Path file, FileIdentity id, boolean split) throws IOException {
    Blob like = probeMatch(file, id.size());
    return like == null ? null : sameContent(file, id, like, split);
  }

  /**
   * What the staged file probably holds, without reading it whole (for a speculative start): the digest the memo
   * holds for its current identity ({@code verified}), else that of cached content its probe matches (not verified:
   * {@link #blob} compares them). Null when neither, or when the file cannot be read.
   */
  Candidate candidate(Path file) {
    try {
      FileIdentity id = identity(file);
      Known known = memo.getIfPresent(id);
      if (known != null) {
        return new Candidate(known.digest(), true);
      }
      Blob like = probeMatch(file, id.size());
      return like == null ? null : new Candidate(like.sha256(), false);
    } catch (IOException e) {
      return null;
    }
  }

  /** A staged file's probable digest; {@code verified} when it was established from the whole file. */
  record Candidate(String sha256, boolean verified) {}

  /** Bytes compared at each end of a staged file to guess whether the cache holds its content. */
  static final int PROBE_BYTES = 64 << 10;

  /**
   * Cached content of the file's size with the same first and last {@link #PROBE_BYTES} (a rebuilt Go binary differs
   * near its start, in its build ID; a different one mostly in its size), or null. A guess that chooses between a
   * comparison and a hash, never an identity: {@link #sameContent} decides.
   */
  private Blob probeMatch(Path file, long size) throws IOException {
    List<Blob> candidates = cache.contentOfSize(size);
    if (candidates.isEmpty()) {
      return null;
    }
    int n = (int) Math.min(PROBE_BYTES, size);
    byte[] head = new byte[n];
    byte[] tail = new byte[n];
    try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
      readFully(ch, ByteBuffer.wrap(head), 0);
      readFully(ch, ByteBuffer.wrap(tail), size - n);
    }
    bytesRead.addAndGet(2L * n);
    for (Blob b : candidates) {
      try (java.io.InputStream in = b.open()) {
        byte[] h = in.readNBytes(n);
        in.skipNBytes(size - 2L * n < 0 ? 0 : size - 2L * n);
        byte[] t = size >= 2L * n ? in.readNBytes(n) : tail; // overlapping ends: the head covers both
        if (java.util.Arrays.equals(h, head) && java.util.Arrays.equals(t, tail)) {
          return b;
        }
      } catch (IOException e) {
        // evicted meanwhile: not a candidate
      }
    }
    return null;
  }

  /**
   * {@code like}, pinned for the caller, if the file holds exactly its bytes; else null. With {@code split} (on a
   * lease's path; not at staging time, which is off it) large files are compared in two halves, the second on
   * another thread. Counts the staged file's bytes read (up to the first difference).
   *
   * @throws IOException if the file cannot be read or changed while it was compared
   */
  private Blob sameContent(Path file, FileIdentity id, Blob like, boolean split) throws IOException {
    Blob pinned = cache.pinned(like.sha256());
    if (pinned == null) {
      return null; // evicted since the probe
    }
    boolean same;
    try {
      long size = id.size();
      if (pinned instanceof Blob.OnDisk d && split && size >= SPLIT_BYTES) {
        long half = size / 2;
        CompletableFuture<Boolean> second = CompletableFuture.supplyAsync(() -> {
          try {
            return equalRange(file, d.path(), half, size);
          } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
          }
        }, halves);
        boolean first = equalRange(file, d.path(), 0, half);
        same = joinHalf(second) && first;
      } else if (pinned instanceof Blob.OnDisk d) {
        same = equalRange(file, d.path(), 0, size);
      } else {
        same = equalBytes(file, ((Blob.InMemory) pinned).bytes());
      }
      if (!identity(file).equals(id)) {
        throw new IOException("staged file " + file + " changed while it was read");
      }
    } catch (IOException | RuntimeException e) {
      cache.unpin(pinned.sha256());
      throw e;
    }
    if (!same) {
      cache.unpin(pinned.sha256());
      return null;
    }
    return pinned;
  }

  private static boolean joinHalf(CompletableFuture<Boolean> half) throws IOException {
    try {
      return half.join();
    } catch (java.util.concurrent.CompletionException e) {
      if (e.getCause() instanceof java.io.UncheckedIOException u) {
        throw u.getCause();
      }
      throw e;
    }
  }

  /** Whether bytes [from, to) of the two files are equal (both must be at least {@code to} long). */
  private boolean equalRange(Path file, Path cached, long from, long to) throws IOException {
    ByteBuffer[] bufs = comparing.get();
    ByteBuffer a = bufs[0];
    ByteBuffer b = bufs[1];
    try (FileChannel x = FileChannel.open(file, StandardOpenOption.READ);
        FileChannel y = FileChannel.open(cached, StandardOpenOption.READ)) {
      for (long pos = from; pos < to; ) {
        int n = (int) Math.min(BUFFER_BYTES, to - pos);
        a.clear().limit(n);
        b.clear().limit(n);
        readFully(x, a, pos);
        readFully(y, b, pos);
        bytesRead.addAndGet(n);
        if (a.flip().mismatch(b.flip()) >= 0) {
          return false;
        }
        pos += n;
      }
    }
    return true;
  }

  private boolean equalBytes(Path file, byte[] cached) throws IOException {
    byte[] buf = buffers.get();
    try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
      ByteBuffer bb = ByteBuffer.wrap(buf);
      int off = 0;
      int n;
      while ((n = ch.read(bb.clear())) >= 0) {
        bytesRead.addAndGet(n);
        if (off + n > cached.length || java.util.Arrays.mismatch(buf, 0, n, cached, off, off + n) >= 0) {
          return false;
        }
        off += n;
      }
      return off == cached.length;
    }
  }

  private static void readFully(FileChannel ch, ByteBuffer bb, long position) throws IOException {
    while (bb.hasRemaining()) {
      if (ch.read(bb, position + bb.position()) < 0) {
        throw new IOException("staged file shrank while it was read");
      }
    }
  }

  private String hash(Path file, FileIdentity id) throws IOException {
    MessageDigest sha = Sha256.newDigest();
    byte[] buf = buffers.get();
    long total = 0;
    try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
      ByteBuffer bb = ByteBuffer.wrap(buf);
      int n;
      while ((n = ch.read(bb.clear())) >= 0) {
        sha.update(buf, 0, n);
        total += n;
      }
    }
    bytesRead.addAndGet(total);
    if (total != id.size() || !identity(file).equals(id)) {
      throw new IOException("staged file " + file + " changed while it was read");
    }
    return HexFormat.of().formatHex(sha.digest());
  }

  /**
   * Copies the file into the cache; the writer hashes what it copies, so the copy is verified against {@code digest}
   * when one is given, and is the file's one read when none is. A file that changes meanwhile is not cached.
   */
  private Blob copy(Path file, FileIdentity id, String digest) throws IOException {
    ArtifactCache.Writer writer = cache.newWriter();
    byte[] buf = buffers.get();
    try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
      ByteBuffer bb = ByteBuffer.wrap(buf);
      int n;
      while ((n = ch.read(bb.clear())) >= 0) {
        writer.write(buf, 0, n);
      }
      if (writer.size() != id.size() || !identity(file).equals(id)) {
        throw new IOException("staged file " + file + " changed while it was read");
      }
    } catch (IOException | RuntimeException e) {
      writer.abort();
      throw e;
    } finally {
      bytesRead.addAndGet(writer.size());
    }
    return writer.commit(digest);
  }

  private static FileIdentity identity(Path file) throws IOException {
    BasicFileAttributes a = Files.readAttributes(file, BasicFileAttributes.class);
    Object changed;
    try {
      changed = Files.getAttribute(file, "unix:ctime");
    } catch (UnsupportedOperationException | IllegalArgumentException e) {
      changed = a.lastModifiedTime(); // no change time on this platform: modification time and inode must do
    }
    return new FileIdentity(file, a.fileKey(), a.size(), a.lastModifiedTime(), changed);
  }

  /**
   * Starts hashing files as they are staged under the configured directories ({@link StagingWatcher}); a file
   * system without a watch service leaves every hash to lease time (WARN).
   */
  void watchStaging() {
    if (roots.isEmpty() || watcher != null) {
      return;
    }
    try {
      watcher = StagingWatcher.start(roots, this::hashAhead);
    } catch (IOException | UnsupportedOperationException e) {
      LOG.warn("cannot watch the local artifact dirs {} ({}); staged files are hashed at lease time", roots,
          e.toString());
    }
  }

  /** Stops the watcher (joined) and the hashing threads. */
  void close() {
    StagingWatcher w = watcher;
    if (w != null) {
      w.close();
    }
    hashing.shutdownNow();
    halves.shutdownNow();
  }
}
