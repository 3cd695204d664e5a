package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"recycler.dev/go-boot-wrapper/internal/boot"
	"recycler.dev/go-boot-wrapper/internal/fakerecycler"
	"recycler.dev/go-boot-wrapper/internal/testhelper"
)

// envRunMain makes the test binary run main() instead of the tests: the wrapper as a real process, with real
// signals and exit codes, without building it separately.
const envRunMain = "GBW_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		os.Args = append([]string{"go-boot-wrapper"}, strings.Fields(os.Getenv("GBW_TEST_ARGS"))...)
		main()
		return
	}
	testhelper.MainIfHelper()
	os.Exit(m.Run())
}

// wrapperCmd returns the wrapper as a child process with args and extra environment.
func wrapperCmd(t *testing.T, args []string, env ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append([]string{envRunMain + "=1", "GBW_TEST_ARGS=" + strings.Join(args, " "), "PATH=" + os.Getenv("PATH"),
		testhelper.NoRaceExitDelay}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	return cmd, &stderr
}

// startWrapper starts cmd (from wrapperCmd) and returns the channel its Wait result arrives on (a test that takes it
// puts it back). The test's cleanup kills the wrapper, waits for it, and prints its stderr if the test failed.
func startWrapper(t *testing.T, cmd *exec.Cmd, stderr *bytes.Buffer) chan error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("wrapper stderr:\n%s", stderr)
		}
	})
	return done
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -100
	}
	return 0
}

func TestUsageErrors(t *testing.T) {
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("too-short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     []string
		wantMsg string
	}{
		{"no flags", nil, nil, "missing --slot"},
		{"no recycler", []string{"--slot=s"}, nil, "missing --recycler"},
		{"bad log format", []string{"--slot=s", "--recycler=127.0.0.1:1", "--log_format=xml"}, nil, "text or json"},
		{"bad env value", []string{"--slot=s", "--recycler=127.0.0.1:1"}, []string{"RECYCLER_GRACE_PERIOD=soon"}, "RECYCLER_GRACE_PERIOD"},
		{"negative grace", []string{"--slot=s", "--recycler=127.0.0.1:1", "--grace_period=-1s"}, nil, "negative"},
		{"worker uid without gid", []string{"--slot=s", "--recycler=127.0.0.1:1", "--worker_uid=1000"}, nil, "set together"},
		{"worker gid from env without uid", []string{"--slot=s", "--recycler=127.0.0.1:1"}, []string{"RECYCLER_WORKER_GID=1000"}, "set together"},
		{"missing secret file", []string{"--slot=s", "--recycler=127.0.0.1:1", "--attach_secret_file=/nonexistent/secret"}, nil, "--attach_secret_file: read attach secret file"},
		{"short secret", []string{"--slot=s", "--recycler=127.0.0.1:1"}, []string{"RECYCLER_ATTACH_SECRET_FILE=" + short}, "fewer than 16 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, stderr := wrapperCmd(t, tt.args, tt.env...)
			err := cmd.Run()
			if code := exitCode(err); code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitUsage, stderr)
			}
			if !strings.Contains(stderr.String(), tt.wantMsg) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantMsg, stderr)
			}
		})
	}
}

