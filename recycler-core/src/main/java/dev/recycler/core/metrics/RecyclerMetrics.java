package dev.recycler.core.metrics;

import static dev.recycler.core.metrics.MetricNames.REASON;
import static dev.recycler.core.metrics.MetricNames.STATE;

import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.DistributionSummary;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import java.time.Duration;
import java.util.EnumMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.function.LongSupplier;

/**
 * The recycler's meters, created once. Tag values come from enum names only, never from ids.
 *
 * @param <S> the slot state enum
 * @param <R> the lease end reason enum
 */
public final class RecyclerMetrics<S extends Enum<S>, R extends Enum<R>> {
  private final MeterRegistry registry;
  private final AtomicIntegerArray slotsByState;
  private final Map<S, Counter> transitions;
  private final Map<R, Counter> ends;
  private final Map<R, Counter> startFailures;
  private final Timer leaseWait;
  private final Timer leaseReady;
  private final Timer leaseDrain;
  private final Counter cacheHits;
  private final Counter cacheMisses;
  private final Counter upstreamFailures;
  private final DistributionSummary upstreamBytes;
  private final DistributionSummary servedBytes;
  private final Map<HashedAt, Counter> localHashes = new EnumMap<>(HashedAt.class);
  private final Map<Prefetch, Counter> prefetches = new EnumMap<>(Prefetch.class);
  private final Map<Standby, Counter> standbys = new EnumMap<>(Standby.class);
  private final Map<Speculative, Counter> speculative = new EnumMap<>(Speculative.class);

  /** What became of a speculative start (tag of {@link MetricNames#SPECULATIVE_STARTS}). */
  public enum Speculative {
    /** A worker started from probed digests while the lease's content was being verified. */
    STARTED,
    /** Verified: the lease took it over. */
    ADOPTED,
    /** The verified content differed from the probe's match: stopped, never having served anything. */
    MISMATCHED,
    /** Stopped otherwise: the lease ended while it waited, the slot went to another lease, or the wrapper left. */
    DROPPED,
    /** The wrapper declined it, or it exited on its own. */
    ENDED,
    /** Not started: no idle slot's wrapper holds the probed content. */
    NO_SLOT
  }

  /** What became of a standby worker (tag of {@link MetricNames#STANDBYS}). */
  public enum Standby {
    /** Asked of an idle slot's wrapper when its lease ended normally. */
    OFFERED,
    /** A lease with identical boot inputs took it over. */
    ADOPTED,
    /** Stopped by the recycler: the slot went to another job, its time to live ran out, or the wrapper left. */
    DROPPED,
    /** The wrapper declined it, or it exited on its own. */
    ENDED,
    /** Not offered: the lease was its job's first here, and few recent jobs' first leases were followed by another. */
    SKIPPED
  }

  /** What became of a prefetch (tag of {@link MetricNames#PREFETCHES}). */
  public enum Prefetch {
    /** Sent to an idle slot's wrapper. */
    SENT,
    /** The wrapper reported that it holds the content now. */
    FETCHED,
    /** The wrapper reported that it could not fetch it. */
    FAILED
  }

  /** When a staged file was hashed in place (tag of {@link MetricNames#LOCAL_HASHES}). */
  public enum HashedAt {
    /** In the background, as the job server staged it (before any lease asked). */
    STAGING,
    /** On a lease's path: no staging-time digest was ready. */
    LEASE
  }

