package dev.recycler.e2e;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The Flink configuration that installs the recycler plugin, for {@link FlinkSessionCluster.Builder#config(Map)}:
 *
 * <pre>{@code
 * FlinkSessionCluster.builder()
 *     .taskManagerSlots(2)
 *     .plugin(RecyclerPlugin.DIRECTORY, BuildPaths.recyclerPluginJar())
 *     .config(RecyclerPlugin.config(2, recyclerPort, adminPort))
 *     .start();
 * }</pre>
 *
 * The keys are documented in {@code docs/flink.md}; the option names are those of {@code
 * dev.recycler.flink.RecyclerOptions}.
 */
public final class RecyclerPlugin {
  /** Plugin folder name, and the external resource name operators pass to getExternalResourceInfos. */
  public static final String DIRECTORY = "recycler";
  public static final String RESOURCE_NAME = "recycler";
  public static final String DRIVER_FACTORY = "dev.recycler.flink.RecyclerExternalResourceDriverFactory";
  public static final String LIFECYCLE_REPORTER_FACTORY = "dev.recycler.flink.RecyclerLifecycleReporterFactory";

  private RecyclerPlugin() {}

  /**
   * The external resource with {@code slots} slots on {@code port}, the admin HTTP endpoint on {@code adminPort}
   * (-1: none), and the lifecycle reporter that stops the recycler in Flink's shutdown order.
   */
  public static Map<String, String> config(int slots, int port, int adminPort) {
    Map<String, String> c = new LinkedHashMap<>();
    c.put("external-resources", RESOURCE_NAME);
    c.put("external-resource." + RESOURCE_NAME + ".driver-factory.class", DRIVER_FACTORY);
    c.put("external-resource." + RESOURCE_NAME + ".amount", Integer.toString(slots));
    c.put(param("port"), Integer.toString(port));
    c.put(param("admin-port"), Integer.toString(adminPort));
    c.put("metrics.reporter." + RESOURCE_NAME + ".factory.class", LIFECYCLE_REPORTER_FACTORY);
    return c;
  }

  /** {@code external-resource.recycler.param.<option>}: the full key of a recycler option. */
  public static String param(String option) {
    return "external-resource." + RESOURCE_NAME + ".param." + option;
  }
}
