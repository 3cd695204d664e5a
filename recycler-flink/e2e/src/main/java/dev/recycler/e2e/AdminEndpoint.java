package dev.recycler.e2e;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The recycler's admin HTTP endpoint ({@code external-resource.recycler.param.admin-port}): {@code /slots} (the slot
 * table as protobuf JSON) and {@code /metrics} (Prometheus text). Every call has a deadline. Thread-safe.
 */
final class AdminEndpoint {
  private static final Duration CALL_TIMEOUT = Duration.ofSeconds(5);
  private static final ObjectMapper JSON = new ObjectMapper();

  /**
   * One slot's current state ({@code recycler.v1.SlotStatus}); {@code standbyGeneration} 0 without a standby worker.
   */
  record Slot(String slot, String state, long wrapperPid, long generation, String workerId, String jobName,
      long leasesServed, long standbyGeneration) {
    /** The standby worker's public id, {@code <slot>.g<generation>}, or "" without one. */
    String standbyWorkerId() {
      return standbyGeneration > 0 ? slot + ".g" + standbyGeneration : "";
    }
  }

  /** The slot table: slots, and the kept lease records, oldest first. */
  record Table(List<Slot> slots, List<LeaseRecord> leases) {
    boolean allIdle() {
      return !slots.isEmpty() && slots.stream().allMatch(s -> s.state().equals("IDLE"));
    }

    String states() {
      StringBuilder b = new StringBuilder();
      slots.forEach(s -> b.append(b.isEmpty() ? "" : ", ").append(s.slot()).append('=').append(s.state()));
      return b.toString();
    }
  }

  private final URI base;
  private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();

  AdminEndpoint(String hostPort) {
    this.base = URI.create("http://" + hostPort);
  }

  Table table() throws IOException, InterruptedException {
    JsonNode t = JSON.readTree(get("/slots"));
    List<Slot> slots = new ArrayList<>();
    for (JsonNode s : t.path("slots")) {
      slots.add(new Slot(s.path("slotId").asText(), s.path("state").asText(), s.path("wrapperPid").asLong(),
          s.path("generation").asLong(), s.path("workerId").asText(), s.path("jobName").asText(),
          s.path("leasesServed").asLong(), s.path("standbyGeneration").asLong()));
    }
    List<LeaseRecord> leases = new ArrayList<>();
    for (JsonNode l : t.path("leases")) {
      leases.add(new LeaseRecord(l.path("slotId").asText(), l.path("generation").asLong(),
          l.path("runnerWorkerId").asText(), l.path("workerId").asText(), l.path("jobName").asText(),
          l.path("workerPid").asLong(), l.path("startUnixMillis").asLong(),
          l.has("readyLatencyMillis") ? l.path("readyLatencyMillis").asLong() : 0,
          l.path("endUnixMillis").asLong(), l.path("endReason").asText(), l.path("outcome").asText(),
          l.has("exitCode") ? Integer.valueOf(l.path("exitCode").asInt()) : null, l.path("signal").asText(),
          l.path("message").asText(), l.path("standby").asBoolean()));
    }
    return new Table(List.copyOf(slots), List.copyOf(leases));
  }

  /** Samples of the Prometheus text: {@code name{labels}} to value. */
  Map<String, Double> metrics() throws IOException, InterruptedException {
    Map<String, Double> m = new LinkedHashMap<>();
    for (String line : get("/metrics").split("\n")) {
      if (line.isBlank() || line.startsWith("#")) {
        continue;
      }
      int sp = line.lastIndexOf(' ');
      try {
        m.put(line.substring(0, sp).trim(), Double.parseDouble(line.substring(sp + 1).trim()));
      } catch (NumberFormatException | StringIndexOutOfBoundsException e) {
        // a line we do not understand: not a figure we use
      }
    }
    return m;
  }

  /** Sum of all samples named {@code name} (any labels). */
  static double sum(Map<String, Double> metrics, String name) {
    return metrics.entrySet().stream()
        .filter(e -> e.getKey().equals(name) || e.getKey().startsWith(name + "{"))
        .mapToDouble(Map.Entry::getValue).sum();
  }

  private String get(String path) throws IOException, InterruptedException {
    HttpRequest r = HttpRequest.newBuilder(base.resolve(path)).timeout(CALL_TIMEOUT).GET().build();
    HttpResponse<String> resp = http.send(r, HttpResponse.BodyHandlers.ofString());
    if (resp.statusCode() != 200) {
      throw new IOException("GET " + r.uri() + " answered " + resp.statusCode());
    }
    return resp.body();
  }
}
