package wrapper

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"recycler.dev/go-boot-wrapper/internal/fakerecycler"
	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
	"recycler.dev/go-boot-wrapper/internal/testhelper"
)

// cacheFiles lists the slot-0 cache directory of workDir: entries and unfinished admissions (".incoming-*").
func cacheFiles(t *testing.T, workDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(workDir, "cache", "slot-0", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func hasIncoming(names []string) bool {
	return slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, ".incoming-") })
}

// waitFor fails the test unless ch is closed within fakerecycler.Wait.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(fakerecycler.Wait):
		t.Fatalf("%s did not happen within %v", what, fakerecycler.Wait)
	}
}

// prefetchLine matches the one log line a prefetch leaves.
func prefetchLine(digest, outcome string) *regexp.Regexp {
	return regexp.MustCompile(`msg=prefetch slot=slot-0 digest=` + regexp.QuoteMeta(digest) + ` bytes=\d+ took=\S+ outcome=` + outcome)
}

// TestPrefetch: the wrapper fetches a prefetched binary with the ticket (and no lease metadata: the fake refuses and
// records anything else), reports it held, logs one line without the ticket, and the job's lease then finds it in the
// cache and fetches nothing.
func TestPrefetch(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	workDir := t.TempDir()
	h := startWrapper(t, f, workDir)
	art := workerArtifact(t, testhelper.ModeExit, t.TempDir())
	f.Stage(art)
	s := f.NextSession(t)
	digest := "sha256:" + art.Digest()

	ticket := f.Prefetch(s, art)
	p := s.ExpectPrefetched(t, digest)
	if !p.GetOk() || p.GetMessage() != "" || !slices.Equal(p.GetHeldDigests(), []string{digest}) {
		t.Errorf("Prefetched = %v, want ok holding exactly %s", p, digest)
	}
	if n, m := f.Calls(fakerecycler.MethodPrefetchArtifact), f.Calls(fakerecycler.MethodGetArtifact); n != 1 || m != 0 {
		t.Errorf("GetArtifact calls: %d with a ticket, %d with lease metadata; want 1 and 0", n, m)
	}
	st, err := os.Stat(filepath.Join(workDir, "cache", "slot-0", "sha256", art.Digest()))
	if err != nil || st.Mode().Perm() != 0o555 || st.Size() != int64(len(art.Content)) {
		t.Errorf("cache entry after prefetch: %v (%v); want the content, read-only", st, err)
	}
	logs := h.logs.String()
	if !prefetchLine(digest, "fetched").MatchString(logs) || strings.Contains(logs, ticket) {
		t.Errorf("want one prefetch line (digest, bytes, took, outcome=fetched) and never the ticket:\n%s", logs)
	}

	info := f.ProvisionInfo(nil)
	f.LeasePrepared(s, 1, "slot-0.g1", info, f.Prepared(info))
	s.ExpectStarted(t, 1)
	if e := s.ExpectEnded(t, 1); e.GetOutcome() != recyclerpb.Outcome_OUTCOME_WORKER_EXITED {
		t.Errorf("lease ended %v, want WORKER_EXITED", e)
	}
	if n := f.Fetches(art.Digest()); n != 1 {
		t.Errorf("binary fetched %d times (prefetch and lease), want 1", n)
	}
}

// TestPrefetchAlreadyHeld: a digest the cache holds (verified) is answered ok at once, without a GetArtifact.
func TestPrefetchAlreadyHeld(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	h := startWrapper(t, f, t.TempDir())
	art := workerArtifact(t, testhelper.ModeExit, t.TempDir())
	f.Stage(art)
	s := f.NextSession(t)
	f.Lease(s, 1, "w", f.ProvisionInfo(nil)) // the lease fetches it
	s.ExpectStarted(t, 1)
	s.ExpectEnded(t, 1)

	f.Prefetch(s, art)
	p := s.ExpectPrefetched(t, "sha256:"+art.Digest())
	if !p.GetOk() || !slices.Contains(p.GetHeldDigests(), "sha256:"+art.Digest()) {
		t.Errorf("Prefetched = %v, want ok", p)
	}
	if n := f.Calls(fakerecycler.MethodPrefetchArtifact); n != 0 {
		t.Errorf("prefetch of a held digest made %d GetArtifact calls, want 0", n)
	}
	if !prefetchLine("sha256:"+art.Digest(), "already_held").MatchString(h.logs.String()) {
		t.Errorf("no prefetch line with outcome=already_held:\n%s", h.logs.String())
	}
}

