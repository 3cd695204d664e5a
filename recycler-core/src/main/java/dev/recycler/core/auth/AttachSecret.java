package dev.recycler.core.auth;

import dev.recycler.core.api.RecyclerException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

/**
 * The shared secret a wrapper must present (metadata {@code recycler-attach-secret}) to attach to a slot. Read once
 * from a file, as a Kubernetes Secret mounts it; surrounding whitespace (a trailing newline) is ignored. Only its
 * SHA-256 is kept, and presented values are compared by digest in constant time, so neither content nor length leaks
 * through timing.
 */
public final class AttachSecret {
  /** Shortest accepted secret, in characters. */
  public static final int MIN_LENGTH = 16;

  private final byte[] digest;

  private AttachSecret(byte[] digest) {
    this.digest = digest;
  }

  /**
   * Reads the secret from {@code file}.
   *
   * @throws IOException when the file cannot be read, or its content is too short or not printable ASCII (the message
   *     names the file and what to fix, never the content)
   */
  public static AttachSecret read(Path file) throws IOException {
    String secret;
    try {
      secret = Files.readString(file, StandardCharsets.US_ASCII).strip();
    } catch (IOException e) {
      throw new IOException("cannot read the attach secret file " + file + " (" + e.getClass().getSimpleName()
          + "); mount the Secret there or fix the attach-secret-file option", e);
    }
    if (secret.length() < MIN_LENGTH || !secret.chars().allMatch(c -> c > 0x20 && c < 0x7f)) {
      throw new IOException("the attach secret in " + file + " must be at least " + MIN_LENGTH
          + " printable ASCII characters without spaces (it travels as a gRPC header); generate one with"
          + " `head -c 32 /dev/urandom | base64`");
    }
    return new AttachSecret(sha256(secret));
  }

  /**
   * Checks a presented secret.
   *
   * @throws RecyclerException UNAUTHENTICATED when none was presented, PERMISSION_DENIED when it is wrong
   */
  public void check(String presented) throws RecyclerException {
    if (presented == null || presented.isEmpty()) {
      throw new RecyclerException(RecyclerException.Kind.UNAUTHENTICATED, "the recycler-attach-secret header is"
          + " missing: this recycler requires an attach secret; start the wrapper with --attach_secret_file");
    }
    if (!MessageDigest.isEqual(digest, sha256(presented))) {
      throw new RecyclerException(RecyclerException.Kind.FORBIDDEN, "the attach secret is wrong: the wrapper's"
          + " --attach_secret_file must hold the same secret as the recycler's attach-secret-file");
    }
  }

  private static byte[] sha256(String s) {
    try {
      return MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.US_ASCII));
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("every Java runtime has SHA-256", e);
    }
  }
}
