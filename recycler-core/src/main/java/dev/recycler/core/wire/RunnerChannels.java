package dev.recycler.core.wire;

import io.grpc.ManagedChannel;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

/**
 * Channels to one lease's runner endpoints (control, provision, artifacts), created on first use and shut down
 * gracefully when the lease ends: in-flight calls (a shared artifact download) may finish, new ones are refused.
 *
 * <p>Concurrency: a {@link ConcurrentHashMap} of per-owner maps; each per-owner map is guarded by itself.
 */
public final class RunnerChannels {
  private final ChannelFactory factory;
  private final Predicate<Object> live;
  private final Map<Object, Map<String, ManagedChannel>> byOwner = new ConcurrentHashMap<>();

  /**
   * @param live whether an owner may still hold channels; an owner must stop being live before it is {@linkplain
   *     #release released}, so a channel created while it is released is shut down at once instead of leaking
   */
  public RunnerChannels(ChannelFactory factory, Predicate<Object> live) {
    this.factory = factory;
    this.live = live;
  }

  /** The channel to {@code url} for {@code owner} (a lease), created if needed; already shut down if it ended. */
  public ManagedChannel channel(Object owner, String url) {
    Map<String, ManagedChannel> channels = byOwner.computeIfAbsent(owner, o -> new HashMap<>());
    ManagedChannel channel;
    synchronized (channels) {
      channel = channels.computeIfAbsent(url, factory::create);
    }
    if (!live.test(owner)) {
      release(owner);
    }
    return channel;
  }

  /** Creates the channel to {@code url} for {@code owner} if needed and starts connecting it, without a call. */
  public void connect(Object owner, String url) {
    channel(owner, url).getState(true);
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
