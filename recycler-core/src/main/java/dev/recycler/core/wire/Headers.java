package dev.recycler.core.wire;

import io.grpc.Metadata;

/** The gRPC metadata keys of the recycler's protocols (Beam's {@code worker_id} plus our own). */
public final class Headers {
  /** Beam's worker identity header; every runner-side service reads it. Wrappers send their slot id in it. */
  public static final Metadata.Key<String> WORKER_ID =
      Metadata.Key.of("worker_id", Metadata.ASCII_STRING_MARSHALLER);

  /** Lease generation a wrapper's provision/artifact call belongs to (decimal). */
  public static final Metadata.Key<String> GENERATION =
      Metadata.Key.of("recycler-generation", Metadata.ASCII_STRING_MARSHALLER);

  /**
   * The lease credential on a wrapper's provision/artifact call: the {@code Lease.credential} of the generation it
   * names. A secret: never log it.
   */
  public static final Metadata.Key<String> LEASE_CREDENTIAL =
      Metadata.Key.of("recycler-lease-credential", Metadata.ASCII_STRING_MARSHALLER);

  /** The shared attach secret a wrapper presents on {@code SlotControl.Attach}. A secret: never log it. */
  public static final Metadata.Key<String> ATTACH_SECRET =
      Metadata.Key.of("recycler-attach-secret", Metadata.ASCII_STRING_MARSHALLER);

  /**
   * The ticket of a {@code Prefetch} on a wrapper's GetArtifact call made outside any lease: good once, for the slot
   * and digest it was sent for. A secret: never log it.
   */
  public static final Metadata.Key<String> PREFETCH_TICKET =
      Metadata.Key.of("recycler-prefetch-ticket", Metadata.ASCII_STRING_MARSHALLER);

  /** Response header of GetArtifact: the content length in bytes (decimal), for the wrapper to verify. */
  public static final Metadata.Key<String> CONTENT_LENGTH =
      Metadata.Key.of("recycler-content-length", Metadata.ASCII_STRING_MARSHALLER);

  private Headers() {}
}
