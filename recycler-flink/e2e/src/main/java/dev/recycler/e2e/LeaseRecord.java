package dev.recycler.e2e;

import java.util.Locale;

/**
 * One lease as the recycler's slot table reports it ({@code recycler.v1.LeaseRecord}, read from the admin HTTP
 * endpoint's {@code /slots}).
 *
 * @param workerId the id the recycler minted for the inner worker, {@code <slot>.g<generation>}
 * @param runnerWorkerId the Beam runner's worker id ({@code 1-1} for every job's first worker)
 * @param readyLatencyMillis StartWorker to the worker's control connection; -1 if the lease never became ready
 * @param endMillis 0 while the lease runs
 * @param endReason RUNNER_CLOSED, STOP_WORKER, CANCELLED, WORKER_LOST, WORKER_EXITED, BOOT_FAILED, ...; empty while
 *     the lease runs
 * @param outcome what the wrapper reported (OUTCOME_EXITED_ON_INSTRUCTION, OUTCOME_WORKER_EXITED, ...)
 * @param exitCode the worker's exit code (-1: ended by a signal); null when no worker process ran or exited
 * @param standby whether the lease adopted its slot's standby worker (started when the job's previous lease there
 *     ended)
 */
public record LeaseRecord(String slot, long generation, String runnerWorkerId, String workerId, String jobName,
    long workerPid, long startMillis, long readyLatencyMillis, long endMillis, String endReason, String outcome,
    Integer exitCode, String signal, String message, boolean standby) {

  public boolean ended() {
    return endMillis > 0;
  }

  /** End reason and what the wrapper saw, e.g. {@code RUNNER_CLOSED (exited on instruction, SIGTERM)}. */
  public String exitDescription() {
    if (!ended()) {
      return "running";
    }
    StringBuilder s = new StringBuilder(endReason.isEmpty() ? "?" : endReason);
    String o = outcome.replaceFirst("^OUTCOME_", "").toLowerCase(Locale.ROOT).replace('_', ' ');
    StringBuilder detail = new StringBuilder(o);
    if (!signal.isEmpty()) {
      detail.append(detail.isEmpty() ? "" : ", ").append(signal);
    } else if (!o.isEmpty() && exitCode != null) {
      detail.append(", exit ").append(exitCode);
    }
    if (!detail.isEmpty()) {
      s.append(" (").append(detail).append(')');
    }
    return s.toString();
  }
}
