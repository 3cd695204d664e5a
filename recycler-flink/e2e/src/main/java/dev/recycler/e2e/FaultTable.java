package dev.recycler.e2e;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;

/**
 * The fault suite's figures: one {@link Row} per fault, filled while the suite runs, printed as one markdown table and
 * written as markdown and JSON. A row fails when a job hung, a process was orphaned, something of a lease leaked into
 * another, or an outcome was not one the fault allows.
 *
 * <p>Thread-safety: a row's methods are synchronized (the soak records from several job threads).
 */
final class FaultTable {
  /** A process's memory at one moment: the JVM heap in use (jcmd GC.heap_info) and the resident set (VmRSS). */
  record Memory(long heapUsedKb, long heapCommittedKb, long metaspaceUsedKb, long rssKb) {
    static final Memory UNKNOWN = new Memory(-1, -1, -1, -1);

    /** Reads both for {@code pid}; -1 for what cannot be read (the process is gone, jcmd is missing). */
    static Memory of(long pid) {
      long rss = -1;
      try {
        for (String l : Files.readAllLines(Path.of("/proc/" + pid + "/status"))) {
          if (l.startsWith("VmRSS:")) {
            rss = Long.parseLong(l.replaceAll("[^0-9]", ""));
          }
        }
      } catch (IOException | RuntimeException e) {
        return UNKNOWN;
      }
      long used = -1;
      long committed = -1;
      long metaspace = -1;
      try {
        Process p = new ProcessBuilder("jcmd", Long.toString(pid), "GC.heap_info").redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (p.waitFor(30, java.util.concurrent.TimeUnit.SECONDS)) {
          // "garbage-first heap   total 524288K, used 123456K [0x..."
          java.util.regex.Matcher m = java.util.regex.Pattern.compile("total (\\d+)K, used (\\d+)K").matcher(out);
          if (m.find()) {
            committed = Long.parseLong(m.group(1));
            used = Long.parseLong(m.group(2));
          }
          // " Metaspace       used 52034K, committed 52736K, reserved 1114112K"
          m = java.util.regex.Pattern.compile("Metaspace\\s+used (\\d+)K").matcher(out);
          if (m.find()) {
            metaspace = Long.parseLong(m.group(1));
          }
        } else {
          p.destroyForcibly();
        }
      } catch (IOException e) {
        // jcmd missing: heap unknown
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      return new Memory(used, committed, metaspace, rss);
    }

    String text() {
      return (heapUsedKb < 0 ? "?" : mb(heapUsedKb)) + "/" + (rssKb < 0 ? "?" : mb(rssKb));
    }

    private static String mb(long kb) {
      return String.format(Locale.ROOT, "%.0f", kb / 1024.0);
    }
  }

  /** The counts of one fault. */
  static final class Row {
    final String key;
    final String fault;
    final String expected;
    private int injected;
    private int jobsAffected;
    private final Map<String, Integer> outcomes = new TreeMap<>();
    private final List<Long> recoverMillis = new ArrayList<>();
    private int hung;
    private int orphans;
    private int leaks;
    private int lostLogLines;
    private int logLinesChecked;
    private Memory before = Memory.UNKNOWN;
    private Memory after = Memory.UNKNOWN;
    private final List<String> unexpected = new ArrayList<>();
    private final List<String> notes = new ArrayList<>();
    private String notPossible;

    Row(String key, String fault, String expected) {
      this.key = key;
      this.fault = fault;
      this.expected = expected;
    }

    synchronized void injected(int n) {
      injected += n;
    }

    synchronized void affected(int n) {
      jobsAffected += n;
    }

    synchronized void outcome(String outcome) {
      outcomes.merge(outcome, 1, Integer::sum);
    }

    synchronized void recovered(long millis) {
      recoverMillis.add(millis);
    }

    synchronized void hung(int n) {
      hung += n;
    }

    synchronized void orphans(List<String> found) {
      orphans += found.size();
      found.forEach(f -> notes.add("ORPHAN " + f));
    }

    synchronized void leaks(List<String> found) {
      leaks += found.size();
      found.forEach(f -> notes.add("LEAK " + f));
    }

    synchronized void logLines(int checked, int lost) {
      logLinesChecked += checked;
      lostLogLines += lost;
    }

    synchronized void unexpected(String what) {
      unexpected.add(what);
    }

    synchronized void note(String what) {
      notes.add(what);
    }

    synchronized void memoryBefore(Memory m) {
      if (before == Memory.UNKNOWN) {
        before = m;
      }
    }

    synchronized void memoryAfter(Memory m) {
      after = m;
    }

    synchronized void notPossible(String why) {
      notPossible = why;
    }

    synchronized boolean ran() {
      return injected > 0 || notPossible != null;
    }

    synchronized boolean passed() {
      return hung == 0 && orphans == 0 && leaks == 0 && unexpected.isEmpty() && lostLogLines == 0;
    }

