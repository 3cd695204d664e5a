package dev.recycler.core.wire;

import io.grpc.Context;
import java.util.function.Supplier;

/**
 * Starts calls to the runner outside the current server call's {@link Context}. grpc-java cancels client calls started
 * in a server call's context when that call ends; upstream streams and shared artifact downloads must outlive the
 * wrapper or worker call that happened to trigger them.
 */
public final class Detached {
  private Detached() {}

  public static void run(Runnable r) {
    Context.ROOT.run(r);
  }

  public static <T> T call(Supplier<T> s) {
    Context previous = Context.ROOT.attach();
    try {
      return s.get();
    } finally {
      Context.ROOT.detach(previous);
    }
  }
}
