package dev.recycler.core.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Where the time of this project's leases goes, from the timestamps of the recycler's log lines (milliseconds) and the
 * wrapper's JSON log lines (nanoseconds), matched to the harness's samples by the runner's worker id and the lease
 * generation. Segments: StartWorker call to slot assigned; the recycler preparing the lease (provision info and
 * resolved artifacts from the runner); Lease message to the wrapper; the wrapper's GetProvisionInfo (none when the
 * lease came prepared); resolve, link, options file and fork/exec; the worker's Go runtime init, beam.Init and control
 * dial to the proxy; the proxy's upstream stream to the runner.
 */
final class Breakdown {
  /** A sidecar text log line ({@code SidecarLog}): {@code <UTC time> INFO [<thread>] <logger>: <message>}. */
  static final Pattern RECYCLER_LINE = Pattern.compile("^(\\S+) INFO \\[[^]]*\\] \\S+: (.*)$");
  private static final Pattern ASSIGNED = Pattern.compile(
      "lease assigned slot=(\\S+) generation=(\\d+) worker=\\S+ runner_worker=(\\S+)");
  private static final Pattern CONNECTED = Pattern.compile("control connected slot=(\\S+) generation=(\\d+) ");
  private static final Pattern SENT = Pattern.compile("lease sent slot=(\\S+) generation=(\\d+) ");
  private static final Pattern PREPARED = Pattern.compile("lease prepared runner_worker=(\\S+) ");
  private static final Pattern FETCHED = Pattern.compile(
      "artifact fetched from runner lease=\\d+ runner_worker=(\\S+) .* ms=(\\d+)");
  /** No slot on this line: matched to the lease whose assignment and Lease message enclose it (sequential runs). */
  private static final Pattern IN_PLACE = Pattern.compile("artifact identified in place .* ms=(\\d+)");
  private static final Pattern WRAPPER_FETCHED = Pattern.compile("\"msg\":\"fetched artifact\".*\"took\":(\\d+)");
  private static final Pattern WRAPPER_LINE = Pattern.compile(
      "\"time\":\"([^\"]+)\".*\"msg\":\"([^\"]+)\",\"slot\":\"([^\"]+)\",\"generation\":(\\d+)");

  static final List<String> SEGMENTS = List.of(
      "StartWorker call -> lease prepared: provision info, resolve artifacts at the runner (recycler)",
      "  of which: binary identified in place from disk (compared or hashed), or fetched from the runner"
          + " (recycler's own ms figure)",
      "lease prepared -> slot assigned -> Lease sent (recycler)",
      "Lease message -> wrapper",
      "wrapper GetProvisionInfo (none when the lease came prepared)",
      "resolve artifacts, link binary, options file, fork/exec",
      "  of which: wrapper fetched the binary from the recycler (wrapper's own figure; 0 when it held it)",
      "worker: Go runtime init, beam.Init, control dial (to the proxy)",
      "proxy: upstream control stream -> runner",
      "total (StartWorker call -> control at the runner)",
      "control at the runner -> first instruction answered",
      "total (StartWorker call -> first instruction answered)");

  private Breakdown() {}

  /** Median and p95 per segment, in ms; {@code leases} = how many leases had every timestamp. */
  record Result(Map<String, double[]> segments, int leases) {
    String markdown() {
      StringBuilder b = new StringBuilder("| segment of a lease | p50 ms | p95 ms |\n|---|---:|---:|\n");
      segments.forEach((k, v) -> b.append(String.format(Locale.ROOT, "| %s | %.1f | %.1f |%n", k, v[0], v[1])));
      b.append(String.format(Locale.ROOT, "%n(%d leases; each segment's percentiles are taken separately, so they do "
          + "not add up exactly; recycler timestamps have millisecond resolution)%n", leases));
      return b.toString();
    }
  }

  private static double epochMs(String iso) {
    OffsetDateTime t = OffsetDateTime.parse(iso);
    return t.toEpochSecond() * 1e3 + t.getNano() / 1e6;
  }

