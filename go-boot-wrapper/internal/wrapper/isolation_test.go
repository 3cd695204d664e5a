package wrapper

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"recycler.dev/go-boot-wrapper/internal/boot"
	"recycler.dev/go-boot-wrapper/internal/fakerecycler"
	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
	"recycler.dev/go-boot-wrapper/internal/testhelper"
)

// Regression (issue 11): the wrapper hard-linked cached binaries into each lease directory and checked only their
// size, so a worker running as the wrapper's user could chmod and rewrite the file the next lease executes.
func TestTamperedBinaryDoesNotReachTheNextLease(t *testing.T) {
	tests := []struct {
		how         string
		wantFetches int // a rewritten entry is fetched again; a chmod only restores the mode
	}{
		{how: "chmod", wantFetches: 1},
		{how: "rewrite", wantFetches: 2},
		{how: "replace", wantFetches: 2},
	}
	for _, tt := range tests {
		t.Run(tt.how, func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-0")
			startWrapper(t, f, t.TempDir())
			helperDir := t.TempDir()
			art := workerArtifact(t, testhelper.ModeTamper, helperDir, "GBW_HELPER_TAMPER="+tt.how)
			f.Stage(art)
			s := f.NextSession(t)

			for gen := int64(1); gen <= 2; gen++ {
				_ = os.Remove(filepath.Join(helperDir, "report.json"))
				f.Lease(s, gen, "w", f.ProvisionInfo(nil))
				s.ExpectStarted(t, gen)
				// The tampered binary would exit 42 without a report; the original reports and exits 0.
				e := s.ExpectEnded(t, gen)
				if e.GetOutcome() != recyclerpb.Outcome_OUTCOME_WORKER_EXITED || e.GetExitCode() != 0 {
					t.Fatalf("lease %d ended %v; want the original worker's exit code 0 (tampered: %d)", gen, e, testhelper.TamperedExitCode)
				}
				testhelper.ReadReport(t, helperDir)
			}
			if n := f.Fetches(art.Digest()); n != tt.wantFetches {
				t.Errorf("worker binary fetched %d times, want %d", n, tt.wantFetches)
			}
		})
	}
}

// A standby's worker can reach the cache as a lease's can: what it changes there must not reach the next lease either
// (the standby is booted from a verified entry, and the next boot verifies again).
func TestStandbyTamperingDoesNotReachTheNextLease(t *testing.T) {
	tests := []struct {
		how         string
		wantFetches int // the prefetch, and for a rewritten entry the lease's fetch
	}{
		{how: "chmod", wantFetches: 1},
		{how: "rewrite", wantFetches: 2},
		{how: "replace", wantFetches: 2},
	}
	for _, tt := range tests {
		t.Run(tt.how, func(t *testing.T) {
			e := newStandbyEnv(t, testhelper.ModeTamper, "GBW_HELPER_TAMPER="+tt.how)
			e.standby(2)
			if se := e.s.ExpectStandbyEnded(t, 2); se.GetMessage() != "exited with code 0" {
				t.Fatalf("StandbyEnded = %v; want the original worker's exit code 0 (it tampers, then exits)", se)
			}
			testhelper.ReadReport(t, e.helperDir)
			_ = os.Remove(filepath.Join(e.helperDir, "report.json"))

			info := e.f.ProvisionInfo(nil)
			e.f.LeasePrepared(e.s, 3, "slot-0.g3", info, e.f.Prepared(info))
			e.s.ExpectStarted(t, 3)
			// The tampered binary would exit 42 without a report; the original reports and exits 0.
			if le := e.s.ExpectEnded(t, 3); le.GetOutcome() != recyclerpb.Outcome_OUTCOME_WORKER_EXITED || le.GetExitCode() != 0 {
				t.Fatalf("lease ended %v; want the original worker's exit code 0 (tampered: %d)", le, testhelper.TamperedExitCode)
			}
			testhelper.ReadReport(t, e.helperDir)
			if n := e.f.Fetches(e.art.Digest()); n != tt.wantFetches {
				t.Errorf("worker binary fetched %d times, want %d", n, tt.wantFetches)
			}
		})
	}
}

