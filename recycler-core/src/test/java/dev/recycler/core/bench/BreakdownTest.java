package dev.recycler.core.bench;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 10, unit = TimeUnit.SECONDS)
class BreakdownTest {
  /**
   * Regression: the breakdown matched slf4j-simple's {@code <time> [thread] INFO logger - message} and silently found no
   * lease once the sidecar wrote its own format ({@code SidecarLogTest} pins that format).
   */
  @Test
  void readsTheSidecarsTextLogLines() {
    Matcher m = Breakdown.RECYCLER_LINE.matcher("2026-12-07T10:00:00.123Z INFO [grpc-default-executor-3]"
        + " dev.recycler.core.slot.SlotPool: lease assigned slot=slot-0 generation=4 worker=slot-0.g4 runner_worker=1-1");

    assertThat(m.matches()).isTrue();
    assertThat(m.group(1)).isEqualTo("2026-12-07T10:00:00.123Z");
    assertThat(m.group(2)).startsWith("lease assigned slot=slot-0 generation=4");
    assertThat(Breakdown.RECYCLER_LINE.matcher("2026-12-07T10:00:00.123Z WARN [main] x: lease assigned").matches())
        .isFalse();
  }
}
