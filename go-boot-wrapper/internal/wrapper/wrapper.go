// Package wrapper is the per-slot loop: attach, serve leases one at a time (boot, start, supervise, stop, report),
// start standby workers between leases, and re-attach whenever the stream breaks.
//
// Concurrency: Run's goroutine owns the session and the slot's current run: one lease, or one standby (a worker
// started ahead of its lease, standby.go), never both. Every run has its own goroutine and leaves its report (LeaseEnded
// or StandbyEnded) for serve to send once it is done. Run never blocks on a run except to wait for it to finish
// stopping, so Lease and Exit keep flowing while a worker boots or stops, and Ping is answered by the session's own
// receive goroutine. A Lease that adopts the standby turns the standby's run into the lease's; a Lease that does not
// (or one that finds the standby dead) waits in the standby's run (leaseRun.next) until it is gone and reported, and
// then boots. Prefetch instructions go to the session's prefetcher (prefetch.go), which fetches on a goroutine of its
// own; reports that carry the cache's digests (LeaseEnded, Prefetched) take them and are sent under reportMu, so the
// recycler receives them in the order they were taken.
//
// Failure handling: a broken stream stops the running worker (a lease's with the full exit sequence, a standby's with
// SIGKILL) before re-attaching, because the recycler has given the slot up and the worker's job can no longer be served correctly; no
// LeaseEnded or StandbyEnded is sent for it (the recycler ended it when it lost us). The wrapper never exits because of
// the recycler.
package wrapper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"recycler.dev/go-boot-wrapper/internal/artifactcache"
	"recycler.dev/go-boot-wrapper/internal/attach"
	"recycler.dev/go-boot-wrapper/internal/boot"
	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
	"recycler.dev/go-boot-wrapper/internal/supervisor"
)

// Config configures one slot's wrapper.
type Config struct {
	SlotID           string
	RecyclerEndpoint string
	WorkDir          string
	GracePeriod      time.Duration
	PassEnv          []string
	Version          string
	// AttachSecret is presented on every Attach ("": none). A secret: never log it.
	AttachSecret string
	// CacheMaxBytes bounds the local artifact cache after each lease (least recently used evicted first); 0: no bound.
	CacheMaxBytes int64
	// MinBackoff and MaxBackoff bound the re-attach delay and the pause between attempts to delete a lease directory
	// (defaults 100ms and 5s).
	MinBackoff, MaxBackoff time.Duration
	// Stdout and Stderr receive the workers' output (nil: /dev/null).
	Stdout, Stderr *os.File
	// Getenv reads the wrapper's environment for the workers' allow-list (os.Getenv when nil).
	Getenv func(string) string
	// Worker, when set, is the user the workers run as instead of the wrapper's (which must then be root): they can
	// neither change the cache nor reach the wrapper's files; see README.md ("Artifact integrity").
	Worker *boot.User
	// RemoveAll deletes a lease directory (os.RemoveAll when nil): the file-system seam tests script to get a
	// directory that cannot be deleted, which root, who runs the tests, otherwise rarely meets.
	RemoveAll func(string) error
}

// Wrapper holds one slot.
type Wrapper struct {
	cfg      Config
	log      *slog.Logger
	conn     *grpc.ClientConn
	cache    *artifactcache.Cache
	booter   *boot.Booter
	sup      *supervisor.Supervisor
	attacher *attach.Attacher

	// reportMu makes taking the cache's digests and sending them one step (see the package comment).
	reportMu sync.Mutex
}

