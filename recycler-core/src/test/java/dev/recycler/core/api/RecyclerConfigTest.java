package dev.recycler.core.api;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 10, unit = TimeUnit.SECONDS)
class RecyclerConfigTest {
  @Test
  void generatedSlotIdsAndDefaults() {
    RecyclerConfig c = RecyclerConfig.builder().slots(3, "h-").build();

    assertThat(c.slotIds()).containsExactly("h-0", "h-1", "h-2");
    assertThat(c.port()).isEqualTo(50000);
    assertThat(c.bindHost()).isEqualTo("127.0.0.1");
    assertThat(c.advertiseHost()).isEqualTo("127.0.0.1");
    assertThat(c.adminPort()).isEqualTo(-1);
    assertThat(c.attachSecretFile()).isNull();
    assertThat(c.maxInboundMessageBytes()).isEqualTo(64 << 20);
    assertThat(c.maxWaitingStarts()).isEqualTo(256);
  }

  @Test
  void wildcardBindAdvertisesLoopback() {
    assertThat(RecyclerConfig.builder().slots(1, "s").bindHost("0.0.0.0").build().advertiseHost())
        .isEqualTo("127.0.0.1");
  }

  @Test
  void settersRejectBadValuesAtOnce() {
    RecyclerConfig.Builder b = RecyclerConfig.builder();
    assertThatThrownBy(() -> b.slots(0, "s")).hasMessageContaining("between 1 and 1024");
    assertThatThrownBy(() -> b.slotIds(List.of("a", "a"))).hasMessageContaining("listed twice");
    assertThatThrownBy(() -> b.slotIds(List.of("bad id"))).hasMessageContaining("'bad id' is invalid");
    assertThatThrownBy(() -> b.port(70000)).hasMessageContaining("between 0 and 65535");
    assertThatThrownBy(() -> b.readyTimeout(Duration.ZERO)).hasMessageContaining("must be positive");
    assertThatThrownBy(() -> b.cacheMaxBytes(10)).hasMessageContaining("at least 1 MiB");
    assertThatThrownBy(() -> b.maxInboundMessageBytes(1000)).hasMessageContaining("between 1 MiB");
    assertThatThrownBy(() -> b.maxInboundMessageBytes(1L << 31)).hasMessageContaining("between 1 MiB");
    assertThatThrownBy(() -> b.maxWaitingStarts(0)).hasMessageContaining("between 1 and 1000000");
  }

  @Test
  void buildRejectsCrossFieldMistakes() {
    assertThatThrownBy(() -> RecyclerConfig.builder().build()).hasMessageContaining("no slots configured");
    assertThatThrownBy(() -> RecyclerConfig.builder().slots(1, "s")
        .failureBackoff(Duration.ofSeconds(10), Duration.ofSeconds(1)).build()).hasMessageContaining("below its base");
    assertThatThrownBy(() -> RecyclerConfig.builder().slots(1, "s").port(9000).adminPort(9000).build())
        .hasMessageContaining("both 9000");
  }
}
