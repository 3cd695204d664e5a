package dev.recycler.core.wire;

/**
 * Something other than a lease that holds channels in {@link RunnerChannels} and says itself when it stops: a channel
 * asked for after that is shut down at once instead of leaking.
 */
public interface ChannelOwner {
  /** Whether this owner may still hold channels; once false, never true again. */
  boolean holdsChannels();
}