// New claims the work directory (see claimWorkDir: a foreign one is refused with ErrForeignWorkDir), removes the lease
// directories a previous wrapper of this slot left behind, opens the slot's artifact cache and creates the (lazy)
// client connection to the recycler. Close releases the connection.
func New(cfg Config, sup *supervisor.Supervisor, log *slog.Logger) (*Wrapper, error) {
	if cfg.SlotID == "" || cfg.RecyclerEndpoint == "" || cfg.WorkDir == "" {
		return nil, errors.New("slot id, recycler endpoint and work dir are required")
	}
	log = log.With("slot", cfg.SlotID)
	if cfg.RemoveAll == nil {
		cfg.RemoveAll = os.RemoveAll
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, 5*time.Second)
	}
	// Our directories are private; with a worker user they are also traversable (not listable) by it, so it reaches
	// its lease directory and the read-only cache files its lease links to.
	dirMode := os.FileMode(0o700)
	if cfg.Worker != nil {
		if err := checkWorkerUser(*cfg.Worker); err != nil {
			return nil, err
		}
		dirMode = 0o711
	}
	// Several wrappers (slots) may share one work dir: each touches only its own lease directories and cache.
	if err := claimWorkDir(cfg.WorkDir, dirMode); err != nil {
		return nil, err
	}
	if cfg.Worker != nil {
		if err := reachable(cfg.WorkDir, *cfg.Worker); err != nil {
			return nil, err
		}
	}
	leases := filepath.Join(cfg.WorkDir, "leases")
	for _, d := range []string{leases, filepath.Join(cfg.WorkDir, "cache")} {
		// Exact, also when an older wrapper created it 0755.
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
		if err := os.Chmod(d, dirMode); err != nil {
			return nil, fmt.Errorf("chmod %s: %w", d, err)
		}
	}
	removeStaleLeaseDirs(leases, cfg.SlotID, cfg.RemoveAll, log)
	cache, err := artifactcache.OpenMode(filepath.Join(cfg.WorkDir, "cache", boot.SafeName(cfg.SlotID)), dirMode, log)
	if err != nil {
		return nil, err
	}
	// gRPC's own reconnect backoff grows to 2 minutes; cap it near ours so a restarted recycler is found quickly.
	conn, err := grpc.NewClient(cfg.RecyclerEndpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}))
	if err != nil {
		return nil, fmt.Errorf("recycler endpoint %q: %w", cfg.RecyclerEndpoint, err)
	}
	w := &Wrapper{cfg: cfg, log: log, conn: conn, cache: cache, sup: sup}
	w.booter = boot.New(boot.Config{
		SlotID:           cfg.SlotID,
		RecyclerEndpoint: cfg.RecyclerEndpoint,
		LeasesDir:        leases,
		PassEnv:          cfg.PassEnv,
		Getenv:           cfg.Getenv,
		Stdout:           cfg.Stdout,
		Stderr:           cfg.Stderr,
		Worker:           cfg.Worker,
	}, conn, cache)
	w.attacher = attach.NewAttacher(conn, attach.Config{
		SlotID:        cfg.SlotID,
		IncarnationID: attach.NewIncarnationID(),
		Version:       cfg.Version,
		Pid:           int64(os.Getpid()),
		HeldDigests:   cache.Digests,
		AttachSecret:  cfg.AttachSecret,
		MinBackoff:    cfg.MinBackoff,
		MaxBackoff:    cfg.MaxBackoff,
	}, log)
	return w, nil
}

// removeStaleLeaseDirs deletes what a previous wrapper of this slot left behind (it may have been killed mid-lease):
// the directories named like this slot's lease directories, nothing else. One that cannot be deleted is logged and
// left: it belongs to no lease the recycler knows (should a lease get the same generation, its boot cannot clear the
// directory and the lease waits for it as for its own directory, see removeLeaseDir).
func removeStaleLeaseDirs(leases, slotID string, removeAll func(string) error, log *slog.Logger) {
	entries, err := os.ReadDir(leases)
	if err != nil {
		log.Warn("cannot list stale lease directories", "dir", leases, "error", err)
		return
	}
	prefix := boot.LeaseDirPrefix(slotID)
	for _, e := range entries {
		// "<slot>-g<digits>" exactly: slot "a" must not take slot "a-g1"'s directories for its own.
		gen, ok := strings.CutPrefix(e.Name(), prefix)
		if ok && e.IsDir() && gen != "" && strings.Trim(gen, "0123456789") == "" {
			if err := removeAll(filepath.Join(leases, e.Name())); err != nil {
				log.Warn("cannot delete stale lease directory", "dir", filepath.Join(leases, e.Name()), "error", err)
			}
		}
	}
}

