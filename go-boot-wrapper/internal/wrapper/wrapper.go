// Package wrapper is the per-slot loop: attach, serve leases one at a time (boot, start, supervise, stop, report),
// and re-attach whenever the stream breaks.
//
// Concurrency: Run's goroutine owns the session and the current lease; every lease runs in its own goroutine and
// reports through the session. Run never blocks on a lease except to wait for it to finish stopping, so Lease and Exit
// keep flowing while a worker boots or stops, and Ping is answered by the session's own receive goroutine.
//
// Failure handling: a broken stream stops the running worker (full exit sequence) before re-attaching, because the
// recycler has given the slot up and the worker's job can no longer be served correctly; no LeaseEnded is sent for it
// (the recycler ended that lease when it lost us). The wrapper never exits because of the recycler.
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
	// MinBackoff and MaxBackoff bound the re-attach delay (defaults 100ms and 5s).
	MinBackoff, MaxBackoff time.Duration
	// Stdout and Stderr receive the workers' output (nil: /dev/null).
	Stdout, Stderr *os.File
	// Getenv reads the wrapper's environment for the workers' allow-list (os.Getenv when nil).
	Getenv func(string) string
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
}

// New prepares the work directory (removing lease directories a previous wrapper of this slot left behind), opens the
// slot's artifact cache and creates the (lazy) client connection to the recycler. Close releases the connection.
func New(cfg Config, sup *supervisor.Supervisor, log *slog.Logger) (*Wrapper, error) {
	if cfg.SlotID == "" || cfg.RecyclerEndpoint == "" || cfg.WorkDir == "" {
		return nil, errors.New("slot id, recycler endpoint and work dir are required")
	}
	log = log.With("slot", cfg.SlotID)
	// Several wrappers (slots) may share one work dir: each touches only its own lease directories and cache.
	leases := filepath.Join(cfg.WorkDir, "leases")
	if err := os.MkdirAll(leases, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", leases, err)
	}
	if err := removeStaleLeaseDirs(leases, cfg.SlotID); err != nil {
		return nil, err
	}
	cache, err := artifactcache.Open(filepath.Join(cfg.WorkDir, "cache", boot.SafeName(cfg.SlotID)), log)
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

// removeStaleLeaseDirs deletes what a previous wrapper of this slot left behind (it may have been killed mid-lease).
func removeStaleLeaseDirs(leases, slotID string) error {
	entries, err := os.ReadDir(leases)
	if err != nil {
		return fmt.Errorf("read %s: %w", leases, err)
	}
	prefix := boot.LeaseDirPrefix(slotID)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			if err := os.RemoveAll(filepath.Join(leases, e.Name())); err != nil {
				return fmt.Errorf("remove stale lease directory: %w", err)
			}
		}
	}
	return nil
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

// serve handles one session until the stream breaks or ctx ends; a lease still running then is stopped (and waited
// for) before serve returns.
func (w *Wrapper) serve(ctx context.Context, s *attach.Session) {
	var cur *leaseRun
	var curDone <-chan struct{}
	stopCurrent := func() {
		if cur != nil {
			cur.abort()
			<-cur.done
			if cur.result != nil { // it ended on its own before the abort: still worth reporting if the stream lives
				w.send(s, cur.result)
			}
			cur, curDone = nil, nil
		}
	}
	for {
		select {
		case <-ctx.Done():
			stopCurrent()
			return
		case <-curDone:
			// This goroutine sends LeaseEnded, not the lease's: the recycler may answer it with the next Lease at
			// once, and that Lease must find cur already cleared.
			if cur.result != nil {
				w.send(s, cur.result)
			}
			cur, curDone = nil, nil
		case m, ok := <-s.Events():
			if !ok {
				w.log.Warn("lost the recycler stream; stopping any worker and re-attaching", "error", s.Err())
				stopCurrent()
				return
			}
			switch k := m.GetKind().(type) {
			case *recyclerpb.RecyclerMessage_Lease:
				if cur != nil {
					w.refuseLease(s, k.Lease, cur.lease.Generation)
					continue
				}
				cur = w.startLease(s, k.Lease)
				curDone = cur.done
			case *recyclerpb.RecyclerMessage_Exit:
				gen := k.Exit.GetGeneration()
				if cur == nil || cur.lease.Generation != gen {
					w.log.Info("ignoring exit for a generation that is not running", "generation", gen, "reason", k.Exit.GetReason().String())
					continue
				}
				w.log.Info("exit instruction", "generation", gen, "reason", k.Exit.GetReason().String())
				cur.exit()
			}
		}
	}
}

// refuseLease answers a Lease that arrived while another lease still runs (a recycler bug): the new lease fails at
// once, the running one is untouched.
func (w *Wrapper) refuseLease(s *attach.Session, l *recyclerpb.Lease, running int64) {
	msg := fmt.Sprintf("slot %s still runs generation %d; the recycler must wait for LeaseEnded before the next Lease", w.cfg.SlotID, running)
	w.log.Error("lease while another lease runs", "generation", l.GetGeneration(), "running_generation", running)
	w.send(s, &recyclerpb.LeaseEnded{
		Generation: l.GetGeneration(), Outcome: recyclerpb.Outcome_OUTCOME_BOOT_FAILED,
		Stage: recyclerpb.BootStage_BOOT_STAGE_START, Message: msg, HeldDigests: w.cache.Digests(),
	})
}

