package dev.recycler.core.admin;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.util.JsonFormat;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import dev.recycler.core.slot.SlotPool;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * Plain HTTP for operators: {@code GET /slots} (slot table as JSON), {@code /metrics} (Prometheus text, when the
 * registry is a Prometheus one), {@code /healthz} and {@code /readyz}. Binds where the gRPC port binds.
 *
 * <p>Probes: {@code /healthz} is liveness: 200 while this endpoint answers, which it does from start until the
 * recycler's close has finished; restarting the process would lose every lease, so nothing else makes it fail.
 * {@code /readyz} is readiness: 200 while at least one slot is attached and the pool is leasing, 503 otherwise (no
 * wrapper attached yet, all wrappers gone, or shutting down), with one line that says why.
 */
public final class AdminHttpServer implements AutoCloseable {
  private final HttpServer server;
  private final ExecutorService executor;

  public AdminHttpServer(String host, int port, SlotPool pool, PrometheusMeterRegistry prometheus)
      throws IOException {
    this.server = HttpServer.create(new InetSocketAddress(host, port), 16);
    this.executor = Executors.newSingleThreadExecutor(r -> {
      Thread t = new Thread(r, "recycler-admin-http");
      t.setDaemon(true);
      return t;
    });
    server.setExecutor(executor);
    server.createContext("/slots", ex -> {
      try {
        respond(ex, 200, "application/json", JsonFormat.printer().print(pool.slotTable(0)));
      } catch (InvalidProtocolBufferException e) {
        respond(ex, 500, "text/plain", "cannot render the slot table\n");
      }
    });
    server.createContext("/metrics", ex -> {
      if (prometheus == null) {
        respond(ex, 404, "text/plain", "metrics are exported through the host's registry\n");
      } else {
        respond(ex, 200, "text/plain; version=0.0.4; charset=utf-8", prometheus.scrape());
      }
    });
    server.createContext("/healthz", ex -> respond(ex, 200, "text/plain", "ok\n"));
    server.createContext("/readyz", ex -> {
      SlotPool.Attachment a = pool.attachment();
      if (a.shutdown()) {
        respond(ex, 503, "text/plain", "not ready: the recycler is stopping\n");
      } else if (a.attached() == 0) {
        respond(ex, 503, "text/plain", "not ready: none of the " + a.slots() + " slots is attached; start one"
            + " go-boot-wrapper per slot with --recycler pointing at this recycler's port\n");
      } else {
        respond(ex, 200, "text/plain", "ready: " + a.attached() + " of " + a.slots() + " slots attached\n");
      }
    });
    server.start();
  }

  public int port() {
    return server.getAddress().getPort();
  }

  private static void respond(HttpExchange ex, int code, String type, String body) throws IOException {
    byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
    ex.getResponseHeaders().set("Content-Type", type);
    ex.sendResponseHeaders(code, bytes.length);
    try (OutputStream out = ex.getResponseBody()) {
      out.write(bytes);
    }
  }

  /** Stops at once; idempotent. */
  @Override
  public void close() {
    server.stop(0);
    executor.shutdownNow();
  }
}
