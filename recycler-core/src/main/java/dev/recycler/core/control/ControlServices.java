package dev.recycler.core.control;

import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.wire.RunnerChannels;
import io.grpc.BindableService;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ScheduledExecutorService;

/** The services of this package, for the server on the fixed port. */
public final class ControlServices {
  private ControlServices() {}

  /**
   * Runner-facing worker pool, wrapper-facing slot control, and the control proxy for inner workers.
   *
   * @param timer runs the control proxy's stall checks
   * @param workerStallTimeout how long a worker may leave the runner's instructions unread before its lease ends
   */
  public static List<BindableService> create(SlotPool pool, RunnerChannels channels, Duration upstreamTimeout,
      ScheduledExecutorService timer, Duration workerStallTimeout) {
    return List.of(new WorkerPoolService(pool), new SlotControlService(pool),
        new ControlProxyService(pool, channels, upstreamTimeout, timer, workerStallTimeout));
  }
}