  public RecyclerMetrics(MeterRegistry registry, Class<S> states, Class<R> reasons) {
    this.registry = registry;
    S[] stateValues = states.getEnumConstants();
    this.slotsByState = new AtomicIntegerArray(stateValues.length);
    this.transitions = new EnumMap<>(states);
    for (S s : stateValues) {
      Gauge.builder(MetricNames.SLOTS, slotsByState, a -> a.get(s.ordinal()))
          .description("Slots currently in each state").tag(STATE, s.name()).register(registry);
      transitions.put(s, Counter.builder(MetricNames.SLOT_TRANSITIONS)
          .description("Slot state transitions, by new state").tag(STATE, s.name()).register(registry));
    }
    this.ends = new EnumMap<>(reasons);
    this.startFailures = new EnumMap<>(reasons);
    for (R r : reasons.getEnumConstants()) {
      ends.put(r, Counter.builder(MetricNames.LEASE_ENDS)
          .description("Ended leases, by reason").tag(REASON, r.name()).register(registry));
      startFailures.put(r, Counter.builder(MetricNames.START_FAILURES)
          .description("StartWorker calls that failed, by reason").tag(REASON, r.name()).register(registry));
    }
    this.leaseWait = Timer.builder(MetricNames.LEASE_WAIT)
        .description("StartWorker until a slot was assigned").publishPercentileHistogram().register(registry);
    this.leaseReady = Timer.builder(MetricNames.LEASE_READY)
        .description("StartWorker until the worker's control connection").publishPercentileHistogram()
        .register(registry);
    this.leaseDrain = Timer.builder(MetricNames.LEASE_DRAIN)
        .description("Exit instruction until the slot was reusable").publishPercentileHistogram().register(registry);
    this.cacheHits = Counter.builder(MetricNames.CACHE_HITS).description("Artifact lookups served from the cache")
        .register(registry);
    this.cacheMisses = Counter.builder(MetricNames.CACHE_MISSES)
        .description("Artifact lookups fetched from the runner").register(registry);
    this.upstreamFailures = Counter.builder(MetricNames.UPSTREAM_FAILURES)
        .description("Failed artifact fetches from the runner").register(registry);
    this.upstreamBytes = DistributionSummary.builder(MetricNames.UPSTREAM_BYTES).baseUnit("bytes")
        .description("Artifact bytes fetched from the runner").register(registry);
    this.servedBytes = DistributionSummary.builder(MetricNames.SERVED_BYTES).baseUnit("bytes")
        .description("Artifact bytes served to wrappers").register(registry);
    for (HashedAt h : HashedAt.values()) {
      localHashes.put(h, Counter.builder(MetricNames.LOCAL_HASHES).tag(MetricNames.WHEN, h.name())
          .description("Staged files identified in place (compared or hashed), at staging time (ahead of the lease)"
              + " or at lease time")
          .register(registry));
    }
    for (Standby s : Standby.values()) {
      standbys.put(s, Counter.builder(MetricNames.STANDBYS).tag(MetricNames.OUTCOME, s.name())
          .description("Standby workers (the same job's next worker, started when its lease ended), by outcome")
          .register(registry));
    }
    for (Speculative s : Speculative.values()) {
      speculative.put(s, Counter.builder(MetricNames.SPECULATIVE_STARTS).tag(MetricNames.OUTCOME, s.name())
          .description("Workers started from a probed digest while the lease's content was verified, by outcome")
          .register(registry));
    }
    for (Prefetch p : Prefetch.values()) {
      prefetches.put(p, Counter.builder(MetricNames.PREFETCHES).tag(MetricNames.OUTCOME, p.name())
          .description("Worker binaries sent to idle slots' wrappers when a job staged them, by outcome")
          .register(registry));
    }
  }

  public void standby(Standby outcome) {
    standbys.get(outcome).increment();
  }

  public void speculative(Speculative outcome) {
    speculative.get(outcome).increment();
  }

  public void prefetch(Prefetch outcome) {
    prefetches.get(outcome).increment();
  }

  public void localHashed(HashedAt when) {
    localHashes.get(when).increment();
  }

  public MeterRegistry registry() {
    return registry;
  }

  /** Records a slot leaving {@code from} (null for a new slot) for {@code to}. */
  public void slotTransition(S from, S to) {
    if (from != null) {
      slotsByState.decrementAndGet(from.ordinal());
    }
    slotsByState.incrementAndGet(to.ordinal());
    transitions.get(to).increment();
  }

  public void leaseWait(Duration d) {
    leaseWait.record(d);
  }

  public void leaseReady(Duration d) {
    leaseReady.record(d);
  }

  public void leaseDrain(Duration d) {
    leaseDrain.record(d);
  }

  public void leaseEnded(R reason) {
    ends.get(reason).increment();
  }

  public void startFailed(R reason) {
    startFailures.get(reason).increment();
  }

  public void cacheHit() {
    cacheHits.increment();
  }

  public void cacheMiss() {
    cacheMisses.increment();
  }

  public void upstreamFetched(long bytes) {
    upstreamBytes.record(bytes);
  }

  public void upstreamFailed() {
    upstreamFailures.increment();
  }

  public void served(long bytes) {
    servedBytes.record(bytes);
  }

  /**
   * Registers the counter of artifact bytes read from local files in place of the runner. Micrometer holds the state
   * object weakly, so it is the counter itself, which its owner keeps.
   */
  public void localBytes(java.util.concurrent.atomic.AtomicLong bytes) {
    io.micrometer.core.instrument.FunctionCounter.builder(MetricNames.LOCAL_BYTES, bytes,
            java.util.concurrent.atomic.AtomicLong::doubleValue)
        .baseUnit("bytes").description("Artifact bytes read in place from staged files instead of the runner")
        .register(registry);
  }

  /** Registers the cache size gauge (bytes) read from {@code bytes}. */
  public void cacheSize(LongSupplier bytes) {
    // Strong: the supplier is usually a method reference nothing else holds, and Micrometer holds gauge state weakly.
    Gauge.builder(MetricNames.CACHE_SIZE, bytes, b -> (double) b.getAsLong()).strongReference(true).baseUnit("bytes")
        .description("Bytes held by the artifact cache").register(registry);
  }
}