// TestPrefetchFailures: whatever goes wrong, the answer is ok=false with a message naming it, nothing enters the
// cache (no entry, no temp file), and the job's lease then fetches the binary itself.
func TestPrefetchFailures(t *testing.T) {
	tests := []struct {
		name    string
		mode    fakerecycler.ArtifactMode
		send    func(f *fakerecycler.Fake, s *fakerecycler.Session, art fakerecycler.Artifact) // nil: f.Prefetch
		wantMsg string
		fetches int // GetArtifact calls the prefetch makes
	}{
		{name: "corrupt content", mode: fakerecycler.Corrupt, wantMsg: "sha256 mismatch", fetches: 1},
		{name: "truncated stream", mode: fakerecycler.Truncate, wantMsg: "size mismatch", fetches: 1},
		{name: "stream breaks", mode: fakerecycler.FailStream, wantMsg: "stream broke", fetches: 1},
		{name: "size differs from the announced size", wantMsg: "size mismatch", fetches: 1,
			send: func(f *fakerecycler.Fake, s *fakerecycler.Session, art fakerecycler.Artifact) {
				sendPrefetch(s, "sha256:"+art.Digest(), int64(len(art.Content))+1, f.IssueTicket("slot-0", art.Digest()))
			}},
		{name: "wrong ticket", wantMsg: "PermissionDenied", fetches: 1,
			send: func(f *fakerecycler.Fake, s *fakerecycler.Session, art fakerecycler.Artifact) {
				sendPrefetch(s, "sha256:"+art.Digest(), int64(len(art.Content)), strings.Repeat("ab", 16))
			}},
		{name: "ticket of another digest", wantMsg: "PermissionDenied", fetches: 1,
			send: func(f *fakerecycler.Fake, s *fakerecycler.Session, art fakerecycler.Artifact) {
				sendPrefetch(s, "sha256:"+art.Digest(), int64(len(art.Content)), f.IssueTicket("slot-0", strings.Repeat("0", 64)))
			}},
		{name: "malformed digest", wantMsg: "not sha256:<64 lowercase hex>", fetches: 0,
			send: func(f *fakerecycler.Fake, s *fakerecycler.Session, art fakerecycler.Artifact) {
				sendPrefetch(s, "sha256:"+strings.ToUpper(art.Digest()), int64(len(art.Content)), f.IssueTicket("slot-0", art.Digest()))
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-0")
			workDir := t.TempDir()
			h := startWrapper(t, f, workDir)
			art := workerArtifact(t, testhelper.ModeExit, t.TempDir())
			bad := art
			bad.Mode = tt.mode
			f.Stage(bad)
			s := f.NextSession(t)

			send := tt.send
			if send == nil {
				send = func(f *fakerecycler.Fake, s *fakerecycler.Session, art fakerecycler.Artifact) { f.Prefetch(s, art) }
			}
			send(f, s, art)
			m := s.Next(t)
			p := m.GetPrefetched()
			if p == nil || p.GetOk() || !strings.Contains(p.GetMessage(), tt.wantMsg) || len(p.GetHeldDigests()) != 0 {
				t.Errorf("got %v, want Prefetched ok=false, a message containing %q and nothing held", m, tt.wantMsg)
			}
			if n := f.Calls(fakerecycler.MethodPrefetchArtifact); n != tt.fetches {
				t.Errorf("prefetch made %d GetArtifact calls, want %d", n, tt.fetches)
			}
			if files := cacheFiles(t, workDir); len(files) != 0 {
				t.Errorf("a failed prefetch left %v in the cache", files)
			}
			if !prefetchLine(p.GetDigest(), "failed").MatchString(h.logs.String()) {
				t.Errorf("no prefetch line with outcome=failed:\n%s", h.logs.String())
			}
			if secret := regexp.MustCompile(`\b[0-9a-f]{32}\b`).FindString(h.logs.String()); secret != "" {
				t.Errorf("the log holds a ticket-like secret %s:\n%s", secret, h.logs.String())
			}

			f.Stage(art)
			f.Lease(s, 1, "w", f.ProvisionInfo(nil))
			s.ExpectStarted(t, 1)
			s.ExpectEnded(t, 1)
			if n := f.Calls(fakerecycler.MethodGetArtifact); n != 1 {
				t.Errorf("the lease made %d GetArtifact calls after the failed prefetch, want 1", n)
			}
		})
	}
}