// TestSigtermStopsWorkerAndExitsZero runs the real binary: attach with flags given as environment variables (among
// them the attach secret file, which the fake requires), a lease whose worker ignores SIGTERM, then SIGTERM to the
// wrapper.
func TestSigtermStopsWorkerAndExitsZero(t *testing.T) {
	const secret = "attach-secret-from-a-mounted-file"
	secretFile := filepath.Join(t.TempDir(), "attach-secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := fakerecycler.Start(t, "slot-env")
	f.RequireAttachSecret(secret)
	helperDir := t.TempDir()
	f.Stage(fakerecycler.Artifact{Role: boot.URNGoWorkerBinaryRole, Path: "/w",
		Content: testhelper.Script(t, testhelper.ModeIgnoreTerm, helperDir)})
	workDir := t.TempDir()
	cmd, stderr := wrapperCmd(t, []string{"--grace_period=200ms", "--log_format=json"},
		"RECYCLER_SLOT=slot-env", "RECYCLER_ENDPOINT="+f.Addr(), "RECYCLER_WORK_DIR="+workDir,
		"RECYCLER_GRACE_PERIOD=1h", // the explicit flag wins over the variable
		"RECYCLER_ATTACH_SECRET_FILE="+secretFile)
	done := startWrapper(t, cmd, stderr)

	s := f.NextSession(t)
	if s.Hello.GetSlotId() != "slot-env" || s.Hello.GetWrapperPid() != int64(cmd.Process.Pid) {
		t.Errorf("hello = %v, want slot-env from RECYCLER_SLOT and the wrapper's pid %d", s.Hello, cmd.Process.Pid)
	}
	f.Lease(s, 1, "slot-env.g1", f.ProvisionInfo(nil))
	pid := int(s.ExpectStarted(t, 1).GetPid())
	testhelper.WaitReady(t, helperDir)

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if code := exitCode(err); code != exitOK {
			t.Errorf("exit code %d after SIGTERM, want 0", code)
		}
	case <-time.After(fakerecycler.Wait):
		t.Fatalf("wrapper did not exit after SIGTERM")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %v with a 200ms grace period (the flag should win over RECYCLER_GRACE_PERIOD=1h)", took)
	}
	if testhelper.Alive(pid) {
		t.Errorf("worker %d survived the wrapper", pid)
	}
	if _, err := os.Stat(filepath.Join(workDir, "leases", "slot-env-g1")); err == nil {
		t.Errorf("lease dir survived the wrapper")
	}
	if !strings.Contains(stderr.String(), `"msg":"attached"`) {
		t.Errorf("json log lacks the attach line:\n%s", stderr)
	}
	if strings.Contains(stderr.String(), secret) || strings.Contains(stderr.String(), f.Credential(1)) {
		t.Errorf("the wrapper logged the attach secret or the lease credential:\n%s", stderr)
	}
}

// TestKilledWrapperTakesItsWorkerAlong: a wrapper killed outright (SIGKILL: no shutdown sequence) must not leave a
// worker serving nobody, neither a lease's nor a standby's (the standby belongs to the wrapper's session with the
// recycler); both get the parent-death signal from the supervisor.
func TestKilledWrapperTakesItsWorkerAlong(t *testing.T) {
	for _, standby := range []bool{false, true} {
		name := "lease worker"
		if standby {
			name = "standby worker"
		}
		t.Run(name, func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-kill")
			helperDir := t.TempDir()
			art := fakerecycler.Artifact{Role: boot.URNGoWorkerBinaryRole, Path: "/w", Content: testhelper.Script(t, testhelper.ModeHang, helperDir)}
			f.Stage(art)
			cmd, stderr := wrapperCmd(t, []string{"--slot=slot-kill", "--recycler=" + f.Addr(), "--work_dir=" + t.TempDir()})
			startWrapper(t, cmd, stderr)

			s := f.NextSession(t)
			info := f.ProvisionInfo(nil)
			if standby {
				f.Prefetch(s, art)
				if p := s.ExpectPrefetched(t, "sha256:"+art.Digest()); !p.GetOk() {
					t.Fatalf("prefetch: %v", p)
				}
				f.Standby(s, 1, "slot-kill.g1", info, f.Prepared(info))
			} else {
				f.LeasePrepared(s, 1, "slot-kill.g1", info, f.Prepared(info))
				s.ExpectStarted(t, 1)
			}
			pid := testhelper.ReadReport(t, helperDir).Pid
			// Only matters if the test fails: a survivor holds the wrapper's stderr pipe, which cmd.Wait waits for.
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
			testhelper.WaitReady(t, helperDir)

			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			testhelper.Eventually(t, fakerecycler.Wait, func() bool { return testhelper.Gone(pid) },
				"worker %d outlived the SIGKILLed wrapper", pid)
		})
	}
}

