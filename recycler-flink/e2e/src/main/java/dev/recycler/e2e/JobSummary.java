package dev.recycler.e2e;

import java.util.Set;

/**
 * One job from Flink REST {@code GET /jobs/overview}.
 *
 * @param state Flink's {@code JobStatus} name: INITIALIZING, CREATED, RUNNING, FAILING, FAILED, CANCELLING, CANCELED,
 *     FINISHED, RESTARTING, SUSPENDED, RECONCILING
 * @param endTimeMillis -1 while the job runs
 */
public record JobSummary(String id, String name, String state, long startTimeMillis, long endTimeMillis) {
  /** States after which a job of a session cluster never changes again. */
  public static final Set<String> TERMINAL_STATES = Set.of("FINISHED", "FAILED", "CANCELED");

  public boolean isTerminal() {
    return TERMINAL_STATES.contains(state);
  }
}