// Lease directories hold the pipeline options: 0700 directories and 0600 files, whatever the wrapper's umask.
func TestLeaseFilesArePrivateWhateverTheUmask(t *testing.T) {
	for _, umask := range []int{0o000, 0o022, 0o077, 0o777} {
		t.Run(fmt.Sprintf("umask %04o", umask), func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-0")
			h := startWrapper(t, f, t.TempDir())
			helperDir := t.TempDir()
			f.Stage(workerArtifact(t, testhelper.ModeHang, helperDir))
			s := f.NextSession(t)
			old := syscall.Umask(umask)
			t.Cleanup(func() { syscall.Umask(old) })

			f.Lease(s, 1, "w", f.ProvisionInfo(map[string]any{"secret": "s3cr3t"}))
			s.ExpectStarted(t, 1)
			testhelper.WaitReady(t, helperDir)
			syscall.Umask(old) // the lease is booted; the test's own files need the usual umask
			dir := h.leaseDir(1)
			for _, c := range []struct {
				path string
				want os.FileMode
			}{
				{dir, os.ModeDir | 0o700},
				{filepath.Join(dir, "tmp"), os.ModeDir | 0o700},
				{filepath.Join(dir, "staged"), os.ModeDir | 0o700},
				{filepath.Join(dir, "pipeline_options.json"), 0o600},
			} {
				st, err := os.Stat(c.path)
				if err != nil || st.Mode() != c.want {
					t.Errorf("%s: mode %v (%v), want %v", c.path, st.Mode(), err, c.want)
				}
			}
			s.Exit(1)
			s.ExpectEnded(t, 1)
		})
	}
}

// LeaseEnded promises the lease directory is gone, and the protocol has no way to report one that is not: the wrapper
// keeps retrying and stays silent until it is gone (it used to report LeaseEnded with a message anyway).
func TestLeaseEndedOnlyOnceTheDirectoryIsGone(t *testing.T) {
	tests := []struct {
		name     string
		mode     string
		sendExit bool
		want     recyclerpb.Outcome
	}{
		{name: "exit instruction", mode: testhelper.ModeHang, sendExit: true, want: recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION},
		{name: "worker exits on its own", mode: testhelper.ModeExit, want: recyclerpb.Outcome_OUTCOME_WORKER_EXITED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-0")
			stuck := &stuckRemover{release: make(chan struct{})}
			h := startWrapper(t, f, t.TempDir(), func(c *Config) { c.RemoveAll = stuck.RemoveAll })
			helperDir := t.TempDir()
			f.Stage(workerArtifact(t, tt.mode, helperDir))
			s := f.NextSession(t)

			f.Lease(s, 1, "w", f.ProvisionInfo(nil))
			s.ExpectStarted(t, 1)
			if tt.sendExit {
				testhelper.WaitReady(t, helperDir)
				s.Exit(1)
			}
			testhelper.Eventually(t, 10*time.Second, func() bool { return stuck.attempts() >= 3 }, "no retries to delete the lease directory")
			s.ExpectQuiet(t, 100*time.Millisecond)
			if !exists(h.leaseDir(1)) {
				t.Fatalf("the scripted failure did not keep the directory")
			}
			if !strings.Contains(h.logs.String(), "level=WARN msg=\"cannot delete lease directory") {
				t.Errorf("no WARN about the lease directory in the log")
			}
			// A Ping is still answered while the lease drains.
			s.Ping(99)
			if m := s.Next(t); m.GetPong().GetNonce() != 99 {
				t.Errorf("expected Pong 99 while deleting, got %v", m)
			}

			close(stuck.release)
			if e := s.ExpectEnded(t, 1); e.GetOutcome() != tt.want || e.GetMessage() != "" {
				t.Errorf("LeaseEnded = %v, want %v without a message", e, tt.want)
			}
			if exists(h.leaseDir(1)) {
				t.Errorf("lease dir still exists after LeaseEnded")
			}
		})
	}
}

// stuckRemover fails to delete anything until release is closed, as a directory with a mount point in it does.
type stuckRemover struct {
	release chan struct{}
	mu      sync.Mutex
	n       int
}

