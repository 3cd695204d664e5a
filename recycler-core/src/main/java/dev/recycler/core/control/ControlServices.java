package dev.recycler.core.control;

import dev.recycler.core.slot.SlotPool;
import dev.recycler.core.wire.RunnerChannels;
import io.grpc.BindableService;
import java.time.Duration;
import java.util.List;

/** The services of this package, for the server on the fixed port. */
public final class ControlServices {
  private ControlServices() {}

  /** Runner-facing worker pool, wrapper-facing slot control, and the control proxy for inner workers. */
  public static List<BindableService> create(SlotPool pool, RunnerChannels channels, Duration upstreamTimeout) {
    return List.of(new WorkerPoolService(pool), new SlotControlService(pool),
        new ControlProxyService(pool, channels, upstreamTimeout));
  }
}
