package dev.recycler.core.wire;

import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.ForwardingServerCall.SimpleForwardingServerCall;
import io.grpc.Grpc;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import java.net.SocketAddress;

/**
 * Server interceptor that exposes the caller's identity headers and address to service code through {@link Context},
 * and lets a service add response headers before its first message ({@link #responseHeaders()}).
 */
public final class CallerContext implements ServerInterceptor {
  private static final Context.Key<String> WORKER_ID = Context.key("recycler-worker-id");
  private static final Context.Key<String> GENERATION = Context.key("recycler-generation");
  private static final Context.Key<String> PEER = Context.key("recycler-peer");
  private static final Context.Key<Metadata> RESPONSE_HEADERS = Context.key("recycler-response-headers");
  private static final Context.Key<String> PREFETCH = Context.key("recycler-prefetch-digest");

  @Override
  public <Q, R> ServerCall.Listener<Q> interceptCall(
      ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
    SocketAddress remote = call.getAttributes().get(Grpc.TRANSPORT_ATTR_REMOTE_ADDR);
    Metadata extra = new Metadata();
    ServerCall<Q, R> withHeaders = new SimpleForwardingServerCall<>(call) {
      @Override
      public void sendHeaders(Metadata responseHeaders) {
        synchronized (extra) {
          responseHeaders.merge(extra);
        }
        super.sendHeaders(responseHeaders);
      }
    };
    Context ctx = Context.current()
        .withValue(WORKER_ID, nullToEmpty(headers.get(Headers.WORKER_ID)))
        .withValue(GENERATION, nullToEmpty(headers.get(Headers.GENERATION)))
        .withValue(PEER, remote == null ? "" : remote.toString())
        .withValue(RESPONSE_HEADERS, extra);
    return Contexts.interceptCall(ctx, withHeaders, headers, next);
  }

  /** The {@code worker_id} header of the current call, or "" when absent. */
  public static String workerId() {
    return nullToEmpty(WORKER_ID.get());
  }

  /**
   * {@code ctx} with the current call's worker id replaced by {@code workerId}: for the authenticator, which checks
   * the presented id (with its credential) and hands services only the verified id without the secret part.
   */
  public static Context withWorkerId(Context ctx, String workerId) {
    return ctx.withValue(WORKER_ID, workerId);
  }

  /**
   * {@code ctx} marked as a prefetch call that may fetch {@code sha256}: for the authenticator, once it has redeemed
   * the call's ticket.
   */
  public static Context withPrefetch(Context ctx, String sha256) {
    return ctx.withValue(PREFETCH, sha256);
  }

  /** The digest the current call's redeemed prefetch ticket allows, or "" for a call within a lease. */
  public static String prefetchDigest() {
    return nullToEmpty(PREFETCH.get());
  }

  /** The raw {@code recycler-generation} header of the current call, or "" when absent. */
  public static String generation() {
    return nullToEmpty(GENERATION.get());
  }

  /** The caller's transport address, or "" when unknown. */
  public static String peer() {
    return nullToEmpty(PEER.get());
  }

  /**
   * Headers merged into the current call's response headers; fill them before the first response message. Guard
   * writes with {@code synchronized} on the returned object.
   */
  public static Metadata responseHeaders() {
    Metadata m = RESPONSE_HEADERS.get();
    return m == null ? new Metadata() : m;
  }

  private static String nullToEmpty(String s) {
    return s == null ? "" : s;
  }
}
