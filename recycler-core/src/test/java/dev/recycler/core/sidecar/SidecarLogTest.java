package dev.recycler.core.sidecar;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.protobuf.Struct;
import com.google.protobuf.util.JsonFormat;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Clock;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.slf4j.event.Level;

@Timeout(value = 10, unit = TimeUnit.SECONDS)
class SidecarLogTest {
  private static final Clock CLOCK = Clock.fixed(Instant.parse("2026-12-07T10:00:00.123Z"), ZoneOffset.UTC);
  private final ByteArrayOutputStream out = new ByteArrayOutputStream();

  @AfterEach
  void restore() {
    SidecarLog.configure(false, Level.INFO, System.err, Clock.systemUTC());
  }

  private SidecarLog.SidecarLogger logger(boolean json, Level level) {
    SidecarLog.configure(json, level, new PrintStream(out, true, StandardCharsets.UTF_8), CLOCK);
    return new SidecarLog.SidecarLogger("dev.recycler.core.Recycler");
  }

  @Test
  void textLinesStartWithTheUtcTimeAndLevel() {
    logger(false, Level.INFO).info("slot transition slot={} from={}", "slot-0", "IDLE");

    assertThat(out.toString(StandardCharsets.UTF_8)).isEqualTo("2026-12-07T10:00:00.123Z INFO ["
        + Thread.currentThread().getName() + "] dev.recycler.core.Recycler: slot transition slot=slot-0 from=IDLE\n");
  }

  @Test
  void jsonIsOneParseableObjectPerRecordEvenWithAStackTrace() throws Exception {
    var log = logger(true, Level.INFO);
    log.warn("could not prepare lease slot={} \"quoted\"", "slot-1", new IllegalStateException("boom\nline 2"));
    log.debug("not logged at info");

    String[] lines = out.toString(StandardCharsets.UTF_8).split("\n");
    assertThat(lines).hasSize(1);
    Struct.Builder record = Struct.newBuilder();
    JsonFormat.parser().merge(lines[0], record);
    assertThat(record.getFieldsMap().get("time").getStringValue()).isEqualTo("2026-12-07T10:00:00.123Z");
    assertThat(record.getFieldsMap().get("level").getStringValue()).isEqualTo("WARN");
    assertThat(record.getFieldsMap().get("logger").getStringValue()).isEqualTo("dev.recycler.core.Recycler");
    assertThat(record.getFieldsMap().get("message").getStringValue())
        .isEqualTo("could not prepare lease slot=slot-1 \"quoted\"");
    assertThat(record.getFieldsMap().get("error").getStringValue())
        .startsWith("java.lang.IllegalStateException: boom\nline 2\n    at ");
  }

  @Test
  void levelFiltersRecords() {
    var log = logger(false, Level.WARN);
    log.info("dropped");
    log.error("kept");
    assertThat(out.toString(StandardCharsets.UTF_8)).doesNotContain("dropped").contains("ERROR", "kept");
  }
}
