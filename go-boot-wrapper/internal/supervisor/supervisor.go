// Package supervisor starts inner worker processes and guarantees that, once a worker is stopped, nothing it started is
// left alive or unreaped.
//
// Design (after kubelet pod workers and hashicorp/go-plugin): the Supervisor owns its children. Every worker runs in
// its own process group; "exited" is a channel closed by the one goroutine that calls Wait on it. Stop is SIGTERM to
// the group, the grace period, SIGKILL to the group, then a drain loop that kills and reaps whatever is left: members
// of the group that were re-parented to us, and grandchildren that escaped the group with setsid (found in /proc as
// our own children that we did not start). The wrapper is a child subreaper (or PID 1), so such orphans become our
// children instead of init's and can be reaped.
//
// Reaping discipline: the worker itself is reaped only by its Wait goroutine. Every other wait4 in this package
// targets a pid that is not tracked, or a process group after its leader has been reaped, so no exit status is ever
// stolen from Wait. Start registers the pid under the same lock the orphan scans take, so a scan never sees an
// untracked worker.
//
// One Supervisor per process: its orphan sweep treats every untracked child of the process as belonging to the lease
// being cleaned up, which is why the wrapper holds one slot per process.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrStart wraps every failure to start a worker process (missing file, not executable, exec format error).
var ErrStart = errors.New("start worker process")

// Spec describes a worker process.
type Spec struct {
	Path string
	Args []string // without argv[0]
	Env  []string // the complete environment: nothing is inherited
	Dir  string
	// Stdout and Stderr receive the worker's output directly (no pipes, so nothing in the wrapper can block the
	// worker); nil means /dev/null.
	Stdout, Stderr *os.File
	// Credential, when set, is the user and groups the worker runs as (the wrapper must be root); nil: the
	// wrapper's own.
	Credential *syscall.Credential
}

// ExitStatus is how a worker process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the process was ended by a signal.
	Code int
	// Signal is the signal that ended the process, or 0.
	Signal syscall.Signal
}

// SignalName is the signal's name (e.g. "SIGKILL"), or "" when the process exited normally.
func (s ExitStatus) SignalName() string {
	if s.Signal == 0 {
		return ""
	}
	return unix.SignalName(s.Signal)
}

func (s ExitStatus) String() string {
	if s.Signal != 0 {
		return "killed by " + s.SignalName()
	}
	return fmt.Sprintf("exit code %d", s.Code)
}

// Supervisor starts worker processes and reaps orphans. Create one per process with New.
type Supervisor struct {
	sys System
	log *slog.Logger
	// drainMin and drainMax bound the pause between drain rounds while processes are still dying: it starts at
	// drainMin and doubles up to drainMax. No jitter: nothing else competes for what the loop waits on.
	drainMin, drainMax time.Duration
	sleep              func(time.Duration) // time.Sleep; tests record the pauses

	mu      sync.Mutex
	tracked map[int]bool // pids of running workers, reaped only by their own Wait goroutine
}

// New returns a Supervisor using sys (LinuxSystem{} in production).
func New(sys System, log *slog.Logger) *Supervisor {
	return &Supervisor{sys: sys, log: log, drainMin: 5 * time.Millisecond, drainMax: 100 * time.Millisecond,
		sleep: time.Sleep, tracked: map[int]bool{}}
}

// BecomeReaper makes orphaned descendants of this process re-parent to it: as PID 1 that is already so, otherwise it
// sets PR_SET_CHILD_SUBREAPER. It returns an error (and the supervisor still works, minus catching setsid escapees)
// when neither is possible.
func (s *Supervisor) BecomeReaper() error {
	if s.sys.Getpid() == 1 {
		return nil
	}
	if err := s.sys.SetChildSubreaper(); err != nil {
		return fmt.Errorf("set child subreaper: %w", err)
	}
	return nil
}

// ReapZombies reaps orphaned children that already exited, until ctx ends: on every SIGCHLD and every interval. As
// PID 1 or subreaper the wrapper inherits every orphaned descendant, and nothing else would ever wait for them.
func (s *Supervisor) ReapZombies(ctx context.Context, interval time.Duration) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-t.C:
		}
		s.sweepOrphans(false, false)
	}
}

// Start starts a worker in a new process group with exactly spec.Env as its environment.
func (s *Supervisor) Start(spec Spec) (*Process, error) {
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = spec.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // nil would mean "inherit the wrapper's environment"
	}
	cmd.Dir = spec.Dir
	if spec.Stdout != nil {
		cmd.Stdout = spec.Stdout
	}
	if spec.Stderr != nil {
		cmd.Stderr = spec.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the wrapper dies without stopping it, the worker goes too rather than serving a job nobody supervises.
		Pdeathsig:  syscall.SIGKILL, // set after the credentials change, which would clear it
		Credential: spec.Credential,
	}
	s.mu.Lock()
	err := cmd.Start()
	if err == nil {
		s.tracked[cmd.Process.Pid] = true
	}
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	p := &Process{sup: s, cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), stopped: make(chan struct{})}
	go p.wait()
	return p, nil
}

func (s *Supervisor) untrack(pid int) {
	s.mu.Lock()
	delete(s.tracked, pid)
	s.mu.Unlock()
}

