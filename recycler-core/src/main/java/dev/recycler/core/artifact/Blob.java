package dev.recycler.core.artifact;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;

/** Immutable content in the cache, named by its sha256. */
public sealed interface Blob permits Blob.InMemory, Blob.OnDisk {
  /** Lowercase hex sha256 of the content. */
  String sha256();

  long size();

  /** A fresh stream over the content. An on-disk blob evicted meanwhile throws {@link java.nio.file.NoSuchFileException}. */
  InputStream open() throws IOException;

  /** Small content kept on the heap. */
  record InMemory(String sha256, byte[] bytes) implements Blob {
    @Override
    public long size() {
      return bytes.length;
    }

    @Override
    public InputStream open() {
      return new ByteArrayInputStream(bytes);
    }
  }

  /** Large content spilled to the cache directory; the file is deleted when the blob is evicted. */
  record OnDisk(String sha256, long size, Path path) implements Blob {
    @Override
    public InputStream open() throws IOException {
      return Files.newInputStream(path);
    }
  }
}
