package dev.recycler.flink;

import java.util.Set;
import org.apache.flink.api.common.externalresource.ExternalResourceDriver;
import org.apache.flink.api.common.externalresource.ExternalResourceInfo;
import org.apache.flink.configuration.Configuration;

/** Starts this TaskManager's recycler with {@code amount} slots and describes it to operators. */
final class RecyclerExternalResourceDriver implements ExternalResourceDriver {
  private final Configuration params;

  RecyclerExternalResourceDriver(Configuration params) {
    this.params = params;
  }

  /**
   * Starts the recycler (once per process; later calls return the same information).
   *
   * @throws RecyclerStartupError if it cannot start and {@code fail-task-manager-on-error} is true (the default):
   *     an {@link Error} is the one thing Flink does not swallow here, so the TaskManager exits with code 1
   * @throws Exception if it cannot start and that option is false: Flink logs a WARN and goes on without the resource
   */
  /** The driver's parameters (prefix removed). */
  Configuration params() {
    return params;
  }

  @Override
  public Set<? extends ExternalResourceInfo> retrieveResourceInfo(long amount) throws Exception {
    return Set.of(TaskManagerRecycler.startOnce(params, amount));
  }
}