func sendPrefetch(s *fakerecycler.Session, digest string, size int64, ticket string) {
	s.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Prefetch{Prefetch: &recyclerpb.Prefetch{
		Digest: digest, Size: size, Ticket: ticket, TicketTtlMillis: fakerecycler.TicketTTL.Milliseconds()}}})
}

// leaseWaitingForPrefetch starts a wrapper, has it prefetch a binary whose stream the fake holds mid-way, and sends
// the Lease (generation 1) that needs that binary; it returns once the lease's boot has found the prefetch in flight.
func leaseWaitingForPrefetch(t *testing.T) (*fakerecycler.Fake, *fakerecycler.Session, fakerecycler.Artifact, *fakerecycler.Hold) {
	t.Helper()
	f := fakerecycler.Start(t, "slot-0")
	h := startWrapper(t, f, t.TempDir())
	art := workerArtifact(t, testhelper.ModeExit, t.TempDir())
	f.Stage(art)
	s := f.NextSession(t)
	hold := f.HoldArtifact(t, art.Digest())

	f.Prefetch(s, art)
	waitFor(t, hold.Reached(), "the prefetch's GetArtifact")
	info := f.ProvisionInfo(nil)
	f.LeasePrepared(s, 1, "w", info, f.Prepared(info))
	testhelper.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(h.logs.String(), "waiting for the fetch of this artifact already in progress")
	}, "the lease did not find the prefetch in flight")
	return f, s, art, hold
}

// TestLeaseWaitsForPrefetchInFlight: a Lease that needs the digest being prefetched waits for that fetch and makes no
// GetArtifact of its own.
func TestLeaseWaitsForPrefetchInFlight(t *testing.T) {
	f, s, art, hold := leaseWaitingForPrefetch(t)
	hold.Release()

	// The prefetch's answer and the lease's start race each other; both must come.
	var started bool
	var prefetched *recyclerpb.Prefetched
	for range 2 {
		m := s.Next(t)
		switch {
		case m.GetWorkerStarted().GetGeneration() == 1:
			started = true
		case m.GetPrefetched() != nil:
			prefetched = m.GetPrefetched()
		default:
			t.Fatalf("unexpected %v", m)
		}
	}
	if !started || !prefetched.GetOk() {
		t.Errorf("started %v, prefetched %v; want the worker started and the prefetch ok", started, prefetched)
	}
	s.ExpectEnded(t, 1)
	if n, m := f.Fetches(art.Digest()), f.Calls(fakerecycler.MethodGetArtifact); n != 1 || m != 0 {
		t.Errorf("binary fetched %d times, %d of them by the lease; want 1 and 0", n, m)
	}
}

// TestExitWhileLeaseWaitsForPrefetch: the wait for a prefetch is part of the boot, so Exit aborts it at once; the
// prefetch itself goes on and is answered.
func TestExitWhileLeaseWaitsForPrefetch(t *testing.T) {
	f, s, art, hold := leaseWaitingForPrefetch(t)
	s.Exit(1)
	if e := s.ExpectEnded(t, 1); e.GetOutcome() != recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION {
		t.Errorf("lease ended %v, want EXITED_ON_INSTRUCTION", e)
	}
	hold.Release()
	if p := s.ExpectPrefetched(t, "sha256:"+art.Digest()); !p.GetOk() {
		t.Errorf("Prefetched = %v, want ok", p)
	}
	if n := f.Calls(fakerecycler.MethodGetArtifact); n != 0 {
		t.Errorf("the aborted lease made %d GetArtifact calls, want 0", n)
	}
}

