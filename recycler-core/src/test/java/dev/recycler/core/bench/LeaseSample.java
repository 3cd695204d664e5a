package dev.recycler.core.bench;

/**
 * One lease as the runner saw it.
 *
 * @param runnerWorkerId the runner's worker id of the environment
 * @param startEpochMs wall-clock time of the StartWorker call (or exec), for matching log lines
 * @param readyMs StartWorker call (or exec, for the floor) to the control connection at the runner's control server
 * @param releaseMs control close to the slot being reusable (ours: lease end recorded by the recycler, slot IDLE;
 *     Beam's pool: StopWorker returned; floor: SIGKILL and reap)
 * @param runnerBytes bytes of the worker binary the runner's artifact server sent for this lease
 * @param error empty when the lease became ready
 */
record LeaseSample(String run, int index, String runnerWorkerId, double startEpochMs, double readyMs, double releaseMs, long runnerBytes,
    String error) {
  boolean ok() {
    return error.isEmpty();
  }
}
