package dev.recycler.core.metrics;

/** Every meter name and tag key of the recycler, in one place. Tag values come only from enum names and fixed words. */
public final class MetricNames {
  /** Gauge: slots currently in each state; tag {@link #STATE}. */
  public static final String SLOTS = "recycler.slots";
  /** Counter: slot state transitions; tag {@link #STATE} (the new state). */
  public static final String SLOT_TRANSITIONS = "recycler.slot.transitions";
  /** Timer: StartWorker call until a slot was assigned (queueing). */
  public static final String LEASE_WAIT = "recycler.lease.wait";
  /** Timer: StartWorker call until the inner worker's control connection (lease-to-ready). */
  public static final String LEASE_READY = "recycler.lease.ready";
  /** Timer: exit instruction until the wrapper reported the lease ended (slot reusable). */
  public static final String LEASE_DRAIN = "recycler.lease.drain";
  /** Counter: ended leases; tag {@link #REASON}. */
  public static final String LEASE_ENDS = "recycler.lease.ends";
  /** Counter: StartWorker calls refused or failed; tag {@link #REASON}. */
  public static final String START_FAILURES = "recycler.start.failures";
  /** Counter: artifact lookups answered from the cache. */
  public static final String CACHE_HITS = "recycler.artifact.cache.hits";
  /** Counter: artifact lookups that had to fetch from the runner. */
  public static final String CACHE_MISSES = "recycler.artifact.cache.misses";
  /** Gauge: bytes held by the artifact cache. */
  public static final String CACHE_SIZE = "recycler.artifact.cache.size";
  /** Distribution (bytes): artifacts fetched from the runner. */
  public static final String UPSTREAM_BYTES = "recycler.artifact.upstream";
  /** Function counter (bytes): read in place from staged files (hashing, copying into the cache), not from the runner. */
  public static final String LOCAL_BYTES = "recycler.artifact.local.read";
  /**
   * Counter: staged files identified in place (compared with the cached content their probe matches, or hashed); tag
   * {@link #WHEN}: {@code STAGING} (in the background as the job server wrote them, ahead of any lease) or {@code
   * LEASE} (on a lease's path, because no staging-time digest was ready). The name predates the comparison.
   */
  public static final String LOCAL_HASHES = "recycler.artifact.local.hashes";
  /** Distribution (bytes): artifacts served to wrappers. */
  public static final String SERVED_BYTES = "recycler.artifact.served";
  /** Counter: upstream artifact fetches that failed (truncated, digest mismatch, unreachable). */
  public static final String UPSTREAM_FAILURES = "recycler.artifact.upstream.failures";

  /** Counter: worker log entries by route (to the runner, or kept in the recycler's own log). */
  public static final String WORKER_LOG_ENTRIES = "recycler.worker.log.entries";
  public static final String STATE = "state";
  public static final String REASON = "reason";
  public static final String ROUTE = "route";
  /**
   * Counter: prefetches, worker binaries sent to idle slots' wrappers as soon as a job staged them; tag {@link
   * #OUTCOME}: {@code SENT} (asked), {@code FETCHED} (the wrapper holds it now), {@code FAILED} (it does not).
   */
  public static final String PREFETCHES = "recycler.artifact.prefetches";
  /**
   * Counter: standby workers (the same job's worker started when its lease ended, for the job's next lease on the
   * slot); tag {@link #OUTCOME}: {@code OFFERED}, {@code ADOPTED} (a lease took it over), {@code DROPPED} (the slot
   * went to another job, its time to live ran out, or its wrapper detached), {@code ENDED} (the wrapper declined it or
   * it exited on its own), {@code SKIPPED} (not offered: its job's first lease, while few recent jobs had a second).
   */
  public static final String STANDBYS = "recycler.standby.workers";
  /**
   * Counter: speculative starts, a new job's worker started from the digest its binary's probe matched while the
   * content is compared; tag {@link #OUTCOME}: {@code STARTED}, {@code ADOPTED} (verified, the lease took it over),
   * {@code MISMATCHED} (the content differed: stopped unused), {@code DROPPED}, {@code ENDED}, {@code NO_SLOT} (no
   * idle slot's wrapper holds the probed content).
   */
  public static final String SPECULATIVE_STARTS = "recycler.speculative.starts";
  /** Tag of {@link #PREFETCHES}, {@link #STANDBYS} and {@link #SPECULATIVE_STARTS}. */
  public static final String OUTCOME = "outcome";
  /** Tag of {@link #LOCAL_HASHES}: when the hash was done. */
  public static final String WHEN = "when";

  private MetricNames() {}
}
