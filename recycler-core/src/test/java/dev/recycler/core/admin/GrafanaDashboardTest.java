package dev.recycler.core.admin;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import com.google.protobuf.util.JsonFormat;
import dev.recycler.core.Recycler;
import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.metrics.MetricNames;
import java.io.IOException;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * docs/grafana/recycler-dashboard.json queries only what a real recycler exports: every metric name in its PromQL
 * (panels and template variables) appears on the admin endpoint's {@code /metrics} of a recycler started here, and
 * every label it filters or groups by is one of that metric's labels or one Prometheus adds when scraping a pod.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class GrafanaDashboardTest {
  private static final Path DASHBOARD = Path.of("..", "docs", "grafana", "recycler-dashboard.json");
  /** Labels the scrape adds (PodMonitor / kubernetes_sd relabelling), not the recycler. */
  private static final Set<String> TARGET_LABELS = Set.of("namespace", "pod", "container", "instance", "job",
      "endpoint", "service");
  private static final Set<String> KEYWORDS = Set.of("by", "without", "on", "ignoring", "group_left",
      "group_right", "bool", "and", "or", "unless", "offset");
  private static final Pattern SAMPLE = Pattern.compile("^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{([^}]*)})? ");
  private static final Pattern LABEL = Pattern.compile("([a-zA-Z_][a-zA-Z0-9_]*)=\"");

  @TempDir
  static Path cacheDir;

  private static Recycler recycler;
  /** Metric name on /metrics to the label names its samples carry. */
  private static final Map<String, Set<String>> exported = new HashMap<>();

  @BeforeAll
  static void scrapeARealRecycler() throws Exception {
    recycler = Recycler.start(RecyclerConfig.builder().slots(2, "slot-").port(0).adminPort(0)
        .cacheDirectory(cacheDir).shutdownTimeout(Duration.ofSeconds(5)).build());
    HttpResponse<String> metrics = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
            URI.create("http://127.0.0.1:" + recycler.adminPort() + "/metrics")).timeout(Duration.ofSeconds(10))
        .build(), HttpResponse.BodyHandlers.ofString());
    assertThat(metrics.statusCode()).isEqualTo(200);
    for (String line : metrics.body().split("\n")) {
      Matcher m = SAMPLE.matcher(line);
      if (line.startsWith("#") || !m.find()) {
        continue;
      }
      Set<String> labels = exported.computeIfAbsent(m.group(1), k -> new HashSet<>());
      if (m.group(3) != null) {
        Matcher l = LABEL.matcher(m.group(3));
        while (l.find()) {
          labels.add(l.group(1));
        }
      }
    }
  }

  @AfterAll
  static void stop() {
    if (recycler != null) {
      recycler.close();
    }
  }

  @Test
  void everyMeterOfMetricNamesIsOnTheScrape() throws IllegalAccessException {
    // Guards the test itself: a scrape that lost meters would make the dashboard check vacuous.
    for (Field f : MetricNames.class.getFields()) {
      if (Modifier.isStatic(f.getModifiers()) && f.getName().equals(f.getName().toUpperCase())
          && !f.getName().equals("STATE") && !f.getName().equals("REASON") && !f.getName().equals("ROUTE")
          && !f.getName().equals("WHEN") && !f.getName().equals("OUTCOME")) {
        String prefix = ((String) f.get(null)).replace('.', '_');
        assertThat(exported.keySet()).as("a series of %s on /metrics", f.get(null))
            .anyMatch(name -> name.startsWith(prefix));
      }
    }
  }

  @Test
  void everyQueryNamesOnlyExportedMetricsAndLabels() throws IOException {
    Struct dashboard = parse(Files.readString(DASHBOARD));
    List<String> queries = new ArrayList<>();
    collectQueries(Value.newBuilder().setStructValue(dashboard).build(), queries);
    assertThat(queries).as("PromQL queries in the dashboard").hasSizeGreaterThan(20);

    Set<String> used = new HashSet<>();
    for (String q : queries) {
      Query parsed = Query.parse(q);
      assertThat(parsed.metrics).as("metrics of %s", q).isNotEmpty();
      for (String metric : parsed.metrics) {
        used.add(metric);
        assertThat(exported).as("metric %s (in %s) is on a recycler's /metrics", metric, q).containsKey(metric);
      }
      for (Map.Entry<String, Set<String>> matcher : parsed.matchedLabels.entrySet()) {
        for (String label : matcher.getValue()) {
          assertThat(label).as("label %s of %s in %s", label, matcher.getKey(), q)
              .isIn(union(TARGET_LABELS, exported.getOrDefault(matcher.getKey(), Set.of())));
        }
      }
      Set<String> allLabels = new HashSet<>(TARGET_LABELS);
      parsed.metrics.forEach(m -> allLabels.addAll(exported.getOrDefault(m, Set.of())));
      assertThat(parsed.groupingLabels).as("grouping labels of %s", q).isSubsetOf(allLabels);
    }
    // The dashboard covers the slot states, the three lease timers and the failure counters.
    assertThat(used).contains("recycler_slots", "recycler_lease_ready_seconds_bucket",
        "recycler_lease_wait_seconds_bucket", "recycler_lease_drain_seconds_bucket", "recycler_lease_ends_total",
        "recycler_start_failures_total", "recycler_artifact_cache_size_bytes");
  }

  @Test
  void theQueryParserFindsMetricsAndLabels() {
    Query q = Query.parse("histogram_quantile(0.95, sum by (le) (rate(recycler_lease_ready_seconds_bucket"
        + "{namespace=~\"$namespace\", pod=~\"$pod\"}[$__rate_interval]))) / on(pod) foo_total offset 5m");
    assertThat(q.metrics).containsExactlyInAnyOrder("recycler_lease_ready_seconds_bucket", "foo_total");
    assertThat(q.matchedLabels).containsEntry("recycler_lease_ready_seconds_bucket", Set.of("namespace", "pod"));
    assertThat(q.groupingLabels).containsExactlyInAnyOrder("le", "pod");
    assertThat(Query.parse("label_values(recycler_slots{namespace=~\"$namespace\"}, pod)").groupingLabels)
        .containsExactly("pod");
    assertThat(Query.parse("sum(recycler_slots{state=\"a,b}\"})").metrics).containsExactly("recycler_slots");
  }

  private static Set<String> union(Set<String> a, Set<String> b) {
    Set<String> u = new HashSet<>(a);
    u.addAll(b);
    return u;
  }

  private static Struct parse(String json) throws IOException {
    Struct.Builder b = Struct.newBuilder();
    JsonFormat.parser().merge(json, b);
    return b.build();
  }

  /** Every {@code expr} of a panel target and every template variable {@code query}, at any depth. */
  private static void collectQueries(Value v, List<String> out) {
    switch (v.getKindCase()) {
      case STRUCT_VALUE -> v.getStructValue().getFieldsMap().forEach((k, child) -> {
        if (k.equals("expr") && child.hasStringValue()) {
          out.add(child.getStringValue());
        } else if (k.equals("query") && child.hasStringValue() && child.getStringValue().contains("(")) {
          out.add(child.getStringValue());
        } else {
          collectQueries(child, out);
        }
      });
      case LIST_VALUE -> v.getListValue().getValuesList().forEach(child -> collectQueries(child, out));
      default -> {
      }
    }
  }

  /**
   * The names in one PromQL expression (or Grafana {@code label_values(metric, label)}), enough to check them: metric
   * names (identifiers that are neither functions, keywords, nor inside matchers), the labels each metric's matchers
   * name, and the labels of {@code by}/{@code without}/{@code on}/{@code ignoring} clauses.
   */
  static final class Query {
    final Set<String> metrics = new HashSet<>();
    final Map<String, Set<String>> matchedLabels = new HashMap<>();
    final Set<String> groupingLabels = new HashSet<>();

    static Query parse(String expr) {
      Query q = new Query();
      String s = expr;
      int i = 0;
      String lastIdentifier = null;
      String grouping = null;
      while (i < s.length()) {
        char c = s.charAt(i);
        if (c == '"' || c == '\'') {
          i = skipString(s, i);
        } else if (c == '[') {
          i = s.indexOf(']', i) + 1;
        } else if (c == '{') {
          int end = i + 1;
          Set<String> labels = new HashSet<>();
          while (end < s.length() && s.charAt(end) != '}') {
            char d = s.charAt(end);
            if (d == '"' || d == '\'') {
              end = skipString(s, end);
            } else if (Character.isLetter(d) || d == '_') {
              int start = end;
              while (end < s.length() && (Character.isLetterOrDigit(s.charAt(end)) || s.charAt(end) == '_')) {
                end++;
              }
              labels.add(s.substring(start, end));
            } else {
              end++;
            }
          }
          if (lastIdentifier != null) {
            q.matchedLabels.computeIfAbsent(lastIdentifier, k -> new HashSet<>()).addAll(labels);
          }
          i = end + 1;
          lastIdentifier = null;
        } else if (c == '$') {
          i++;
          while (i < s.length() && (Character.isLetterOrDigit(s.charAt(i)) || s.charAt(i) == '_')) {
            i++;
          }
        } else if (Character.isLetter(c) || c == '_' || c == ':') {
          int start = i;
          while (i < s.length() && (Character.isLetterOrDigit(s.charAt(i)) || s.charAt(i) == '_'
              || s.charAt(i) == ':')) {
            i++;
          }
          String word = s.substring(start, i);
          int next = i;
          while (next < s.length() && s.charAt(next) == ' ') {
            next++;
          }
          // A function call, or an aggregation written with its clause first: sum by (state) (...).
          boolean call = next < s.length() && (s.charAt(next) == '('
              || keywordAt(s, next, "by") || keywordAt(s, next, "without"));
          if (Set.of("by", "without", "on", "ignoring", "group_left", "group_right").contains(word)) {
            grouping = call ? word : null;
            lastIdentifier = null;
          } else if (call) {
            if (word.equals("label_values")) {
              int close = s.lastIndexOf(')');
              int comma = s.lastIndexOf(',', close);
              if (comma > 0) {
                q.groupingLabels.add(s.substring(comma + 1, close).trim());
                s = s.substring(0, comma) + s.substring(close);
              }
            }
            lastIdentifier = null;
          } else if (Character.isDigit(word.charAt(0)) || KEYWORDS.contains(word) || isDurationUnit(s, start)) {
            lastIdentifier = null;
          } else {
            q.metrics.add(word);
            lastIdentifier = word;
          }
        } else if (c == '(' && grouping != null) {
          int close = s.indexOf(')', i);
          for (String label : s.substring(i + 1, close).split(",")) {
            if (!label.isBlank()) {
              q.groupingLabels.add(label.trim());
            }
          }
          grouping = null;
          i = close + 1;
        } else {
          if (Character.isDigit(c)) {
            // A number such as 0.95 or 5m: skip its digits and unit letters.
            while (i < s.length() && (Character.isLetterOrDigit(s.charAt(i)) || s.charAt(i) == '.')) {
              i++;
            }
            continue;
          }
          i++;
        }
      }
      return q;
    }

    private static boolean keywordAt(String s, int at, String word) {
      int end = at + word.length();
      return s.startsWith(word, at) && (end == s.length() || !Character.isLetterOrDigit(s.charAt(end))
          && s.charAt(end) != '_');
    }

    private static boolean isDurationUnit(String s, int start) {
      return start > 0 && Character.isDigit(s.charAt(start - 1));
    }

    private static int skipString(String s, int at) {
      char quote = s.charAt(at);
      int i = at + 1;
      while (i < s.length() && s.charAt(i) != quote) {
        i += s.charAt(i) == '\\' ? 2 : 1;
      }
      return i + 1;
    }
  }
}
