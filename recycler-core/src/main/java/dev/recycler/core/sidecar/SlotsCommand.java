package dev.recycler.core.sidecar;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.util.JsonFormat;
import dev.recycler.core.options.RecyclerOption;
import dev.recycler.proto.v1.GetSlotTableRequest;
import dev.recycler.proto.v1.LeaseRecord;
import dev.recycler.proto.v1.RecyclerAdminGrpc;
import dev.recycler.proto.v1.SlotStatus;
import dev.recycler.proto.v1.SlotTable;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import java.io.PrintStream;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

/**
 * {@code java -jar recycler-core.jar slots --admin HOST:PORT [--json] [--leases N] [--timeout 5s]}: prints a running
 * recycler's slot table (one row per slot) and its most recent leases, read with {@code
 * recycler.v1.RecyclerAdmin/GetSlotTable} on the recycler's gRPC port. Exit codes: 0 printed, 1 the recycler could not
 * be asked (the message says why and what to check), 2 bad arguments.
 */
final class SlotsCommand {
  static final String USAGE = """
      usage: java -jar recycler-core.jar slots [--admin HOST:PORT] [--json] [--leases N] [--timeout DURATION]

        --admin HOST:PORT   the recycler's gRPC port, where RecyclerAdmin is served: the port pipelines name in
                            --environment_config (default 127.0.0.1:50000); not the admin HTTP port
        --json              print the slot table as JSON (the same document as the admin HTTP endpoint's /slots)
        --leases N          most recent lease records to show (default 20; 0 = all the recycler keeps)
        --timeout DURATION  deadline of the call (default 5s)""";

  private static final DateTimeFormatter CLOCK =
      DateTimeFormatter.ofPattern("HH:mm:ss.SSS", Locale.ROOT).withZone(ZoneOffset.UTC);

  private SlotsCommand() {}

