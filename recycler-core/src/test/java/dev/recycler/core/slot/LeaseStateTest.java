package dev.recycler.core.slot;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.recycler.core.slot.Lease.State;
import java.time.Instant;
import java.util.EnumSet;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StartWorkerRequest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** The lease state machine: every legal transition allowed, every other one rejected, the terminal one idempotent. */
@Timeout(value = 10, unit = TimeUnit.SECONDS)
class LeaseStateTest {
  /** The whole table, written out independently of {@code State.mayBecome}. */
  private static final Map<State, Set<State>> LEGAL = Map.of(
      State.WAITING, EnumSet.of(State.BOOTING, State.ENDED),
      State.BOOTING, EnumSet.of(State.ACTIVE, State.ENDING, State.ENDED),
      State.ACTIVE, EnumSet.of(State.ENDING, State.ENDED),
      State.ENDING, EnumSet.of(State.ENDED),
      State.ENDED, EnumSet.noneOf(State.class));

  private static Lease leaseIn(State state) {
    Lease lease = new Lease(StartWorkerRequest.getDefaultInstance(), "peer", 0, Instant.EPOCH);
    lease.state = state; // test set-up only: the pool moves leases through transitionTo
    return lease;
  }

  @ParameterizedTest
  @EnumSource(State.class)
  void everyTransitionIsAllowedExactlyWhenTheTableSaysSo(State from) {
    for (State to : State.values()) {
      Lease lease = leaseIn(from);
      if (from == State.ENDED && to == State.ENDED) {
        assertThat(lease.transitionTo(to)).as("ending an ended lease again is a no-op").isFalse();
      } else if (LEGAL.get(from).contains(to)) {
        assertThat(lease.transitionTo(to)).as("%s -> %s", from, to).isTrue();
        assertThat(lease.state()).isEqualTo(to);
      } else {
        assertThatThrownBy(() -> lease.transitionTo(to)).as("%s -> %s", from, to)
            .isInstanceOf(IllegalStateException.class).hasMessageContaining(from + " to " + to);
        assertThat(lease.state()).as("a rejected transition changes nothing").isEqualTo(from);
      }
    }
  }

  @Test
  void aLeaseThatRunsItsCourseVisitsEveryState() {
    Lease lease = leaseIn(State.WAITING);
    for (State next : new State[] {State.BOOTING, State.ACTIVE, State.ENDING, State.ENDED}) {
      assertThat(lease.transitionTo(next)).isTrue();
    }
    assertThat(lease.isLive()).isFalse();
  }
}
