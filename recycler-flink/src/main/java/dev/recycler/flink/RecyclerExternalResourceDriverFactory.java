package dev.recycler.flink;

import org.apache.flink.api.common.externalresource.ExternalResourceDriver;
import org.apache.flink.api.common.externalresource.ExternalResourceDriverFactory;
import org.apache.flink.configuration.Configuration;

/**
 * Entry point of the plugin: {@code external-resource.<name>.driver-factory.class:
 * dev.recycler.flink.RecyclerExternalResourceDriverFactory}.
 *
 * <p>Flink creates the driver once per TaskManager process, while the TaskManager starts and before it offers slots
 * (never in the JobManager, never in a MiniCluster), and right after that asks it for the resource information with
 * {@code external-resource.<name>.amount}: that call starts the recycler (see {@link TaskManagerRecycler}).
 */
public final class RecyclerExternalResourceDriverFactory implements ExternalResourceDriverFactory {

  /** Public no-argument constructor for Flink's service loading. */
  public RecyclerExternalResourceDriverFactory() {}

  @Override
  public ExternalResourceDriver createExternalResourceDriver(Configuration config) {
    // Flink passes a DelegatingConfiguration, a view of external-resource.<name>.param.* with the prefix removed. Its
    // toMap() is that view; the Configuration copy constructor would copy nothing (the view holds no data itself).
    return new RecyclerExternalResourceDriver(Configuration.fromMap(config.toMap()));
  }
}
