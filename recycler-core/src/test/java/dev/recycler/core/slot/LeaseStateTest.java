package dev.recycler.core.slot;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.recycler.core.metrics.MetricNames;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.core.slot.Lease.State;
import dev.recycler.core.testing.ManualScheduler;
import dev.recycler.core.testing.TestingWrapperLink;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.time.Duration;
import java.time.Instant;
import java.util.EnumSet;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The lease state machine and the slot it drives: every legal transition allowed and moving the slot to the state that
 * goes with it, every other one rejected with neither state changed, the terminal one idempotent.
 */
@Timeout(value = 10, unit = TimeUnit.SECONDS)
class LeaseStateTest {
  /** The whole table, written out independently of {@code State.mayBecome}. */
  private static final Map<State, Set<State>> LEGAL = Map.of(
      State.WAITING, EnumSet.of(State.BOOTING, State.ENDED),
      State.BOOTING, EnumSet.of(State.ACTIVE, State.ENDING, State.ENDED),
      State.ACTIVE, EnumSet.of(State.ENDING, State.ENDED),
      State.ENDING, EnumSet.of(State.ENDED),
      State.ENDED, EnumSet.noneOf(State.class));
  /** The slot's state while an attached slot's lease is in each state (an ended lease leaves its slot IDLE). */
  private static final Map<State, SlotState> SLOT = Map.of(
      State.BOOTING, SlotState.BOOTING,
      State.ACTIVE, SlotState.ACTIVE,
      State.ENDING, SlotState.DRAINING,
      State.ENDED, SlotState.IDLE);

  private ManualScheduler time;
  private SimpleMeterRegistry registry;
  private RecyclerMetrics<SlotState, EndReason> metrics;

  @BeforeEach
  void setUp() {
    time = new ManualScheduler();
    registry = new SimpleMeterRegistry();
    metrics = new RecyclerMetrics<>(registry, SlotState.class, EndReason.class);
  }

  private Slot idleSlot() {
    Slot slot = new Slot("slot-0", time, metrics);
    slot.attachment = new Slot.Attachment("a", new TestingWrapperLink("w"), 1, "test", new HashSet<>(),
        new HashSet<>());
    slot.transitionTo(SlotState.IDLE);
    return slot;
  }

  private static Lease newLease() {
    return new Lease(StartWorkerRequest.newBuilder().setWorkerId("1-1").build(), "peer", 0, Instant.EPOCH);
  }

  /** Takes {@code lease} to {@code next} the way the pool does: BOOTING only by assignment. */
  private static void step(Lease lease, State next, Slot slot) {
    if (next == State.BOOTING) {
      lease.assign(slot, "credential", 0);
    } else {
      assertThat(lease.transitionTo(next)).as("-> %s", next).isTrue();
    }
  }

  /** A lease brought to {@code state} along legal transitions, on {@code slot} unless it is still WAITING. */
  private static Lease leaseIn(State state, Slot slot) {
    Lease lease = newLease();
    List<State> path = switch (state) {
      case WAITING -> List.of();
      case BOOTING -> List.of(State.BOOTING);
      case ACTIVE -> List.of(State.BOOTING, State.ACTIVE);
      case ENDING -> List.of(State.BOOTING, State.ENDING);
      case ENDED -> List.of(State.BOOTING, State.ENDED);
    };
    path.forEach(next -> step(lease, next, slot));
    return lease;
  }

  @ParameterizedTest
  @EnumSource(State.class)
  void everyTransitionIsAllowedExactlyWhenTheTableSaysSoAndMovesTheSlotWithIt(State from) {
    for (State to : State.values()) {
      Slot slot = idleSlot();
      Lease lease = leaseIn(from, slot);
      SlotState slotBefore = slot.state();
      if (from == State.ENDED && to == State.ENDED) {
        assertThat(lease.transitionTo(to)).as("ending an ended lease again is a no-op").isFalse();
        assertThat(slot.state()).isEqualTo(SlotState.IDLE);
      } else if (LEGAL.get(from).contains(to)) {
        step(lease, to, slot);
        assertThat(lease.state()).as("%s -> %s", from, to).isEqualTo(to);
        SlotState expected = from == State.WAITING && to == State.ENDED ? SlotState.IDLE : SLOT.get(to);
        assertThat(slot.state()).as("slot after %s -> %s", from, to).isEqualTo(expected);
        assertThat(slot.lease).isSameAs(to == State.ENDED ? null : lease);
      } else {
        assertThatThrownBy(() -> step(lease, to, slot)).as("%s -> %s", from, to)
            .isInstanceOf(IllegalStateException.class).hasMessageContaining(from + " to " + to);
        assertThat(lease.state()).as("a rejected transition leaves the lease").isEqualTo(from);
        assertThat(slot.state()).as("a rejected transition leaves the slot").isEqualTo(slotBefore);
      }
    }
  }

