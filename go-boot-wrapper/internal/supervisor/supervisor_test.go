package supervisor

import (
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"recycler.dev/go-boot-wrapper/internal/testhelper"
)

func TestMain(m *testing.M) {
	testhelper.MainIfHelper()
	os.Exit(m.Run())
}

func newSupervisor(t *testing.T) *Supervisor {
	t.Helper()
	s := New(LinuxSystem{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := s.BecomeReaper(); err != nil {
		t.Fatalf("become subreaper: %v", err)
	}
	return s
}

func helperSpec(t *testing.T, mode, dir string, extraEnv ...string) Spec {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := append([]string{testhelper.EnvMode + "=" + mode, testhelper.EnvDir + "=" + dir, testhelper.NoRaceExitDelay}, extraEnv...)
	return Spec{Path: self, Env: env, Dir: dir}
}

func TestStop(t *testing.T) {
	tests := []struct {
		name       string
		mode       string
		env        []string
		stopAfter  bool // call Stop while the worker runs (else wait for it to exit on its own)
		grace      time.Duration
		want       ExitStatus
		grandchild bool
	}{
		{name: "exits with its code", mode: testhelper.ModeExit, env: []string{"GBW_HELPER_CODE=3"}, want: ExitStatus{Code: 3}},
		{name: "clean exit", mode: testhelper.ModeExit, want: ExitStatus{Code: 0}},
		{name: "hang ends on SIGTERM", mode: testhelper.ModeHang, stopAfter: true, grace: 10 * time.Second,
			want: ExitStatus{Code: -1, Signal: syscall.SIGTERM}},
		{name: "ignoring SIGTERM gets SIGKILL after grace", mode: testhelper.ModeIgnoreTerm, stopAfter: true, grace: 100 * time.Millisecond,
			want: ExitStatus{Code: -1, Signal: syscall.SIGKILL}},
		{name: "zero grace kills at once", mode: testhelper.ModeHang, stopAfter: true, grace: 0,
			want: ExitStatus{Code: -1, Signal: syscall.SIGKILL}},
		{name: "grandchild in the group outlives the worker", mode: testhelper.ModeGrandchild, want: ExitStatus{Code: 0}, grandchild: true},
		{name: "setsid grandchild escapes the group", mode: testhelper.ModeGrandchildSetsid, want: ExitStatus{Code: 0}, grandchild: true},
		{name: "setsid grandchild of a stopped worker", mode: testhelper.ModeGrandchildHang, stopAfter: true, grace: 5 * time.Second,
			want: ExitStatus{Code: -1, Signal: syscall.SIGTERM}, grandchild: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSupervisor(t)
			dir := t.TempDir()
			p, err := s.Start(helperSpec(t, tt.mode, dir, tt.env...))
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			t.Cleanup(func() { p.Kill() })
			gc := 0
			if tt.grandchild {
				gc = testhelper.GrandchildPid(t, dir)
				t.Cleanup(func() { _ = syscall.Kill(gc, syscall.SIGKILL) }) // only matters if the test fails
				if !testhelper.Alive(gc) {
					t.Fatalf("grandchild %d not running", gc)
				}
			}
			if tt.stopAfter {
				testhelper.WaitReady(t, dir)
			} else {
				<-p.Done()
			}
			got := p.Stop(tt.grace)
			if got != tt.want {
				t.Fatalf("status = %v, want %v", got, tt.want)
			}
			if testhelper.Alive(p.Pid()) {
				t.Errorf("worker %d still exists after Stop", p.Pid())
			}
			if syscall.Kill(-p.Pid(), 0) == nil {
				t.Errorf("process group %d still has members after Stop", p.Pid())
			}
			if gc != 0 && testhelper.Alive(gc) {
				t.Errorf("grandchild %d still exists (alive or unreaped) after Stop", gc)
			}
		})
	}
}

func TestStopTwiceAndConcurrently(t *testing.T) {
	s := newSupervisor(t)
	dir := t.TempDir()
	p, err := s.Start(helperSpec(t, testhelper.ModeIgnoreTerm, dir))
	if err != nil {
		t.Fatal(err)
	}
	testhelper.WaitReady(t, dir)
	var wg sync.WaitGroup
	results := make([]ExitStatus, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				results[i] = p.Stop(50 * time.Millisecond)
			} else {
				results[i] = p.Kill()
			}
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r != results[0] || r.Signal != syscall.SIGKILL {
			t.Errorf("call %d returned %v, first returned %v (want SIGKILL for all)", i, r, results[0])
		}
	}
	if again := p.Stop(time.Second); again != results[0] {
		t.Errorf("Stop after stop = %v, want %v", again, results[0])
	}
}