// TestPrefetchNeverDelaysALease: while a prefetch is held mid-stream, Ping is answered and a lease of another binary
// boots, runs and ends; the prefetch is answered once released.
func TestPrefetchNeverDelaysALease(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	startWrapper(t, f, t.TempDir())
	next := workerArtifact(t, testhelper.ModeExit, t.TempDir()) // the next job's binary, being prefetched
	cur := workerArtifact(t, testhelper.ModeHang, t.TempDir())  // the binary of the job leasing now
	s := f.NextSession(t)
	hold := f.HoldArtifact(t, next.Digest())

	f.Stage(next)
	f.Prefetch(s, next)
	waitFor(t, hold.Reached(), "the prefetch's GetArtifact")
	s.Ping(7)
	if m := s.Next(t); m.GetPong().GetNonce() != 7 {
		t.Fatalf("expected Pong{7} during a prefetch, got %v", m)
	}
	f.Stage(cur)
	f.Lease(s, 1, "w", f.ProvisionInfo(nil))
	s.ExpectStarted(t, 1)
	s.Exit(1)
	s.ExpectEnded(t, 1)

	f.Stage(next)
	hold.Release()
	if p := s.ExpectPrefetched(t, "sha256:"+next.Digest()); !p.GetOk() ||
		!slices.Contains(p.GetHeldDigests(), "sha256:"+cur.Digest()) {
		t.Errorf("Prefetched = %v, want ok, holding both binaries", p)
	}
}

// prefetchBehindHeldFetch starts a wrapper, stages PrefetchQueue+2 binaries and prefetches the first, whose fetch the
// fake holds mid-way: what is prefetched next waits in the queue until the test releases the hold.
func prefetchBehindHeldFetch(t *testing.T) (*fakerecycler.Fake, *fakerecycler.Session, []fakerecycler.Artifact, *fakerecycler.Hold) {
	f := fakerecycler.Start(t, "slot-0")
	startWrapper(t, f, t.TempDir())
	arts := make([]fakerecycler.Artifact, PrefetchQueue+2)
	for i := range arts {
		arts[i] = workerArtifact(t, testhelper.ModeExit, t.TempDir())
	}
	f.Stage(arts...)
	s := f.NextSession(t)
	hold := f.HoldArtifact(t, arts[0].Digest())
	f.Prefetch(s, arts[0])
	waitFor(t, hold.Reached(), "the first prefetch's GetArtifact")
	return f, s, arts, hold
}

// TestPrefetchQueue: one fetch at a time; PrefetchQueue more wait and are answered in order; one beyond that is
// declined at once with a message saying why.
func TestPrefetchQueue(t *testing.T) {
	f, s, arts, hold := prefetchBehindHeldFetch(t)
	for _, a := range arts[1:] {
		f.Prefetch(s, a)
	}
	last := arts[len(arts)-1]
	if p := s.ExpectPrefetched(t, "sha256:"+last.Digest()); p.GetOk() || !strings.Contains(p.GetMessage(), fmt.Sprintf("%d prefetches already wait", PrefetchQueue)) {
		t.Errorf("Prefetched = %v, want declined because the queue is full", p)
	}
	hold.Release()
	for _, a := range arts[:len(arts)-1] {
		if p := s.ExpectPrefetched(t, "sha256:"+a.Digest()); !p.GetOk() {
			t.Errorf("Prefetched = %v, want ok", p)
		}
	}
	if n := f.MaxStreaming(); n != 1 {
		t.Errorf("up to %d GetArtifact calls at once, want 1", n)
	}
}

