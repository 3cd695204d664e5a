package dev.recycler.flink;

import org.apache.flink.metrics.Metric;
import org.apache.flink.metrics.MetricConfig;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.metrics.reporter.MetricReporter;

/** See {@link RecyclerLifecycleReporterFactory}. Thread-safe; every method returns quickly except {@link #close()}. */
final class RecyclerLifecycleReporter implements MetricReporter {

  @Override
  public void open(MetricConfig config) {
    TaskManagerRecycler.reporterOpened();
  }

  /** Stops this TaskManager's recycler (exit instructions, then the server) and waits for it; no-op elsewhere. */
  @Override
  public void close() {
    TaskManagerRecycler.stop("flink-shutdown");
  }

  @Override
  public void notifyOfAddedMetric(Metric metric, String metricName, MetricGroup group) {
    // Flink's own metrics are not our business: the recycler's meters are served at the admin endpoint's /metrics.
  }

  @Override
  public void notifyOfRemovedMetric(Metric metric, String metricName, MetricGroup group) {}
}