func (r *stuckRemover) RemoveAll(path string) error {
	select {
	case <-r.release:
		return os.RemoveAll(path)
	default:
	}
	r.mu.Lock()
	r.n++
	r.mu.Unlock()
	return &os.PathError{Op: "unlinkat", Path: path, Err: syscall.EBUSY}
}

func (r *stuckRemover) attempts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// The same with a real obstacle: a file system mounted inside the lease directory (as a privileged worker could leave
// one), which even root cannot delete until it is unmounted. Skipped where mounting is not permitted.
func TestLeaseDirectoryWithAMountPoint(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	h := startWrapper(t, f, t.TempDir())
	helperDir := t.TempDir()
	f.Stage(workerArtifact(t, testhelper.ModeHang, helperDir))
	s := f.NextSession(t)
	f.Lease(s, 1, "w", f.ProvisionInfo(nil))
	s.ExpectStarted(t, 1)
	testhelper.WaitReady(t, helperDir)
	mnt := filepath.Join(h.leaseDir(1), "tmp")
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })

	s.Exit(1)
	testhelper.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(h.logs.String(), "cannot delete lease directory")
	}, "no warning about the undeletable lease directory")
	s.ExpectQuiet(t, 100*time.Millisecond)
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	s.ExpectEnded(t, 1)
	if exists(h.leaseDir(1)) {
		t.Errorf("lease dir still exists after LeaseEnded")
	}
}

// Issue 12: no line a worker wrote before its lease ended may be lost because of the exit instruction. The worker
// writes straight to the wrapper's stdout and stderr (no pipe, no copy loop in the wrapper), so every write(2) it
// completed is in the wrapper's output when LeaseEnded is sent; this pins that down, including the lines it writes
// in its SIGTERM handler.
func TestWorkerOutputSurvivesTheExitInstruction(t *testing.T) {
	tests := []struct {
		name  string
		file  func(c *Config) **os.File
		label string
	}{
		{name: "stdout", file: func(c *Config) **os.File { return &c.Stdout }, label: "stdout"},
		{name: "stderr", file: func(c *Config) **os.File { return &c.Stderr }, label: "stderr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := os.CreateTemp(t.TempDir(), "worker-"+tt.label)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = out.Close() })
			f := fakerecycler.Start(t, "slot-0")
			startWrapper(t, f, t.TempDir(), func(c *Config) { *tt.file(c) = out })
			helperDir := t.TempDir()
			f.Stage(workerArtifact(t, testhelper.ModeLogUntilTerm, helperDir))
			s := f.NextSession(t)

			f.Lease(s, 1, "w", f.ProvisionInfo(nil))
			s.ExpectStarted(t, 1)
			testhelper.WaitReady(t, helperDir)
			s.Exit(1)
			if e := s.ExpectEnded(t, 1); e.GetExitCode() != 0 || e.GetSignal() != "" {
				t.Fatalf("LeaseEnded = %v, want the worker's own exit code 0 after its SIGTERM handler", e)
			}
			b, err := os.ReadFile(out.Name())
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if len(lines) != testhelper.LogLines+1 || lines[len(lines)-1] != testhelper.LastLogLine {
				t.Fatalf("worker %s has %d lines ending %q; want %d numbered lines and %q",
					tt.label, len(lines), lines[len(lines)-1], testhelper.LogLines, testhelper.LastLogLine)
			}
			for i, l := range lines[:testhelper.LogLines] {
				if want := fmt.Sprintf("worker: %s line %d", tt.label, i+1); l != want {
					t.Fatalf("line %d = %q, want %q", i+1, l, want)
				}
			}
		})
	}
}

