package dev.recycler.core.admin;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import dev.recycler.core.Recycler;
import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.testing.TestingWrapper;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The admin endpoint's probes and slot table on a real recycler (loopback). */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class AdminHttpServerTest {
  @TempDir
  Path cacheDir;

  private Recycler recycler;
  private TestingWrapper wrapper;
  private final HttpClient http = HttpClient.newHttpClient();

  @AfterEach
  void tearDown() {
    if (wrapper != null) {
      wrapper.close();
    }
    if (recycler != null) {
      recycler.close();
    }
  }

  private HttpResponse<String> get(String path) throws Exception {
    return http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + recycler.adminPort() + path))
        .timeout(Duration.ofSeconds(10)).build(), HttpResponse.BodyHandlers.ofString());
  }

  @Test
  void liveAtOnceReadyOnlyWithAnAttachedSlot() throws Exception {
    recycler = Recycler.start(RecyclerConfig.builder().slots(2, "slot-").port(0).adminPort(0)
        .cacheDirectory(cacheDir).shutdownTimeout(Duration.ofSeconds(5)).build());

    assertThat(get("/healthz").statusCode()).isEqualTo(200);
    HttpResponse<String> unready = get("/readyz");
    assertThat(unready.statusCode()).isEqualTo(503);
    assertThat(unready.body()).contains("none of the 2 slots is attached", "go-boot-wrapper");

    wrapper = new TestingWrapper("slot-1", "inc-1", recycler.endpoint()).attach();
    await().atMost(Duration.ofSeconds(15)).until(() -> get("/readyz").statusCode() == 200);
    assertThat(get("/readyz").body()).isEqualTo("ready: 1 of 2 slots attached\n");

    HttpResponse<String> slots = get("/slots");
    assertThat(slots.statusCode()).isEqualTo(200);
    assertThat(slots.body()).contains("\"slotId\": \"slot-1\"", "\"state\": \"IDLE\"", "\"stateSinceUnixMillis\"");

    // The wrapper goes away: not ready again, still live.
    wrapper.close();
    wrapper = null;
    await().atMost(Duration.ofSeconds(15)).until(() -> get("/readyz").statusCode() == 503);
    assertThat(get("/healthz").statusCode()).isEqualTo(200);
  }
}
