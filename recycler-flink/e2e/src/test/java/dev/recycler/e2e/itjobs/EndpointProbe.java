package dev.recycler.e2e.itjobs;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Set;
import java.util.TreeMap;
import org.apache.flink.api.common.externalresource.ExternalResourceInfo;
import org.apache.flink.api.common.functions.RichMapFunction;

/**
 * Runs inside the TaskManager: reads {@code getExternalResourceInfos(resource)} and writes what it sees, plus the
 * process id, to {@code <outputDir>/<tag>.properties} (atomically), so the test can check it.
 */
public final class EndpointProbe extends RichMapFunction<Long, String> {
  private static final long serialVersionUID = 1L;

  private final String resource;
  private final String outputDir;
  private final String tag;

  public EndpointProbe(String resource, String outputDir, String tag) {
    this.resource = resource;
    this.outputDir = outputDir;
    this.tag = tag;
  }

  @Override
  public String map(Long value) throws IOException {
    Set<ExternalResourceInfo> infos = getRuntimeContext().getExternalResourceInfos(resource);
    TreeMap<String, String> seen = new TreeMap<>();
    seen.put("infos", Integer.toString(infos.size()));
    seen.put("pid", Long.toString(ProcessHandle.current().pid()));
    for (ExternalResourceInfo info : infos) {
      for (String key : info.getKeys()) {
        seen.put(key, info.getProperty(key).orElse(""));
      }
    }
    StringBuilder text = new StringBuilder();
    seen.forEach((k, v) -> text.append(k).append('=').append(v).append('\n'));
    Path dir = Path.of(outputDir);
    Path tmp = Files.createTempFile(dir, tag, ".tmp");
    Files.writeString(tmp, text, StandardCharsets.UTF_8);
    Files.move(tmp, dir.resolve(tag + ".properties"), StandardCopyOption.ATOMIC_MOVE);
    return text.toString();
  }
}
