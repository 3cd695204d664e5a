package dev.recycler.flink;

import static org.assertj.core.api.Assertions.assertThat;

import dev.recycler.core.options.RecyclerOption;
import java.lang.reflect.Field;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.util.TimeUtils;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * {@link RecyclerOptions} agree with recycler-core's option table ({@link RecyclerOption}): every shared option has a
 * Flink option with the same key, a matching type and the same default (the table's default text parsed the way Flink
 * parses that type), and every Flink option is in the table unless it only makes sense inside Flink.
 */
@Timeout(30)
class OptionTableAgreementTest {
  /** Flink-only: what to do with the TaskManager when the recycler cannot start. */
  private static final List<String> FLINK_ONLY = List.of(RecyclerOptions.FAIL_TASK_MANAGER_ON_ERROR.key());

  private static Map<String, ConfigOption<?>> flinkOptions() throws IllegalAccessException {
    Map<String, ConfigOption<?>> options = new HashMap<>();
    for (Field f : RecyclerOptions.class.getFields()) {
      if (f.get(null) instanceof ConfigOption<?> o) {
        options.put(o.key(), o);
      }
    }
    return options;
  }

  @Test
  void everySharedOptionIsAFlinkOptionWithTheSameDefault() throws IllegalAccessException {
    Map<String, ConfigOption<?>> flink = flinkOptions();
    int shared = 0;
    for (RecyclerOption o : RecyclerOption.values()) {
      if (o.scope() != RecyclerOption.Scope.SHARED) {
        assertThat(flink).as("sidecar-only %s is no Flink option", o.key()).doesNotContainKey(o.key());
        continue;
      }
      shared++;
      assertThat(flink).as("Flink option for %s", o.key()).containsKey(o.key());
      ConfigOption<?> f = flink.get(o.key());
      if (o.defaultValue() == null) {
        assertThat(f.hasDefaultValue()).as("%s has no plain default in either place", o.key()).isFalse();
        continue;
      }
      Object flinkDefault = f.defaultValue();
      Object tableDefault = switch (o.type()) {
        case DURATION -> TimeUtils.parseDuration(o.defaultValue());
        case SIZE -> MemorySize.parse(o.defaultValue());
        case INT -> Integer.valueOf(o.defaultValue());
        case BOOLEAN -> Boolean.valueOf(o.defaultValue());
        default -> o.defaultValue();
      };
      assertThat(tableDefault).as("default of %s: table '%s' vs Flink", o.key(), o.defaultValue())
          .isEqualTo(flinkDefault);
      // And the core parser reads the table's text to the same value as Flink does.
      Object coreParsed = o.parsedDefault();
      if (flinkDefault instanceof MemorySize size) {
        assertThat(coreParsed).isEqualTo(size.getBytes());
      } else if (flinkDefault instanceof Duration || flinkDefault instanceof Integer
          || flinkDefault instanceof String || flinkDefault instanceof Boolean) {
        assertThat(coreParsed).isEqualTo(flinkDefault);
      }
    }
    assertThat(shared).as("shared options = Flink options that are not Flink-only")
        .isEqualTo(flink.size() - FLINK_ONLY.size()).isPositive();
  }

  @Test
  void everyFlinkOptionIsInTheTable() throws IllegalAccessException {
    for (String key : flinkOptions().keySet()) {
      if (FLINK_ONLY.contains(key)) {
        continue;
      }
      assertThat(RecyclerOption.values()).as("table entry for Flink option %s", key)
          .anyMatch(o -> o.key().equals(key) && o.scope() == RecyclerOption.Scope.SHARED);
    }
  }
}
