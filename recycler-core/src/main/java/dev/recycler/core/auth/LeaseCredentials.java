package dev.recycler.core.auth;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.regex.Pattern;

/**
 * Lease credentials: 128 bits from {@link SecureRandom}, minted when a lease is assigned to a slot, sent only to that
 * slot's wrapper (in its {@code Lease} message on the Attach stream) and required on every lease-scoped call.
 *
 * <p>The inner worker is Beam's unmodified Go SDK worker: the only identity it sends is {@code worker_id: <its --id>}.
 * So the credential rides inside the worker id the recycler mints: {@code <slot>.g<generation>.<32 hex digits>}. The
 * part before the credential is the <em>public id</em> ({@code slot-0.g7}): the slot table, the admin endpoint and
 * every log show only that. Because the credential is random, a full worker id is also unique across recycler
 * restarts (generations start again at 1 in a new recycler process).
 *
 * <p>Comparison is constant-time ({@link MessageDigest#isEqual}).
 */
public final class LeaseCredentials {
  /** Random bytes per credential (128 bits). */
  static final int BYTES = 16;

  private static final Pattern CREDENTIAL = Pattern.compile("[0-9a-f]{" + 2 * BYTES + "}");

  /** A public worker id: a slot id (see {@code RecyclerConfig}) and a generation. */
  private static final Pattern PUBLIC_ID = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\\.g[0-9]{1,19}");

  private LeaseCredentials() {}

  /** A fresh credential: {@value #BYTES} random bytes as lowercase hex. */
  public static String mint(SecureRandom random) {
    byte[] b = new byte[BYTES];
    random.nextBytes(b);
    return HexFormat.of().formatHex(b);
  }

  /** The worker id handed to the inner worker: {@code <publicId>.<credential>}. A secret: never log it. */
  public static String workerId(String publicId, String credential) {
    return publicId + "." + credential;
  }

  /**
   * Splits a presented worker id into its public id and credential. The credential is the last dot-separated part when
   * it has the form of one (32 lowercase hex digits); otherwise the whole id is the public id and the credential is
   * empty (absent).
   */
  public static Presented split(String presentedWorkerId) {
    String id = presentedWorkerId == null ? "" : presentedWorkerId;
    int dot = id.lastIndexOf('.');
    if (dot > 0 && CREDENTIAL.matcher(id).region(dot + 1, id.length()).matches()) {
      return new Presented(id.substring(0, dot), id.substring(dot + 1));
    }
    return new Presented(id, "");
  }

  /** {@code workerId} without its credential, for logs and views. */
  public static String redact(String workerId) {
    return split(workerId).publicId();
  }

  /**
   * {@code id} quoted for an error message or log when it has the form of a public worker id, else only its length:
   * a malformed id may carry a credential the parser did not recognise, and must not be echoed.
   */
  public static String describe(String id) {
    return PUBLIC_ID.matcher(id).matches() ? "'" + id + "'" : "of " + id.length() + " characters";
  }

  /** Constant-time comparison; false when either side is empty. */
  public static boolean matches(String expected, String presented) {
    if (expected == null || expected.isEmpty() || presented == null || presented.isEmpty()) {
      return false;
    }
    return MessageDigest.isEqual(expected.getBytes(StandardCharsets.US_ASCII),
        presented.getBytes(StandardCharsets.US_ASCII));
  }

  /** A presented worker id, split. {@link #toString()} never shows the credential. */
  public static final class Presented {
    private final String publicId;
    private final String credential;

    Presented(String publicId, String credential) {
      this.publicId = publicId;
      this.credential = credential;
    }

    /** The id without the credential, e.g. {@code slot-0.g7}; "" when no id was presented. */
    public String publicId() {
      return publicId;
    }

    /** The credential part, "" when absent. A secret: never log it. */
    public String credential() {
      return credential;
    }

    @Override
    public String toString() {
      return publicId + (credential.isEmpty() ? "" : ".<credential>");
    }
  }
}
