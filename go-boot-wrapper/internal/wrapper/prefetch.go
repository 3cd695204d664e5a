package wrapper

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"recycler.dev/go-boot-wrapper/internal/artifactcache"
	"recycler.dev/go-boot-wrapper/internal/attach"
	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
)

// PrefetchQueue is how many Prefetch instructions may wait behind the one being fetched; one more is declined.
const PrefetchQueue = 8

// prefetcher serves one session's Prefetch instructions: one fetch at a time, on its own goroutine, so a prefetch never
// delays the session's Lease, Exit or Ping. A Lease that needs the digest being prefetched waits for that fetch in its
// boot (the cache's fetch claim), not here.
//
// Lifecycle: started with the session; stop cancels the fetch in flight and drops the queue without answering (the
// stream is gone, or the wrapper is stopping), and returns once the goroutine has ended, so no admission is left
// running (a cancelled admission deletes its temp file before it returns).
type prefetcher struct {
	w      *Wrapper
	s      *attach.Session
	queue  chan queuedPrefetch
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// queuedPrefetch is a Prefetch and when its ticket stops being good: ticket_ttl_millis after it arrived (0: no limit
// was given).
type queuedPrefetch struct {
	m        *recyclerpb.Prefetch
	deadline time.Time
}

func (w *Wrapper) startPrefetcher(s *attach.Session) *prefetcher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &prefetcher{w: w, s: s, queue: make(chan queuedPrefetch, PrefetchQueue), ctx: ctx, cancel: cancel,
		done: make(chan struct{})}
	go p.run()
	return p
}

// offer queues m, or declines it at once when PrefetchQueue instructions are already waiting. Never blocks.
func (p *prefetcher) offer(m *recyclerpb.Prefetch) {
	q := queuedPrefetch{m: m}
	if ttl := m.GetTicketTtlMillis(); ttl > 0 {
		q.deadline = time.Now().Add(time.Duration(ttl) * time.Millisecond)
	}
	select {
	case p.queue <- q:
	default:
		msg := fmt.Sprintf("declined: %d prefetches already wait behind the one being fetched; ask again later", PrefetchQueue)
		p.w.log.Warn("prefetch", "digest", m.GetDigest(), "bytes", 0, "took", time.Duration(0), "outcome", "declined", "error", msg)
		p.answer(m.GetDigest(), false, msg)
	}
}

// stop cancels the prefetch in flight, answers nothing more and waits for the goroutine to end. Idempotent.
func (p *prefetcher) stop() {
	p.cancel()
	<-p.done
}

func (p *prefetcher) run() {
	defer close(p.done)
	for {
		select {
		case <-p.ctx.Done():
			return
		case q := <-p.queue:
			if !q.deadline.IsZero() && !time.Now().Before(q.deadline) {
				// The recycler would refuse the ticket: say so instead of calling with it.
				msg := fmt.Sprintf("declined: its ticket expired (ticket_ttl_millis=%d) while earlier prefetches ran;"+
					" a lease that needs the binary fetches it", q.m.GetTicketTtlMillis())
				p.w.log.Warn("prefetch", "digest", q.m.GetDigest(), "bytes", 0, "took", time.Duration(0), "outcome", "expired", "error", msg)
				p.answer(q.m.GetDigest(), false, msg)
				continue
			}
			p.handle(q.m)
		}
	}
}

// handle runs one prefetch and answers it, unless the prefetcher was stopped meanwhile. One log line each.
func (p *prefetcher) handle(m *recyclerpb.Prefetch) {
	start := time.Now()
	n, held, err := p.w.booter.Prefetch(p.ctx, m.GetDigest(), m.GetSize(), m.GetTicket())
	took := time.Since(start).Round(time.Millisecond)
	args := []any{"digest", m.GetDigest(), "bytes", n, "took", took}
	switch {
	case err == nil && held:
		p.w.log.Info("prefetch", append(args, "outcome", "already_held")...)
	case err == nil:
		p.w.log.Info("prefetch", append(args, "outcome", "fetched")...)
		p.settleLater(strings.TrimPrefix(m.GetDigest(), artifactcache.DigestPrefix))
	case p.ctx.Err() != nil:
		p.w.log.Info("prefetch", append(args, "outcome", "cancelled")...)
	default:
		p.w.log.Warn("prefetch", append(args, "outcome", "failed", "error", err)...)
	}
	if p.ctx.Err() != nil {
		return // the stream is gone or the wrapper is stopping: nobody to answer
	}
	msg := ""
	if err != nil {
		msg = err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			msg += "; the wrapper's artifact timeout ended it"
		}
	}
	p.answer(m.GetDigest(), err == nil, msg)
}

// SettleDelay is how long after a prefetch the wrapper re-verifies what it admitted: just past the cache's racy window.
const SettleDelay = artifactcache.RacyWindow + 250*time.Millisecond

// settleLater re-verifies hexDigest once its file's last change is older than the cache's racy window. An admission
// made while a worker of the slot could reach the cache (a standby worker, typically, between leases) is hashed again
// at its next use; done here, in the background while the slot is idle, that hash no longer lands on the next lease's
// path, and the entry is trusted on its fingerprint from then on (any later change moves its ctime). A no-op for an
// entry admitted while nothing could reach the cache, and after the prefetcher stopped.
func (p *prefetcher) settleLater(hexDigest string) {
	time.AfterFunc(SettleDelay, func() {
		if p.ctx.Err() != nil {
			return
		}
		if _, err := p.w.cache.Verify(hexDigest); err != nil {
			p.w.log.Warn("prefetched artifact changed before its first use; it is fetched again when needed",
				"digest", artifactcache.DigestPrefix+hexDigest, "error", err)
		}
	})
}

// answer sends Prefetched with the cache's digests as they are now. ok is reported only if the digest is among them
// (an eviction may have come between the fetch and the answer).
func (p *prefetcher) answer(digest string, ok bool, msg string) {
	p.w.reportMu.Lock()
	defer p.w.reportMu.Unlock()
	held := p.w.cache.Digests()
	if ok && !slices.Contains(held, digest) {
		ok, msg = false, "fetched, but evicted from the local cache (--cache_max_mb) before this answer"
	}
	err := p.s.Send(&recyclerpb.WrapperMessage{Kind: &recyclerpb.WrapperMessage_Prefetched{Prefetched: &recyclerpb.Prefetched{
		Digest: digest, Ok: ok, Message: msg, HeldDigests: held}}})
	if err != nil {
		p.w.log.Warn("cannot report prefetch", "digest", digest, "error", err)
	}
}