// Close releases the recycler connection.
func (w *Wrapper) Close() error { return w.conn.Close() }

// Run holds the slot until ctx ends, then stops any running worker (full exit sequence) and returns nil. It does not
// return early for any recycler problem.
func (w *Wrapper) Run(ctx context.Context) error {
	for {
		s, err := w.attacher.Attach(ctx)
		if err != nil { // ctx ended
			w.log.Info("stopped")
			return nil
		}
		w.serve(ctx, s)
		s.Close()
		if ctx.Err() != nil {
			w.log.Info("stopped")
			return nil
		}
	}
}

// serve handles one session until the stream breaks or ctx ends; a lease or standby still running then is stopped
// (and waited for) before serve returns.
func (w *Wrapper) serve(ctx context.Context, s *attach.Session) {
	pf := w.startPrefetcher(s)
	defer pf.stop()
	var cur *leaseRun // the slot's one lease or standby, from its start until serve has reported its end
	stopCurrent := func() {
		if cur != nil {
			cur.abort()
			<-cur.done
			w.report(s, cur) // it ended on its own before the abort: still worth reporting if the stream lives
			cur = nil        // a Lease waiting for cur (cur.next) dies with the stream: the recycler ended it
		}
	}
	for {
		var curDone <-chan struct{}
		if cur != nil {
			curDone = cur.done
		}
		select {
		case <-ctx.Done():
			pf.cancel() // at once: no prefetch runs or answers while the worker stops
			stopCurrent()
			return
		case <-curDone:
			// This goroutine sends LeaseEnded, not the lease's: the recycler may answer it with the next Lease at
			// once, and that Lease must find cur already cleared.
			done := cur
			cur = nil
			w.report(s, done)
			// A standby that a Lease replaced, or that died before the Lease adopting it got to it: that Lease boots
			// now, after the StandbyEnded just sent.
			switch {
			case done.next != nil && !done.adopted:
				cur = w.startLease(s, done.next)
				if done.nextExit {
					cur.exit()
				}
			case done.nextStandby != nil && done.next == nil:
				// A standby that replaced the one just stopped (the recycler's Exit, then its Standby).
				cur = w.startStandby(s, done.nextStandby)
			}
		case m, ok := <-s.Events():
			if !ok {
				w.log.Warn("lost the recycler stream; stopping any worker and re-attaching", "error", s.Err())
				pf.cancel()
				stopCurrent()
				return
			}
			switch k := m.GetKind().(type) {
			case *recyclerpb.RecyclerMessage_Lease:
				cur = w.onLease(s, cur, k.Lease, time.Now())
			case *recyclerpb.RecyclerMessage_Exit:
				w.onExit(s, cur, k.Exit)
			case *recyclerpb.RecyclerMessage_Prefetch:
				pf.offer(k.Prefetch)
			case *recyclerpb.RecyclerMessage_Standby:
				cur = w.onStandby(s, cur, k.Standby)
			}
		}
	}
}