// sweepOrphans reaps this process's children that are not running workers (orphans re-parented to us), first
// killing the live ones when kill is set, and returns how many it found. The lock is held throughout, so Start cannot
// fork a worker that reuses an orphan's pid between the scan and the kill or wait4; that is why the listing is the
// kernel's children lists (a few files) and the scan of all of /proc (exact) runs only when exact is set.
func (s *Supervisor) sweepOrphans(kill, exact bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.sys.Children
	if exact {
		list = s.sys.ScanChildren
	}
	kids, err := list(s.sys.Getpid())
	if err != nil {
		s.log.Warn("cannot list child processes", "error", err)
		return 0
	}
	n := 0
	for _, k := range kids {
		if s.tracked[k.Pid] {
			continue
		}
		n++
		if kill && !k.Zombie {
			_ = s.sys.Kill(k.Pid, syscall.SIGKILL)
		}
		if k.Zombie || kill {
			if wpid, _, err := s.sys.Wait4(k.Pid, syscall.WNOHANG); err == nil && wpid == k.Pid {
				s.log.Debug("reaped orphan", "pid", k.Pid)
			}
		}
	}
	return n
}

// Process is a running (or exited) worker and its process group.
type Process struct {
	sup  *Supervisor
	cmd  *exec.Cmd
	pid  int
	done chan struct{}
	// status is written once before done is closed.
	status ExitStatus

	stopOnce sync.Once
	stopped  chan struct{}
}

// Pid is the worker's process id, which is also its process group id.
func (p *Process) Pid() int { return p.pid }

// Done is closed when the worker process itself has exited and been reaped (its group may still have members).
func (p *Process) Done() <-chan struct{} { return p.done }

// Status is the worker's exit status; valid once Done is closed.
func (p *Process) Status() ExitStatus {
	<-p.done
	return p.status
}

func (p *Process) wait() {
	err := p.cmd.Wait()
	st := ExitStatus{Code: 0}
	if p.cmd.ProcessState != nil {
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			st = ExitStatus{Code: -1, Signal: ws.Signal()}
		} else {
			st.Code = p.cmd.ProcessState.ExitCode()
		}
	} else if err != nil {
		st.Code = -1
	}
	p.status = st
	p.sup.untrack(p.pid)
	close(p.done)
}

// Stop ends the worker and everything it started, and returns the worker's exit status. If the worker is still
// running it gets SIGTERM (to its whole group) and up to grace to exit; then the group is SIGKILLed and drained.
// When Stop returns, no process of the group and no orphan of the worker is alive or unreaped.
//
// Stop is safe to call more than once and from several goroutines: later calls wait for the first and return the
// same status. A worker that already exited on its own skips SIGTERM: the rest of its group is killed at once.
func (p *Process) Stop(grace time.Duration) ExitStatus {
	p.stopOnce.Do(func() {
		defer close(p.stopped)
		p.stop(grace)
	})
	<-p.stopped
	return p.status
}

// Kill is Stop without a grace period.
func (p *Process) Kill() ExitStatus { return p.Stop(0) }

func (p *Process) stop(grace time.Duration) {
	sys, log := p.sup.sys, p.sup.log
	select {
	case <-p.done:
	default:
		if grace > 0 {
			_ = sys.Kill(-p.pid, syscall.SIGTERM)
			t := time.NewTimer(grace)
			select {
			case <-p.done:
			case <-t.C:
				log.Info("worker did not exit within the grace period, killing it", "pid", p.pid, "grace_period", grace)
			}
			t.Stop()
		}
	}
	_ = sys.Kill(-p.pid, syscall.SIGKILL)
	waitLogged(p.done, log, "worker survives SIGKILL (uninterruptible?), still waiting", p.pid)
	p.drain()
}

// drain kills and reaps everything left of the group and every orphan re-parented to us, until nothing is left.
// It never gives up: reporting the slot free while a process of the lease lives would break the lease contract, so a
// process stuck in uninterruptible sleep keeps the slot busy (and is logged) instead.
func (p *Process) drain() {
	sys, log := p.sup.sys, p.sup.log
	pgid := p.pid
	start := time.Now()
	nextWarn := start.Add(5 * time.Second)
	delay := p.sup.drainMin
	for {
		// The leader is reaped (done is closed), so wait4 on the group only finds members re-parented to us.
		_ = sys.Kill(-pgid, syscall.SIGKILL)
		for {
			wpid, _, err := sys.Wait4(-pgid, syscall.WNOHANG)
			if err != nil || wpid <= 0 {
				break
			}
		}
		orphans := p.sup.sweepOrphans(true, false)
		groupGone := errors.Is(sys.Kill(-pgid, 0), syscall.ESRCH)
		// The children lists can miss an orphan being re-parented right now: before declaring the lease's processes
		// gone, confirm with the exact scan (once per stop, not per round).
		if groupGone && orphans == 0 && p.sup.sweepOrphans(true, true) == 0 {
			return
		}
		if now := time.Now(); now.After(nextWarn) {
			log.Warn("processes of the stopped worker are still alive", "pid", p.pid, "orphans", orphans,
				"group_alive", !groupGone, "waited", now.Sub(start).Round(time.Second))
			nextWarn = now.Add(30 * time.Second)
		}
		p.sup.sleep(delay) // waiting for the kernel to finish killing; nothing to select on
		delay = min(2*delay, p.sup.drainMax)
	}
}

func waitLogged(done <-chan struct{}, log *slog.Logger, msg string, pid int) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			log.Warn(msg, "pid", pid)
		}
	}
}
