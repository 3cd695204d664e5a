package dev.recycler.core.slot;

import dev.recycler.core.api.RecyclerException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The pool's one lock, and its rule: state changes under the lock, side effects after it. Every guarded step gets a
 * list to which it adds its side effects (messages to wrappers, completions of runner calls, closing control streams,
 * listener calls); they run in order once the lock is released, even when the step threw, so no foreign code ever runs
 * under the lock. A side effect that throws is logged and does not stop the ones after it.
 */
final class PoolLock {
  private static final Logger LOG = LoggerFactory.getLogger(PoolLock.class);

  private final ReentrantLock lock = new ReentrantLock();

  /** A step under the lock that adds its side effects to {@code after}. */
  @FunctionalInterface
  interface Step {
    void run(List<Runnable> after);
  }

  /** A step under the lock with a result, which may refuse with a {@link RecyclerException}. */
  @FunctionalInterface
  interface Call<T> {
    T call(List<Runnable> after) throws RecyclerException;
  }

  /** A read under the lock, without side effects. */
  @FunctionalInterface
  interface Read<T> {
    T read() throws RecyclerException;
  }

  void run(Step step) {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      step.run(after);
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  <T> T call(Call<T> call) throws RecyclerException {
    List<Runnable> after = new ArrayList<>();
    lock.lock();
    try {
      return call.call(after);
    } finally {
      lock.unlock();
      runAll(after);
    }
  }

  <T> T read(Read<T> read) throws RecyclerException {
    lock.lock();
    try {
      return read.read();
    } finally {
      lock.unlock();
    }
  }

  /** {@link #read} for reads that cannot refuse. */
  <T> T view(java.util.function.Supplier<T> read) {
    lock.lock();
    try {
      return read.get();
    } finally {
      lock.unlock();
    }
  }

  private static void runAll(List<Runnable> actions) {
    for (Runnable r : actions) {
      try {
        r.run();
      } catch (RuntimeException e) {
        LOG.error("side effect failed", e);
      }
    }
  }
}