func (w *Wrapper) send(s *attach.Session, le *recyclerpb.LeaseEnded) {
	err := s.Send(&recyclerpb.WrapperMessage{Kind: &recyclerpb.WrapperMessage_LeaseEnded{LeaseEnded: le}})
	if err != nil {
		w.log.Warn("cannot report lease end", "generation", le.GetGeneration(), "error", err)
	}
}

// leaseRun is one lease's goroutine and the two ways to end it from outside.
type leaseRun struct {
	lease               boot.Lease
	done                chan struct{}
	result              *recyclerpb.LeaseEnded // set before done is closed; nil when there is nobody to report to
	exitReq             chan struct{}          // Exit instruction: stop and report
	abortReq            chan struct{}          // stream lost or wrapper stopping: stop, no report possible
	exitOnce, abortOnce sync.Once
}

func (r *leaseRun) exit()  { r.exitOnce.Do(func() { close(r.exitReq) }) }
func (r *leaseRun) abort() { r.abortOnce.Do(func() { close(r.abortReq) }) }

func (w *Wrapper) startLease(s *attach.Session, l *recyclerpb.Lease) *leaseRun {
	r := &leaseRun{
		lease: boot.Lease{Generation: l.GetGeneration(), WorkerID: l.GetWorkerId(), Credential: l.GetCredential(),
			JobName: l.GetJobName(), Prepared: l.GetPrepared()},
		done:     make(chan struct{}),
		exitReq:  make(chan struct{}),
		abortReq: make(chan struct{}),
	}
	go func() {
		defer close(r.done)
		w.runLease(s, r)
	}()
	return r
}

// runLease boots, starts and supervises one lease and leaves exactly one LeaseEnded in r.result for serve to send
// (none when the stream is gone), only once no process of the lease is alive and its directory is deleted.
func (w *Wrapper) runLease(s *attach.Session, r *leaseRun) {
	gen := r.lease.Generation
	log := w.log.With("generation", gen, "worker_id", r.lease.PublicID())
	log.Info("lease", "job_name", r.lease.JobName)
	start := time.Now()
	bootLog := boot.NewLog(log)
	defer bootLog.Close()

	ended := &recyclerpb.LeaseEnded{Generation: gen}
	report := func() {
		select {
		case <-r.abortReq:
			return // the stream is gone or the wrapper is stopping: nobody to report to
		default:
		}
		if evicted := w.cache.Trim(w.cfg.CacheMaxBytes); len(evicted) > 0 {
			log.Info("evicted artifacts from the local cache", "digests", evicted)
		}
		ended.HeldDigests = w.cache.Digests()
		log.Info("lease ended", "outcome", ended.GetOutcome().String(), "exit_code", ended.GetExitCode(),
			"signal", ended.GetSignal(), "took", time.Since(start).Round(time.Millisecond))
		r.result = ended
	}
	bootFailed := func(stage recyclerpb.BootStage, msg string) {
		bootLog.Error("boot failed", "stage", stage.String(), "error", msg)
		ended.Outcome, ended.Stage, ended.Message = recyclerpb.Outcome_OUTCOME_BOOT_FAILED, stage, msg
		report()
	}
	exitedDuringBoot := func() {
		ended.Outcome = recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION
		ended.Message = "exit instruction arrived during boot; no worker was started"
		report()
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
		_ = os.RemoveAll(prepared.Dir)
		exitedDuringBoot()
		return
	case <-r.abortReq:
		_ = os.RemoveAll(prepared.Dir)
		return
	default:
	}

	// (2) Start the worker.
	proc, err := w.sup.Start(prepared.Spec)
	if err != nil {
		_ = os.RemoveAll(prepared.Dir)
		bootFailed(recyclerpb.BootStage_BOOT_STAGE_START, fmt.Sprintf(
			"cannot execute the staged worker binary (%v); it must be a linux/%s executable built with the Beam Go SDK", err, goarch()))
		return
	}
	bootLog.Info("worker started", "pid", proc.Pid())
	bootLog.Close()
	if err := s.Send(&recyclerpb.WrapperMessage{Kind: &recyclerpb.WrapperMessage_WorkerStarted{
		WorkerStarted: &recyclerpb.WorkerStarted{Generation: gen, Pid: int64(proc.Pid())}}}); err != nil {
		log.Warn("cannot report worker start", "error", err)
	}

	// (3) Supervise until the worker exits or we are told to stop it.
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

	// (4) Wipe the lease directory, then report.
	if err := os.RemoveAll(prepared.Dir); err != nil {
		log.Error("cannot delete lease directory", "dir", prepared.Dir, "error", err)
		ended.Message = fmt.Sprintf("lease directory %s could not be deleted: %v", prepared.Dir, err)
	}
	report()
}

func goarch() string { return runtime.GOARCH }
