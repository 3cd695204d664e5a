package supervisor

import (
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// scriptedSystem plays a process table in which the worker's group and an orphan die only after a few rounds, as
// processes do while the kernel is still tearing them down.
type scriptedSystem struct {
	mu           sync.Mutex
	groupRounds  int // Kill(-pgid, 0) succeeds this many more times
	orphan       ProcInfo
	orphanAlive  int // Children reports the orphan this many more times
	orphanHidden int // then ScanChildren alone reports it this many more times (missed by the children lists)
	kills        []string
	waits        []int
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

func (s *scriptedSystem) ScanChildren(ppid int) ([]ProcInfo, error) {
	s.mu.Lock()
	if s.orphanAlive == 0 && s.orphanHidden > 0 {
		s.orphanHidden--
		s.mu.Unlock()
		return []ProcInfo{s.orphan}, nil
	}
	s.mu.Unlock()
	return s.Children(ppid)
}

func (s *scriptedSystem) Getpid() int              { return 100 }
func (s *scriptedSystem) SetChildSubreaper() error { return nil }

func TestDrainWaitsUntilGroupAndOrphansAreGone(t *testing.T) {
	tests := []struct {
		name       string
		sys        *scriptedSystem
		wantPauses []time.Duration // 5 ms doubling to 100 ms: issue 12, the loop used to poll every 5 ms
	}{
		{name: "gone at once", sys: &scriptedSystem{}, wantPauses: nil},
		{name: "group and orphan die after a few rounds",
			sys:        &scriptedSystem{groupRounds: 3, orphan: ProcInfo{Pid: 777, PPid: 100, Pgrp: 777}, orphanAlive: 2},
			wantPauses: []time.Duration{5 * ms, 10 * ms, 20 * ms}},
		{name: "backoff is capped",
			sys:        &scriptedSystem{groupRounds: 7},
			wantPauses: []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 100 * ms, 100 * ms}},
		{name: "orphan missed by the children lists is found by the exact scan",
			sys:        &scriptedSystem{orphan: ProcInfo{Pid: 777, PPid: 100, Pgrp: 777}, orphanHidden: 2},
			wantPauses: []time.Duration{5 * ms, 10 * ms}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := tt.sys
			orphanScans := sys.orphanAlive + sys.orphanHidden
			s := New(sys, slog.New(slog.DiscardHandler))
			var pauses []time.Duration
			s.sleep = func(d time.Duration) { pauses = append(pauses, d) }
			done := make(chan struct{})
			close(done) // the worker itself has exited and been reaped
			p := &Process{sup: s, pid: 4242, done: done, stopped: make(chan struct{}), status: ExitStatus{Code: 1}}

			if st := p.Stop(0); st != (ExitStatus{Code: 1}) {
				t.Errorf("Stop = %v, want the worker's own status", st)
			}
			if sys.groupRounds != 0 || sys.orphanAlive != 0 || sys.orphanHidden != 0 {
				t.Errorf("drain returned early: group rounds left %d, orphan scans left %d + %d hidden",
					sys.groupRounds, sys.orphanAlive, sys.orphanHidden)
			}
			if !slices.Equal(pauses, tt.wantPauses) {
				t.Errorf("pauses between drain rounds = %v, want %v", pauses, tt.wantPauses)
			}
			if orphanScans > 0 && (!slices.Contains(sys.kills, "killed@777") || !slices.Contains(sys.waits, 777)) {
				t.Errorf("orphan 777 was not SIGKILLed and reaped: kills %v, waits %v", sys.kills, sys.waits)
			}
			if !slices.Contains(sys.kills, "killed@-4242") || slices.Contains(sys.kills, "terminated@-4242") {
				t.Errorf("an exited worker's group must get SIGKILL at once, no SIGTERM: %v", sys.kills)
			}
			if !slices.Contains(sys.waits, -4242) {
				t.Errorf("group members not reaped: waits %v", sys.waits)
			}
			// A second Stop does nothing more.
			n := len(sys.kills)
			p.Stop(0)
			if len(sys.kills) != n {
				t.Errorf("second Stop signalled again: %v", sys.kills[n:])
			}
		})
	}
}

const ms = time.Millisecond

// The children lists and the full /proc scan must agree on a quiet process table: the sweep that runs on every
// SIGCHLD relies on the first.
func TestChildrenListsMatchTheProcScan(t *testing.T) {
	for i := 0; i < 3; i++ {
		cmd := exec.Command("sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	sys := LinuxSystem{}
	fast, err := sys.Children(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	exact, err := sys.ScanChildren(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	byPid := func(a, b ProcInfo) int { return a.Pid - b.Pid }
	slices.SortFunc(fast, byPid)
	slices.SortFunc(exact, byPid)
	if len(exact) < 3 || !slices.Equal(fast, exact) {
		t.Errorf("Children = %v, ScanChildren = %v; want the same, at least the 3 sleeps", fast, exact)
	}
}

// BenchmarkChildren compares the orphan sweep's listing (the kernel's per-thread children lists) with the full /proc
// scan it replaced, which ran under the supervisor's lock on every SIGCHLD (issue 12).
//
// Run: go test -run '^$' -bench Children ./internal/supervisor
func BenchmarkChildren(b *testing.B) {
	sys := LinuxSystem{}
	for _, bm := range []struct {
		name string
		list func(int) ([]ProcInfo, error)
	}{{"children-lists", sys.Children}, {"proc-scan", sys.ScanChildren}} {
		b.Run(bm.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := bm.list(os.Getpid()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