// onLease handles a Lease that arrived at received and returns the slot's run afterwards. An idle slot boots it; a
// standby of its generation with its worker_id, when the Lease says adopt_standby, becomes its worker; any other
// standby is stopped first (and the Lease boots once it is gone, see serve). A Lease while a lease runs is refused.
func (w *Wrapper) onLease(s *attach.Session, cur *leaseRun, l *recyclerpb.Lease, received time.Time) *leaseRun {
	gen := l.GetGeneration()
	switch {
	case cur == nil:
		if l.GetAdoptStandby() {
			w.log.Info("no standby to adopt (it ended); booting the lease", "generation", gen)
		}
		return w.startLease(s, l)
	case cur.waiting:
		cur.waiting, cur.next = false, l
		switch {
		case l.GetAdoptStandby() && gen == cur.lease.Generation && l.GetWorkerId() == cur.lease.WorkerID:
			cur.adopt(l, received)
		case l.GetAdoptStandby() && gen == cur.lease.Generation:
			// The standby's worker connected with its own worker_id: it cannot serve another.
			w.log.Warn("lease asks to adopt the standby with another worker id; replacing the standby", "generation", gen)
			cur.stop(fmt.Sprintf("replaced by lease %d (its worker_id is not the standby's)", gen))
		default:
			cur.stop(fmt.Sprintf("replaced by lease %d", gen))
		}
		return cur
	case cur.standby && cur.next == nil:
		// A standby being stopped (an Exit): the Lease boots once it is gone. A standby queued behind it never starts:
		// the Lease either adopts its generation (and boots it as a lease) or replaces it.
		cur.next = l
		if q := cur.nextStandby; q != nil {
			cur.nextStandby = nil
			if !(l.GetAdoptStandby() && l.GetGeneration() == q.GetGeneration()) {
				w.sendStandbyEnded(s, &recyclerpb.StandbyEnded{Generation: q.GetGeneration(),
					Message: fmt.Sprintf("replaced by lease %d", l.GetGeneration())})
			}
		}
		return cur
	default:
		running := cur.lease.Generation
		if cur.next != nil {
			running = cur.next.GetGeneration()
		}
		w.refuseLease(s, l, running)
		return cur
	}
}

// onExit handles an Exit: for the running lease (also one that adopted a standby, or one waiting for a standby to
// stop), the lease's exit; for a standby no Lease claimed, the standby's stop. Any other generation is ignored.
func (w *Wrapper) onExit(s *attach.Session, cur *leaseRun, e *recyclerpb.Exit) {
	gen, reason := e.GetGeneration(), e.GetReason().String()
	switch {
	case cur != nil && cur.next != nil && cur.next.GetGeneration() == gen:
		w.log.Info("exit instruction", "generation", gen, "reason", reason)
		// If the run adopts (or adopted) its standby for next, the exit reaches it as a lease's; if not, next is
		// exited the moment it starts.
		cur.nextExit = true
		if cur.adopting {
			cur.exit()
		}
	case cur != nil && cur.nextStandby != nil && cur.nextStandby.GetGeneration() == gen:
		w.log.Info("exit instruction for the queued standby", "generation", gen, "reason", reason)
		cur.nextStandby = nil
		w.sendStandbyEnded(s, &recyclerpb.StandbyEnded{Generation: gen,
			Message: "stopped by exit instruction (" + reason + ") before it started"})
	case cur != nil && cur.waiting && cur.lease.Generation == gen:
		w.log.Info("exit instruction for the standby", "generation", gen, "reason", reason)
		cur.waiting = false
		cur.stop("stopped by exit instruction (" + reason + ")")
	case cur != nil && !cur.standby && cur.lease.Generation == gen:
		w.log.Info("exit instruction", "generation", gen, "reason", reason)
		cur.exit()
	default:
		w.log.Info("ignoring exit for a generation that is not running", "generation", gen, "reason", reason)
	}
}

// refuseLease answers a Lease that arrived while another lease still runs (a recycler bug): the new lease fails at
// once, the running one is untouched.
func (w *Wrapper) refuseLease(s *attach.Session, l *recyclerpb.Lease, running int64) {
	msg := fmt.Sprintf("slot %s still runs generation %d; the recycler must wait for LeaseEnded before the next Lease", w.cfg.SlotID, running)
	w.log.Error("lease while another lease runs", "generation", l.GetGeneration(), "running_generation", running)
	w.send(s, &recyclerpb.LeaseEnded{
		Generation: l.GetGeneration(), Outcome: recyclerpb.Outcome_OUTCOME_BOOT_FAILED,
		Stage: recyclerpb.BootStage_BOOT_STAGE_START, Message: msg,
	})
}

