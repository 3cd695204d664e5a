package dev.recycler.core.slot;

import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * Time as the pool sees it: a monotonic clock for durations, a wall clock for records, and delayed tasks for
 * timeouts. Injected so that tests advance time by hand instead of sleeping.
 */
public interface Scheduler {
  /** Monotonic nanoseconds, for measuring durations. */
  long nanoTime();

  /** Wall-clock time, for lease records only. */
  Instant now();

  /** Runs {@code task} once after {@code delay} on a scheduler thread unless cancelled first. */
  Cancellable schedule(Duration delay, Runnable task);

  /** A scheduled task's handle; cancel is idempotent and safe after the task ran. */
  @FunctionalInterface
  interface Cancellable {
    void cancel();
  }

  /** Real time on the given executor. */
  static Scheduler system(ScheduledExecutorService executor) {
    Clock wall = Clock.systemUTC();
    return new Scheduler() {
      @Override
      public long nanoTime() {
        return System.nanoTime();
      }

      @Override
      public Instant now() {
        return wall.instant();
      }

      @Override
      public Cancellable schedule(Duration delay, Runnable task) {
        ScheduledFuture<?> f = executor.schedule(task, delay.toNanos(), TimeUnit.NANOSECONDS);
        return () -> f.cancel(false);
      }
    };
  }
}
