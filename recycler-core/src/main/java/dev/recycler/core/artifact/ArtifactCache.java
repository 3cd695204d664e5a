package dev.recycler.core.artifact;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import com.github.benmanes.caffeine.cache.RemovalCause;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Supplier;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Content-addressed artifact store shared by all slots and jobs.
 *
 * <p>Two indexes: content by sha256 (Caffeine, bounded by total bytes, least recently used content evicted first; an
 * evicted on-disk blob's file is deleted) and upstream artifact identity to sha256 (Caffeine, bounded by count). Beam's
 * job server stages files without a sha256, so identity is computed here while downloading.
 *
 * <p>Concurrency: Caffeine's maps are thread-safe; concurrent {@link #get} calls for one upstream key share one fetch
 * through the {@code inflight} map (put-if-absent of a placeholder future, removed when the fetch ends). Pins are
 * counted under the {@code pins} map's monitor, which the removal listener also takes.
 *
 * <p>Pinning: a size-bounded Caffeine cache may evict any entry at any write, a newly added one included. So every
 * blob this cache hands out ({@link #get}, {@link #pinned}, {@link Writer#commit}) comes pinned for the caller, who
 * releases it with {@link #unpin} (a lease keeps its blobs pinned until it ends). A pinned blob that is evicted keeps
 * its file and {@link #blob} still finds it; the file is deleted when the last pin goes (unless the content was cached
 * again). Pins are taken under the {@code pins} monitor, which the removal listener also takes, so a blob is either
 * pinned before its eviction is handled or not handed out at all.
 *
 * <p>Memory: a blob stays on the heap only if it is at most {@code memoryBlobMaxBytes} (and 1/32 of the JVM's maximum
 * heap) and the heap-held blobs stay within {@link #MEMORY_BLOBS_FACTOR} times that and within a quarter of the
 * maximum heap in total; everything else is a file, so the heap needed does not depend on what jobs stage.
 *
 * <p>Failure handling: a fetch that fails, is truncated or does not match the sha256 its upstream stated never enters
 * the cache; its temporary file is deleted.
 *
 * <p>Ownership and restarts: the cache directory is the recycler's own, marked by a {@value #MARKER} file. A new or
 * empty directory is marked and used; a non-empty directory without the marker is refused, and nothing in it deleted.
 * In a marked directory only files this cache writes ({@code sha256-<hex>} and {@code tmp/fetch-*.part}) are ever
 * deleted. Content files survive a restart: each is adopted on its first lookup after being hashed again, so a file
 * changed on disk (tampered, truncated) is deleted instead of served.
 */
public final class ArtifactCache {
  private static final Logger LOG = LoggerFactory.getLogger(ArtifactCache.class);

  /**
   * Heap-held blobs total at most this many times {@code memoryBlobMaxBytes} (64 MiB with the default 8 MiB), and at
   * most a quarter of the maximum heap.
   */
  static final int MEMORY_BLOBS_FACTOR = 8;

  private final Path dir;
  private final long memoryBlobMaxBytes;
  private final long memoryBlobsMaxBytes;
  /** Bytes of the {@link Blob.InMemory} blobs the cache holds (or a pin keeps). */
  private final java.util.concurrent.atomic.AtomicLong memoryBytes = new java.util.concurrent.atomic.AtomicLong();
  private final Cache<String, Blob> blobs;
  private final Cache<String, String> digestByKey;
  private final Map<String, CompletableFuture<Blob>> inflight = new ConcurrentHashMap<>();
  /** Pinned blobs by sha256: how many leases hold each, and whether the cache evicted it meanwhile. */
  private final Map<String, Pin> pins = new java.util.HashMap<>();
  /** Content files found at start, by sha256 their name claims: adopted after hashing on first lookup. */
  private final Map<String, Path> persisted = new ConcurrentHashMap<>();

  /** The file that marks a directory as this cache's own. */
  public static final String MARKER = ".recycler-artifact-cache";
  private static final java.util.regex.Pattern CONTENT_NAME = java.util.regex.Pattern.compile("sha256-([0-9a-f]{64})");

  private static final class Pin {
    final Blob blob;
    int count;
    boolean evicted;

    Pin(Blob blob) {
      this.blob = blob;
    }
  }

  /**
   * @param dir where blobs larger than {@code memoryBlobMaxBytes} are spilled; {@code null} keeps all in memory. Must
   *     be new, empty, or a directory this cache marked before (its content is then reused after verification)
   * @throws IOException if {@code dir} cannot be created, or is not empty and not this cache's own
   */
  public ArtifactCache(Path dir, long maxBytes, long memoryBlobMaxBytes) throws IOException {
    this.dir = dir;
    // A download is buffered on the heap until it outgrows the per-blob limit, by several downloads at once: bounded
    // by the heap too, so that concurrent new jobs cannot exhaust a small one.
    this.memoryBlobMaxBytes = dir == null ? Long.MAX_VALUE
        : Math.min(memoryBlobMaxBytes, Runtime.getRuntime().maxMemory() / 32);
    this.memoryBlobsMaxBytes = dir == null ? Long.MAX_VALUE
        : Math.min(Runtime.getRuntime().maxMemory() / 4,
            memoryBlobMaxBytes > Long.MAX_VALUE / MEMORY_BLOBS_FACTOR ? Long.MAX_VALUE
                : memoryBlobMaxBytes * MEMORY_BLOBS_FACTOR);
    if (dir != null) {
      adoptDirectory(dir, maxBytes);
    }
    this.blobs = Caffeine.newBuilder()
        // Maintenance and the removal listener run on the calling thread: an evicted file is gone when the write that
        // evicted it returns (deterministic disk use), not later on the shared common pool.
        .executor(Runnable::run)
        .maximumWeight(Math.max(1, maxBytes / 1024))
        .weigher((String k, Blob b) -> (int) Math.min(Integer.MAX_VALUE, Math.max(1, (b.size() + 1023) / 1024)))
        .removalListener((String k, Blob b, RemovalCause cause) -> {
          synchronized (pins) {
            Pin pin = pins.get(k);
            if (pin != null) {
              pin.evicted = true;
              return;
            }
          }
          release(b);
        })
        .build();
    this.digestByKey = Caffeine.newBuilder().maximumSize(100_000).build();
  }

  /** The blob with this sha256, if cached or pinned. */
  public Blob blob(String sha256) {
    adoptPersisted(sha256);
    Blob b = blobs.getIfPresent(sha256);
    if (b != null) {
      return b;
    }
    synchronized (pins) {
      Pin pin = pins.get(sha256);
      return pin == null ? null : pin.blob;
    }
  }

  /**
   * The blob with this sha256, if cached or pinned, pinned for the caller (release with {@link #unpin}); else null.
   * Reads the Caffeine index under the {@code pins} monitor: reads never wait for Caffeine's eviction lock.
   */
  public Blob pinned(String sha256) {
    adoptPersisted(sha256);
    synchronized (pins) {
      Pin pin = pins.get(sha256);
      Blob b = pin != null ? pin.blob : blobs.getIfPresent(sha256);
      if (b != null) {
        pin(b);
      }
      return b;
    }
  }

  /** How many pins hold this sha256 (tests). */
  int pinCount(String sha256) {
    synchronized (pins) {
      Pin pin = pins.get(sha256);
      return pin == null ? 0 : pin.count;
    }
  }

  /** Keeps {@code blob} available (its file undeleted) until a matching {@link #unpin}. */
  public void pin(Blob blob) {
    synchronized (pins) {
      pins.computeIfAbsent(blob.sha256(), d -> new Pin(blob)).count++;
    }
  }

  /** Releases one pin; the last one deletes the file of a blob the cache evicted meanwhile. */
  public void unpin(String sha256) {
    Blob orphan = null;
    synchronized (pins) {
      Pin pin = pins.get(sha256);
      if (pin == null) {
        return;
      }
      if (--pin.count == 0) {
        pins.remove(sha256);
        if (pin.evicted && blobs.getIfPresent(sha256) == null) {
          orphan = pin.blob;
        }
      }
    }
    if (orphan != null) {
      release(orphan);
    }
  }

  /**
   * Drops content found corrupt (its bytes no longer hash to its sha256, e.g. its file was overwritten on disk): it
   * leaves the index and the pins at once, so no later lookup hands it out, and its file is deleted; the next lookup
   * of that content fetches or copies it again. Leases that still hold a pin on it release nothing later (their unpin
   * finds no pin, or, once the content is cached again, lowers the new entry's pin count early, which only makes that
   * entry evictable sooner). Idempotent.
   */
  public void discardCorrupt(Blob b) {
    boolean unpinned = false;
    synchronized (pins) {
      Pin pin = pins.get(b.sha256());
      if (pin != null && pin.blob == b) {
        pins.remove(b.sha256());
        unpinned = true;
      }
    }
    // Still indexed: the removal listener finds no pin now and releases it (deletes the file).
    boolean indexed = blobs.asMap().remove(b.sha256(), b);
    if (unpinned && !indexed) {
      release(b); // evicted earlier and kept only by the pin just removed
    }
  }

  /** A blob left the cache for good: its file is deleted, or its heap bytes no longer count. */
  private void release(Blob b) {
    if (b instanceof Blob.InMemory m) {
      memoryBytes.addAndGet(-m.bytes().length);
    }
    if (b instanceof Blob.OnDisk d) {
      try {
        Files.deleteIfExists(d.path());
      } catch (IOException e) {
        LOG.warn("could not delete evicted artifact file={}: {}", d.path(), e.toString());
      }
    }
  }

  /** The cached blob for an upstream identity, pinned for the caller, if the identity and its content are known. */
  private Blob pinnedForKey(String upstreamKey) {
    String digest = digestByKey.getIfPresent(upstreamKey);
    return digest == null ? null : pinned(digest);
  }

  /**
   * The blob for an upstream identity, pinned for the caller (release with {@link #unpin}): from the cache, or from
   * {@code fetch}, which concurrent callers for the same key share. {@code fetch} must complete with a blob from
   * {@link Writer#commit}, whose pin this method takes over.
   */
  public CompletableFuture<Blob> get(String upstreamKey, Supplier<CompletableFuture<Blob>> fetch) {
    return get(upstreamKey, fetch, 3);
  }

  private CompletableFuture<Blob> get(String upstreamKey, Supplier<CompletableFuture<Blob>> fetch, int attempts) {
    Blob cached = pinnedForKey(upstreamKey);
    if (cached != null) {
      return CompletableFuture.completedFuture(cached);
    }
    CompletableFuture<Blob> shared = new CompletableFuture<>();
    CompletableFuture<Blob> existing = inflight.putIfAbsent(upstreamKey, shared);
    // Each caller gets its own pin, taken as the fetch completes, while the commit's pin still holds the blob. A
    // caller that joins just after that finds the blob cached, or evicted (maybe deleted), and then fetches it again.
    CompletableFuture<Blob> mine = (existing == null ? shared : existing).thenCompose(blob -> {
      Blob pinned = pinned(blob.sha256());
      if (pinned != null) {
        return CompletableFuture.completedFuture(pinned);
      }
      return attempts > 1 ? get(upstreamKey, fetch, attempts - 1) : CompletableFuture.failedFuture(
          new IOException("artifact " + blob.sha256() + " was evicted again and again before it could be used;"
              + " the artifact cache is too small for the artifacts in use: raise its maximum size"));
    });
    if (existing == null) {
      CompletableFuture<Blob> started;
      try {
        started = fetch.get();
      } catch (RuntimeException e) {
        started = CompletableFuture.failedFuture(e);
      }
      started.whenComplete((blob, failure) -> {
        if (blob != null) {
          digestByKey.put(upstreamKey, blob.sha256());
        }
        inflight.remove(upstreamKey, shared);
        if (failure != null || blob == null) {
          shared.completeExceptionally(failure != null ? failure
              : new IllegalStateException("the fetch of " + upstreamKey + " completed without content"));
          return;
        }
        try {
          shared.complete(blob); // every caller waiting on it pins the blob now
        } finally {
          unpin(blob.sha256());
        }
      });
    }
    return mine;
  }

  /** Whether the identity is known and cached (for hit/miss accounting before {@link #get}). */
  public boolean contains(String upstreamKey) {
    String digest = digestByKey.getIfPresent(upstreamKey);
    return digest != null && blobs.getIfPresent(digest) != null;
  }

  /** Cached or pinned content of exactly {@code size} bytes (candidates for a staged file of that size). */
  List<Blob> contentOfSize(long size) {
    List<Blob> out = new ArrayList<>();
    blobs.asMap().values().stream().filter(b -> b.size() == size).forEach(out::add);
    synchronized (pins) {
      pins.values().stream().map(p -> p.blob).filter(b -> b.size() == size && !out.contains(b)).forEach(out::add);
    }
    return out;
  }

  /** Bytes held (approximate: weights are kept in KiB). */
  public long sizeBytes() {
    return blobs.policy().eviction().map(e -> e.weightedSize().orElse(0L) * 1024).orElse(0L);
  }

  /** Starts writing new content; exactly one of {@link Writer#commit} or {@link Writer#abort} must follow. */
  public Writer newWriter() {
    return new Writer();
  }

  /** Streams content in, hashing it; spills to a temporary file once it outgrows the memory limit. */
  public final class Writer {
    private final MessageDigest sha = Sha256.newDigest();
    private ByteArrayOutputStream memory = new ByteArrayOutputStream();
    private Path tmp;
    private OutputStream file;
    private long size;

    private Writer() {}

    public void write(byte[] b, int off, int len) throws IOException {
      sha.update(b, off, len);
      size += len;
      if (file == null && size > memoryBlobMaxBytes) {
        spill();
      }
      if (file != null) {
        file.write(b, off, len);
      } else {
        memory.write(b, off, len);
      }
    }

    private void spill() throws IOException {
      Files.createDirectories(dir.resolve("tmp"));
      tmp = Files.createTempFile(dir.resolve("tmp"), "fetch-", ".part");
      file = Files.newOutputStream(tmp);
      memory.writeTo(file);
      memory = null;
    }

    /** As {@link #write(byte[], int, int)}, without copying the chunk first. */
    public void write(com.google.protobuf.ByteString data) throws IOException {
      for (java.nio.ByteBuffer bb : data.asReadOnlyByteBufferList()) {
        sha.update(bb);
      }
      size += data.size();
      if (file == null && size > memoryBlobMaxBytes) {
        spill();
      }
      data.writeTo(file != null ? file : memory);
    }

    /**
     * Completes the content and caches it. If {@code expectedSha256} is non-empty and differs, nothing is cached.
     *
     * @return the cached blob, pinned for the caller (release with {@link #unpin}, or hand it to {@link #get})
     * @throws IOException on a digest mismatch or a failed write
     */
    public Blob commit(String expectedSha256) throws IOException {
      String digest = HexFormat.of().formatHex(sha.digest());
      if (expectedSha256 != null && !expectedSha256.isEmpty() && !expectedSha256.equalsIgnoreCase(digest)) {
        abortQuietly();
        throw new IOException("sha256 mismatch: upstream states " + expectedSha256 + ", content has " + digest);
      }
      Blob blob;
      if (file == null && memoryBytes.addAndGet(size) <= memoryBlobsMaxBytes) {
        blob = new Blob.InMemory(digest, memory.toByteArray());
      } else {
        if (file == null) {
          memoryBytes.addAndGet(-size); // the heap-held blobs are at their bound: this one goes to disk
          spill();
        }
        file.close();
        Path target = dir.resolve("sha256-" + digest);
        Blob existing = pinned(digest);
        if (existing != null) {
          Files.deleteIfExists(tmp);
          return existing;
        }
        Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        blob = new Blob.OnDisk(digest, size, target);
      }
      // Pinned before it enters the cache: the write may evict it at once.
      pin(blob);
      Blob cached = blobs.asMap().computeIfAbsent(digest, d -> blob);
      if (cached != blob && blob instanceof Blob.InMemory) {
        memoryBytes.addAndGet(-size); // the same content was cached meanwhile; this copy is dropped
      }
      return cached;
    }

    /** Discards everything written. Idempotent. */
    public void abort() {
      abortQuietly();
    }

    private void abortQuietly() {
      try {
        if (file != null) {
          file.close();
        }
        if (tmp != null) {
          Files.deleteIfExists(tmp);
        }
      } catch (IOException e) {
        LOG.warn("could not delete partial artifact file={}: {}", tmp, e.toString());
      }
      memory = null;
    }

    public long size() {
      return size;
    }
  }

  /** Runs pending evictions now (tests, metrics). */
  void cleanUp() {
    blobs.cleanUp();
  }

  /** Drops every blob (and its file). */
  public void clear() {
    blobs.invalidateAll();
    blobs.cleanUp();
  }


  /**
   * Takes {@code dir} as this cache's own (see the class comment): marks a new or empty one, refuses a foreign one,
   * deletes its own partial downloads and, oldest first, content files beyond {@code maxBytes}; indexes the rest.
   */
  private void adoptDirectory(Path dir, long maxBytes) throws IOException {
    Files.createDirectories(dir);
    Path marker = dir.resolve(MARKER);
    if (!Files.isRegularFile(marker)) {
      try (Stream<Path> entries = Files.list(dir)) {
        // Empty, or the layout of a recycler from before the marker (only sha256-<hex> files and tmp/): ours.
        if (!entries.allMatch(p -> CONTENT_NAME.matcher(p.getFileName().toString()).matches()
            || (p.getFileName().toString().equals("tmp") && Files.isDirectory(p, LinkOption.NOFOLLOW_LINKS)))) {
          throw new IOException("the artifact cache directory " + dir + " is not empty and is not a recycler cache"
              + " (no " + MARKER + " file); nothing in it was deleted: configure a new or empty directory");
        }
      }
      Files.writeString(marker, "recycler artifact cache, format 1: files named sha256-<hex> hold that content\n");
    }
    Path tmp = dir.resolve("tmp");
    if (Files.isDirectory(tmp, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
      try (Stream<Path> parts = Files.list(tmp)) {
        for (Path p : (Iterable<Path>) parts::iterator) {
          String name = p.getFileName().toString();
          if (name.startsWith("fetch-") && name.endsWith(".part")) {
            Files.deleteIfExists(p);
          }
        }
      }
    }
    List<Path> content = new ArrayList<>();
    try (Stream<Path> entries = Files.list(dir)) {
      entries.filter(p -> CONTENT_NAME.matcher(p.getFileName().toString()).matches()
          && Files.isRegularFile(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)).forEach(content::add);
    }
    // Newest first; what exceeds the bound is deleted (it was ours: named by the digest in a marked directory).
    content.sort(Comparator.comparing((Path p) -> {
      try {
        return Files.getLastModifiedTime(p);
      } catch (IOException e) {
        return java.nio.file.attribute.FileTime.fromMillis(0);
      }
    }).reversed());
    long total = 0;
    for (Path p : content) {
      long size = Files.size(p);
      if (total + size > maxBytes) {
        Files.deleteIfExists(p);
        continue;
      }
      total += size;
      java.util.regex.Matcher m = CONTENT_NAME.matcher(p.getFileName().toString());
      if (m.matches()) {
        persisted.put(m.group(1), p);
      }
    }
    if (!persisted.isEmpty()) {
      LOG.info("artifact cache reopened dir={} files={} bytes={} (each verified on first use)", dir, persisted.size(),
          total);
    }
  }

  /**
   * Adopts a content file found at start once its bytes still hash to the digest its name claims; deletes it
   * otherwise. Runs at most once per file, on the thread of its first lookup.
   */
  private void adoptPersisted(String sha256) {
    if (persisted.isEmpty()) {
      return;
    }
    Path p = persisted.remove(sha256);
    if (p == null) {
      return;
    }
    try {
      MessageDigest sha = Sha256.newDigest();
      byte[] buf = new byte[1 << 16];
      long size = 0;
      try (java.io.InputStream in = Files.newInputStream(p)) {
        int n;
        while ((n = in.read(buf)) >= 0) {
          sha.update(buf, 0, n);
          size += n;
        }
      }
      String actual = HexFormat.of().formatHex(sha.digest());
      if (!actual.equals(sha256)) {
        LOG.warn("cached artifact file={} no longer has the content its name states (sha256 {}); deleting it", p,
            actual);
        Files.deleteIfExists(p);
        return;
      }
      Blob blob = new Blob.OnDisk(sha256, size, p);
      blobs.asMap().putIfAbsent(sha256, blob);
    } catch (IOException e) {
      LOG.warn("cannot verify cached artifact file={}: {}; not using it", p, e.toString());
    }
  }
}
