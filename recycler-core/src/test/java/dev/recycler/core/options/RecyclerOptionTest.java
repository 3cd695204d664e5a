package dev.recycler.core.options;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 10, unit = TimeUnit.SECONDS)
class RecyclerOptionTest {
  private static final Path OPERATIONS = Path.of("..", "docs", "operations.md");
  private static final String BEGIN = "<!-- option table: generated from RecyclerOption.markdownReference() -->\n";
  private static final String END = "<!-- end of option table -->";

  @Test
  void theOperationsReferenceIsTheTable() throws IOException {
    String doc = Files.readString(OPERATIONS);
    int begin = doc.indexOf(BEGIN);
    int end = doc.indexOf(END);
    assertThat(begin).as("docs/operations.md has the marker %s", BEGIN.strip()).isNotNegative();
    assertThat(end).isGreaterThan(begin);
    assertThat(doc.substring(begin + BEGIN.length(), end))
        .as("docs/operations.md option table; replace it with RecyclerOption.markdownReference()")
        .isEqualTo(RecyclerOption.markdownReference());
  }

  @Test
  void keysVariablesAndAliasesAreUniqueAndWellFormed() {
    Set<String> names = new HashSet<>();
    for (RecyclerOption o : RecyclerOption.values()) {
      assertThat(o.key()).matches("[a-z0-9]+(-[a-z0-9]+)*");
      assertThat(names.add(o.key())).as("key %s is unique", o.key()).isTrue();
      o.aliases().forEach(a -> assertThat(names.add(a)).as("alias %s is unique", a).isTrue());
      assertThat(o.envVar()).matches("RECYCLER_[A-Z0-9_]+");
      if (o.defaultValue() != null) {
        assertThat(o.parsedDefault()).as("default of %s parses", o.key()).isNotNull();
      }
    }
    assertThat(RecyclerOption.BIND_HOST.envVar()).isEqualTo("RECYCLER_BIND_HOST");
    assertThat(RecyclerOption.BIND_HOST.aliases()).containsExactly("bind");
  }

  @Test
  void durationsAndSizesTakeFlinkAndShortSyntax() {
    assertThat(RecyclerOption.parseDuration("x", "500ms")).isEqualTo(Duration.ofMillis(500));
    assertThat(RecyclerOption.parseDuration("x", "30 s")).isEqualTo(Duration.ofSeconds(30));
    assertThat(RecyclerOption.parseDuration("x", "10 min")).isEqualTo(Duration.ofMinutes(10));
    assertThat(RecyclerOption.parseDuration("x", "5m")).isEqualTo(Duration.ofMinutes(5));
    assertThat(RecyclerOption.parseDuration("x", "1h")).isEqualTo(Duration.ofHours(1));
    assertThat(RecyclerOption.parseDuration("x", "PT30S")).isEqualTo(Duration.ofSeconds(30));
    assertThatThrownBy(() -> RecyclerOption.parseDuration("--x", "-PT1S")).hasMessageStartingWith("--x must be");
    assertThat(RecyclerOption.CACHE_MAX_SIZE.parse("x", "2 gb")).isEqualTo(2L << 30);
    assertThat(RecyclerOption.CACHE_MAX_SIZE.parse("x", "512kb")).isEqualTo(512L << 10);
    assertThat(RecyclerOption.CACHE_MAX_SIZE.parse("x", "1048576")).isEqualTo(1L << 20);
    assertThatThrownBy(() -> RecyclerOption.CACHE_MAX_SIZE.parse("x", "99999999999tb"))
        .hasMessageContaining("size in bytes");
  }
}