// report sends what r left to report: its LeaseEnded or its StandbyEnded (nothing when it ended after an abort).
func (w *Wrapper) report(s *attach.Session, r *leaseRun) {
	switch {
	case r.result != nil:
		w.send(s, r.result)
	case r.standbyEnded != nil:
		w.sendStandbyEnded(s, r.standbyEnded)
	}
}

// send sends le with the cache's digests as they are now (a prefetch may have added one since the lease ended).
func (w *Wrapper) send(s *attach.Session, le *recyclerpb.LeaseEnded) {
	w.reportMu.Lock()
	defer w.reportMu.Unlock()
	le.HeldDigests = w.cache.Digests()
	err := s.Send(&recyclerpb.WrapperMessage{Kind: &recyclerpb.WrapperMessage_LeaseEnded{LeaseEnded: le}})
	if err != nil {
		w.log.Warn("cannot report lease end", "generation", le.GetGeneration(), "error", err)
	}
}

// leaseRun is one lease's or one standby's goroutine and the ways to steer it from outside. A standby's run that a
// Lease adopts goes on as that lease's run.
type leaseRun struct {
	lease   boot.Lease
	standby bool // started by a Standby instruction
	done    chan struct{}
	// Set by the goroutine before done is closed: at most one of result and standbyEnded (none when there is nobody to
	// report to), and whether a Lease adopted the standby (result is then that lease's).
	result       *recyclerpb.LeaseEnded
	standbyEnded *recyclerpb.StandbyEnded
	adopted      bool

	exitReq  chan struct{} // Exit instruction for the lease: stop and report
	abortReq chan struct{} // stream lost or wrapper stopping: stop, no report possible
	// A standby's: stop it (no Lease will adopt it) and report StandbyEnded{stopReason}; or let adoptLease, received
	// at adoptAt, adopt it. The values are written once, before their channel is closed.
	stopReq    chan struct{}
	stopReason string
	adoptReq   chan struct{}
	adoptLease *recyclerpb.Lease
	adoptAt    time.Time

	exitOnce, abortOnce, stopOnce, adoptOnce sync.Once

	// Owned by serve's goroutine, never read by the run's: waiting is set while the run is a standby that no Lease or
	// Exit has claimed yet, the only state in which either applies to it as a standby; next is the Lease that claimed
	// it, to boot once the run is done unless the run adopted it (adopting: next asked to), and nextExit says an Exit
	// for next's generation came meanwhile.
	waiting, adopting, nextExit bool
	next                        *recyclerpb.Lease
	// nextStandby is a Standby that came while this run, a standby, was being stopped (or that replaced it): started
	// once the run is done, unless a Lease claimed the slot or an Exit stopped it meanwhile.
	nextStandby *recyclerpb.Standby
}

func newRun(l boot.Lease, standby bool) *leaseRun {
	return &leaseRun{lease: l, standby: standby, waiting: standby, done: make(chan struct{}), exitReq: make(chan struct{}),
		abortReq: make(chan struct{}), stopReq: make(chan struct{}), adoptReq: make(chan struct{})}
}

func (r *leaseRun) exit()  { r.exitOnce.Do(func() { close(r.exitReq) }) }
func (r *leaseRun) abort() { r.abortOnce.Do(func() { close(r.abortReq) }) }

func (r *leaseRun) stop(reason string) {
	r.stopOnce.Do(func() {
		r.stopReason = reason
		close(r.stopReq)
	})
}

func (r *leaseRun) adopt(l *recyclerpb.Lease, received time.Time) {
	r.adopting = true
	r.adoptOnce.Do(func() {
		r.adoptLease, r.adoptAt = l, received
		close(r.adoptReq)
	})
}

func (w *Wrapper) startLease(s *attach.Session, l *recyclerpb.Lease) *leaseRun {
	return w.startRun(s, boot.Lease{Generation: l.GetGeneration(), WorkerID: l.GetWorkerId(),
		Credential: l.GetCredential(), JobName: l.GetJobName(), Prepared: l.GetPrepared()}, false)
}