func TestStartFailures(t *testing.T) {
	dir := t.TempDir()
	notExec := dir + "/not-executable"
	garbage := dir + "/garbage"
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(garbage, []byte("\x7fELF but not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path string }{
		{"missing", dir + "/nope"},
		{"not executable", notExec},
		{"exec format error", garbage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSupervisor(t)
			_, err := s.Start(Spec{Path: tt.path, Dir: dir})
			if err == nil {
				t.Fatal("start succeeded")
			}
			if !errorsIs(err, ErrStart) {
				t.Errorf("error %v does not wrap ErrStart", err)
			}
		})
	}
}

func TestCleanEnvironmentAndGroup(t *testing.T) {
	t.Setenv("WRAPPER_SECRET", "must-not-leak")
	s := newSupervisor(t)
	dir := t.TempDir()
	p, err := s.Start(helperSpec(t, testhelper.ModeHang, dir, "ONLY=this"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	r := testhelper.ReadReport(t, dir)
	if r.Pgid != r.Pid || r.Pid != p.Pid() {
		t.Errorf("worker pid %d pgid %d, want its own group %d", r.Pid, r.Pgid, p.Pid())
	}
	for _, e := range r.Env {
		if e == "WRAPPER_SECRET=must-not-leak" {
			t.Errorf("wrapper environment leaked into the worker: %v", r.Env)
		}
	}
	if r.Cwd != dir {
		t.Errorf("cwd = %q, want %q", r.Cwd, dir)
	}
}

func TestReapZombies(t *testing.T) {
	s := newSupervisor(t)
	dir := t.TempDir()
	// The worker starts a setsid grandchild and exits; the grandchild is re-parented to us. Killing it directly
	// leaves a zombie that only the reaper loop can collect.
	p, err := s.Start(helperSpec(t, testhelper.ModeGrandchildSetsid, dir))
	if err != nil {
		t.Fatal(err)
	}
	gc := testhelper.GrandchildPid(t, dir)
	t.Cleanup(func() { _ = syscall.Kill(gc, syscall.SIGKILL) })
	<-p.Done()
	ctx, cancel := contextWithCancel()
	t.Cleanup(cancel)
	go s.ReapZombies(ctx, 20*time.Millisecond)
	testhelper.Eventually(t, 10*time.Second, func() bool {
		kids, _ := s.untrackedChildren()
		for _, k := range kids {
			if k.Pid == gc {
				return true
			}
		}
		return false
	}, "grandchild %d was not re-parented to the subreaper", gc)
	if err := syscall.Kill(gc, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testhelper.Eventually(t, 10*time.Second, func() bool { return !testhelper.Alive(gc) }, "zombie %d not reaped", gc)
	p.Kill()
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		line string
		want ProcInfo
		ok   bool
	}{
		{"42 (worker) S 7 42 42 0 -1", ProcInfo{Pid: 42, PPid: 7, Pgrp: 42}, true},
		{"43 (we ird) (name) Z 1 9 9 0", ProcInfo{Pid: 43, PPid: 1, Pgrp: 9, Zombie: true}, true},
		{"44 (truncated", ProcInfo{}, false},
	}
	for _, tt := range tests {
		pid := tt.want.Pid
		if !tt.ok {
			pid = 44
		}
		got, ok := parseStat(pid, []byte(tt.line))
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}
