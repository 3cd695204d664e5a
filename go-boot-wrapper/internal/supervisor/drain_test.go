package supervisor

import (
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// scriptedSystem plays a process table in which the worker's group and an orphan die only after a few rounds, as
// processes do while the kernel is still tearing them down.
type scriptedSystem struct {
	mu          sync.Mutex
	groupRounds int // Kill(-pgid, 0) succeeds this many more times
	orphan      ProcInfo
	orphanAlive int // Children reports the orphan this many more times
	kills       []string
	waits       []int
}

func (s *scriptedSystem) Kill(pid int, sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kills = append(s.kills, syscall.Signal(sig).String()+"@"+strconv.Itoa(pid))
	if pid < 0 && sig == 0 {
		if s.groupRounds > 0 {
			s.groupRounds--
			return nil
		}
		return syscall.ESRCH
	}
	return nil
}

func (s *scriptedSystem) Wait4(pid int, options int) (int, syscall.WaitStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waits = append(s.waits, pid)
	return 0, 0, syscall.ECHILD
}

func (s *scriptedSystem) Children(ppid int) ([]ProcInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.orphanAlive > 0 {
		s.orphanAlive--
		return []ProcInfo{s.orphan}, nil
	}
	return nil, nil
}

func (s *scriptedSystem) Getpid() int              { return 100 }
func (s *scriptedSystem) SetChildSubreaper() error { return nil }

func TestDrainWaitsUntilGroupAndOrphansAreGone(t *testing.T) {
	sys := &scriptedSystem{groupRounds: 3, orphan: ProcInfo{Pid: 777, PPid: 100, Pgrp: 777}, orphanAlive: 2}
	s := New(sys, slog.New(slog.DiscardHandler))
	s.drainPoll = 0
	done := make(chan struct{})
	close(done) // the worker itself has exited and been reaped
	p := &Process{sup: s, pid: 4242, done: done, stopped: make(chan struct{}), status: ExitStatus{Code: 1}}

	if st := p.Stop(0); st != (ExitStatus{Code: 1}) {
		t.Errorf("Stop = %v, want the worker's own status", st)
	}
	if sys.groupRounds != 0 || sys.orphanAlive != 0 {
		t.Errorf("drain returned early: group rounds left %d, orphan scans left %d", sys.groupRounds, sys.orphanAlive)
	}
	if !slices.Contains(sys.kills, "killed@777") {
		t.Errorf("orphan 777 was never SIGKILLed: %v", sys.kills)
	}
	if !slices.Contains(sys.kills, "killed@-4242") || slices.Contains(sys.kills, "terminated@-4242") {
		t.Errorf("an exited worker's group must get SIGKILL at once, no SIGTERM: %v", sys.kills)
	}
	if !slices.Contains(sys.waits, 777) || !slices.Contains(sys.waits, -4242) {
		t.Errorf("orphan and group members not reaped: waits %v", sys.waits)
	}
	// A second Stop does nothing more.
	n := len(sys.kills)
	p.Stop(0)
	if len(sys.kills) != n {
		t.Errorf("second Stop signalled again: %v", sys.kills[n:])
	}
}
