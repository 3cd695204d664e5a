package dev.recycler.core.bench;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Plays the Beam job server's staging: every job gets a fresh directory under {@link #root()} and a plain file copy of
 * its worker binary there, without a sha256 (so a path names its content for one job only). The copy is made before
 * the lease's timing starts; the lease's runner deletes the job directory afterwards, as the job server's {@code
 * --clean-artifacts-per-job} does. Thread-safe.
 */
final class Staging {
  private static final AtomicInteger JOBS = new AtomicInteger();

  private final Path root;

  Staging(Path root) throws IOException {
    this.root = Files.createDirectories(root);
  }

  Path root() {
    return root;
  }

  /**
   * Stages {@code binary} for a new job: {@code <root>/job-<n>/<name>}, a plain copy. With {@code distinct}, 16
   * unique trailing bytes make the content new (still a valid ELF), so no cache anywhere holds it.
   */
  Path stage(Path binary, String name, boolean distinct) {
    int job = JOBS.incrementAndGet();
    try {
      Path dir = Files.createDirectories(root.resolve("job-" + job));
      Path copy = dir.resolve(name);
      Files.copy(binary, copy, StandardCopyOption.REPLACE_EXISTING);
      if (distinct) {
        try (OutputStream o = Files.newOutputStream(copy, StandardOpenOption.APPEND)) {
          o.write(String.format(Locale.ROOT, "%016d", System.nanoTime() % 10_000_000_000_000_000L + job)
              .getBytes(StandardCharsets.US_ASCII));
        }
      }
      if (!copy.toFile().setExecutable(true)) {
        throw new IOException("cannot make " + copy + " executable");
      }
      return copy;
    } catch (IOException e) {
      throw new IllegalStateException("cannot stage " + binary + " under " + root, e);
    }
  }
}
