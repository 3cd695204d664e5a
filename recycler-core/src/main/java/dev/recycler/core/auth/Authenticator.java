package dev.recycler.core.auth;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.wire.CallerContext;
import dev.recycler.core.wire.Headers;
import dev.recycler.proto.v1.RecyclerAdminGrpc;
import dev.recycler.proto.v1.SlotControlGrpc;
import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import org.apache.beam.model.fnexecution.v1.BeamFnControlGrpc;
import org.apache.beam.model.fnexecution.v1.BeamFnLoggingGrpc;
import org.apache.beam.model.fnexecution.v1.BeamFnExternalWorkerPoolGrpc;
import org.apache.beam.model.fnexecution.v1.ProvisionServiceGrpc;
import org.apache.beam.model.jobmanagement.v1.ArtifactRetrievalServiceGrpc;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Who may call what on the fixed port, as server interceptors that run before any service code:
 * <ul>
 *   <li>{@code SlotControl/Attach}: the attach secret, when one is configured;
 *   <li>{@code ProvisionService}, {@code ArtifactRetrievalService} (wrappers): the lease credential header for the slot
 *       and generation named; or, for {@code GetArtifact} only, a prefetch ticket (good once, for one slot and
 *       digest), after which the call sees the digest it may fetch ({@link CallerContext#prefetchDigest()});
 *   <li>{@code BeamFnControl}, {@code BeamFnLogging} (inner workers; wrappers log as their worker): the credential
 *       inside the presented worker id; the call then sees only
 *       the verified public id ({@link CallerContext#workerId()}), so no service or log downstream holds the secret;
 *   <li>{@code BeamFnExternalWorkerPool} (the Beam runner) and {@code RecyclerAdmin} (read-only, no secrets): open;
 *       Beam's runner sends no credential. See {@code docs/security.md}.
 * </ul>
 * A service without a rule is refused at wiring time ({@link #interceptorFor}), so a new service cannot be exposed
 * unauthenticated by accident. Refusals close the call with UNAUTHENTICATED (nothing presented) or PERMISSION_DENIED
 * (wrong), with a message that names what is missing and never the secret.
 *
 * <p>Concurrency: stateless apart from the immutable secret and the thread-safe verifier.
 */
public final class Authenticator {
  private static final Logger LOG = LoggerFactory.getLogger(Authenticator.class);

  private static final String GET_ARTIFACT = ArtifactRetrievalServiceGrpc.getGetArtifactMethod().getFullMethodName();

  private final LeaseVerifier verifier;
  private final AttachSecret attachSecret;

  /** @param attachSecret {@code null}: any caller may attach (the recycler warns at start) */
  public Authenticator(LeaseVerifier verifier, AttachSecret attachSecret) {
    this.verifier = verifier;
    this.attachSecret = attachSecret;
  }

  /**
   * The interceptor that guards the service named {@code serviceName} (a full gRPC service name).
   *
   * @throws IllegalArgumentException for a service with no rule here
   */
  public ServerInterceptor interceptorFor(String serviceName) {
    if (serviceName.equals(BeamFnControlGrpc.SERVICE_NAME) || serviceName.equals(BeamFnLoggingGrpc.SERVICE_NAME)) {
      return this::worker;
    }
    if (serviceName.equals(ProvisionServiceGrpc.SERVICE_NAME)
        || serviceName.equals(ArtifactRetrievalServiceGrpc.SERVICE_NAME)) {
      return this::wrapper;
    }
    if (serviceName.equals(SlotControlGrpc.SERVICE_NAME)) {
      return this::attach;
    }
    if (serviceName.equals(BeamFnExternalWorkerPoolGrpc.SERVICE_NAME)
        || serviceName.equals(RecyclerAdminGrpc.SERVICE_NAME)) {
      return Authenticator::open;
    }
    throw new IllegalArgumentException("no authentication rule for service " + serviceName
        + "; add one to Authenticator before serving it");
  }

  private <Q, R> ServerCall.Listener<Q> worker(ServerCall<Q, R> call, Metadata headers,
      ServerCallHandler<Q, R> next) {
    String verified;
    try {
      verified = verifier.verifyWorker(nullToEmpty(headers.get(Headers.WORKER_ID)));
    } catch (RecyclerException e) {
      return refuse(call, e);
    }
    return Contexts.interceptCall(CallerContext.withWorkerId(Context.current(), verified), call, headers, next);
  }

  private <Q, R> ServerCall.Listener<Q> wrapper(ServerCall<Q, R> call, Metadata headers,
      ServerCallHandler<Q, R> next) {
    String ticket = headers.get(Headers.PREFETCH_TICKET);
    if (ticket != null) {
      return prefetch(call, headers, next, ticket);
    }
    try {
      verifier.verifyWrapper(nullToEmpty(headers.get(Headers.WORKER_ID)), nullToEmpty(headers.get(Headers.GENERATION)),
          nullToEmpty(headers.get(Headers.LEASE_CREDENTIAL)));
    } catch (RecyclerException e) {
      return refuse(call, e);
    }
    return next.startCall(call, headers);
  }

  private <Q, R> ServerCall.Listener<Q> prefetch(ServerCall<Q, R> call, Metadata headers,
      ServerCallHandler<Q, R> next, String ticket) {
    String digest;
    try {
      if (!call.getMethodDescriptor().getFullMethodName().equals(GET_ARTIFACT)) {
        throw new RecyclerException(RecyclerException.Kind.FORBIDDEN, "a prefetch ticket is good for " + GET_ARTIFACT
            + " only; call " + call.getMethodDescriptor().getFullMethodName() + " with the lease credential");
      }
      digest = verifier.redeemPrefetch(nullToEmpty(headers.get(Headers.WORKER_ID)), ticket);
    } catch (RecyclerException e) {
      return refuse(call, e);
    }
    return Contexts.interceptCall(CallerContext.withPrefetch(Context.current(), digest), call, headers, next);
  }

  private <Q, R> ServerCall.Listener<Q> attach(ServerCall<Q, R> call, Metadata headers,
      ServerCallHandler<Q, R> next) {
    if (attachSecret != null) {
      try {
        attachSecret.check(headers.get(Headers.ATTACH_SECRET));
      } catch (RecyclerException e) {
        return refuse(call, e);
      }
    }
    return next.startCall(call, headers);
  }

  private static <Q, R> ServerCall.Listener<Q> open(ServerCall<Q, R> call, Metadata headers,
      ServerCallHandler<Q, R> next) {
    return next.startCall(call, headers);
  }

  /** Closes the call with the failure's status; logs the method, caller address and reason, never a presented value. */
  private static <Q, R> ServerCall.Listener<Q> refuse(ServerCall<Q, R> call, RecyclerException e) {
    LOG.warn("refused call method={} peer={} code={}: {}", call.getMethodDescriptor().getFullMethodName(),
        CallerContext.peer(), e.kind().code(), e.getMessage());
    call.close(e.toStatusException().getStatus(), new Metadata());
    return new ServerCall.Listener<>() {};
  }

  private static String nullToEmpty(String s) {
    return s == null ? "" : s;
  }
}
