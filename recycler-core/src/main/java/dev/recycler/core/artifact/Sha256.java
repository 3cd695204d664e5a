package dev.recycler.core.artifact;

import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

/** SHA-256, the digest that names content everywhere in this package. */
final class Sha256 {
  private Sha256() {}

  /** A fresh SHA-256 digest (not thread-safe: one per computation). */
  static MessageDigest newDigest() {
    try {
      return MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("every Java platform has SHA-256", e);
    }
  }
}
