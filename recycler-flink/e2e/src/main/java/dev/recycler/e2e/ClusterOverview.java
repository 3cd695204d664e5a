package dev.recycler.e2e;

/** Flink REST {@code GET /overview}: what the JobManager knows right now. */
public record ClusterOverview(int taskManagers, int slotsTotal, int slotsAvailable, int jobsRunning,
    int jobsFinished, int jobsCancelled, int jobsFailed, String flinkVersion) {}