// TestAsPID1 runs the wrapper as PID 1 of a new PID namespace, as in a container, and checks that a grandchild that
// escaped the worker's process group is killed and reaped by the wrapper: after LeaseEnded the wrapper has no child
// left, not even a zombie.
func TestAsPID1(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil || exec.Command(unshare, "--pid", "--fork", "--mount-proc", "true").Run() != nil {
		t.Skip("cannot create a PID namespace here (needs unshare and CAP_SYS_ADMIN)")
	}
	f := fakerecycler.Start(t, "pid1")
	helperDir := t.TempDir()
	f.Stage(fakerecycler.Artifact{Role: boot.URNGoWorkerBinaryRole, Path: "/w",
		Content: testhelper.Script(t, testhelper.ModeGrandchildSetsid, helperDir)})
	inner, stderr := wrapperCmd(t, []string{"--slot=pid1", "--recycler=" + f.Addr(), "--work_dir=" + t.TempDir()})
	cmd := exec.Command(unshare, append([]string{"--pid", "--fork", "--mount-proc"}, inner.Path)...)
	cmd.Env, cmd.Stderr = inner.Env, inner.Stderr
	done := startWrapper(t, cmd, stderr)

	s := f.NextSession(t)
	if s.Hello.GetWrapperPid() != 1 {
		t.Fatalf("wrapper pid in its namespace = %d, want 1", s.Hello.GetWrapperPid())
	}
	ns := childrenOf(t, cmd.Process.Pid) // unshare's only child: the wrapper, as the host sees it
	if len(ns) != 1 {
		t.Fatalf("unshare has children %v, want exactly the wrapper", ns)
	}
	wrapperPid := ns[0]
	f.Lease(s, 1, "pid1.g1", f.ProvisionInfo(nil))
	s.ExpectStarted(t, 1)
	if e := s.ExpectEnded(t, 1); e.GetOutcome().String() != "OUTCOME_WORKER_EXITED" {
		t.Fatalf("LeaseEnded = %v, want WORKER_EXITED", e)
	}
	if kids := childrenOf(t, wrapperPid); len(kids) != 0 {
		t.Errorf("wrapper (PID 1) still has children %v after LeaseEnded: the escaped grandchild was not killed and reaped", kids)
	}
	if err := syscall.Kill(wrapperPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if code := exitCode(err); code != exitOK {
			t.Errorf("exit code %d after SIGTERM as PID 1, want 0", code)
		}
	case <-time.After(fakerecycler.Wait):
		t.Fatal("wrapper as PID 1 did not exit after SIGTERM")
	}
}

// childrenOf lists the pids whose parent is ppid, zombies included.
func childrenOf(t *testing.T, ppid int) []int {
	t.Helper()
	var kids []int
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) > 2 && fields[1] == strconv.Itoa(ppid) {
			pid, _ := strconv.Atoi(e.Name())
			kids = append(kids, pid)
		}
	}
	return kids
}

// A --work_dir that is not the wrapper's is refused at start with exit code 1, a message naming the flag, and
// nothing in it touched.
func TestForeignWorkDirIsRefused(t *testing.T) {
	dir := t.TempDir()
	precious := filepath.Join(dir, "leases", "pid1-g1", "precious")
	if err := os.MkdirAll(filepath.Dir(precious), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(precious, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, stderr := wrapperCmd(t, []string{"--slot=pid1", "--recycler=127.0.0.1:1", "--work_dir=" + dir})
	if code := exitCode(cmd.Run()); code != exitFailure {
		t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitFailure, stderr)
	}
	if !strings.Contains(stderr.String(), "--work_dir") {
		t.Errorf("stderr does not name the flag to fix:\n%s", stderr)
	}
	if b, err := os.ReadFile(precious); err != nil || string(b) != "keep" {
		t.Errorf("a file in the refused work dir was touched: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".go-boot-wrapper")); err == nil {
		t.Errorf("the refused work dir was marked")
	}
}
