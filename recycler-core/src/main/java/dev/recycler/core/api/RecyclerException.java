package dev.recycler.core.api;

import io.grpc.Status;
import io.grpc.StatusException;
import io.grpc.StatusRuntimeException;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;

/**
 * A failure the recycler reports to a caller. The {@link Kind} is the only thing that decides the gRPC status; this is
 * the one place where domain errors become {@link Status} codes. Messages are short, say what to fix, and never carry
 * pipeline options or stack traces.
 */
public final class RecyclerException extends Exception {
  private static final long serialVersionUID = 1L;

  /** What went wrong, from the caller's point of view. */
  public enum Kind {
    /** The request is malformed: the caller must fix it. */
    BAD_REQUEST(Status.Code.INVALID_ARGUMENT),
    /** An unknown slot, worker or artifact id. */
    UNKNOWN_ID(Status.Code.NOT_FOUND),
    /** Someone else holds it (a live wrapper owns the slot, a worker is already connected). */
    CONFLICT(Status.Code.ALREADY_EXISTS),
    /** Valid request, wrong moment: a stale generation, an ended lease, a boot that failed. */
    WRONG_STATE(Status.Code.FAILED_PRECONDITION),
    /** The caller presented no credential where one is required (attach secret, lease credential). */
    UNAUTHENTICATED(Status.Code.UNAUTHENTICATED),
    /** The caller presented a credential, and it is not the right one. */
    FORBIDDEN(Status.Code.PERMISSION_DENIED),
    /** All slots busy for longer than the lease wait timeout, or too many calls already waiting. */
    BUSY(Status.Code.RESOURCE_EXHAUSTED),
    /** Retryable: no wrapper attached, a wrapper or worker vanished, the recycler is stopping, upstream unreachable. */
    UNAVAILABLE(Status.Code.UNAVAILABLE),
    /** A bounded wait ran out (the worker never connected). */
    TIMEOUT(Status.Code.DEADLINE_EXCEEDED),
    /** The caller went away. */
    CANCELLED(Status.Code.CANCELLED),
    /** A bug in the recycler. */
    INTERNAL(Status.Code.INTERNAL);

    private final Status.Code code;

    Kind(Status.Code code) {
      this.code = code;
    }

    public Status.Code code() {
      return code;
    }
  }

  private final Kind kind;

  public RecyclerException(Kind kind, String message) {
    super(message, null, false, false);
    this.kind = kind;
  }

  public RecyclerException(Kind kind, String message, Throwable cause) {
    super(message, cause, false, false);
    this.kind = kind;
  }

  public Kind kind() {
    return kind;
  }

  public StatusException toStatusException() {
    return Status.fromCode(kind.code()).withDescription(getMessage()).asException();
  }

  /**
   * Maps any failure to a status for a gRPC caller: our own exceptions by kind, statuses from upstream calls as they
   * are (prefixed with what we were doing), anything else as INTERNAL without its details.
   */
  public static StatusException toStatusException(Throwable t, String doing) {
    Throwable cause = unwrap(t);
    if (cause instanceof RecyclerException e) {
      return e.toStatusException();
    }
    if (cause instanceof StatusRuntimeException || cause instanceof StatusException) {
      Status s = Status.fromThrowable(cause);
      String detail = s.getDescription() == null ? s.getCode().name() : s.getDescription();
      return s.withDescription(doing + ": " + detail).withCause(null).asException();
    }
    if (cause instanceof CancellationException) {
      return Status.CANCELLED.withDescription(doing + ": cancelled").asException();
    }
    return Status.INTERNAL.withDescription(doing + ": internal error (" + cause.getClass().getSimpleName()
        + "), see the recycler log").asException();
  }

  /** Strips the wrappers that futures add around the real failure. */
  public static Throwable unwrap(Throwable t) {
    Throwable c = t;
    while ((c instanceof CompletionException || c instanceof ExecutionException) && c.getCause() != null) {
      c = c.getCause();
    }
    return c;
  }
}
