package dev.recycler.core.testing;

import dev.recycler.core.slot.Scheduler;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/** A {@link Scheduler} whose time moves only when a test calls {@link #advance}; due tasks run in the caller. */
public final class ManualScheduler implements Scheduler {
  private static final Instant EPOCH = Instant.parse("2026-01-01T00:00:00Z");

  private final List<Task> tasks = new ArrayList<>();
  private long nanos;
  private long seq;

  private static final class Task {
    final long due;
    final long order;
    final Runnable run;
    boolean cancelled;

    Task(long due, long order, Runnable run) {
      this.due = due;
      this.order = order;
      this.run = run;
    }
  }

  @Override
  public synchronized long nanoTime() {
    return nanos;
  }

  @Override
  public synchronized Instant now() {
    return EPOCH.plusNanos(nanos);
  }

  @Override
  public synchronized Cancellable schedule(Duration delay, Runnable task) {
    Task t = new Task(nanos + delay.toNanos(), seq++, task);
    tasks.add(t);
    return () -> {
      synchronized (ManualScheduler.this) {
        t.cancelled = true;
      }
    };
  }

  /** Moves time forward, running every task that falls due, in due order. */
  public void advance(Duration d) {
    long target;
    synchronized (this) {
      target = nanos + d.toNanos();
    }
    while (true) {
      Task next;
      synchronized (this) {
        next = tasks.stream().filter(t -> !t.cancelled && t.due <= target)
            .min(Comparator.<Task>comparingLong(t -> t.due).thenComparingLong(t -> t.order)).orElse(null);
        if (next == null) {
          nanos = target;
          return;
        }
        tasks.remove(next);
        nanos = Math.max(nanos, next.due);
      }
      next.run.run();
    }
  }

  /** Number of scheduled tasks not yet run or cancelled. */
  public synchronized int pending() {
    return (int) tasks.stream().filter(t -> !t.cancelled).count();
  }
}