// startRun runs a lease, or a standby, on its own goroutine; r.done closes when it has ended.
func (w *Wrapper) startRun(s *attach.Session, l boot.Lease, standby bool) *leaseRun {
	r := newRun(l, standby)
	go func() {
		defer close(r.done)
		if standby {
			w.runStandby(s, r)
		} else {
			w.runLease(s, r)
		}
	}()
	return r
}

// leaseLog is the logger of a lease's lines: the benchmark's Breakdown (recycler-core's bench) reads a lease's "lease",
// "provisioned", "worker started" and "fetched artifact" lines by their msg, slot and generation keys, in that order
// (a lease that adopted a standby has no "provisioned").
func (w *Wrapper) leaseLog(l boot.Lease) *slog.Logger {
	return w.log.With("generation", l.Generation, "worker_id", l.PublicID())
}

// runLease boots, starts and supervises one lease and leaves exactly one LeaseEnded in r.result for serve to send
// (none when the stream is gone), only once no process of the lease is alive and its directory is deleted.
func (w *Wrapper) runLease(s *attach.Session, r *leaseRun) {
	gen := r.lease.Generation
	log := w.leaseLog(r.lease)
	log.Info("lease", "job_name", r.lease.JobName)
	start := time.Now()
	bootLog := boot.NewLog(log)
	defer bootLog.Close()
	// runLease returns only once no process of the lease is alive: from then on none can reach the cache's files.
	defer w.cache.EndExposure()

	ended := &recyclerpb.LeaseEnded{Generation: gen}
	bootFailed := func(stage recyclerpb.BootStage, msg string) {
		bootLog.Error("boot failed", "stage", stage.String(), "error", msg)
		ended.Outcome, ended.Stage, ended.Message = recyclerpb.Outcome_OUTCOME_BOOT_FAILED, stage, msg
		w.leaseEnded(r, ended, log, start)
	}
	exitedDuringBoot := func() {
		ended.Outcome = recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION
		ended.Message = "exit instruction arrived during boot; no worker was started"
		w.leaseEnded(r, ended, log, start)
	}

	// (1) Boot, abortable by Exit or by losing the stream.
	bctx, cancel := context.WithCancel(context.Background())
	stopWatch := make(chan struct{})
	go func() {
		select {
		case <-r.exitReq:
		case <-r.abortReq:
		case <-stopWatch:
		}
		cancel()
	}()
	prepared, err := w.booter.Boot(bctx, r.lease, bootLog)
	close(stopWatch)
	cancel()
	if err != nil {
		// Boot removed what it created, but it cannot wait for a directory that resists deletion; this does.
		if !w.removeLeaseDir(w.booter.LeaseDir(gen), r.abortReq, log) {
			return
		}
		var f *boot.Failure
		switch {
		case errors.As(err, &f):
			bootFailed(f.Stage, f.Message)
		default: // aborted
			exitedDuringBoot()
		}
		return
	}
	select {
	case <-r.exitReq:
		if w.removeLeaseDir(prepared.Dir, r.abortReq, log) {
			exitedDuringBoot()
		}
		return
	case <-r.abortReq:
		w.removeLeaseDir(prepared.Dir, r.abortReq, log)
		return
	default:
	}

	// (2) Start the worker.
	proc, err := w.sup.Start(prepared.Spec)
	if err != nil {
		if !w.removeLeaseDir(prepared.Dir, r.abortReq, log) {
			return
		}
		bootFailed(recyclerpb.BootStage_BOOT_STAGE_START, cannotExecute(err))
		return
	}
	bootLog.Info("worker started", "pid", proc.Pid())
	bootLog.Close()
	if err := s.Send(&recyclerpb.WrapperMessage{Kind: &recyclerpb.WrapperMessage_WorkerStarted{
		WorkerStarted: &recyclerpb.WorkerStarted{Generation: gen, Pid: int64(proc.Pid())}}}); err != nil {
		log.Warn("cannot report worker start", "error", err)
	}

	// (3) and (4)
	w.supervise(r, proc, prepared.Dir, ended, log, start)
}

