package dev.recycler.core.bench;

/**
 * One lease as the runner saw it.
 *
 * @param runnerWorkerId the runner's worker id of the environment
 * @param startEpochMs wall-clock time of the StartWorker call (or exec), for matching log lines
 * @param readyMs StartWorker call (or exec, for the floor) to the control connection at the runner's control server
 * @param firstAnswerMs StartWorker call (or exec) to the worker's answer to the first instruction the runner sent
 *     right after StartWorker returned and the control connection was there (a {@code harness_monitoring_infos}
 *     request, which the Go SDK worker answers at once): the worker is not only connected but serving; -1 if not
 *     measured
 * @param releaseMs control close to the slot being reusable (ours: lease end recorded by the recycler, slot IDLE;
 *     Beam's pool: StopWorker returned; floor: SIGKILL and reap)
 * @param runnerBytes bytes of the worker binary the runner's artifact server sent for this lease
 * @param error empty when the lease became ready and answered its first instruction
 */
record LeaseSample(String run, int index, String runnerWorkerId, double startEpochMs, double readyMs,
    double firstAnswerMs, double releaseMs, long runnerBytes, String error) {
  boolean ok() {
    return error.isEmpty();
  }

  /** A lease that failed before it was ready. */
  static LeaseSample failed(Subject.Lease l, double startEpochMs, long runnerBytes, String error) {
    return new LeaseSample(l.run(), l.index(), l.workerId(), startEpochMs, -1, -1, -1, runnerBytes, error);
  }
}
