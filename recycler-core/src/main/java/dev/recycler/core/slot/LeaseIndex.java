package dev.recycler.core.slot;

import static dev.recycler.core.api.RecyclerException.Kind.BAD_REQUEST;
import static dev.recycler.core.api.RecyclerException.Kind.CONFLICT;
import static dev.recycler.core.api.RecyclerException.Kind.FORBIDDEN;
import static dev.recycler.core.api.RecyclerException.Kind.UNAUTHENTICATED;
import static dev.recycler.core.api.RecyclerException.Kind.UNKNOWN_ID;
import static dev.recycler.core.api.RecyclerException.Kind.WRONG_STATE;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.auth.LeaseCredentials;
import dev.recycler.proto.v1.LeaseRecord;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The pool's index of assigned leases and its fencing: which lease a worker id or a slot's generation names, whether
 * the caller's credential is that lease's, which lease a StopWorker ends, and the memory of ended leases (so a repeated
 * StopWorker is answered, and the slot table shows a history).
 *
 * <p><b>Concurrency.</b> Not thread-safe: every method runs under the pool lock.
 */
final class LeaseIndex {
  private static final Logger LOG = LoggerFactory.getLogger(LeaseIndex.class);
  private static final int RECENT_STOPS = 4096;

  private final int historySize;
  /** Leases with a slot (BOOTING, ACTIVE, ENDING) by their public worker id. */
  private final Map<String, Lease> byWorkerId = new HashMap<>();
  /**
   * Runner worker ids ({@code id}) and id-with-caller ({@code id@peer}) of ended leases, so that a repeated StopWorker
   * is answered OK instead of NOT_FOUND, and never ends another job's lease that shares the id.
   */
  private final LinkedHashSet<String> recentlyEnded = new LinkedHashSet<>();
  private final ArrayDeque<LeaseRecord> history = new ArrayDeque<>();

  LeaseIndex(int historySize) {
    this.historySize = historySize;
  }

  void assigned(Lease lease) {
    byWorkerId.put(lease.workerId(), lease);
  }

  /** Forgets an ended lease's worker id, remembers its runner id, and keeps its record (if it had a slot). */
  void ended(Lease lease) {
    if (lease.generation() > 0) {
      byWorkerId.remove(lease.workerId());
    }
    for (String key : List.of(lease.runnerWorkerId(), lease.runnerWorkerId() + "@" + lease.peer())) {
      recentlyEnded.remove(key);
      recentlyEnded.add(key);
    }
    while (recentlyEnded.size() > RECENT_STOPS) {
      recentlyEnded.remove(recentlyEnded.iterator().next());
    }
    if (historySize > 0 && lease.generation() > 0) {
      history.addLast(lease.record());
      while (history.size() > historySize) {
        history.removeFirst();
      }
    }
  }

  List<LeaseRecord> history() {
    return new ArrayList<>(history);
  }

