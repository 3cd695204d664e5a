package dev.recycler.core.slot;

import static dev.recycler.core.api.RecyclerException.Kind.FORBIDDEN;
import static dev.recycler.core.api.RecyclerException.Kind.UNAVAILABLE;
import static dev.recycler.core.api.RecyclerException.Kind.UNKNOWN_ID;

import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.InvalidProtocolBufferException;
import dev.recycler.core.api.RecyclerConfig;
import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.auth.LeaseCredentials;
import dev.recycler.core.metrics.RecyclerMetrics;
import dev.recycler.proto.v1.Exit;
import dev.recycler.proto.v1.ExitReason;
import dev.recycler.proto.v1.PreparedLease;
import dev.recycler.proto.v1.RecyclerMessage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactFilePayload;
import org.apache.beam.model.pipeline.v1.RunnerApi.ArtifactInformation;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Standby workers: the next lease's worker, started before the lease exists. A Go worker needs about 20 ms to start
 * (runtime, {@code beam.Init}, the control connection), the whole of what Beam's boot would cost a warm environment; a
 * job's next environment on this TaskManager (a later stage, a restarted task, {@code sdk_worker_parallelism}) would
 * pay it again. So when a lease ends normally, its slot's wrapper is asked at once ({@code Standby}) to start the same
 * job's worker again, with the generation and credential reserved for the slot's next lease.
 *
 * <p><b>Identity.</b> A standby serves only a lease whose boot inputs ({@link PreparedLease}: the rewritten provision
 * info, pipeline options included, and the resolved artifacts with their digests) are byte-for-byte those it was
 * started with ({@link #spec}): the same job's environments share them; two jobs never do (Beam's job server names
 * each job and stages it under its own token). So a worker never serves a lease it was not started for, and the
 * runner cannot tell an adopted standby from a worker started for it.
 *
 * <p><b>Trust.</b> Until a lease adopts it, the standby's control and logging streams are held at the recycler
 * ({@link #await}): it receives no instruction and reaches nothing of the runner, whose endpoints it does not know.
 * Its credential is the reserved lease's, sent only to the slot's wrapper, as a Lease's is.
 *
 * <p><b>Admission.</b> A standby costs a worker start (about 10-15 ms of CPU) and is wasted when its job never leases
 * again, as most jobs on a busy TaskManager do not. A job that has had two or more leases here gets one whenever a lease
 * of it ends normally; a job's first lease gets one only while recent jobs came back: of the last {@value
 * #RETURN_WINDOW} first leases that ended normally, at least one in {@value #RETURN_ONE_IN} was followed by another
 * lease of the same job within {@code standby-ttl} (until {@value #RETURN_MIN_OBSERVED} are known, always). A first
 * lease's end counts as not followed when its standby was dropped for another job's lease or expired, or, without a
 * standby, when {@code standby-ttl} passed. So a TaskManager running one-off jobs stops paying for standbys, and one
 * running multi-stage batch jobs (each stage's environment a lease) keeps them.
 *
 * <p><b>Placement.</b> A lease is placed once its inputs are known ({@link #place}): on the idle slot whose standby
 * matches it, else on an idle slot without a standby (one whose wrapper holds the lease's artifacts first, then the
 * one freed last), else on the slot whose standby's job has had the fewest leases here (then the oldest standby),
 * which is dropped: a one-off job's standby goes before that of a job whose environments recur. Lease counts are
 * kept per boot inputs for the {@value #SEEN_JOBS} most recently seen.
 *
 * <p><b>Concurrency.</b> Everything runs under the pool lock; messages and futures complete in the caller's {@code
 * after} list.
 */
final class Standbys {
  private static final Logger LOG = LoggerFactory.getLogger(Standbys.class);

  /**
   * A slot's standby: reserved generation and credential, what it was started for, and the control or logging
   * streams its worker opened, which wait for the adopting lease.
   */
  static final class Standby {
    private final Slot slot;
    private final long generation;
    private final String credential;
    private final String spec;
    private final String jobName;
    private final long createdNanos;
    private final Job job;
    /** The lease it was started for speculatively, before that lease's content was verified; null for a standby. */
    private final Lease speculativeFor;
    private final List<CompletableFuture<Lease>> waiters = new ArrayList<>();
    private Scheduler.Cancellable expiry;

    private Standby(Slot slot, long generation, String credential, String spec, String jobName, long createdNanos,
        Job job, Lease speculativeFor) {
      this.job = job;
      this.speculativeFor = speculativeFor;
      this.slot = slot;
      this.generation = generation;
      this.credential = credential;
      this.spec = spec;
      this.jobName = jobName;
      this.createdNanos = createdNanos;
    }

    long generation() {
      return generation;
    }

    String credential() {
      return credential;
    }

    String jobName() {
      return jobName;
    }

    /** The public worker id, {@code <slot>.g<generation>}: the adopting lease's. */
    String workerId() {
      return slot.id + ".g" + generation;
    }
  }

  /** Where a lease goes: the slot, and the standby it adopts there (null: boot as usual). */
  record Placement(Slot slot, Standby standby) {}

  private final RecyclerConfig config;
  private final Scheduler scheduler;
  private final RecyclerMetrics<SlotState, EndReason> metrics;
  private final PoolLock lock;
  private final SecureRandom random = new SecureRandom();
  private final Map<String, Standby> byWorkerId = new HashMap<>();
  /** Workers started speculatively, by the waiting lease they were started for. */
  private final Map<Lease, Standby> speculations = new HashMap<>();
  static final int SEEN_JOBS = 1024;
  /** First leases whose outcome (followed by another of the job or not) decides whether first leases get standbys. */
  static final int RETURN_WINDOW = 32;
  /** Until this many of them are known, first leases get standbys. */
  static final int RETURN_MIN_OBSERVED = 8;
  /** First leases get standbys while at least one in this many recent ones was followed by another of its job. */
  static final int RETURN_ONE_IN = 8;

  /** One job (one set of boot inputs) as placement and admission see it. */
  private static final class Job {
    /** Leases placed. */
    int leases;
    /** When its first lease ended normally, while it is not known whether another follows; -1 otherwise. */
    long firstEndNanos = -1;
  }

  /** Jobs by boot inputs ({@link #spec}), most recently seen last; at most {@link #SEEN_JOBS}. */
  private final Map<String, Job> seen = new java.util.LinkedHashMap<>(16, 0.75f, true) {
    @Override
    protected boolean removeEldestEntry(Map.Entry<String, Job> eldest) {
      return size() > SEEN_JOBS;
    }
  };
  /** Jobs whose first end is not resolved yet, in the order they ended (resolved ones are skipped when reached). */
  private final java.util.ArrayDeque<Job> unresolved = new java.util.ArrayDeque<>();
  /** The last {@link #RETURN_WINDOW} resolved first ends, a ring: true when another lease of the job followed. */
  private final boolean[] returns = new boolean[RETURN_WINDOW];
  private int resolvedFirstEnds;

  Standbys(RecyclerConfig config, Scheduler scheduler, RecyclerMetrics<SlotState, EndReason> metrics, PoolLock lock) {
    this.config = config;
    this.scheduler = scheduler;
    this.metrics = metrics;
    this.lock = lock;
  }

  /**
   * What a worker is started with, as one value: SHA-256 over the deterministic encoding of the boot inputs. Equal
   * values mean the wrapper would start the same binary with the same options, environment and endpoints.
   */
  static String spec(PreparedLease inputs) {
    try {
      ByteArrayOutputStream bytes = new ByteArrayOutputStream(inputs.getSerializedSize());
      CodedOutputStream out = CodedOutputStream.newInstance(bytes);
      out.useDeterministicSerialization();
      inputs.writeTo(out);
      out.flush();
      return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes.toByteArray()));
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("SHA-256 is required of every JVM", e);
    }
  }

  /**
   * The lease that just ended on {@code slot}, now IDLE, asks for a standby of its job if it ended normally (its
   * worker was ready and stopped on the exit instruction, after the runner closed or stopped it), had its inputs, and
   * its wrapper still holds every artifact (a standby never fetches).
   */
  void offer(Slot slot, Lease ended, boolean closed) {
    if (config.standbyTtl().isZero() || closed || ended.spec() == null || !ended.wasReady()
        || !"EXITED_ON_INSTRUCTION".equals(ended.outcome())
        || (ended.endReason() != EndReason.RUNNER_CLOSED && ended.endReason() != EndReason.STOP_WORKER)) {
      return;
    }
    long now = scheduler.nanoTime();
    resolveExpired(now);
    Job job = seen.computeIfAbsent(ended.spec(), k -> new Job());
    boolean first = job.leases <= 1;
    if (first && job.firstEndNanos < 0) {
      job.firstEndNanos = now;
      unresolved.add(job);
      if (unresolved.size() > SEEN_JOBS) {
        resolve(unresolved.poll(), false);
      }
    }
    Slot.Attachment a = slot.attachment;
    if (a == null || slot.state() != SlotState.IDLE || slot.standby != null || slot.pendingClaim != null
        || !a.heldDigests().containsAll(ended.digests())) {
      return;
    }
    if (first && !firstLeasesReturn()) {
      metrics.standby(RecyclerMetrics.Standby.SKIPPED);
      LOG.debug("standby skipped slot={} job={}: a first lease, and few recent jobs had another", slot.id,
          ended.jobName());
      return;
    }
    Standby s = start(slot, ended.spec(), ended.jobName(), ended.inputs(), job, null, config.standbyTtl());
    metrics.standby(RecyclerMetrics.Standby.OFFERED);
    LOG.info("standby offered slot={} generation={} job={}", slot.id, s.generation, s.jobName);
  }

  /**
   * Reserves {@code slot}'s next generation and a fresh credential for a worker started from {@code inputs}, and asks
   * the slot's wrapper to start it. It is dropped after {@code ttl} unless adopted first.
   */
  private Standby start(Slot slot, String spec, String jobName, PreparedLease inputs, Job job, Lease speculativeFor,
      java.time.Duration ttl) {
    long generation = ++slot.lastGeneration;
    Standby s = new Standby(slot, generation, LeaseCredentials.mint(random), spec, jobName, scheduler.nanoTime(), job,
        speculativeFor);
    slot.standby = s;
    byWorkerId.put(s.workerId(), s);
    s.expiry = scheduler.schedule(ttl, () -> expired(s));
    RecyclerMessage m = RecyclerMessage.newBuilder().setStandby(dev.recycler.proto.v1.Standby.newBuilder()
        .setGeneration(generation).setWorkerId(LeaseCredentials.workerId(s.workerId(), s.credential))
        .setCredential(s.credential).setJobName(jobName).setPrepared(inputs)).build();
    // Sent under the lock, as a Lease is: a Lease or an Exit of this generation, queued only after this point, can
    // never reach the wrapper before it. Sending does not block (the stream buffers).
    slot.attachment.link().send(m);
    return s;
  }

  /**
   * Starts the waiting {@code lease}'s worker speculatively, from {@code probed}: its boot inputs named by digests
   * that are partly only probed (cached content of the staged file's size and ends), while the staged content is
   * compared with that content byte for byte. The worker is a standby in all but its trigger: started on an IDLE slot
   * whose wrapper holds every probed digest (one without a standby, the slot freed last; else the one whose standby
   * placement would drop first, that standby stopped), its control and logging streams held, so it receives no
   * instruction and reaches nothing of the runner. When the lease's verified inputs are in,
   * {@link #place} puts the lease on it only if they are byte-for-byte {@code probed} (the same {@link #spec}); if
   * not, it is stopped unused. No slot qualifying: nothing is started ({@code NO_SLOT}).
   */
  void speculate(Lease lease, PreparedLease probed, Collection<Slot> slots, List<Runnable> after) {
    List<String> needs = digests(probed);
    Slot free = null;
    Slot victim = null;
    for (Slot slot : slots) {
      Slot.Attachment a = slot.attachment;
      if (slot.state() != SlotState.IDLE || slot.pendingClaim != null || a == null
          || !a.heldDigests().containsAll(needs)) {
        continue;
      }
      Standby s = slot.standby;
      if (s == null) {
        free = free == null || slot.stateSinceNanos() > free.stateSinceNanos() ? slot : free;
      } else if (s.speculativeFor == null && (victim == null || dropsBefore(s, victim.standby))) {
        victim = slot;
      }
    }
    Slot chosen = free != null ? free : victim;
    if (chosen == null) {
      metrics.speculative(RecyclerMetrics.Speculative.NO_SLOT);
      LOG.info("speculative start skipped runner_worker={} lease={}: no idle slot's wrapper holds {} (or each such"
          + " slot runs another lease's speculative start)", lease.runnerWorkerId(), lease.sequence(), needs);
      return;
    }
    Standby replaced = chosen.standby;
    if (replaced != null) {
      // Another job's standby, the one placement would drop first. Its Exit is sent now, under the lock, not after it
      // (drop's way): the wrapper must have it before the Standby that replaces it, which it then queues.
      resolve(replaced.job, false);
      drop(chosen, "the slot is needed for another job's speculative start", false, after);
      chosen.attachment.link().send(exit(replaced));
    }
    String spec = spec(probed);
    // A lease waits at most lease-wait-timeout; so does the worker started for it (normally adopted or dropped long
    // before, when the comparison ends).
    Standby s = start(chosen, spec, lease.jobName(), probed, seen.computeIfAbsent(spec, k -> new Job()), lease,
        config.leaseWaitTimeout());
    speculations.put(lease, s);
    metrics.speculative(RecyclerMetrics.Speculative.STARTED);
    LOG.info("speculative start slot={} generation={} runner_worker={} lease={} digests={}", chosen.id, s.generation,
        lease.runnerWorkerId(), lease.sequence(), needs);
  }

  /** The lease, placed or ended, no longer needs a worker started for it speculatively: stop it unless adopted. */
  void speculationDone(Lease lease, Standby adopted, String why, List<Runnable> after) {
    Standby s = speculations.remove(lease);
    if (s == null || s == adopted || s.slot.standby != s) {
      return;
    }
    drop(s.slot, why, true, after);
  }

  /**
   * The file artifacts' digests, {@code sha256:<hex>} as wrappers report what they hold; an artifact without one
   * yields a value no wrapper holds, so the inputs never qualify for a standby. (Parsed here rather than with the
   * artifact package's helper, which depends on this package.)
   */
  static List<String> digests(PreparedLease inputs) {
    List<String> out = new ArrayList<>();
    for (ArtifactInformation info : inputs.getArtifactsList()) {
      try {
        String sha = ArtifactFilePayload.parseFrom(info.getTypePayload()).getSha256();
        out.add(sha.isEmpty() ? "sha256:?" : "sha256:" + sha);
      } catch (InvalidProtocolBufferException e) {
        out.add("sha256:?");
      }
    }
    return out;
  }

  /**
   * Where the prepared {@code lease} goes among {@code slots}, or null when none is IDLE. A worker started
   * speculatively for it that its verified inputs do not match is stopped now, whether or not a slot is free.
   */
  Placement place(Lease lease, Collection<Slot> slots, List<Runnable> after) {
    Standby speculative = speculations.get(lease);
    if (speculative != null && lease.spec() == null) {
      speculationDone(lease, null, "its lease's preparation failed", after);
    } else if (speculative != null && !speculative.spec.equals(lease.spec())
        && speculative.slot.standby == speculative) {
      speculations.remove(lease);
      forget(speculative);
      metrics.speculative(RecyclerMetrics.Speculative.MISMATCHED);
      String why = "speculative start refuted: the staged content is not the cached content its probe matched";
      LOG.info("speculative start mismatched slot={} generation={} runner_worker={} lease={}: {}",
          speculative.slot.id, speculative.generation, lease.runnerWorkerId(), lease.sequence(), why);
      fail(speculative, why, after);
      stop(speculative, after);
    }
    Placement p = choose(lease, slots);
    if (p == null) {
      return null;
    }
    speculationDone(lease, p.standby(), "its lease went to another slot", after);
    resolveExpired(scheduler.nanoTime());
    Standby replaced = p.standby() == null ? p.slot().standby : null;
    if (replaced != null) {
      resolve(replaced.job, false); // its job did not come back before another job needed the slot
    }
    if (lease.spec() != null) {
      Job job = seen.computeIfAbsent(lease.spec(), k -> new Job());
      job.leases++;
      resolve(job, true);
    }
    return p;
  }

  /** Whether recent first leases were followed by another of their job often enough to start standbys for them. */
  private boolean firstLeasesReturn() {
    int known = Math.min(resolvedFirstEnds, RETURN_WINDOW);
    if (known < RETURN_MIN_OBSERVED) {
      return true;
    }
    int followed = 0;
    for (int i = 0; i < known; i++) {
      followed += returns[i] ? 1 : 0;
    }
    return followed * RETURN_ONE_IN >= known;
  }

  /** Records whether the first end of {@code job}, if unresolved, was followed by another lease of it. */
  private void resolve(Job job, boolean followed) {
    if (job == null || job.firstEndNanos < 0) {
      return;
    }
    job.firstEndNanos = -1;
    returns[resolvedFirstEnds++ % RETURN_WINDOW] = followed;
  }

  /** First ends older than {@code standby-ttl}: not followed in time. */
  private void resolveExpired(long now) {
    long ttl = config.standbyTtl().toNanos();
    for (Job j = unresolved.peek(); j != null; j = unresolved.peek()) {
      if (j.firstEndNanos >= 0 && now - j.firstEndNanos < ttl) {
        return;
      }
      resolve(unresolved.poll(), false);
    }
  }

  private Placement choose(Lease lease, Collection<Slot> slots) {
    List<String> needs = lease.digests();
    Slot free = null;
    Slot victim = null;
    for (Slot slot : slots) {
      if (slot.state() != SlotState.IDLE) {
        continue;
      }
      Standby s = slot.standby;
      if (s == null) {
        free = free == null || better(slot, free, needs) ? slot : free;
      } else if (lease.spec() != null && s.spec.equals(lease.spec())) {
        return new Placement(slot, s);
      } else if (victim == null || dropsBefore(s, victim.standby)) {
        victim = slot;
      }
    }
    Slot chosen = free != null ? free : victim;
    return chosen == null ? null : new Placement(chosen, null);
  }

  /**
   * Whether standby {@code a} gives way before {@code b} when a slot is needed: the one whose job has had fewer leases
   * here, then the older one.
   */
  private static boolean dropsBefore(Standby a, Standby b) {
    return a.job.leases < b.job.leases || (a.job.leases == b.job.leases && a.createdNanos < b.createdNanos);
  }

  /** Of two free slots: the one whose wrapper holds what the lease needs (no fetch), then the one freed last. */
  private static boolean better(Slot a, Slot b, List<String> needs) {
    boolean aHolds = a.attachment != null && a.attachment.heldDigests().containsAll(needs);
    boolean bHolds = b.attachment != null && b.attachment.heldDigests().containsAll(needs);
    if (aHolds != bHolds) {
      return aHolds;
    }
    return a.stateSinceNanos() > b.stateSinceNanos();
  }

  /** {@code lease} took over its slot's standby: the streams its worker holds open go to the lease. */
  void adopted(Standby s, Lease lease, List<Runnable> after) {
    forget(s);
    if (s.speculativeFor != null) {
      speculations.remove(s.speculativeFor, s);
      metrics.speculative(RecyclerMetrics.Speculative.ADOPTED);
    } else {
      metrics.standby(RecyclerMetrics.Standby.ADOPTED);
    }
    LOG.info("standby adopted slot={} generation={} runner_worker={} held_streams={} speculative={}", s.slot.id,
        s.generation, lease.runnerWorkerId(), s.waiters.size(), s.speculativeFor != null);
    List<CompletableFuture<Lease>> waiters = List.copyOf(s.waiters);
    after.add(() -> waiters.forEach(w -> w.complete(lease)));
  }

  /**
   * Lets go of the slot's standby, if it has one: its held streams fail. {@code tellWrapper}: also send the wrapper
   * an exit instruction for it (not needed when a Lease of a later generation is about to stop it, or the wrapper is
   * gone).
   */
  void drop(Slot slot, String why, boolean tellWrapper, List<Runnable> after) {
    Standby s = slot.standby;
    if (s == null) {
      return;
    }
    forget(s);
    count(s, RecyclerMetrics.Standby.DROPPED, RecyclerMetrics.Speculative.DROPPED);
    LOG.info("standby dropped slot={} generation={} job={} speculative={}: {}", slot.id, s.generation, s.jobName,
        s.speculativeFor != null, why);
    fail(s, why, after);
    if (tellWrapper) {
      stop(s, after);
    }
  }

  /** Sends the standby's wrapper an exit instruction for it (after the lock), if the wrapper is still attached. */
  private static void stop(Standby s, List<Runnable> after) {
    Slot.Attachment a = s.slot.attachment;
    if (a != null) {
      RecyclerMessage exit = exit(s);
      after.add(() -> a.link().send(exit));
    }
  }

  private static RecyclerMessage exit(Standby s) {
    return RecyclerMessage.newBuilder().setExit(Exit.newBuilder().setGeneration(s.generation)
        .setReason(ExitReason.EXIT_REASON_STANDBY_UNUSED)).build();
  }

  private void count(Standby s, RecyclerMetrics.Standby standby, RecyclerMetrics.Speculative speculative) {
    if (s.speculativeFor != null) {
      metrics.speculative(speculative);
    } else {
      metrics.standby(standby);
    }
  }

  /** The wrapper reports the standby of {@code generation} gone (declined, or exited on its own). */
  void ended(Slot slot, long generation, String message, List<Runnable> after) {
    Standby s = slot.standby;
    if (s == null || s.generation != generation) {
      return; // already dropped or adopted
    }
    forget(s);
    count(s, RecyclerMetrics.Standby.ENDED, RecyclerMetrics.Speculative.ENDED);
    LOG.info("standby ended slot={} generation={}: {}", slot.id, generation, message);
    fail(s, "the standby worker ended: " + message, after);
  }

  private void expired(Standby s) {
    lock.run(after -> {
      if (s.slot.standby == s) {
        resolve(s.job, false);
        drop(s.slot, s.speculativeFor != null ? "not adopted within lease-wait-timeout" : "not adopted within"
            + " standby-ttl=" + config.standbyTtl().toSeconds() + "s", true, after);
      }
    });
  }

  private void forget(Standby s) {
    if (s.speculativeFor != null) {
      speculations.remove(s.speculativeFor, s);
    }
    s.slot.standby = null;
    byWorkerId.remove(s.workerId());
    if (s.expiry != null) {
      s.expiry.cancel();
    }
  }

  private static void fail(Standby s, String why, List<Runnable> after) {
    List<CompletableFuture<Lease>> waiters = List.copyOf(s.waiters);
    RecyclerException e = new RecyclerException(UNAVAILABLE, "standby worker " + s.workerId() + " will not be"
        + " used: " + why);
    after.add(() -> waiters.forEach(w -> w.completeExceptionally(e)));
  }

  /**
   * A held stream of the standby worker {@code workerId}: completes with the lease that adopts it, or exceptionally
   * when it is dropped. Null when no standby has that id.
   */
  CompletableFuture<Lease> await(String workerId) {
    Standby s = byWorkerId.get(workerId);
    if (s == null) {
      return null;
    }
    CompletableFuture<Lease> f = new CompletableFuture<>();
    s.waiters.add(f);
    return f;
  }

  /**
   * Whether {@code presented} is a standby worker's id with its credential.
   *
   * @throws RecyclerException UNKNOWN_ID for no such standby, FORBIDDEN for a wrong credential
   */
  void verify(LeaseCredentials.Presented presented) throws RecyclerException {
    Standby s = byWorkerId.get(presented.publicId());
    if (s == null) {
      throw new RecyclerException(UNKNOWN_ID, "no lease has worker id "
          + LeaseCredentials.describe(presented.publicId()));
    }
    if (!LeaseCredentials.matches(s.credential, presented.credential())) {
      throw new RecyclerException(FORBIDDEN, "wrong lease credential for worker '" + presented.publicId() + "'");
    }
  }
}