  /** Runs the command; never exits the JVM. */
  static int run(String[] args, PrintStream out, PrintStream err, Clock clock) {
    String target = "127.0.0.1:50000";
    boolean json = false;
    int leases = 20;
    Duration timeout = Duration.ofSeconds(5);
    try {
      for (int i = 0; i < args.length; i++) {
        String a = args[i];
        String key = a.contains("=") ? a.substring(0, a.indexOf('=')) : a;
        String inline = a.contains("=") ? a.substring(a.indexOf('=') + 1) : null;
        switch (key) {
          case "--help", "-h" -> {
            out.println(USAGE);
            return 0;
          }
          case "--json" -> json = true;
          case "--admin", "--leases", "--timeout" -> {
            String v = inline;
            if (v == null) {
              if (i + 1 >= args.length) {
                throw new IllegalArgumentException(key + " needs a value");
              }
              v = args[++i];
            }
            switch (key) {
              case "--admin" -> target = hostPort(v);
              case "--leases" -> leases = leaseCount(v);
              default -> timeout = RecyclerOption.parseDuration(key, v);
            }
          }
          default -> throw new IllegalArgumentException("unknown flag " + key + " for the slots command");
        }
      }
    } catch (IllegalArgumentException e) {
      err.println("recycler slots: " + e.getMessage());
      err.println("run 'slots --help' for the flags");
      return 2;
    }

    SlotTable table;
    ManagedChannel channel = NettyChannelBuilder.forTarget(target).usePlaintext().build();
    try {
      table = RecyclerAdminGrpc.newBlockingStub(channel)
          .withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS)
          .getSlotTable(GetSlotTableRequest.newBuilder().setMaxLeases(leases).build());
    } catch (StatusRuntimeException e) {
      err.println("recycler slots: " + explain(target, timeout, e));
      return 1;
    } finally {
      channel.shutdownNow();
    }
    if (json) {
      try {
        out.println(JsonFormat.printer().print(table));
      } catch (InvalidProtocolBufferException e) {
        err.println("recycler slots: cannot render the slot table as JSON: " + e.getMessage());
        return 1;
      }
    } else {
      out.print(render(table, clock.instant()));
    }
    return 0;
  }

  private static String hostPort(String v) {
    int colon = v.lastIndexOf(':');
    if (colon <= 0 || colon == v.length() - 1 || !v.substring(colon + 1).chars().allMatch(Character::isDigit)) {
      throw new IllegalArgumentException("--admin must be HOST:PORT (the recycler's gRPC port), got '" + v + "'");
    }
    return v;
  }

  private static int leaseCount(String v) {
    try {
      int n = Integer.parseInt(v);
      if (n >= 0) {
        return n;
      }
    } catch (NumberFormatException e) {
      // falls through to the message below
    }
    throw new IllegalArgumentException("--leases must be a whole number >= 0 (0 = all kept), got '" + v + "'");
  }

  /** One line that says what failed and what to check; never a stack trace. */
  static String explain(String target, Duration timeout, StatusRuntimeException e) {
    String cause = e.getStatus().getDescription() == null ? "" : " (" + e.getStatus().getDescription() + ")";
    return switch (e.getStatus().getCode()) {
      case UNAVAILABLE -> "cannot reach a recycler at " + target + cause + ": check that it runs and that this is its"
          + " gRPC port (the one pipelines name in --environment_config), not the admin HTTP port";
      case DEADLINE_EXCEEDED -> "no answer from " + target + " within " + timeout.toMillis() + "ms: check the address"
          + " or raise --timeout";
      case UNIMPLEMENTED -> target + " answers gRPC but serves no recycler.v1.RecyclerAdmin: is it a Beam worker"
          + " pool or another service instead of a recycler?";
      case INTERNAL, UNKNOWN -> target + " does not speak gRPC" + cause + ": is it the admin HTTP port? Use the"
          + " recycler's gRPC port (the one pipelines name in --environment_config)";
      default -> "GetSlotTable at " + target + " failed with " + e.getStatus().getCode() + cause;
    };
  }

  /** The slot table as text: one row per slot, then the most recent leases (newest last). */
  static String render(SlotTable table, Instant now) {
    StringBuilder b = new StringBuilder();
    b.append("slots (").append(table.getSlotsCount()).append(") at ")
        .append(now.truncatedTo(ChronoUnit.MILLIS)).append('\n');
    List<String[]> rows = new ArrayList<>();
    rows.add(new String[] {"slot", "state", "gen", "job", "worker id", "worker pid", "wrapper pid", "since",
        "failures", "leases", "standby"});
    for (SlotStatus s : table.getSlotsList()) {
      rows.add(new String[] {s.getSlotId(), s.getState(), Long.toString(s.getGeneration()), dash(s.getJobName()),
          dash(s.getWorkerId()), pid(s.getWorkerPid()), pid(s.getWrapperPid()), since(s.getStateSinceUnixMillis(), now),
          Integer.toString(s.getConsecutiveFailures()), Long.toString(s.getLeasesServed()),
          s.getStandbyGeneration() == 0 ? "-" : "g" + s.getStandbyGeneration() + " " + dash(s.getStandbyJobName())});
    }
    table(b, rows, 2, 5, 6, 8, 9);
    b.append('\n').append("recent leases (").append(table.getLeasesCount()).append(", newest last)\n");
    if (table.getLeasesCount() == 0) {
      b.append("  none yet\n");
      return b.toString();
    }
    rows.clear();
    rows.add(new String[] {"slot", "gen", "job", "worker id", "runner", "pid", "start (UTC)", "ready", "held",
        "end reason", "outcome"});
    for (LeaseRecord r : table.getLeasesList()) {
      boolean ended = r.getEndUnixMillis() > 0;
      long heldMillis = (ended ? r.getEndUnixMillis() : now.toEpochMilli()) - r.getStartUnixMillis();
      rows.add(new String[] {r.getSlotId(), Long.toString(r.getGeneration()), dash(r.getJobName()),
          r.getWorkerId(), dash(r.getRunnerWorkerId()), pid(r.getWorkerPid()),
          CLOCK.format(Instant.ofEpochMilli(r.getStartUnixMillis())),
          r.getReadyLatencyMillis() < 0 ? "-" : r.getReadyLatencyMillis() + "ms" + (r.getStandby() ? " (standby)" : ""),
          seconds(heldMillis) + (ended ? "" : " (running)"), ended ? r.getEndReason() : "-", outcome(r)});
    }
    table(b, rows, 1, 5, 7, 8);
    return b.toString();
  }

  private static String outcome(LeaseRecord r) {
    if (r.getOutcome().isEmpty()) {
      return "-";
    }
    StringBuilder o = new StringBuilder(r.getOutcome());
    if (!r.getSignal().isEmpty()) {
      o.append(", ").append(r.getSignal());
    } else if (r.hasExitCode() && r.getExitCode() != 0) {
      o.append(", exit ").append(r.getExitCode());
    }
    if (!r.getMessage().isEmpty()) {
      o.append(": ").append(r.getMessage());
    }
    return o.toString();
  }

  private static String since(long unixMillis, Instant now) {
    if (unixMillis <= 0) {
      return "-";
    }
    Instant at = Instant.ofEpochMilli(unixMillis);
    return CLOCK.format(at) + " (" + seconds(Math.max(0, now.toEpochMilli() - unixMillis)) + " ago)";
  }

  private static String seconds(long millis) {
    return String.format(Locale.ROOT, "%.1fs", millis / 1000.0);
  }

  private static String dash(String s) {
    return s.isEmpty() ? "-" : s;
  }

  private static String pid(long pid) {
    return pid == 0 ? "-" : Long.toString(pid);
  }

  /** Left-aligned columns, except the right-aligned (numeric) ones; two spaces between columns. */
  private static void table(StringBuilder b, List<String[]> rows, int... rightAligned) {
    int[] width = new int[rows.get(0).length];
    for (String[] row : rows) {
      for (int c = 0; c < row.length; c++) {
        width[c] = Math.max(width[c], row[c].length());
      }
    }
    for (String[] row : rows) {
      StringBuilder line = new StringBuilder();
      for (int c = 0; c < row.length; c++) {
        boolean right = false;
        for (int r : rightAligned) {
          right |= r == c;
        }
        String cell = row[c];
        String pad = " ".repeat(width[c] - cell.length());
        line.append(c == 0 ? "" : "  ").append(right ? pad + cell : cell + (c == row.length - 1 ? "" : pad));
      }
      b.append(line.toString().stripTrailing()).append('\n');
    }
  }
}
