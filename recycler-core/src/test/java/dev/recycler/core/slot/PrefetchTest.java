package dev.recycler.core.slot;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.api.RecyclerException.Kind;
import dev.recycler.core.metrics.MetricNames;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.core.testing.ManualScheduler;
import dev.recycler.core.testing.TestingWrapperLink;
import dev.recycler.proto.v1.Hello;
import dev.recycler.proto.v1.Prefetch;
import dev.recycler.proto.v1.Prefetched;
import dev.recycler.proto.v1.PreparedLease;
import dev.recycler.proto.v1.RecyclerMessage;
import dev.recycler.proto.v1.RecyclerMessage.KindCase;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;
import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** Which slots the pool asks to prefetch a staged binary, and who may redeem the tickets it hands out. */
class PrefetchTest {
  private static final String HEX = "ab".repeat(32);
  private static final String DIGEST = "sha256:" + HEX;

  private ManualScheduler time;
  private SimpleMeterRegistry registry;

  @BeforeEach
  void setUp() {
    time = new ManualScheduler();
    registry = new SimpleMeterRegistry();
  }

  private SlotPool pool(int slots, int prefetchSlots) {
    RecyclerConfig config = RecyclerConfig.builder().slots(slots, "slot-").port(0).prefetchSlots(prefetchSlots)
        .leaseWaitTimeout(Duration.ofSeconds(10)).readyTimeout(Duration.ofSeconds(20)).build();
    LeaseListener listener = new LeaseListener() {
      @Override
      public CompletableFuture<PreparedLease> prepare(Lease lease) {
        return CompletableFuture.completedFuture(null); // takes a slot at once, then stays BOOTING
      }

      @Override
      public void onEnded(Lease lease) {}
    };
    return new SlotPool(config, time, new RecyclerMetrics<>(registry, SlotState.class, EndReason.class), listener,
        "test");
  }

  private static TestingWrapperLink attach(SlotPool pool, String slot, String incarnation, String... held) {
    TestingWrapperLink link = new TestingWrapperLink("wrapper-" + incarnation);
    pool.attach(Hello.newBuilder().setSlotId(slot).setIncarnationId(incarnation).addAllHeldDigests(List.of(held))
        .build(), link);
    return link;
  }

  private static Prefetch lastPrefetch(TestingWrapperLink link) {
    List<RecyclerMessage> sent = link.sent(KindCase.PREFETCH);
    assertThat(sent).isNotEmpty();
    return sent.get(sent.size() - 1).getPrefetch();
  }

  private static StartWorkerRequest request(String id) {
    ApiServiceDescriptor e = ApiServiceDescriptor.newBuilder().setUrl("localhost:1").build();
    return StartWorkerRequest.newBuilder().setWorkerId(id).setControlEndpoint(e).setLoggingEndpoint(e)
        .setArtifactEndpoint(e).setProvisionEndpoint(e).build();
  }

  private double counted(RecyclerMetrics.Prefetch outcome) {
    return registry.get(MetricNames.PREFETCHES).tag(MetricNames.OUTCOME, outcome.name()).counter().count();
  }

  @Test
  void asksOnlyIdleSlotsThatLackTheDigestAndAreNotFetchingIt() throws Exception {
    SlotPool pool = pool(4, -1);
    TestingWrapperLink busy = attach(pool, "slot-0", "a");
    TestingWrapperLink holds = attach(pool, "slot-1", "b", DIGEST);
    TestingWrapperLink idle = attach(pool, "slot-2", "c");
    pool.startWorker(request("job-1"), "runner"); // takes slot-0, the first idle slot

    assertThat(pool.prefetch(HEX, 1234)).containsExactly("slot-2");
    assertThat(busy.sent(KindCase.PREFETCH)).isEmpty();
    assertThat(holds.sent(KindCase.PREFETCH)).isEmpty();
    Prefetch p = lastPrefetch(idle);
    assertThat(p.getDigest()).isEqualTo(DIGEST);
    assertThat(p.getSize()).isEqualTo(1234);
    assertThat(p.getTicket()).matches("[0-9a-f]{32}");
    assertThat(p.getTicketTtlMillis()).isEqualTo(Prefetches.TICKET_TTL.toMillis());

    // Asked already and not answered: not asked again (a second job staging the same binary).
    assertThat(pool.prefetch(HEX, 1234)).isEmpty();
    assertThat(counted(RecyclerMetrics.Prefetch.SENT)).isEqualTo(1);
  }