func cannotExecute(err error) string {
	return fmt.Sprintf("cannot execute the staged worker binary (%v); it must be a linux/%s executable built with the Beam Go SDK", err, goarch())
}

// supervise is the rest of a lease once its worker runs: (3) wait until the worker exits or an Exit or abort stops it,
// (4) wipe the lease directory, then leave ended in r.result (see runLease).
func (w *Wrapper) supervise(r *leaseRun, proc *supervisor.Process, dir string, ended *recyclerpb.LeaseEnded, log *slog.Logger,
	start time.Time) {
	var st supervisor.ExitStatus
	select {
	case <-proc.Done():
		st = proc.Kill() // the rest of its group goes at once
		ended.Outcome = recyclerpb.Outcome_OUTCOME_WORKER_EXITED
		log.Info("worker exited on its own", "status", st.String())
	case <-r.exitReq:
		st = proc.Stop(w.cfg.GracePeriod)
		ended.Outcome = recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION
	case <-r.abortReq:
		st = proc.Stop(w.cfg.GracePeriod)
	}
	ended.ExitCode, ended.Signal = int32(st.Code), st.SignalName()
	if w.removeLeaseDir(dir, r.abortReq, log) {
		w.leaseEnded(r, ended, log, start)
	}
}

// leaseEnded leaves ended in r.result for serve to send, unless the stream is gone or the wrapper is stopping (nobody
// to report to). No process of the lease is alive any more, so it trims the cache first: Trim runs only here, when
// the slot has no worker (a lease's or a standby's) that could be using an entry.
func (w *Wrapper) leaseEnded(r *leaseRun, ended *recyclerpb.LeaseEnded, log *slog.Logger, start time.Time) {
	select {
	case <-r.abortReq:
		return
	default:
	}
	if evicted := w.cache.Trim(w.cfg.CacheMaxBytes); len(evicted) > 0 {
		log.Info("evicted artifacts from the local cache", "digests", evicted)
	}
	log.Info("lease ended", "outcome", ended.GetOutcome().String(), "exit_code", ended.GetExitCode(),
		"signal", ended.GetSignal(), "took", time.Since(start).Round(time.Millisecond))
	r.result = ended
}

// removeLeaseDir deletes a lease directory and returns true once it is gone. LeaseEnded promises that the directory
// is gone, and the protocol has no way to report a lease whose files survive (LeaseEnded.message is for boot
// failures, and the recycler frees the slot on any LeaseEnded), so a directory that resists deletion (a mount point
// the worker left, an immutable file, an I/O error) is retried with capped exponential backoff, logged at WARN the
// first time and every 10th attempt, and the lease is not reported until it is gone: the slot stays draining in the
// recycler's table. It gives up, returning false, only when giveUp is closed (the stream is gone or the wrapper is
// stopping, so no LeaseEnded will be sent); the directory is then deleted when a wrapper of this slot starts again.
func (w *Wrapper) removeLeaseDir(dir string, giveUp <-chan struct{}, log *slog.Logger) bool {
	b := attach.Backoff{Min: w.cfg.MinBackoff, Max: w.cfg.MaxBackoff}
	start := time.Now()
	for attempt := 0; ; attempt++ {
		err := w.cfg.RemoveAll(dir)
		if err == nil {
			if attempt > 0 {
				log.Info("deleted lease directory", "dir", dir, "attempts", attempt+1, "took", time.Since(start).Round(time.Millisecond))
			}
			return true
		}
		if attempt%10 == 0 {
			log.Warn("cannot delete lease directory; retrying, the lease is not reported ended until it is gone",
				"dir", dir, "attempt", attempt+1, "error", err)
		}
		t := time.NewTimer(b.Next())
		select {
		case <-giveUp:
			t.Stop()
			log.Error("giving up deleting lease directory: no lease end to report; a restarted wrapper deletes it",
				"dir", dir, "error", err)
			return false
		case <-t.C:
		}
	}
}

func goarch() string { return runtime.GOARCH }
