package dev.recycler.core.slot;

import static dev.recycler.core.api.RecyclerException.Kind.FORBIDDEN;
import static dev.recycler.core.api.RecyclerException.Kind.UNAUTHENTICATED;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.auth.LeaseCredentials;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.proto.v1.Prefetch;
import dev.recycler.proto.v1.Prefetched;
import dev.recycler.proto.v1.RecyclerMessage;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Prefetch: a worker binary that a job has just staged goes to idle slots' wrappers before the job's first lease asks
 * for it. Beam's job server stages a job's binary at submission; its first StartWorker comes seconds later (2.5 s at
 * the least, measured end to end), so a slot that fetches the content meanwhile serves that lease as if the content
 * were old.
 *
 * <p>The pool asks each IDLE slot whose wrapper neither holds the digest nor is fetching it already, up to {@code
 * prefetch-slots}, with a {@code Prefetch} message on its attach stream carrying a ticket: 128 random bits, good for
 * one GetArtifact of that digest by that slot within {@link #TICKET_TTL}. A prefetch GetArtifact carries no lease
 * credential (there is no lease); the ticket, which only that slot's attached wrapper received, stands in for it
 * ({@link #redeem}). The wrapper answers {@code Prefetched} with the digests it holds; a lease never waits for a
 * prefetch here (the wrapper lets a lease that needs a digest in flight wait for that fetch instead of starting
 * another).
 *
 * <p>Concurrency: everything but {@link #redeem} runs under the pool lock; tickets sit in a map guarded by its own
 * monitor, because the authenticator redeems them on gRPC threads.
 */
final class Prefetches {
  private static final Logger LOG = LoggerFactory.getLogger(Prefetches.class);
  /** How long a ticket stays good: ample for a wrapper to start fetching from an idle slot. */
  static final Duration TICKET_TTL = Duration.ofMinutes(2);
  private static final int MAX_TICKETS = 1024;

  private final Scheduler scheduler;
  private final RecyclerMetrics<SlotState, EndReason> metrics;
  private final SecureRandom random = new SecureRandom();
  /** Outstanding tickets by value, oldest first. Guarded by itself. */
  private final Map<String, Ticket> tickets = new LinkedHashMap<>();

  private record Ticket(String slotId, String incarnation, String digest, long expiresAtNanos) {}

  Prefetches(Scheduler scheduler, RecyclerMetrics<SlotState, EndReason> metrics) {
    this.scheduler = scheduler;
    this.metrics = metrics;
  }

  /**
   * Asks up to {@code limit} (-1: no limit) IDLE slots whose wrappers lack {@code digest} to fetch it. Called under the
   * pool lock; the messages go out after it.
   *
   * @param digest {@code sha256:<hex>}
   * @return the slots asked
   */
  List<String> offer(Collection<Slot> slots, String digest, long size, int limit, List<Runnable> after) {
    List<String> asked = new ArrayList<>();
    for (Slot slot : slots) {
      if (limit >= 0 && asked.size() >= limit) {
        break;
      }
      Slot.Attachment a = slot.attachment;
      if (slot.state() != SlotState.IDLE || a == null || a.heldDigests().contains(digest)
          || !a.prefetching().add(digest)) {
        continue;
      }
      String ticket = mint(slot.id, a.incarnation(), digest);
      RecyclerMessage message = RecyclerMessage.newBuilder().setPrefetch(Prefetch.newBuilder().setDigest(digest)
          .setSize(size).setTicket(ticket).setTicketTtlMillis(TICKET_TTL.toMillis())).build();
      after.add(() -> a.link().send(message));
      metrics.prefetch(RecyclerMetrics.Prefetch.SENT);
      asked.add(slot.id);
    }
    if (!asked.isEmpty()) {
      LOG.info("prefetch sent digest={} bytes={} slots={}", digest, size, asked);
    }
    return asked;
  }

  /** The wrapper's answer: its cache as it is now, and whether the prefetch worked. Called under the pool lock. */
  void answered(Slot slot, Prefetched p) {
    Slot.Attachment a = slot.attachment;
    if (a == null) {
      return;
    }
    a.prefetching().remove(p.getDigest());
    a.held(p.getHeldDigestsList());
    forgetTickets(slot.id, p.getDigest());
    if (p.getOk()) {
      metrics.prefetch(RecyclerMetrics.Prefetch.FETCHED);
      LOG.info("prefetch done slot={} digest={}", slot.id, p.getDigest());
    } else {
      metrics.prefetch(RecyclerMetrics.Prefetch.FAILED);
      LOG.warn("prefetch failed slot={} digest={}: {}", slot.id, p.getDigest(), p.getMessage());
    }
  }

  /**
   * Checks a prefetch GetArtifact's ticket and uses it up: good once, for the slot and digest it was minted for, by
   * the wrapper incarnation it was sent to, within {@link #TICKET_TTL}. Thread-safe; not under the pool lock.
   *
   * @return the digest ({@code sha256:<hex>}) the caller may fetch
   * @throws RecyclerException UNAUTHENTICATED without a ticket, FORBIDDEN for any ticket that is not good for this slot
   *     now (the message never contains the ticket)
   */
  String redeem(String slotId, String ticket, String currentIncarnation) throws RecyclerException {
    if (ticket.isEmpty()) {
      throw new RecyclerException(UNAUTHENTICATED, "the recycler-prefetch-ticket header is empty");
    }
    Ticket t;
    synchronized (tickets) {
      t = tickets.remove(ticket);
    }
    if (t == null || !t.slotId().equals(slotId) || !t.incarnation().equals(currentIncarnation)) {
      throw new RecyclerException(FORBIDDEN, "the prefetch ticket is not good for slot '" + slotId + "': unknown,"
          + " used already, or minted for another slot or wrapper incarnation");
    }
    if (scheduler.nanoTime() - t.expiresAtNanos() > 0) {
      throw new RecyclerException(FORBIDDEN, "the prefetch ticket of slot '" + slotId + "' for " + t.digest()
          + " expired (tickets are good for " + TICKET_TTL.toSeconds() + " s)");
    }
    return t.digest();
  }

  private String mint(String slotId, String incarnation, String digest) {
    String value = LeaseCredentials.mint(random);
    long now = scheduler.nanoTime();
    synchronized (tickets) {
      for (Iterator<Ticket> it = tickets.values().iterator(); it.hasNext(); ) {
        if (now - it.next().expiresAtNanos() > 0) {
          it.remove();
        }
      }
      if (tickets.size() >= MAX_TICKETS) {
        // Wrappers that never fetch: drop the oldest-minted half rather than grow without bound.
        Iterator<Ticket> it = tickets.values().iterator();
        for (int i = 0; i < MAX_TICKETS / 2 && it.hasNext(); i++) {
          it.next();
          it.remove();
        }
      }
      tickets.put(value, new Ticket(slotId, incarnation, digest, now + TICKET_TTL.toNanos()));
    }
    return value;
  }

  private void forgetTickets(String slotId, String digest) {
    synchronized (tickets) {
      tickets.values().removeIf(t -> t.slotId().equals(slotId) && t.digest().equals(digest));
    }
  }
}
