package dev.recycler.core.control;

import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.wire.RunnerChannels;
import io.grpc.BindableService;
import io.micrometer.core.instrument.MeterRegistry;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ScheduledExecutorService;

/** The services of this package, for the server on the fixed port. */
public final class ControlServices {
  private ControlServices() {}

  /**
   * Runner-facing worker pool, wrapper-facing slot control, and the control and logging proxies for inner workers
   * (the logging proxy also becomes the pool's {@link dev.recycler.core.slot.ExitGate}).
   *
   * @param timer runs the control proxy's stall checks and the logging proxy's drain polls
   * @param workerStallTimeout how long a worker may leave the runner's instructions unread before its lease ends
   */
  public static List<BindableService> create(SlotPool pool, RunnerChannels channels, Duration upstreamTimeout,
      ScheduledExecutorService timer, Duration workerStallTimeout, MeterRegistry registry) {
    LoggingProxyService logging = new LoggingProxyService(pool, channels, timer, registry, System::nanoTime);
    pool.exitGate(logging);
    return List.of(new WorkerPoolService(pool), new SlotControlService(pool),
        new ControlProxyService(pool, channels, upstreamTimeout, timer, workerStallTimeout), logging);
  }
}