  @Test
  void aLeaseThatRunsItsCourseVisitsEveryStateAndCountsEachSlotChangeOnce() {
    Slot slot = idleSlot();
    Lease lease = newLease();
    for (State next : new State[] {State.BOOTING, State.ACTIVE, State.ENDING, State.ENDED}) {
      step(lease, next, slot);
      assertThat(slot.state()).isEqualTo(SLOT.get(next));
    }
    assertThat(lease.isLive()).isFalse();
    assertThat(lease.generation()).isEqualTo(1);
    assertThat(slot.lastGeneration).isEqualTo(1);
    for (SlotState s : List.of(SlotState.BOOTING, SlotState.ACTIVE, SlotState.DRAINING)) {
      assertThat(registry.get(MetricNames.SLOT_TRANSITIONS).tag("state", s.name()).counter().count()).as("%s", s)
          .isEqualTo(1);
    }
    assertThat(registry.get(MetricNames.SLOT_TRANSITIONS).tag("state", "IDLE").counter().count())
        .as("once on attach, once when the lease ended").isEqualTo(2);
  }

  @Test
  void anEndedLeaseLeavesItsSlotIdleBackingOffOrDetached() {
    Slot failing = idleSlot();
    Lease first = leaseIn(State.BOOTING, failing);
    failing.consecutiveFailures = 2;
    step(first, State.ENDED, failing);
    assertThat(failing.state()).isEqualTo(SlotState.BACKOFF);

    Slot orphaned = idleSlot();
    Lease second = leaseIn(State.ACTIVE, orphaned);
    orphaned.attachment = null; // its wrapper detached: the pool ends the lease next
    step(second, State.ENDED, orphaned);
    assertThat(orphaned.state()).isEqualTo(SlotState.DETACHED);
    assertThat(orphaned.lease).isNull();
  }

  @Test
  void assigningASlotThatIsNotIdleThrowsAndChangesNeitherLeaseNorSlot() {
    Slot detached = new Slot("slot-1", time, metrics);
    Lease lease = newLease();
    assertThatThrownBy(() -> lease.assign(detached, "c", 0)).isInstanceOf(IllegalStateException.class)
        .hasMessageContaining("slot slot-1 cannot go from DETACHED to BOOTING");
    assertThat(lease.state()).isEqualTo(State.WAITING);
    assertThat(lease.slotId()).isEmpty();
    assertThat(detached.lastGeneration).isZero();
    assertThat(detached.lease).isNull();

    Slot held = idleSlot();
    Lease holder = leaseIn(State.BOOTING, held);
    Lease another = newLease();
    assertThatThrownBy(() -> another.assign(held, "c", 0)).isInstanceOf(IllegalStateException.class);
    assertThat(held.lease).isSameAs(holder);
    assertThat(held.lastGeneration).isEqualTo(1);
    assertThat(another.state()).isEqualTo(State.WAITING);
  }

  @Test
  void aWaitingLeaseCannotStartWithoutASlot() {
    Lease lease = newLease();
    assertThatThrownBy(() -> lease.transitionTo(State.BOOTING)).isInstanceOf(IllegalStateException.class)
        .hasMessageContaining("without a slot");
    assertThat(lease.state()).isEqualTo(State.WAITING);
  }

  @Test
  void everyTransitionCancelsTheTimeoutOfTheStateItLeaves() {
    Slot slot = idleSlot();
    Lease lease = newLease();
    AtomicInteger fired = new AtomicInteger();
    for (State next : new State[] {State.BOOTING, State.ACTIVE, State.ENDING, State.ENDED}) {
      lease.arm(time, Duration.ofSeconds(1), fired::incrementAndGet);
      step(lease, next, slot);
    }
    time.advance(Duration.ofMinutes(1));
    assertThat(fired).hasValue(0);

    Lease timed = leaseIn(State.BOOTING, idleSlot());
    timed.arm(time, Duration.ofSeconds(1), fired::incrementAndGet);
    timed.arm(time, Duration.ofSeconds(2), fired::incrementAndGet);
    time.advance(Duration.ofSeconds(3));
    assertThat(fired).as("re-arming replaces the earlier timeout").hasValue(1);
  }
}
