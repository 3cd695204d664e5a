package dev.recycler.core.sidecar;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.recycler.core.RecyclerConfig;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 10, unit = TimeUnit.SECONDS)
class RecyclerMainTest {
  private static RecyclerConfig parse(String... args) {
    return RecyclerMain.toConfig(RecyclerMain.parse(args));
  }

  @Test
  void flagsMapToTheConfig() {
    RecyclerConfig c = parse("--port", "0", "--slots=2", "--slot-prefix", "h", "--ready-timeout", "90s",
        "--lease-wait-timeout", "PT5M", "--drain-timeout", "500ms", "--admin-port", "0", "--cache-dir", "/tmp/x");

    assertThat(c.port()).isZero();
    assertThat(c.slotIds()).containsExactly("h0", "h1");
    assertThat(c.readyTimeout()).isEqualTo(Duration.ofSeconds(90));
    assertThat(c.leaseWaitTimeout()).isEqualTo(Duration.ofMinutes(5));
    assertThat(c.drainTimeout()).isEqualTo(Duration.ofMillis(500));
    assertThat(c.adminPort()).isZero();
    assertThat(c.cacheDirectory()).hasToString("/tmp/x");
  }

  @Test
  void securityAndBoundFlags() {
    RecyclerConfig c = parse("--attach-secret-file", "/etc/recycler/attach-secret", "--max-inbound-message-bytes",
        "16777216", "--max-waiting-starts=8");

    assertThat(c.attachSecretFile()).hasToString("/etc/recycler/attach-secret");
    assertThat(c.maxInboundMessageBytes()).isEqualTo(16 << 20);
    assertThat(c.maxWaitingStarts()).isEqualTo(8);
    assertThat(parse().attachSecretFile()).isNull();
    assertThatThrownBy(() -> parse("--max-waiting-starts", "0")).hasMessageContaining("max waiting starts");
  }

  @Test
  void explicitSlotIds() {
    assertThat(parse("--slot-ids", "a, b,c").slotIds()).containsExactly("a", "b", "c");
  }

  @Test
  void badFlagsSayWhatToFix() {
    assertThatThrownBy(() -> parse("--nope")).hasMessageContaining("unknown flag --nope");
    assertThatThrownBy(() -> parse("--port")).hasMessageContaining("--port needs a value");
    assertThatThrownBy(() -> parse("--ready-timeout", "soon")).hasMessageContaining("such as 500ms");
    assertThatThrownBy(() -> parse("--slots", "2", "--slot-ids", "a")).hasMessageContaining("either --slots");
    assertThat(RecyclerMain.usage()).contains("--port", "--slots", "--slot-ids", "--bind", "--cache-dir");
  }
}