  /**
   * The lease (none or one) that a StopWorker for {@code runnerWorkerId} from {@code peer} ends, among {@code waiting}
   * and the assigned leases. None when the lease with that id is already ending or recently ended (StopWorker is
   * idempotent), or when the id is ambiguous.
   *
   * @throws RecyclerException UNKNOWN_ID for an id never leased here
   */
  List<Lease> toStop(String runnerWorkerId, String peer, Collection<Lease> waiting) throws RecyclerException {
    List<Lease> candidates = new ArrayList<>();
    for (Collection<Lease> group : List.of(waiting, byWorkerId.values())) {
      for (Lease l : group) {
        if (l.runnerWorkerId().equals(runnerWorkerId)) {
          candidates.add(l);
        }
      }
    }
    if (candidates.isEmpty()) {
      if (recentlyEnded.contains(runnerWorkerId)) {
        return List.of();
      }
      throw new RecyclerException(UNKNOWN_ID, "no lease for worker_id '" + runnerWorkerId
          + "': it was never started on this recycler");
    }
    // Beam's runner reuses worker ids across jobs but sends StartWorker and StopWorker on one channel. A repeated
    // StopWorker from a channel whose lease already ended must not fall back to another job's lease with that id.
    List<Lease> samePeer = candidates.stream().filter(l -> l.peer().equals(peer)).toList();
    if (samePeer.isEmpty() && recentlyEnded.contains(runnerWorkerId + "@" + peer)) {
      return List.of();
    }
    List<Lease> live = (samePeer.isEmpty() ? candidates : samePeer).stream()
        .filter(l -> l.state() != Lease.State.ENDING && l.state() != Lease.State.ENDED).toList();
    if (live.size() > 1) {
      LOG.warn("StopWorker is ambiguous, ending none worker_id={} leases={}", runnerWorkerId, live.size());
      return List.of();
    }
    return live;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Fencing

  /**
   * The live lease whose inner worker uses {@code workerId}.
   *
   * @throws RecyclerException UNKNOWN_ID when no lease has that id, WRONG_STATE when it has ended
   */
  Lease live(String workerId) throws RecyclerException {
    Lease lease = known(workerId);
    if (!lease.isLive()) {
      throw new RecyclerException(WRONG_STATE, "the lease of worker '" + workerId + "' has ended");
    }
    return lease;
  }

  /**
   * The BOOTING lease whose worker may now connect its control stream.
   *
   * @throws RecyclerException UNKNOWN_ID, CONFLICT when a control stream is connected already, WRONG_STATE when ended
   */
  Lease connectable(String workerId) throws RecyclerException {
    Lease lease = known(workerId);
    if (lease.state() == Lease.State.ACTIVE) {
      throw new RecyclerException(CONFLICT, "worker '" + workerId + "' already has a control connection");
    }
    if (lease.state() != Lease.State.BOOTING) {
      throw new RecyclerException(WRONG_STATE, "the lease of worker '" + workerId + "' has ended");
    }
    return lease;
  }

  private Lease known(String workerId) throws RecyclerException {
    Lease lease = byWorkerId.get(workerId);
    if (lease == null) {
      throw new RecyclerException(UNKNOWN_ID, "no lease has worker id '" + workerId + "'");
    }
    return lease;
  }

  /** The public worker id of a worker whose presented id carries its lease's credential. */
  String verifyWorker(LeaseCredentials.Presented presented) throws RecyclerException {
    Lease lease = byWorkerId.get(presented.publicId());
    if (lease == null) {
      throw new RecyclerException(UNKNOWN_ID, "no lease has worker id "
          + LeaseCredentials.describe(presented.publicId()));
    }
    if (!LeaseCredentials.matches(lease.credential(), presented.credential())) {
      throw new RecyclerException(FORBIDDEN, "wrong lease credential for worker '" + presented.publicId() + "'");
    }
    return presented.publicId();
  }

  /** Fails unless the presented id carries a credential at all (checked before the lock is taken). */
  static void requireCredential(LeaseCredentials.Presented presented) throws RecyclerException {
    if (presented.credential().isEmpty()) {
      throw new RecyclerException(UNAUTHENTICATED, presented.publicId().isEmpty()
          ? "the worker_id header is missing: start the worker with the --id its wrapper got in the Lease"
          : "worker id " + LeaseCredentials.describe(presented.publicId()) + " carries no lease credential: start"
              + " the worker with the full --id its wrapper got in the Lease");
    }
  }

  /** The generation a wrapper's call names in its header. */
  static long generation(String header) throws RecyclerException {
    try {
      return Long.parseLong(header);
    } catch (NumberFormatException e) {
      throw new RecyclerException(BAD_REQUEST, "the recycler-generation header is missing or not a number ('"
          + header + "'): wrappers send the generation of their lease");
    }
  }

  /**
   * The slot's live lease if it is {@code generation} (fencing: a call for any other generation gets nothing).
   *
   * @throws RecyclerException UNKNOWN_ID for no such slot, WRONG_STATE for another generation or an ending lease
   */
  static Lease current(Slot slot, String slotId, long generation) throws RecyclerException {
    if (slot == null) {
      throw new RecyclerException(UNKNOWN_ID, "slot '" + slotId + "' is not configured on this recycler");
    }
    Lease lease = slot.lease;
    if (lease == null || lease.generation() != generation) {
      throw new RecyclerException(WRONG_STATE, "generation " + generation + " is not the current lease of slot '"
          + slotId + "' (current: " + (lease == null ? "none" : lease.generation()) + ")");
    }
    if (!lease.isLive()) {
      throw new RecyclerException(WRONG_STATE, "the lease of slot '" + slotId + "' generation " + generation
          + " is ending");
    }
    return lease;
  }
}
