package dev.recycler.core.artifact;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

@Timeout(value = 30, unit = TimeUnit.SECONDS)
class ArtifactCacheTest {
  @TempDir
  Path dir;

  private static byte[] bytes(int n, int seed) {
    byte[] b = new byte[n];
    new Random(seed).nextBytes(b);
    return b;
  }

  private static String sha(byte[] b) throws Exception {
    return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
  }

  /** Content as a fetch leaves it: committed, cached, and pinned for the fetch. */
  private static Blob fetched(ArtifactCache cache, byte[] content) throws IOException {
    ArtifactCache.Writer w = cache.newWriter();
    for (int off = 0; off < content.length; off += 1000) {
      w.write(content, off, Math.min(1000, content.length - off));
    }
    return w.commit("");
  }

  /** Content in the cache that nobody holds. */
  private static Blob store(ArtifactCache cache, byte[] content) throws IOException {
    Blob b = fetched(cache, content);
    cache.unpin(b.sha256());
    return b;
  }

  /** Content files (not the cache's marker). */
  private long filesIn(Path d) throws IOException {
    try (Stream<Path> s = Files.list(d)) {
      return s.filter(p -> Files.isRegularFile(p) && p.getFileName().toString().startsWith("sha256-")).count();
    }
  }

  @Test
  void smallContentStaysInMemoryAndLargeContentSpillsToDisk() throws Exception {
    ArtifactCache cache = new ArtifactCache(dir, 10L << 20, 4096);
    byte[] small = bytes(1000, 1);
    byte[] large = bytes(50_000, 2);

    Blob s = store(cache, small);
    Blob l = store(cache, large);

    assertThat(s).isInstanceOf(Blob.InMemory.class);
    assertThat(l).isInstanceOf(Blob.OnDisk.class);
    assertThat(s.sha256()).isEqualTo(sha(small));
    assertThat(l.sha256()).isEqualTo(sha(large));
    assertThat(l.size()).isEqualTo(large.length);
    try (var in = l.open()) {
      assertThat(in.readAllBytes()).isEqualTo(large);
    }
    assertThat(cache.blob(sha(large))).isSameAs(l);
  }

  @Test
  void heapHeldBlobsStayWithinTheirTotalBoundAndTheRestGoesToDisk() throws Exception {
    ArtifactCache cache = new ArtifactCache(dir, 10L << 20, 4096);
    int fit = ArtifactCache.MEMORY_BLOBS_FACTOR * 4096 / 4000;
    List<Blob> stored = new ArrayList<>();
    for (int i = 0; i < fit + 3; i++) {
      stored.add(store(cache, bytes(4000, 100 + i)));
    }

    assertThat(stored.subList(0, fit)).allMatch(b -> b instanceof Blob.InMemory);
    assertThat(stored.subList(fit, stored.size())).allMatch(b -> b instanceof Blob.OnDisk);
    // Storing the same content again keeps the cached copy and does not count it twice.
    assertThat(store(cache, bytes(4000, 100))).isSameAs(stored.get(0));
    // Once heap-held blobs leave the cache, new small content is held on the heap again.
    cache.clear();
    assertThat(store(cache, bytes(4000, 999))).isInstanceOf(Blob.InMemory.class);
  }

  @Test
  void evictionKeepsTheCacheWithinItsBoundAndDeletesSpilledFiles() throws Exception {
    ArtifactCache cache = new ArtifactCache(dir, 1L << 20, 1024);
    for (int i = 0; i < 8; i++) {
      store(cache, bytes(300_000, i));
    }
    cache.cleanUp();

    assertThat(cache.sizeBytes()).isLessThanOrEqualTo(1L << 20);
    assertThat(filesIn(dir)).isLessThanOrEqualTo(3);
  }

  /**
   * Regression: a size-bounded Caffeine cache evicted a freshly added binary at once and deleted its file before the
   * booting wrapper read it (benchmark, cold leases: "evicted from the cache while being requested").
   */
  @Test
  void aPinnedBlobSurvivesEvictionUntilUnpinned() throws Exception {
    ArtifactCache cache = new ArtifactCache(dir, 1L << 20, 1024);
    byte[] content = bytes(300_000, 42);
    Blob pinned = store(cache, content);
    cache.pin(pinned);

    for (int i = 0; i < 8; i++) {
      store(cache, bytes(300_000, i));
    }
    cache.cleanUp();

    Blob still = cache.blob(pinned.sha256());
    assertThat(still).isNotNull();
    try (var in = still.open()) {
      assertThat(in.readAllBytes()).isEqualTo(content);
    }
    Path file = ((Blob.OnDisk) pinned).path();
    cache.unpin(pinned.sha256());
    if (cache.blob(pinned.sha256()) == null) {
      assertThat(file).doesNotExist();
    }
  }

  /**
   * Regression: with every blob unique (the benchmark's cold leases), the write that cached a new binary could evict it
   * at once and delete its file before the lease that fetched it pinned it ("evicted from the cache while being
   * requested"). Blobs are now pinned before they enter the cache, and handed out pinned.
   */
  @Test
  void aBlobEvictedByTheWriteThatCachedItStaysReadableForItsFetchers() throws Exception {
    ArtifactCache cache = new ArtifactCache(dir, 450_000, 1024);
    List<Blob> held = new ArrayList<>();
    for (int i = 0; i < 6; i++) {
      byte[] content = bytes(300_000, 200 + i);
      Blob b = cache.get("key-" + i, () -> {
        try {
          return CompletableFuture.completedFuture(fetched(cache, content));
        } catch (IOException e) {
          return CompletableFuture.failedFuture(e);
        }
      }).join();
      held.add(b);
      cache.cleanUp();
      try (var in = b.open()) {
        assertThat(in.readAllBytes()).isEqualTo(content);
      }
    }
    assertThat(cache.sizeBytes()).isLessThanOrEqualTo(450_000);

    held.forEach(b -> cache.unpin(b.sha256()));
    cache.cleanUp();
    assertThat(filesIn(dir)).as("only what the cache still holds").isLessThanOrEqualTo(1);
  }

