package dev.recycler.core.bench;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

/** The machine and versions, for the report. */
final class Machine {
  private Machine() {}

  static String describe(LeaseBenchmark.Config c) {
    StringBuilder b = new StringBuilder();
    b.append("cpus: ").append(Runtime.getRuntime().availableProcessors()).append(" (")
        .append(ProcFs.firstLine(Path.of("/proc/cpuinfo"), "model name").replaceFirst("model name\\s*:\\s*", ""))
        .append(")\n");
    b.append("memory: ").append(ProcFs.firstLine(Path.of("/proc/meminfo"), "MemTotal").replaceAll("\\s+", " "))
        .append('\n');
    b.append("kernel: ").append(read(Path.of("/proc/sys/kernel/osrelease"))).append('\n');
    b.append("java: ").append(System.getProperty("java.vm.name")).append(' ')
        .append(System.getProperty("java.runtime.version")).append('\n');
    for (java.nio.file.Path w : c.workerBinaries()) {
      b.append("worker binary: ").append(w).append(", ").append(size(w)).append(" bytes, built with ")
          .append(command("go", "version", w.toString())).append('\n');
    }
    b.append("load average at start: ").append(read(Path.of("/proc/loadavg"))).append('\n');
    return b.toString();
  }

  static long size(Path p) {
    try {
      return Files.size(p);
    } catch (IOException e) {
      return -1;
    }
  }

  private static String read(Path p) {
    try {
      return Files.readString(p).trim();
    } catch (IOException e) {
      return "?";
    }
  }

  static String command(String... cmd) {
    try {
      Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
      String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
      p.waitFor(30, TimeUnit.SECONDS);
      return out.replace("\n", " ");
    } catch (IOException | InterruptedException e) {
      return "? (" + e.getMessage() + ")";
    }
  }
}
