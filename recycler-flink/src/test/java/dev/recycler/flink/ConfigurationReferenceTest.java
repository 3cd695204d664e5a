package dev.recycler.flink;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.lang.reflect.Field;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.util.TimeUtils;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The configuration reference in docs/flink.md lists every option with its real default. */
@Timeout(30)
class ConfigurationReferenceTest {
  private static final Path DOC = Path.of("..", "docs", "flink.md");
  private static final Pattern ROW = Pattern.compile("^\\| `([a-z0-9.-]+)` \\| ([^|]+) \\|", Pattern.MULTILINE);

  @Test
  void everyOptionIsDocumentedWithItsDefault() throws IOException, IllegalAccessException {
    Map<String, String> documented = new HashMap<>();
    Matcher m = ROW.matcher(Files.readString(DOC));
    while (m.find()) {
      documented.put(m.group(1), m.group(2).trim());
    }

    int options = 0;
    for (Field f : RecyclerOptions.class.getFields()) {
      if (!(f.get(null) instanceof ConfigOption<?> option)) {
        continue;
      }
      options++;
      assertThat(documented).as("docs/flink.md documents %s", option.key()).containsKey(option.key());
      if (option.hasDefaultValue()) {
        String cell = documented.get(option.key());
        assertThat(cell).as("default of %s is one `value`", option.key()).matches("`[^`]+`");
        assertThat(parse(cell.substring(1, cell.length() - 1), option.defaultValue()))
            .as("documented default of %s", option.key()).isEqualTo(option.defaultValue());
      }
    }
    assertThat(options).isEqualTo(29);
  }

  /** Parses the documented default the way Flink parses that option's type. */
  private static Object parse(String text, Object like) {
    if (like instanceof Duration) {
      return TimeUtils.parseDuration(text);
    }
    if (like instanceof MemorySize) {
      return MemorySize.parse(text);
    }
    if (like instanceof Integer) {
      return Integer.valueOf(text);
    }
    if (like instanceof Boolean) {
      return Boolean.valueOf(text);
    }
    return text;
  }
}
