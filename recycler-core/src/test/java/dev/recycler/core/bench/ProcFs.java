package dev.recycler.core.bench;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Predicate;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * Reads Linux {@code /proc}: per-process CPU ticks, state, parent, fds, threads and RSS. Processes that vanish while
 * being read are skipped (a race the benchmark cannot avoid and does not need to). Linux only.
 */
final class ProcFs {
  /** USER_HZ: the unit of utime/stime in /proc/PID/stat (100 on every Linux this runs on; checked at start). */
  static final int TICKS_PER_SECOND = 100;

  private ProcFs() {}

  /** One process as /proc shows it at one moment. */
  record Proc(long pid, long ppid, char state, long utime, long stime, long cutime, long cstime, String cmdline) {
    /** Own CPU ticks. */
    long ownTicks() {
      return utime + stime;
    }

    /** Own CPU ticks plus those of reaped children. */
    long totalTicks() {
      return utime + stime + cutime + cstime;
    }

    boolean zombie() {
      return state == 'Z';
    }
  }

  /** Resource use of one long-lived process. */
  record Usage(long pid, String label, long ticks, int fds, int threads, long rssKb) {}

  static Proc read(long pid) {
    try {
      String stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
      // comm may contain spaces and parentheses: the fields after it start after the last ')'.
      String[] f = stat.substring(stat.lastIndexOf(')') + 2).trim().split(" ");
      String cmd;
      try {
        cmd = new String(Files.readAllBytes(Path.of("/proc", Long.toString(pid), "cmdline")), StandardCharsets.UTF_8)
            .replace('\0', ' ').trim();
      } catch (IOException e) {
        cmd = "";
      }
      // f[0] = state (field 3), f[1] = ppid (4), utime = field 14 -> f[11], stime f[12], cutime f[13], cstime f[14]
      return new Proc(pid, Long.parseLong(f[1]), f[0].charAt(0), Long.parseLong(f[11]), Long.parseLong(f[12]),
          Long.parseLong(f[13]), Long.parseLong(f[14]), cmd);
    } catch (IOException | RuntimeException gone) {
      return null;
    }
  }

  static List<Proc> all() {
    List<Proc> out = new ArrayList<>();
    try (Stream<Path> s = Files.list(Path.of("/proc"))) {
      for (Path p : s.toList()) {
        String n = p.getFileName().toString();
        if (!n.isEmpty() && n.chars().allMatch(Character::isDigit)) {
          Proc proc = read(Long.parseLong(n));
          if (proc != null) {
            out.add(proc);
          }
        }
      }
    } catch (IOException e) {
      throw new IllegalStateException("cannot list /proc", e);
    }
    return out;
  }

  /** Every live descendant (any depth) of the given roots, roots excluded. */
  static List<Proc> descendants(Collection<Long> roots, List<Proc> snapshot) {
    Map<Long, List<Proc>> byParent = snapshot.stream().collect(Collectors.groupingBy(Proc::ppid));
    List<Proc> out = new ArrayList<>();
    Set<Long> seen = new HashSet<>(roots);
    List<Long> frontier = new ArrayList<>(roots);
    while (!frontier.isEmpty()) {
      long p = frontier.remove(frontier.size() - 1);
      for (Proc c : byParent.getOrDefault(p, List.of())) {
        if (seen.add(c.pid())) {
          out.add(c);
          frontier.add(c.pid());
        }
      }
    }
    return out;
  }

  /** CPU ticks so far of the threads of {@code pid} whose name (comm, at most 15 characters) starts with {@code prefix}. */
  static long threadTicks(long pid, String prefix) {
    long t = 0;
    try (Stream<Path> tasks = Files.list(Path.of("/proc", Long.toString(pid), "task"))) {
      for (Path task : (Iterable<Path>) tasks::iterator) {
        try {
          if (!Files.readString(task.resolve("comm")).strip().startsWith(prefix)) {
            continue;
          }
          String stat = Files.readString(task.resolve("stat"));
          String[] f = stat.substring(stat.lastIndexOf(')') + 2).trim().split(" ");
          t += Long.parseLong(f[11]) + Long.parseLong(f[12]);
        } catch (IOException e) {
          // the thread ended meanwhile
        }
      }
    } catch (IOException e) {
      return 0; // the process is gone
    }
    return t;
  }

  static List<Proc> matching(Predicate<Proc> p) {
    return all().stream().filter(p).toList();
  }

  static Usage usage(long pid, String label) {
    Proc p = read(pid);
    if (p == null) {
      return new Usage(pid, label + " (gone)", 0, 0, 0, 0);
    }
    int fds;
    try (Stream<Path> s = Files.list(Path.of("/proc", Long.toString(pid), "fd"))) {
      fds = (int) s.count();
    } catch (IOException e) {
      fds = -1;
    }
    int threads = 0;
    long rss = 0;
    try {
      for (String line : Files.readAllLines(Path.of("/proc", Long.toString(pid), "status"))) {
        if (line.startsWith("Threads:")) {
          threads = Integer.parseInt(line.substring(8).trim());
        } else if (line.startsWith("VmRSS:")) {
          rss = Long.parseLong(line.substring(6).replace("kB", "").trim());
        }
      }
    } catch (IOException | NumberFormatException e) {
      // gone meanwhile
    }
    return new Usage(pid, label, p.totalTicks(), fds, threads, rss);
  }

  static boolean alive(long pid) {
    Proc p = read(pid);
    return p != null && !p.zombie();
  }

  static void kill(long pid) {
    ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
  }

  /** Machine facts for the report. */
  static String firstLine(Path file, String prefix) {
    try {
      return Files.readAllLines(file).stream().filter(l -> l.startsWith(prefix)).findFirst().orElse("?").trim();
    } catch (IOException e) {
      return "?";
    }
  }
}
