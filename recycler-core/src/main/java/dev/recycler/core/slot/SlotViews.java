package dev.recycler.core.slot;

import static dev.recycler.core.api.RecyclerException.Kind.BUSY;
import static dev.recycler.core.api.RecyclerException.Kind.UNAVAILABLE;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.proto.v1.LeaseRecord;
import dev.recycler.proto.v1.SlotStatus;
import dev.recycler.proto.v1.SlotTable;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;

/** What the pool shows of its slots: the slot table, and the message of a StartWorker call that found none free. */
final class SlotViews {
  private SlotViews() {}

  /**
   * A snapshot of {@code slots} and the newest {@code maxLeases} lease records (0 = all), the ended ones from {@code
   * history}. Called under the pool lock.
   */
  static SlotTable table(Collection<Slot> slots, List<LeaseRecord> history, Scheduler scheduler, int maxLeases) {
    SlotTable.Builder table = SlotTable.newBuilder();
    List<LeaseRecord> records = new ArrayList<>(history);
    // States are timed on the monotonic clock; the table shows wall time, so convert once per snapshot.
    long nowNanos = scheduler.nanoTime();
    long nowMillis = scheduler.now().toEpochMilli();
    for (Slot s : slots) {
      SlotStatus.Builder st = SlotStatus.newBuilder().setSlotId(s.id).setState(s.state().name())
          .setGeneration(s.lastGeneration).setConsecutiveFailures(s.consecutiveFailures)
          .setLeasesServed(s.leasesServed)
          .setStateSinceUnixMillis(nowMillis - (nowNanos - s.stateSinceNanos()) / 1_000_000);
      if (s.attachment != null) {
        st.setIncarnationId(s.attachment.incarnation()).setWrapperPid(s.attachment.wrapperPid())
            .setHeldDigests(s.attachment.heldDigests().size());
      }
      Standbys.Standby standby = s.standby;
      if (standby != null) {
        st.setStandbyJobName(standby.jobName()).setStandbyGeneration(standby.generation());
      }
      Lease l = s.lease;
      if (l != null) {
        st.setWorkerId(l.workerId()).setRunnerWorkerId(l.runnerWorkerId()).setJobName(l.jobName())
            .setWorkerPid(l.workerPid());
        records.add(l.record());
      }
      table.addSlots(st);
    }
    records.sort((a, b) -> Long.compare(a.getStartUnixMillis(), b.getStartUnixMillis()));
    int from = maxLeases > 0 ? Math.max(0, records.size() - maxLeases) : 0;
    table.addAllLeases(records.subList(from, records.size()));
    return table.build();
  }

  /**
   * Why no slot became free for {@code lease} within {@code waited}: each slot and what holds it (BUSY), or, when no
   * wrapper is attached at all, which slots never attached (UNAVAILABLE). Called under the pool lock.
   */
  static RecyclerException noSlot(Lease lease, Collection<Slot> slots, Duration waited, long nowNanos) {
    String within = waited.toSeconds() + "s";
    List<String> neverAttached = new ArrayList<>();
    List<String> detached = new ArrayList<>();
    List<String> held = new ArrayList<>();
    for (Slot s : slots) {
      if (s.state() == SlotState.DETACHED) {
        (s.everAttached ? detached : neverAttached).add(s.id);
      } else {
        Lease l = s.lease;
        String what = s.id + " " + s.state();
        if (l != null) {
          what += " for worker " + l.runnerWorkerId() + (l.jobName().isEmpty() ? "" : " of job " + l.jobName());
        } else if (s.state() == SlotState.BACKOFF) {
          what += " after " + s.consecutiveFailures + " failed leases";
        }
        what += " since " + Duration.ofNanos(nowNanos - s.stateSinceNanos()).toSeconds() + "s";
        held.add(what);
      }
    }
    String absent = (neverAttached.isEmpty() ? "" : "; never attached: " + String.join(", ", neverAttached))
        + (detached.isEmpty() ? "" : "; detached: " + String.join(", ", detached));
    if (held.isEmpty()) {
      return new RecyclerException(UNAVAILABLE, "no harness slot for worker " + lease.runnerWorkerId() + " within "
          + within + ": no go-boot-wrapper is attached" + absent
          + "; start one go-boot-wrapper per slot with --slot=<id> --recycler=<this endpoint>");
    }
    return new RecyclerException(BUSY, "no harness slot became free for worker " + lease.runnerWorkerId()
        + " within " + within + ": " + String.join("; ", held) + absent
        + "; add slots or run fewer concurrent jobs per TaskManager");
  }
}