// TestPrefetchCancelled: a prefetch in flight when the wrapper stops or loses its stream is cancelled: no answer, no
// temp file left in the cache, no goroutine of it left, and the recycler's stream is released.
func TestPrefetchCancelled(t *testing.T) {
	for _, stop := range []string{"wrapper stops", "stream lost"} {
		t.Run(stop, func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-0")
			workDir := t.TempDir()
			h := startWrapper(t, f, workDir)
			art := workerArtifact(t, testhelper.ModeExit, t.TempDir())
			art.Content = append(art.Content, make([]byte, 1<<20)...) // the admission holds half a MiB when cancelled
			f.Stage(art)
			s := f.NextSession(t)
			hold := f.HoldArtifact(t, art.Digest())
			f.Prefetch(s, art)
			waitFor(t, hold.Reached(), "the prefetch's GetArtifact")
			testhelper.Eventually(t, 10*time.Second, func() bool { return hasIncoming(cacheFiles(t, workDir)) },
				"the prefetch's admission never started")

			if stop == "wrapper stops" {
				h.stop() // Run returns only after serve has waited for the prefetcher
			} else {
				s.Break()
				f.NextSession(t) // the old session's prefetcher has ended before the wrapper re-attaches
			}
			if files := cacheFiles(t, workDir); len(files) != 0 {
				t.Errorf("a cancelled prefetch left %v in the cache", files)
			}
			// No fetch is left running; after a stop no prefetcher at all, after a re-attach at most the new session's
			// (idle) one.
			stack := allStacks()
			if strings.Contains(stack, "(*prefetcher).handle") || strings.Contains(stack, "(*Booter).Prefetch") {
				t.Errorf("a prefetch outlived its session:\n%s", stack)
			}
			// A stopped prefetcher's goroutine may still be returning from run after it closed done.
			limit := map[string]int{"wrapper stops": 0, "stream lost": 1}[stop]
			testhelper.Eventually(t, 10*time.Second, func() bool { return strings.Count(allStacks(), "(*prefetcher).run") <= limit },
				"more than %d prefetcher goroutines left:\n%s", limit, allStacks())
			if stop == "wrapper stops" {
				waitFor(t, s.Ended(), "the end of the attach stream")
			}
			testhelper.Eventually(t, 10*time.Second, func() bool { return f.StreamingNow() == 0 },
				"the held GetArtifact was not cancelled")
			for _, m := range s.Received() {
				if m.GetPrefetched() != nil {
					t.Errorf("a cancelled prefetch was answered: %v", m)
				}
			}
			if !prefetchLine("sha256:"+art.Digest(), "cancelled").MatchString(h.logs.String()) {
				t.Errorf("no prefetch line with outcome=cancelled:\n%s", h.logs.String())
			}
		})
	}
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// TestPrefetchTicketExpiredInQueue: a Prefetch whose ticket ran out while it waited behind another is declined
// without a call (the recycler would refuse the ticket), and says why; the others in the queue are fetched.
func TestPrefetchTicketExpiredInQueue(t *testing.T) {
	f, s, arts, hold := prefetchBehindHeldFetch(t)

	late := arts[1]
	s.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Prefetch{Prefetch: &recyclerpb.Prefetch{
		Digest: "sha256:" + late.Digest(), Size: int64(len(late.Content)),
		Ticket: f.IssueTicket("slot-0", late.Digest()), TicketTtlMillis: 1}}})
	for _, a := range arts[2:] {
		f.Prefetch(s, a)
	}
	// The last one finds the queue full and is declined at once: every earlier Prefetch has been queued by then.
	s.ExpectPrefetched(t, "sha256:"+arts[len(arts)-1].Digest())
	queued := time.Now()
	testhelper.Eventually(t, time.Second, func() bool { return time.Since(queued) > 2*time.Millisecond },
		"the clock did not move")
	hold.Release()

	if p := s.ExpectPrefetched(t, "sha256:"+arts[0].Digest()); !p.GetOk() {
		t.Errorf("first Prefetched = %v, want ok", p)
	}
	if p := s.ExpectPrefetched(t, "sha256:"+late.Digest()); p.GetOk() || !strings.Contains(p.GetMessage(), "ticket expired") {
		t.Errorf("late Prefetched = %v, want declined because its ticket expired", p)
	}
	for _, a := range arts[2 : len(arts)-1] {
		if p := s.ExpectPrefetched(t, "sha256:"+a.Digest()); !p.GetOk() {
			t.Errorf("Prefetched = %v, want ok", p)
		}
	}
	if n := f.Fetches(late.Digest()); n != 0 {
		t.Errorf("%d GetArtifact calls for the expired prefetch, want 0", n)
	}
}