    synchronized int injectedCount() {
      return injected;
    }

    synchronized int hungCount() {
      return hung;
    }

    synchronized int orphanCount() {
      return orphans;
    }

    synchronized int leakCount() {
      return leaks;
    }

    synchronized List<String> unexpectedOutcomes() {
      return List.copyOf(unexpected);
    }

    synchronized String recoverText() {
      if (recoverMillis.isEmpty()) {
        return "-";
      }
      List<Long> s = new ArrayList<>(recoverMillis);
      s.sort(null);
      String lo = secs(s.get(0));
      String hi = secs(s.get(s.size() - 1));
      return s.size() == 1 ? lo : lo + "-" + hi + " (median " + secs(s.get(s.size() / 2)) + ")";
    }

    synchronized String outcomeText() {
      StringBuilder b = new StringBuilder();
      outcomes.forEach((k, v) -> b.append(b.isEmpty() ? "" : ", ").append(v).append(' ').append(k));
      return b.isEmpty() ? "-" : b.toString();
    }

    synchronized Map<String, Object> json() {
      Map<String, Object> m = new LinkedHashMap<>();
      m.put("fault", fault);
      m.put("expected", expected);
      m.put("injected", injected);
      m.put("jobsAffected", jobsAffected);
      m.put("outcomes", new TreeMap<>(outcomes));
      m.put("recoverMillis", List.copyOf(recoverMillis));
      m.put("hung", hung);
      m.put("orphans", orphans);
      m.put("leaks", leaks);
      m.put("logLinesChecked", logLinesChecked);
      m.put("lostLogLines", lostLogLines);
      m.put("heapUsedKbBefore", before.heapUsedKb());
      m.put("heapUsedKbAfter", after.heapUsedKb());
      m.put("rssKbBefore", before.rssKb());
      m.put("rssKbAfter", after.rssKb());
      m.put("unexpected", List.copyOf(unexpected));
      m.put("notes", List.copyOf(notes));
      m.put("notPossible", notPossible);
      m.put("passed", passed());
      return m;
    }

    synchronized String markdown() {
      if (notPossible != null && injected == 0) {
        return "| " + fault + " | not possible here: " + notPossible + " | | | | | | | | | |";
      }
      return String.format(Locale.ROOT, "| %s | %d | %d | %s | %s | %d | %d | %d | %s | %s -> %s | %s |", fault,
          injected, jobsAffected, outcomeText(), recoverText(), hung, orphans, leaks,
          logLinesChecked == 0 ? "-" : lostLogLines + " of " + logLinesChecked, before.text(), after.text(),
          passed() ? "as expected" : "**NOT as expected**" + (unexpected.isEmpty() ? "" : ": "
              + String.join("; ", unexpected)));
    }

    synchronized List<String> notesCopy() {
      return List.copyOf(notes);
    }

    private static String secs(long ms) {
      return String.format(Locale.ROOT, "%.1f s", ms / 1000.0);
    }
  }

  private final Map<String, Row> rows = new LinkedHashMap<>();

  synchronized Row row(String key, String fault, String expected) {
    return rows.computeIfAbsent(key, k -> new Row(k, fault, expected));
  }

  synchronized List<Row> rows() {
    return List.copyOf(rows.values());
  }

  synchronized boolean passed() {
    return rows.values().stream().allMatch(Row::passed);
  }

  /** The markdown table (header, one line per fault that ran) and, below it, what each fault is expected to do. */
  synchronized String markdown() {
    StringBuilder b = new StringBuilder();
    b.append("| fault | injected | jobs affected | outcome | time to recover | hung | orphans | leaks |"
        + " lost log lines | TM heap/RSS MB before -> after | verdict |\n");
    b.append("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (Row r : rows.values()) {
      if (r.ran()) {
        b.append(r.markdown()).append('\n');
      }
    }
    b.append("\nExpected outcomes:\n");
    for (Row r : rows.values()) {
      if (r.ran()) {
        b.append("- ").append(r.fault).append(": ").append(r.expected).append('\n');
      }
    }
    return b.toString();
  }

  /** Writes {@code faults.md} and {@code faults.json} into {@code dir}; returns the markdown file. */
  synchronized Path write(Path dir, Map<String, Object> header) throws IOException {
    Map<String, Object> json = new LinkedHashMap<>(header);
    List<Map<String, Object>> list = new ArrayList<>();
    rows.values().stream().filter(Row::ran).forEach(r -> list.add(r.json()));
    json.put("rows", list);
    json.put("passed", passed());
    new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValue(dir.resolve("faults.json").toFile(),
        json);
    StringBuilder md = new StringBuilder();
    header.forEach((k, v) -> md.append("- ").append(k).append(": ").append(v).append('\n'));
    md.append('\n').append(markdown());
    Path f = dir.resolve("faults.md");
    Files.writeString(f, md.toString());
    return f;
  }
}
