package dev.recycler.core.wire;

import io.grpc.ManagedChannel;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;

/** Creates channels to runner endpoints. Tests substitute an in-process factory. */
@FunctionalInterface
public interface ChannelFactory {
  /** A new channel to a Beam {@code ApiServiceDescriptor} url such as {@code localhost:34567}. Caller shuts it down. */
  ManagedChannel create(String url);

  /** Plaintext Netty channels with Beam's unlimited message size (process bundle descriptors can be large). */
  static ChannelFactory netty() {
    return url -> NettyChannelBuilder.forTarget(url)
        .usePlaintext()
        .maxInboundMessageSize(Integer.MAX_VALUE)
        .build();
  }
}