  @Test
  void concurrentRequestsForOneUpstreamArtifactShareOneFetch() throws Exception {
    ArtifactCache cache = new ArtifactCache(null, 10L << 20, 0);
    AtomicInteger fetches = new AtomicInteger();
    CompletableFuture<Blob> gate = new CompletableFuture<>();

    CompletableFuture<Blob> a = cache.get("key", () -> {
      fetches.incrementAndGet();
      return gate;
    });
    CompletableFuture<Blob> b = cache.get("key", () -> {
      fetches.incrementAndGet();
      return gate;
    });
    gate.complete(fetched(cache, bytes(100, 3)));

    assertThat(fetches).hasValue(1);
    assertThat(a.join()).isSameAs(b.join());
    assertThat(cache.pinCount(a.join().sha256())).as("one pin per caller; the fetch's own pin is released").isEqualTo(2);
    assertThat(cache.get("key", () -> CompletableFuture.failedFuture(new AssertionError("cached")))).isDone();
  }

  @Test
  void failedFetchesAreNotCachedAndMismatchedContentIsRefused() throws Exception {
    ArtifactCache cache = new ArtifactCache(dir, 10L << 20, 10);
    CompletableFuture<Blob> failed = cache.get("k", () -> CompletableFuture.failedFuture(new IOException("reset")));
    assertThat(failed).isCompletedExceptionally();
    AtomicInteger fetches = new AtomicInteger();
    assertThat(cache.get("k", () -> {
      fetches.incrementAndGet();
      return CompletableFuture.completedFuture(null);
    })).as("a fetch without content is a failure").isCompletedExceptionally();
    assertThat(fetches).as("a failed fetch is retried, not remembered").hasValue(1);

    ArtifactCache.Writer w = cache.newWriter();
    byte[] content = bytes(500, 4);
    w.write(content, 0, content.length);
    assertThatThrownBy(() -> w.commit("00".repeat(32))).hasMessageContaining("sha256 mismatch");
    assertThat(cache.blob(sha(content))).isNull();
    assertThat(filesIn(dir.resolve("tmp"))).as("the partial file is deleted").isZero();
  }
  @Test
  void contentSurvivesARestartAndIsVerifiedBeforeUse() throws Exception {
    byte[] kept = bytes(50_000, 41);
    byte[] tampered = bytes(50_000, 42);
    ArtifactCache first = new ArtifactCache(dir, 10L << 20, 1024);
    store(first, kept);
    store(first, tampered);
    // A worker or another process rewrites one content file while the recycler is down.
    Path victim = dir.resolve("sha256-" + sha(tampered));
    Files.write(victim, bytes(50_000, 43));

    ArtifactCache second = new ArtifactCache(dir, 10L << 20, 1024);

    Blob reused = second.pinned(sha(kept));
    assertThat(reused).as("no refetch after a restart").isNotNull();
    try (var in = reused.open()) {
      assertThat(in.readAllBytes()).isEqualTo(kept);
    }
    assertThat(second.pinned(sha(tampered))).as("changed on disk: never served").isNull();
    assertThat(victim).doesNotExist();
  }

  @Test
  void aForeignNonEmptyDirectoryIsRefusedAndNothingInItDeleted() throws Exception {
    Path data = dir.resolve("data");
    Files.createDirectories(data.resolve("sub"));
    Files.writeString(data.resolve("important.txt"), "keep me");
    Files.writeString(data.resolve("sub/sha256-" + "0".repeat(64)), "not ours");

    assertThatThrownBy(() -> new ArtifactCache(data, 10L << 20, 1024)).isInstanceOf(IOException.class)
        .hasMessageContaining(data.toString()).hasMessageContaining("not empty")
        .hasMessageContaining("nothing in it was deleted");
    assertThat(data.resolve("important.txt")).hasContent("keep me");
    assertThat(data.resolve("sub/sha256-" + "0".repeat(64))).exists();
  }

  /** A recycler from before the marker left only its own files: upgrading must not make the TaskManager fail. */
  @Test
  void aCacheDirectoryOfAnOlderRecyclerIsAdoptedWithItsContent() throws Exception {
    byte[] content = bytes(50_000, 51);
    Files.write(dir.resolve("sha256-" + sha(content)), content);
    Files.createDirectories(dir.resolve("tmp"));

    ArtifactCache cache = new ArtifactCache(dir, 10L << 20, 1024);

    assertThat(dir.resolve(ArtifactCache.MARKER)).exists();
    assertThat(cache.pinned(sha(content))).as("its content is reused after verification").isNotNull();
  }

  @Test
  void inItsOwnDirectoryTheCacheDeletesOnlyFilesItWrote() throws Exception {
    new ArtifactCache(dir, 10L << 20, 1024);
    Files.writeString(dir.resolve("operator-notes.txt"), "mine");
    Files.createDirectories(dir.resolve("tmp"));
    Files.writeString(dir.resolve("tmp/fetch-123.part"), "partial download");
    Files.writeString(dir.resolve("tmp/other.txt"), "mine too");

    new ArtifactCache(dir, 10L << 20, 1024);

    assertThat(dir.resolve("operator-notes.txt")).exists();
    assertThat(dir.resolve("tmp/other.txt")).exists();
    assertThat(dir.resolve("tmp/fetch-123.part")).as("our own partial download").doesNotExist();
    assertThat(dir.resolve(ArtifactCache.MARKER)).exists();
  }
}
