package dev.recycler.e2e;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;

/**
 * Where this checkout's build put the things a cluster needs. Written into {@code build.properties} by the recycler-e2e
 * build; each path can be overridden by a system property.
 *
 * <ul>
 *   <li>{@link #flinkLibDirectory()}: system property {@code recycler.e2e.flinkLib}, else {@code
 *       recycler-flink/e2e/target/flink-lib} (Flink 1.19.3 runtime jars, copied there by the build of recycler-flink/e2e);
 *   <li>{@link #recyclerPluginJar()}: system property {@code recycler.plugin.jar}, else {@code
 *       recycler-flink/target/recycler-flink-plugin.jar} (built by {@code mvn package} in recycler-flink).
 * </ul>
 */
public final class BuildPaths {
  private static final Properties BUILD = load();

  private BuildPaths() {}

  /** The Flink version of the cluster classpath. */
  public static String flinkVersion() {
    return BUILD.getProperty("flink.version");
  }

  /** Directory of the Flink JVMs' classpath jars. */
  public static Path flinkLibDirectory() {
    return path("recycler.e2e.flinkLib", "flink.lib.dir");
  }

  /** The recycler's Flink plugin jar (not checked for existence). */
  public static Path recyclerPluginJar() {
    return path("recycler.plugin.jar", "recycler.plugin.jar");
  }

  static Path requireFile(Path p, String what, String build) {
    if (!Files.isRegularFile(p)) {
      throw new IllegalStateException(what + " not found at " + p + ": build it first (" + build + ")");
    }
    return p;
  }

  private static Path path(String systemProperty, String buildKey) {
    String v = System.getProperty(systemProperty);
    if (v == null || v.isBlank()) {
      v = BUILD.getProperty(buildKey);
    }
    if (v == null || v.isBlank() || v.contains("${")) {
      throw new IllegalStateException("no path for " + buildKey + ": set -D" + systemProperty
          + " or build recycler-flink/e2e with Maven (it writes dev/recycler/e2e/build.properties)");
    }
    return Path.of(v).toAbsolutePath().normalize();
  }

  private static Properties load() {
    Properties p = new Properties();
    try (InputStream in = BuildPaths.class.getResourceAsStream("build.properties")) {
      if (in != null) {
        p.load(in);
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return p;
  }
}
