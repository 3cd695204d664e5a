package dev.recycler.core.bench;

import java.util.Arrays;
import java.util.List;

/** Nearest-rank percentiles over a list of non-negative values; NaN when empty. */
final class Stats {
  private final double[] sorted;

  Stats(List<Double> values) {
    sorted = values.stream().filter(v -> v >= 0).mapToDouble(Double::doubleValue).sorted().toArray();
  }

  double p(double percentile) {
    if (sorted.length == 0) {
      return Double.NaN;
    }
    int rank = (int) Math.ceil(percentile / 100.0 * sorted.length);
    return sorted[Math.max(0, Math.min(sorted.length - 1, rank - 1))];
  }

  double mean() {
    return sorted.length == 0 ? Double.NaN : Arrays.stream(sorted).average().orElse(Double.NaN);
  }

  int count() {
    return sorted.length;
  }
}
