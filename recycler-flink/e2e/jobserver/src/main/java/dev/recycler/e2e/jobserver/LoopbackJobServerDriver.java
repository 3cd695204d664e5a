package dev.recycler.e2e.jobserver;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.apache.beam.runners.flink.FlinkJobInvoker;
import org.apache.beam.runners.flink.FlinkJobServerDriver;
import org.apache.beam.runners.jobsubmission.JobServerDriver;
import org.apache.beam.sdk.extensions.gcp.options.GcsOptions;
import org.apache.beam.sdk.fn.channel.SocketAddressFactory;
import org.apache.beam.sdk.fn.server.GrpcContextHeaderAccessorProvider;
import org.apache.beam.sdk.fn.server.ServerFactory;
import org.apache.beam.sdk.io.FileSystems;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.netty.NettyServerBuilder;

/**
 * Beam's {@code FlinkJobServerDriver}, same flags, except that the job and artifact ports bind to {@code --job-host}.
 *
 * <p>Why: Beam's {@code ServerFactory.createWithPortSupplier} (what {@code FlinkJobServerDriver} uses for both ports)
 * builds its servers with {@code NettyServerBuilder.forPort(port)}, which listens on every interface whatever {@code
 * --job-host} says; only the URL it reports carries the host. No flag changes that, and {@code FlinkJobServerDriver}'s
 * constructor that takes the server factories is private. So this class builds the same driver from Beam's public
 * parts (its argument parser, {@code FlinkJobInvoker}, {@code JobServerDriver}'s protected constructor) with a server
 * factory that binds to the requested address. The Java expansion service already binds to {@code --job-host} in Beam.
 * Everything else, including {@code main}'s file system set-up, is copied from Beam 2.70's driver.
 */
public final class LoopbackJobServerDriver {
  private LoopbackJobServerDriver() {}

  public static void main(String[] args) throws Exception {
    // As FlinkJobServerDriver.main: file system defaults for the artifact staging service.
    PipelineOptions options = PipelineOptionsFactory.create();
    options.as(GcsOptions.class).setGcsUploadBufferSizeBytes(1024 * 1024);
    FileSystems.setDefaultPipelineOptions(options);

    FlinkJobServerDriver.FlinkServerConfiguration config = FlinkJobServerDriver.parseArgs(args);
    ServerFactory bound = new BoundServerFactory(config.getHost());
    JobServerDriver driver = new JobServerDriver(config, bound, bound, () -> FlinkJobInvoker.create(config)) {};
    driver.run();
  }

  /**
   * Beam's {@code InetSocketAddressServerFactory} with one difference: the server listens on the descriptor's host
   * (or the configured host for an allocated port) instead of every interface. Same message size limit, keep-alive
   * permission and per-call header interceptor.
   */
  static final class BoundServerFactory extends ServerFactory {
    private static final int KEEP_ALIVE_TIME_SEC = 20;
    private final String host;

    BoundServerFactory(String host) {
      this.host = host;
    }

    @Override
    public Server allocateAddressAndCreate(List<BindableService> services,
        ApiServiceDescriptor.Builder descriptor) throws IOException {
      Server server = createServer(services, new InetSocketAddress(host, 0));
      descriptor.setUrl(host + ":" + server.getPort());
      return server;
    }

    @Override
    public Server create(List<BindableService> services, ApiServiceDescriptor descriptor) throws IOException {
      SocketAddress address = SocketAddressFactory.createFrom(descriptor.getUrl());
      if (!(address instanceof InetSocketAddress inet)) {
        throw new IllegalArgumentException("expected a host:port URL, got " + descriptor.getUrl());
      }
      return createServer(services, inet);
    }

    private static Server createServer(List<BindableService> services, InetSocketAddress address)
        throws IOException {
      NettyServerBuilder builder = NettyServerBuilder.forAddress(address)
          .maxInboundMessageSize(Integer.MAX_VALUE)
          .permitKeepAliveTime(KEEP_ALIVE_TIME_SEC, TimeUnit.SECONDS);
      services.forEach(service -> builder.addService(
          ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor())));
      return builder.build().start();
    }
  }
}