  @Test
  void respectsTheLimitAndOffIsOff() {
    SlotPool limited = pool(3, 2);
    for (int i = 0; i < 3; i++) {
      attach(limited, "slot-" + i, "w" + i);
    }
    assertThat(limited.prefetch(HEX, 1)).containsExactly("slot-0", "slot-1");

    SlotPool off = pool(2, 0);
    TestingWrapperLink link = attach(off, "slot-0", "x");
    assertThat(off.prefetch(HEX, 1)).isEmpty();
    assertThat(link.sent(KindCase.PREFETCH)).isEmpty();
  }

  @Test
  void aTicketIsGoodOnceForItsSlotAndDigestOnly() throws Exception {
    SlotPool pool = pool(2, -1);
    TestingWrapperLink zero = attach(pool, "slot-0", "a");
    TestingWrapperLink one = attach(pool, "slot-1", "b");
    pool.prefetch(HEX, 1);
    String ticketZero = lastPrefetch(zero).getTicket();
    String ticketOne = lastPrefetch(one).getTicket();

    assertThatThrownBy(() -> pool.redeemPrefetch("slot-1", ticketZero))
        .isInstanceOfSatisfying(RecyclerException.class, e -> {
          assertThat(e.kind()).isEqualTo(Kind.FORBIDDEN);
          assertThat(e.getMessage()).doesNotContain(ticketZero);
        });
    // Presented by the wrong slot, the ticket is used up all the same: a guess is never retried against it.
    assertThatThrownBy(() -> pool.redeemPrefetch("slot-0", ticketZero)).isInstanceOf(RecyclerException.class);

    assertThat(pool.redeemPrefetch("slot-1", ticketOne)).isEqualTo(HEX);
    assertThatThrownBy(() -> pool.redeemPrefetch("slot-1", ticketOne))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.FORBIDDEN));
    assertThatThrownBy(() -> pool.redeemPrefetch("slot-1", ""))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.UNAUTHENTICATED));
    assertThatThrownBy(() -> pool.redeemPrefetch("", ticketOne))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.BAD_REQUEST));
  }

  @Test
  void aTicketExpiresAndDiesWithItsWrapperIncarnation() throws Exception {
    SlotPool pool = pool(1, -1);
    TestingWrapperLink first = attach(pool, "slot-0", "a");
    pool.prefetch(HEX, 1);
    String expiring = lastPrefetch(first).getTicket();
    time.advance(Prefetches.TICKET_TTL.plusSeconds(1));
    assertThatThrownBy(() -> pool.redeemPrefetch("slot-0", expiring))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.getMessage()).contains("expired"));

    pool.prefetched(first, Prefetched.newBuilder().setDigest(DIGEST).setOk(false).setMessage("expired").build());
    pool.prefetch(HEX, 1);
    String fresh = lastPrefetch(first).getTicket();
    pool.detached(first);
    attach(pool, "slot-0", "b"); // a new wrapper process on the slot
    assertThatThrownBy(() -> pool.redeemPrefetch("slot-0", fresh))
        .isInstanceOfSatisfying(RecyclerException.class, e -> assertThat(e.kind()).isEqualTo(Kind.FORBIDDEN));
  }

  @Test
  void theAnswerUpdatesWhatTheSlotHoldsAndAFailureMayBeRetried() {
    SlotPool pool = pool(1, -1);
    TestingWrapperLink link = attach(pool, "slot-0", "a");
    pool.prefetch(HEX, 1);
    pool.prefetched(link, Prefetched.newBuilder().setDigest(DIGEST).setOk(false).setMessage("disk full").build());
    assertThat(counted(RecyclerMetrics.Prefetch.FAILED)).isEqualTo(1);
    assertThat(pool.prefetch(HEX, 1)).containsExactly("slot-0"); // failed: may be asked again

    pool.prefetched(link, Prefetched.newBuilder().setDigest(DIGEST).setOk(true).addHeldDigests(DIGEST).build());
    assertThat(counted(RecyclerMetrics.Prefetch.FETCHED)).isEqualTo(1);
    assertThat(pool.slotTable(0).getSlots(0).getHeldDigests()).isEqualTo(1);
    assertThat(pool.prefetch(HEX, 1)).isEmpty(); // held now

    // An answer on a link that holds no slot (a replaced wrapper) changes nothing.
    pool.prefetched(new TestingWrapperLink("stale"), Prefetched.newBuilder().setDigest(DIGEST).setOk(true).build());
    assertThat(pool.slotTable(0).getSlots(0).getHeldDigests()).isEqualTo(1);
  }
}
