package dev.recycler.flink;

import java.util.Properties;
import org.apache.flink.metrics.reporter.MetricReporter;
import org.apache.flink.metrics.reporter.MetricReporterFactory;

/**
 * Optional companion of the driver, in the same plugin folder (so the same classloader): {@code
 * metrics.reporter.recycler.factory.class: dev.recycler.flink.RecyclerLifecycleReporterFactory}.
 *
 * <p>It reports nothing. Its only job is its {@code close()}, which Flink calls while the TaskManager shuts down,
 * after the task executor has stopped: the recycler then stops in Flink's own order instead of racing Flink's
 * shutdown hook. Flink also creates it in the JobManager, where there is no recycler and it does nothing.
 */
public final class RecyclerLifecycleReporterFactory implements MetricReporterFactory {

  /** Public no-argument constructor for Flink's service loading. */
  public RecyclerLifecycleReporterFactory() {}

  @Override
  public MetricReporter createMetricReporter(Properties properties) {
    return new RecyclerLifecycleReporter();
  }
}
