package dev.recycler.core.wire;

import io.grpc.ManagedChannel;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * Channels to one lease's runner endpoints (control, provision, artifacts), created on first use and shut down
 * gracefully when the lease ends: in-flight calls (a shared artifact download) may finish, new ones are refused.
 *
 * <p>Concurrency: a {@link ConcurrentHashMap} of per-owner maps; each per-owner map is guarded by itself.
 */
public final class RunnerChannels {
  private final ChannelFactory factory;
  private final Map<Object, Map<String, ManagedChannel>> byOwner = new ConcurrentHashMap<>();

  public RunnerChannels(ChannelFactory factory) {
    this.factory = factory;
  }

  /** The channel to {@code url} for {@code owner} (a lease), created if needed. */
  public ManagedChannel channel(Object owner, String url) {
    Map<String, ManagedChannel> channels = byOwner.computeIfAbsent(owner, o -> new HashMap<>());
    synchronized (channels) {
      return channels.computeIfAbsent(url, factory::create);
    }
  }

  /** Shuts down every channel of {@code owner}. Idempotent. */
  public void release(Object owner) {
    Map<String, ManagedChannel> channels = byOwner.remove(owner);
    if (channels != null) {
      synchronized (channels) {
        channels.values().forEach(ManagedChannel::shutdown);
      }
    }
  }

  /** Shuts down all channels, waiting up to {@code millis} for calls to finish. */
  public void closeAll(long millis) {
    for (Object owner : byOwner.keySet()) {
      Map<String, ManagedChannel> channels = byOwner.remove(owner);
      if (channels == null) {
        continue;
      }
      synchronized (channels) {
        for (ManagedChannel c : channels.values()) {
          c.shutdown();
          try {
            if (!c.awaitTermination(millis, TimeUnit.MILLISECONDS)) {
              c.shutdownNow();
            }
          } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            c.shutdownNow();
          }
        }
      }
    }
  }
}