// With --worker_uid the worker cannot even try: the cache files are root's and read-only, their directories root's
// and not writable, and the lease directory is the worker's own.
func TestSeparateWorkerUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run workers as another user")
	}
	nobody := &boot.User{UID: 65534, GID: 65534}
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		must(t, os.Chmod(d, 0o711)) // t.TempDir's directories are 0700
	}
	bin := copyTestBinary(t, filepath.Join(base, "bin"))
	for _, how := range []string{"chmod", "rewrite", "replace"} {
		t.Run(how, func(t *testing.T) {
			helperDir := filepath.Join(base, how)
			must(t, os.Mkdir(helperDir, 0o777))
			must(t, os.Chmod(helperDir, 0o777))
			workDir := filepath.Join(base, how+"-work")
			f := fakerecycler.Start(t, "slot-0")
			h := startWrapper(t, f, workDir, func(c *Config) { c.Worker = nobody })
			art := fakerecycler.Artifact{Role: boot.URNGoWorkerBinaryRole, Path: "/staged/worker",
				Content: testhelper.ScriptFor(bin, testhelper.ModeTamper, helperDir, "GBW_HELPER_TAMPER="+how)}
			f.Stage(art)
			s := f.NextSession(t)

			for gen := int64(1); gen <= 2; gen++ {
				_ = os.Remove(filepath.Join(helperDir, "report.json"))
				f.Lease(s, gen, "w", f.ProvisionInfo(nil))
				s.ExpectStarted(t, gen)
				r := testhelper.ReadReport(t, helperDir)
				if r.UID != int(nobody.UID) || r.GID != int(nobody.GID) {
					t.Errorf("worker ran as uid %d gid %d, want %d %d", r.UID, r.GID, nobody.UID, nobody.GID)
				}
				// The helper exits 3 when its attack fails.
				if e := s.ExpectEnded(t, gen); e.GetExitCode() != 3 {
					t.Errorf("lease %d ended %v; want exit code 3 (the tampering was refused)", gen, e)
				}
			}
			if n := f.Fetches(art.Digest()); n != 1 {
				t.Errorf("worker binary fetched %d times, want 1 (the cache entry stayed intact)", n)
			}
			cached := filepath.Join(workDir, "cache", "slot-0", "sha256", art.Digest())
			st, err := os.Stat(cached)
			if err != nil || st.Mode() != 0o555 || st.Sys().(*syscall.Stat_t).Uid != 0 {
				t.Errorf("cached binary %v (%v), want root's and read-only", st, err)
			}
			if strings.Contains(h.logs.String(), "changed in the local cache") {
				t.Errorf("the cache entry was changed:\n%s", h.logs.String())
			}
		})
	}

	t.Run("lease directory is the worker's", func(t *testing.T) {
		helperDir := filepath.Join(base, "hang")
		must(t, os.Mkdir(helperDir, 0o777))
		must(t, os.Chmod(helperDir, 0o777))
		f := fakerecycler.Start(t, "slot-0")
		h := startWrapper(t, f, filepath.Join(base, "hang-work"), func(c *Config) { c.Worker = nobody })
		f.Stage(fakerecycler.Artifact{Role: boot.URNGoWorkerBinaryRole, Path: "/staged/worker",
			Content: testhelper.ScriptFor(bin, testhelper.ModeHang, helperDir)})
		s := f.NextSession(t)
		f.Lease(s, 1, "w", f.ProvisionInfo(nil))
		s.ExpectStarted(t, 1)
		testhelper.WaitReady(t, helperDir)
		for _, p := range []string{".", "tmp", "staged", "pipeline_options.json"} {
			st, err := os.Stat(filepath.Join(h.leaseDir(1), p))
			if err != nil {
				t.Fatal(err)
			}
			if sys := st.Sys().(*syscall.Stat_t); sys.Uid != nobody.UID || sys.Gid != nobody.GID {
				t.Errorf("%s belongs to %d:%d, want the worker's %d:%d", p, sys.Uid, sys.Gid, nobody.UID, nobody.GID)
			}
		}
		s.Exit(1)
		s.ExpectEnded(t, 1)
		if exists(h.leaseDir(1)) {
			t.Errorf("lease dir still exists after LeaseEnded")
		}
	})
}

// copyTestBinary copies this test binary into dir (created 0755) so that another user can execute it.
func copyTestBinary(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	must(t, err)
	b, err := os.ReadFile(self)
	must(t, err)
	must(t, os.Mkdir(dir, 0o755))
	must(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "wrapper.test")
	must(t, os.WriteFile(bin, b, 0o755))
	return bin
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
