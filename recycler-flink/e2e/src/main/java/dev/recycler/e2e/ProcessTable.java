package dev.recycler.e2e;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;

/**
 * A snapshot of Linux's {@code /proc}: every process with its parent, state and command line. Used to prove that no
 * inner worker, boot or zombie process survives a lease. Processes that exit while the snapshot is read are skipped.
 */
final class ProcessTable {
  /** One process: {@code state} is the one-letter state of {@code /proc/<pid>/stat} (Z = zombie). */
  record Proc(long pid, long ppid, char state, String cmdline) {
    boolean isZombie() {
      return state == 'Z';
    }

    @Override
    public String toString() {
      return "pid=" + pid + " ppid=" + ppid + " state=" + state + " cmd=" + abbreviate(cmdline);
    }
  }

  private final List<Proc> procs;

  private ProcessTable(List<Proc> procs) {
    this.procs = procs;
  }

  static ProcessTable snapshot() {
    List<Proc> out = new ArrayList<>();
    try (DirectoryStream<Path> dirs = Files.newDirectoryStream(Path.of("/proc"), p -> isNumber(p.getFileName()))) {
      for (Path dir : dirs) {
        Proc p = read(dir);
        if (p != null) {
          out.add(p);
        }
      }
    } catch (IOException e) {
      throw new IllegalStateException("cannot list /proc (the end-to-end run needs Linux): " + e, e);
    }
    return new ProcessTable(List.copyOf(out));
  }

  List<Proc> all() {
    return procs;
  }

  /**
   * Processes whose command line has the argument {@code --id=<workerId>.<credential>} (an inner Go worker of that
   * lease: {@code workerId} is the public id the slot table shows, the worker's own id carries the lease credential
   * after it) and mentions {@code under} (its wrapper's work directory: the binary and {@code --semi_persist_dir} live
   * below it). Public worker ids ({@code slot-0.g4}) are the same in every recycler, so without {@code under} another
   * test's worker on the same machine would count.
   */
  List<Proc> withWorkerId(String workerId, String under) {
    String arg = "--id=" + workerId;
    return procs.stream()
        .filter(p -> Arrays.stream(p.cmdline.split(" ")).anyMatch(a -> a.equals(arg) || a.startsWith(arg + "."))
            && p.cmdline.contains(under))
        .toList();
  }

  /** Direct children of any of {@code parents}. */
  List<Proc> childrenOf(Collection<Long> parents) {
    return procs.stream().filter(p -> parents.contains(p.ppid)).toList();
  }

  /** Descendants (children, grandchildren, ...) of any of {@code roots}. */
  List<Proc> descendantsOf(Collection<Long> roots) {
    List<Proc> found = new ArrayList<>();
    List<Long> frontier = new ArrayList<>(roots);
    while (!frontier.isEmpty()) {
      List<Proc> next = childrenOf(frontier);
      found.addAll(next);
      frontier = next.stream().map(Proc::pid).toList();
    }
    return found;
  }

  static boolean isAlive(long pid) {
    Path stat = Path.of("/proc", Long.toString(pid));
    Proc p = read(stat);
    return p != null && !p.isZombie();
  }

  private static Proc read(Path dir) {
    try {
      String stat = Files.readString(dir.resolve("stat"), StandardCharsets.UTF_8);
      // pid (comm) state ppid ...: comm may contain spaces and parentheses, so parse after the last ')'.
      int close = stat.lastIndexOf(')');
      String[] rest = stat.substring(close + 2).split(" ");
      long pid = Long.parseLong(dir.getFileName().toString());
      char state = rest[0].charAt(0);
      long ppid = Long.parseLong(rest[1]);
      byte[] raw = Files.readAllBytes(dir.resolve("cmdline"));
      String cmd = new String(raw, StandardCharsets.UTF_8).replace('\0', ' ').trim();
      return new Proc(pid, ppid, state, cmd);
    } catch (IOException | RuntimeException e) {
      return null; // gone while reading
    }
  }

  private static boolean isNumber(Path name) {
    String s = name.toString();
    return !s.isEmpty() && s.chars().allMatch(Character::isDigit);
  }

  static String abbreviate(String s) {
    return s.length() <= 160 ? s : s.substring(0, 157) + "...";
  }
}