  static Result analyse(RecyclerSubject s, LeaseBenchmark.RunResult run) throws IOException {
    // key slot/generation -> event -> epoch ms
    Map<String, Map<String, Double>> ev = new HashMap<>();
    Map<String, String> genOfRunner = new HashMap<>();
    Map<String, Double> preparedAt = new HashMap<>();
    Map<String, Double> fetchedMs = new HashMap<>(); // by runner worker id: the fetch happens before the slot
    List<double[]> inPlace = new ArrayList<>();
    for (String line : Files.readAllLines(s.recyclerLog())) {
      Matcher m = RECYCLER_LINE.matcher(line);
      if (!m.matches()) {
        continue;
      }
      double t = epochMs(m.group(1));
      Matcher p = PREPARED.matcher(m.group(2));
      if (p.find()) {
        preparedAt.put(p.group(1), t);
      }
      Matcher a = ASSIGNED.matcher(m.group(2));
      if (a.find()) {
        String key = a.group(1) + "/" + a.group(2);
        genOfRunner.put(a.group(3), key);
        ev.computeIfAbsent(key, k -> new HashMap<>()).put("assigned", t);
      }
      Matcher sent = SENT.matcher(m.group(2));
      if (sent.find()) {
        ev.computeIfAbsent(sent.group(1) + "/" + sent.group(2), k -> new HashMap<>()).put("sent", t);
      }
      Matcher fetched = FETCHED.matcher(m.group(2));
      if (fetched.find()) {
        fetchedMs.merge(fetched.group(1), Double.parseDouble(fetched.group(2)), Double::sum);
      }
      Matcher local = IN_PLACE.matcher(m.group(2));
      if (local.find()) {
        inPlace.add(new double[] {t, Double.parseDouble(local.group(1))});
      }
      Matcher c = CONNECTED.matcher(m.group(2));
      if (c.find()) {
        ev.computeIfAbsent(c.group(1) + "/" + c.group(2), k -> new HashMap<>()).put("connected", t);
      }
    }
    for (int i = 0; Files.exists(s.wrapperLog(i)); i++) {
      for (String line : Files.readAllLines(s.wrapperLog(i))) {
        Matcher w = WRAPPER_LINE.matcher(line);
        if (w.find()) {
          Map<String, Double> e = ev.computeIfAbsent(w.group(3) + "/" + w.group(4), k -> new HashMap<>());
          e.putIfAbsent(w.group(2), epochMs(w.group(1)));
          Matcher f = WRAPPER_FETCHED.matcher(line);
          if (f.find()) {
            e.merge("wrapper fetch ms", Long.parseLong(f.group(1)) / 1e6, Double::sum);
          }
        }
      }
    }
    List<List<Double>> seg = new ArrayList<>();
    for (int i = 0; i < SEGMENTS.size(); i++) {
      seg.add(new ArrayList<>());
    }
    int n = 0;
    for (LeaseSample x : run.samples()) {
      if (!x.ok()) {
        continue;
      }
      String key = genOfRunner.get(x.runnerWorkerId());
      Map<String, Double> e = key == null ? null : ev.get(key);
      Double prepared = preparedAt.get(x.runnerWorkerId());
      if (e == null || prepared == null || !e.keySet().containsAll(List.of("assigned", "sent", "lease",
          "worker started", "connected"))) {
        continue;
      }
      n++;
      double artifactMs = fetchedMs.getOrDefault(x.runnerWorkerId(), 0.0);
      for (double[] l : inPlace) {
        if (l[0] >= x.startEpochMs() && l[0] <= prepared) {
          artifactMs += l[1];
        }
      }
      // A lease that adopted a standby worker has no wrapper boot ("provisioned" is missing) and its worker was
      // connected before the Lease reached the wrapper: those segments count 0 (NaN: left out).
      double provisioned = e.getOrDefault("provisioned", e.get("lease"));
      double ready = x.startEpochMs() + x.readyMs();
      double[] v = {prepared - x.startEpochMs(), artifactMs, e.get("sent") - prepared,
          e.get("lease") - e.get("sent"),
          provisioned - e.get("lease"), e.get("worker started") - provisioned,
          e.getOrDefault("wrapper fetch ms", 0.0),
          e.get("connected") - e.get("worker started"), ready - e.get("connected"), x.readyMs(),
          x.firstAnswerMs() - x.readyMs(), x.firstAnswerMs()};
      for (int i = 0; i < v.length; i++) {
        seg.get(i).add(Math.max(0, v[i]));
      }
    }
    Map<String, double[]> out = new LinkedHashMap<>();
    for (int i = 0; i < SEGMENTS.size(); i++) {
      Stats st = new Stats(seg.get(i));
      out.put(SEGMENTS.get(i), new double[] {st.p(50), st.p(95)});
    }
    return new Result(out, n);
  }
}
