package dev.recycler.core.artifact;

import java.io.IOException;
import java.nio.file.ClosedWatchServiceException;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardWatchEventKinds;
import java.nio.file.WatchEvent;
import java.nio.file.WatchKey;
import java.nio.file.WatchService;
import java.nio.file.attribute.BasicFileAttributes;
import java.time.Duration;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Hashes staged files when the job server writes them, not when a lease needs them: Beam's job server stages a job's
 * worker binary at submission, and its first StartWorker comes only after translation, Flink submission, scheduling
 * and operator start. Watches the local artifact directories (Java's {@link WatchService}, inotify on Linux), and
 * every directory created under them, and hands each new or changed regular file to {@link LocalArtifacts#hashAhead}
 * once it has been quiet for {@link #QUIET}, which fills the memo the lease path reads.
 *
 * <p>Correctness does not rest on this class: the memo holds a digest only for the file identity (path, device,
 * inode, size, modification and change times) it was computed from, and a file that changes while it is read is not
 * recorded. A partially written file that happens to be quiet is hashed for nothing: its next write changes its
 * identity, so it is queued and hashed again, and a lease never takes the partial digest.
 *
 * <p>Concurrency: two daemon threads. The watch thread ({@code recycler-staging-watch}) takes events, registers new
 * directories and then scans them (so files created before the registration are not missed) and queues files; the
 * hash thread ({@code recycler-staging-hash}, minimum Java priority, which Linux JVMs ignore by default: it is one
 * thread doing work a lease would otherwise do) hashes them one at a time. The queue ({@code pending}, path to the
 * time it is due, guarded by its own monitor) holds at most {@link #MAX_PENDING} files; more are dropped with a WARN
 * (their leases hash them). A directory tree of more than {@link #MAX_DIRECTORIES} directories is watched only in part.
 *
 * <p>Lifecycle: {@link #start} registers what exists and starts both threads; a configured directory that does not
 * exist yet is registered once it appears (checked every second). {@link #close} is idempotent, closes the watch
 * service and stops and joins both threads (bounded).
 */
final class StagingWatcher implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(StagingWatcher.class);
  /**
   * A file is hashed once no event touched it and its modification time is older than this. 200 ms was too short:
   * in an e2e run under load (load average 15-20) Beam's job server paused longer mid-write and 39 MB were read for a
   * hash that the next write voided. A job's first StartWorker comes 6-34 s after its staging there (measured).
   */
  static final Duration QUIET = Duration.ofSeconds(1);
  static final int MAX_PENDING = 1024;
  static final int MAX_DIRECTORIES = 10_000;
  private static final long ROOT_RECHECK_MILLIS = 1000;

  /** The work to do for a quiet file; may throw for a file that vanished or changed. */
  interface Hasher {
    void hash(Path file) throws IOException;
  }

  private final List<Path> roots;
  private final Hasher hasher;
  private final WatchService watch;
  private final Map<WatchKey, Path> keys = new ConcurrentHashMap<>();
  private final Map<Path, Boolean> watchedRoots = new ConcurrentHashMap<>();
  /** Queued files by the nanoTime they are due, in order of their last event (so the first is due first). */
  private final LinkedHashMap<Path, Long> pending = new LinkedHashMap<>();
  private final Thread watchThread;
  private final Thread hashThread;
  private volatile boolean closed;
  private boolean warnedFull;
  private boolean warnedDirectories;

  private StagingWatcher(List<Path> roots, Hasher hasher, WatchService watch) {
    this.roots = List.copyOf(roots);
    this.hasher = hasher;
    this.watch = watch;
    this.watchThread = new Thread(this::watchLoop, "recycler-staging-watch");
    this.hashThread = new Thread(this::hashLoop, "recycler-staging-hash");
    for (Thread t : List.of(watchThread, hashThread)) {
      t.setDaemon(true);
      t.setPriority(Thread.MIN_PRIORITY);
    }
  }

  /**
   * Starts watching {@code roots} (absolute, real paths where they exist).
   *
   * @throws IOException if the file system offers no watch service
   */
  static StagingWatcher start(List<Path> roots, Hasher hasher) throws IOException {
    StagingWatcher w = new StagingWatcher(roots, hasher, roots.get(0).getFileSystem().newWatchService());
    w.registerMissingRoots();
    w.watchThread.start();
    w.hashThread.start();
    LOG.info("watching local artifact dirs={} to hash staged files ahead of their leases (quiet {} ms)", roots,
        QUIET.toMillis());
    return w;
  }

  private void watchLoop() {
    long nextRootCheck = System.nanoTime();
    try {
      while (!closed) {
        WatchKey key = watch.poll(ROOT_RECHECK_MILLIS, java.util.concurrent.TimeUnit.MILLISECONDS);
        if (System.nanoTime() - nextRootCheck >= 0) {
          registerMissingRoots();
          nextRootCheck = System.nanoTime() + ROOT_RECHECK_MILLIS * 1_000_000;
        }
        if (key == null) {
          continue;
        }
        Path dir = keys.get(key);
        for (WatchEvent<?> event : key.pollEvents()) {
          if (event.kind() == StandardWatchEventKinds.OVERFLOW) {
            // The kernel dropped events: look at everything again (files already hashed are skipped by identity).
            LOG.debug("staging watch overflow: rescanning {}", roots);
            for (Path r : roots) {
              if (watchedRoots.containsKey(r)) {
                registerTree(r);
              }
            }
            continue;
          }
          if (dir == null) {
            continue;
          }
          Path child = dir.resolve((Path) event.context());
          if (event.kind() == StandardWatchEventKinds.ENTRY_DELETE) {
            synchronized (pending) {
              pending.remove(child);
            }
          } else if (Files.isDirectory(child, LinkOption.NOFOLLOW_LINKS)) {
            if (event.kind() == StandardWatchEventKinds.ENTRY_CREATE) {
              registerTree(child);
            }
          } else if (Files.isRegularFile(child, LinkOption.NOFOLLOW_LINKS)) {
            offer(child);
          }
        }
        if (!key.reset()) {
          keys.remove(key); // its directory is gone
        }
      }
    } catch (ClosedWatchServiceException | InterruptedException e) {
      // closing
    } catch (RuntimeException e) {
      LOG.warn("staging watch stopped: {}; staged files are hashed at lease time from now on", e.toString());
    }
  }

  private void registerMissingRoots() {
    for (Path r : roots) {
      if (!watchedRoots.containsKey(r) && Files.isDirectory(r)) {
        watchedRoots.put(r, Boolean.TRUE);
        registerTree(r);
      }
    }
  }

  /** Registers {@code top} and every directory below it, each before listing it, and queues the files found. */
  private void registerTree(Path top) {
    try {
      Files.walkFileTree(top, new SimpleFileVisitor<>() {
        @Override
        public FileVisitResult preVisitDirectory(Path dir, BasicFileAttributes attrs) {
          if (closed) {
            return FileVisitResult.TERMINATE;
          }
          if (keys.size() >= MAX_DIRECTORIES) {
            if (!warnedDirectories) {
              warnedDirectories = true;
              LOG.warn("more than {} directories under the local artifact dirs; files in the rest are hashed at"
                  + " lease time", MAX_DIRECTORIES);
            }
            return FileVisitResult.SKIP_SUBTREE;
          }
          try {
            // Registered before it is listed: a file created from now on has an event, one created before is listed.
            keys.put(dir.register(watch, StandardWatchEventKinds.ENTRY_CREATE, StandardWatchEventKinds.ENTRY_MODIFY,
                StandardWatchEventKinds.ENTRY_DELETE), dir);
          } catch (IOException | ClosedWatchServiceException e) {
            LOG.debug("cannot watch {}: {}", dir, e.toString());
            return FileVisitResult.SKIP_SUBTREE;
          }
          return FileVisitResult.CONTINUE;
        }

        @Override
        public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) {
          if (attrs.isRegularFile()) {
            offer(file);
          }
          return FileVisitResult.CONTINUE;
        }

        @Override
        public FileVisitResult visitFileFailed(Path file, IOException e) {
          return FileVisitResult.CONTINUE; // deleted meanwhile, or unreadable: leases decide
        }
      });
    } catch (IOException e) {
      LOG.debug("cannot scan {}: {}", top, e.toString());
    }
  }

  /** Queues {@code file}, due {@link #QUIET} from now: each event on it postpones it. */
  private void offer(Path file) {
    synchronized (pending) {
      if (pending.remove(file) == null && pending.size() >= MAX_PENDING) {
        if (!warnedFull) {
          warnedFull = true;
          LOG.warn("more than {} staged files wait to be hashed; the rest are hashed at lease time", MAX_PENDING);
        }
        return;
      }
      pending.put(file, System.nanoTime() + QUIET.toNanos());
      pending.notifyAll();
    }
  }

  private void hashLoop() {
    try {
      while (!closed) {
        Path next = takeDue();
        if (next == null) {
          return;
        }
        try {
          BasicFileAttributes a = Files.readAttributes(next, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
          if (!a.isRegularFile()) {
            continue;
          }
          // Quiet also by the file's own clock: found by a scan, or written without events reaching us yet.
          long age = System.currentTimeMillis() - a.lastModifiedTime().toMillis();
          if (age < QUIET.toMillis()) {
            offer(next);
            continue;
          }
          hasher.hash(next);
        } catch (IOException e) {
          // Gone, unreadable or changed while read: a later event queues it again, or its lease hashes it.
          LOG.debug("staged file not hashed ahead file={}: {}", next, e.toString());
        }
      }
    } catch (InterruptedException e) {
      // closing
    } catch (RuntimeException e) {
      LOG.warn("staging hash thread stopped: {}; staged files are hashed at lease time from now on", e.toString());
    }
  }

  /** The first queued file once it is due; null when closed. */
  private Path takeDue() throws InterruptedException {
    synchronized (pending) {
      while (!closed) {
        Iterator<Map.Entry<Path, Long>> it = pending.entrySet().iterator();
        if (!it.hasNext()) {
          pending.wait();
          continue;
        }
        Map.Entry<Path, Long> first = it.next();
        long wait = first.getValue() - System.nanoTime();
        if (wait > 0) {
          pending.wait(Math.max(1, wait / 1_000_000));
          continue;
        }
        it.remove();
        return first.getKey();
      }
      return null;
    }
  }

  /** Files queued (tests). */
  int pendingCount() {
    synchronized (pending) {
      return pending.size();
    }
  }

  /** Stops both threads (bounded wait) and the watch service. Idempotent. */
  @Override
  public void close() {
    closed = true;
    try {
      watch.close();
    } catch (IOException e) {
      LOG.debug("closing the staging watch: {}", e.toString());
    }
    synchronized (pending) {
      pending.clear();
      pending.notifyAll();
    }
    hashThread.interrupt(); // an interrupted file read ends at once (FileChannel is interruptible)
    watchThread.interrupt();
    for (Thread t : List.of(watchThread, hashThread)) {
      try {
        t.join(5000);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return;
      }
      if (t.isAlive()) {
        LOG.warn("thread {} did not stop within 5 s", t.getName());
      }
    }
  }
}
