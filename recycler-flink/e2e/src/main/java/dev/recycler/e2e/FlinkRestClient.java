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
import java.util.List;

/** The few Flink REST calls the launcher and tests need. Every call has a deadline. Thread-safe. */
final class FlinkRestClient {
  private static final Duration CALL_TIMEOUT = Duration.ofSeconds(10);
  private static final ObjectMapper JSON = new ObjectMapper();

  private final URI base;
  private final HttpClient http;

  FlinkRestClient(URI base) {
    this.base = base;
    this.http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();
  }

  JsonNode get(String path) throws IOException, InterruptedException {
    HttpRequest request = HttpRequest.newBuilder(base.resolve(path)).timeout(CALL_TIMEOUT).GET().build();
    return send(request);
  }

  JsonNode patch(String path) throws IOException, InterruptedException {
    HttpRequest request = HttpRequest.newBuilder(base.resolve(path)).timeout(CALL_TIMEOUT)
        .method("PATCH", HttpRequest.BodyPublishers.noBody()).build();
    return send(request);
  }

  ClusterOverview overview() throws IOException, InterruptedException {
    JsonNode o = get("/overview");
    return new ClusterOverview(o.path("taskmanagers").asInt(), o.path("slots-total").asInt(),
        o.path("slots-available").asInt(), o.path("jobs-running").asInt(), o.path("jobs-finished").asInt(),
        o.path("jobs-cancelled").asInt(), o.path("jobs-failed").asInt(), o.path("flink-version").asText());
  }

  List<JobSummary> jobs() throws IOException, InterruptedException {
    List<JobSummary> jobs = new ArrayList<>();
    for (JsonNode j : get("/jobs/overview").path("jobs")) {
      jobs.add(new JobSummary(j.path("jid").asText(), j.path("name").asText(), j.path("state").asText(),
          j.path("start-time").asLong(-1), j.path("end-time").asLong(-1)));
    }
    return jobs;
  }

  JobSummary job(String jobId) throws IOException, InterruptedException {
    JsonNode j = get("/jobs/" + jobId);
    return new JobSummary(j.path("jid").asText(), j.path("name").asText(), j.path("state").asText(),
        j.path("start-time").asLong(-1), j.path("end-time").asLong(-1));
  }

  private JsonNode send(HttpRequest request) throws IOException, InterruptedException {
    HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
    if (response.statusCode() / 100 != 2) {
      throw new IOException(request.method() + " " + request.uri() + " answered " + response.statusCode() + ": "
          + response.body());
    }
    String body = response.body();
    return body == null || body.isBlank() ? JSON.createObjectNode() : JSON.readTree(body);
  }
}
