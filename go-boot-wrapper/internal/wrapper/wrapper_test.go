package wrapper

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"recycler.dev/go-boot-wrapper/internal/boot"
	"recycler.dev/go-boot-wrapper/internal/fakerecycler"
	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
	"recycler.dev/go-boot-wrapper/internal/testhelper"
)

func TestLeaseLifecycle(t *testing.T) {
	tests := []struct {
		name        string
		mode        string
		env         []string
		sendExit    bool // send Exit once the worker is ready (else it exits on its own)
		grandchild  bool
		wantOutcome recyclerpb.Outcome
		wantCode    int32
		wantSignal  string
	}{
		{name: "exit instruction ends a running worker with SIGTERM", mode: testhelper.ModeHang, sendExit: true,
			wantOutcome: recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION, wantCode: -1, wantSignal: "SIGTERM"},
		{name: "worker ignoring SIGTERM is killed after the grace period", mode: testhelper.ModeIgnoreTerm, sendExit: true,
			wantOutcome: recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION, wantCode: -1, wantSignal: "SIGKILL"},
		{name: "crashing worker is reported at once with its code", mode: testhelper.ModeExit, env: []string{"GBW_HELPER_CODE=3"},
			wantOutcome: recyclerpb.Outcome_OUTCOME_WORKER_EXITED, wantCode: 3},
		{name: "worker printing a lot", mode: testhelper.ModeChatty,
			wantOutcome: recyclerpb.Outcome_OUTCOME_WORKER_EXITED, wantCode: 0},
		{name: "grandchild in the worker's group is killed", mode: testhelper.ModeGrandchild, grandchild: true,
			wantOutcome: recyclerpb.Outcome_OUTCOME_WORKER_EXITED, wantCode: 0},
		{name: "setsid grandchild is killed and reaped", mode: testhelper.ModeGrandchildSetsid, grandchild: true,
			wantOutcome: recyclerpb.Outcome_OUTCOME_WORKER_EXITED, wantCode: 0},
		{name: "setsid grandchild of a worker stopped by exit", mode: testhelper.ModeGrandchildHang, grandchild: true, sendExit: true,
			wantOutcome: recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION, wantCode: -1, wantSignal: "SIGTERM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-0")
			h := startWrapper(t, f, t.TempDir(), withGrace(150*time.Millisecond))
			helperDir := t.TempDir()
			art := workerArtifact(t, tt.mode, helperDir, tt.env...)
			f.Stage(art)
			s := f.NextSession(t)

			f.Lease(s, 7, "slot-0.g7", f.ProvisionInfo(map[string]any{"beam:option:job_name:v1": "lifecycle"}))
			started := s.ExpectStarted(t, 7)
			r := testhelper.ReadReport(t, helperDir)
			dir := h.leaseDir(7)
			if int64(r.Pid) != started.GetPid() || r.Pgid != r.Pid {
				t.Errorf("worker pid %d pgid %d, WorkerStarted pid %d: want the started pid leading its own group", r.Pid, r.Pgid, started.GetPid())
			}
			wantArgs := []string{"--worker=true", "--id=slot-0.g7." + f.Credential(7), "--logging_endpoint=" + f.Addr(),
				"--control_endpoint=localhost:1", "--semi_persist_dir=" + dir}
			if !slices.Equal(r.Args, wantArgs) {
				t.Errorf("worker args = %q, want %q", r.Args, wantArgs)
			}
			if r.Cwd != dir {
				t.Errorf("worker cwd = %q, want lease dir %q", r.Cwd, dir)
			}
			checkEnv(t, r.Env, dir)
			var opts map[string]any
			if err := json.Unmarshal([]byte(r.Options), &opts); err != nil || opts["beam:option:job_name:v1"] != "lifecycle" {
				t.Errorf("pipeline options file = %q (%v), want the lease's options", r.Options, err)
			}
			gc := 0
			if tt.grandchild {
				gc = testhelper.GrandchildPid(t, helperDir)
				t.Cleanup(func() { _ = syscall.Kill(gc, syscall.SIGKILL) }) // only matters if the test fails
			}
			if tt.sendExit {
				testhelper.WaitReady(t, helperDir)
				s.Exit(7)
			}

			ended := s.ExpectEnded(t, 7)
			if ended.GetOutcome() != tt.wantOutcome || ended.GetExitCode() != tt.wantCode || ended.GetSignal() != tt.wantSignal {
				t.Errorf("LeaseEnded = %v, want outcome %v code %d signal %q", ended, tt.wantOutcome, tt.wantCode, tt.wantSignal)
			}
			if !slices.Contains(ended.GetHeldDigests(), "sha256:"+art.Digest()) {
				t.Errorf("LeaseEnded held digests %v lack the worker binary", ended.GetHeldDigests())
			}
			// By the time LeaseEnded arrives, nothing of the lease may remain.
			if testhelper.Alive(r.Pid) {
				t.Errorf("worker %d still exists after LeaseEnded", r.Pid)
			}
			if syscall.Kill(-r.Pid, 0) == nil {
				t.Errorf("worker's process group %d still has members after LeaseEnded", r.Pid)
			}
			if gc != 0 && testhelper.Alive(gc) {
				t.Errorf("grandchild %d still exists after LeaseEnded", gc)
			}
			if exists(dir) {
				t.Errorf("lease dir %s still exists after LeaseEnded", dir)
			}
		})
	}
}

func checkEnv(t *testing.T, env []string, dir string) {
	t.Helper()
	want := map[string]string{
		"HOME":                  "/home/test",
		"LANG":                  "C.UTF-8",
		"TMPDIR":                filepath.Join(dir, "tmp"),
		"PIPELINE_OPTIONS_FILE": filepath.Join(dir, "pipeline_options.json"),
		"RUNNER_CAPABILITIES":   "beam:protocol:a:v1 beam:protocol:b:v1",
		"STATUS_ENDPOINT":       "localhost:2",
	}
	got := map[string]string{}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		got[k] = v
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("worker env %s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["WRAPPER_SECRET"]; ok {
		t.Errorf("wrapper environment leaked into the worker: %v", env)
	}
}

func TestBootFailures(t *testing.T) {
	garbage := fakerecycler.Artifact{Role: boot.URNGoWorkerBinaryRole, Path: "/staged/worker", Content: []byte("\x7fELF not really a binary")}
	tests := []struct {
		name      string
		setup     func(t *testing.T, f *fakerecycler.Fake, good fakerecycler.Artifact)
		wantStage recyclerpb.BootStage
		wantMsg   string
	}{
		{name: "provision error", wantStage: recyclerpb.BootStage_BOOT_STAGE_PROVISION, wantMsg: "GetProvisionInfo",
			setup: func(t *testing.T, f *fakerecycler.Fake, good fakerecycler.Artifact) {
				f.Stage(good)
				f.FailProvision(status.Error(codes.Unavailable, "runner provision service unreachable"))
			}},
		{name: "no artifacts staged", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS, wantMsg: "no artifacts",
			setup: func(t *testing.T, f *fakerecycler.Fake, good fakerecycler.Artifact) { f.Stage() }},
		{name: "no worker binary among several artifacts", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS, wantMsg: "worker binary role",
			setup: func(t *testing.T, f *fakerecycler.Fake, good fakerecycler.Artifact) {
				f.Stage(fakerecycler.Artifact{Path: "/a/data.txt", Content: []byte("a")}, fakerecycler.Artifact{Path: "/b/other", Content: []byte("b")})
			}},
		{name: "corrupt digest", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS, wantMsg: "sha256 mismatch",
			setup: func(t *testing.T, f *fakerecycler.Fake, good fakerecycler.Artifact) {
				good.Mode = fakerecycler.Corrupt
				f.Stage(good)
			}},
		{name: "truncated stream", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS, wantMsg: "size mismatch",
			setup: func(t *testing.T, f *fakerecycler.Fake, good fakerecycler.Artifact) {
				good.Mode = fakerecycler.Truncate
				f.Stage(good)
			}},
		{name: "stream fails midway", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS, wantMsg: "stream broke",
			setup: func(t *testing.T, f *fakerecycler.Fake, good fakerecycler.Artifact) {
				good.Mode = fakerecycler.FailStream
				f.Stage(good)
			}},
		{name: "binary cannot be executed", wantStage: recyclerpb.BootStage_BOOT_STAGE_START, wantMsg: "cannot execute",
			setup: func(t *testing.T, f *fakerecycler.Fake, good fakerecycler.Artifact) { f.Stage(garbage) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-0")
			h := startWrapper(t, f, t.TempDir())
			helperDir := t.TempDir()
			good := workerArtifact(t, testhelper.ModeExit, helperDir)
			tt.setup(t, f, good)
			s := f.NextSession(t)

			f.Lease(s, 1, "slot-0.g1", f.ProvisionInfo(nil))
			ended := s.ExpectEnded(t, 1)
			if ended.GetOutcome() != recyclerpb.Outcome_OUTCOME_BOOT_FAILED || ended.GetStage() != tt.wantStage ||
				!strings.Contains(ended.GetMessage(), tt.wantMsg) || strings.Contains(ended.GetMessage(), "\n") {
				t.Errorf("LeaseEnded = %v, want BOOT_FAILED at %v with a one-line message containing %q", ended, tt.wantStage, tt.wantMsg)
			}
			if exists(h.leaseDir(1)) {
				t.Errorf("lease dir of the failed boot still exists")
			}
			if tt.wantStage == recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS && slices.Contains(ended.GetHeldDigests(), "sha256:"+good.Digest()) {
				t.Errorf("a bad artifact entered the cache: %v", ended.GetHeldDigests())
			}

			// The wrapper stays up and serves the next lease.
			f.FailProvision(nil)
			good.Mode = fakerecycler.Serve
			f.Stage(good)
			f.Lease(s, 2, "slot-0.g2", f.ProvisionInfo(nil))
			s.ExpectStarted(t, 2)
			if e := s.ExpectEnded(t, 2); e.GetOutcome() != recyclerpb.Outcome_OUTCOME_WORKER_EXITED {
				t.Errorf("next lease ended %v, want WORKER_EXITED", e)
			}
		})
	}
}

func TestCacheReuse(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	workDir := t.TempDir()
	h := startWrapper(t, f, workDir)
	helperDir := t.TempDir()
	art := workerArtifact(t, testhelper.ModeExit, helperDir)
	f.Stage(art)
	s := f.NextSession(t)
	firstIncarnation := s.Hello.GetIncarnationId()
	if len(s.Hello.GetHeldDigests()) != 0 {
		t.Errorf("fresh wrapper announced digests %v", s.Hello.GetHeldDigests())
	}

	for gen := int64(1); gen <= 3; gen++ {
		f.Lease(s, gen, "w", f.ProvisionInfo(nil))
		s.ExpectStarted(t, gen)
		s.ExpectEnded(t, gen)
	}
	if n := f.Fetches(art.Digest()); n != 1 {
		t.Errorf("worker binary fetched %d times over 3 leases, want 1", n)
	}

	// A re-attach announces the cache, with the same incarnation.
	s.Break()
	s2 := f.NextSession(t)
	if !slices.Contains(s2.Hello.GetHeldDigests(), "sha256:"+art.Digest()) || s2.Hello.GetIncarnationId() != firstIncarnation {
		t.Errorf("re-attach hello = %v, want held digest %s and incarnation %s", s2.Hello, art.Digest(), firstIncarnation)
	}

	// A new wrapper process on the same work dir keeps the cache but is a new incarnation.
	h.stop()
	startWrapper(t, f, workDir)
	s3 := f.NextSession(t)
	if !slices.Contains(s3.Hello.GetHeldDigests(), "sha256:"+art.Digest()) || s3.Hello.GetIncarnationId() == firstIncarnation {
		t.Errorf("restarted wrapper hello = %v, want held digest and a new incarnation", s3.Hello)
	}
	f.Lease(s3, 4, "w", f.ProvisionInfo(nil))
	s3.ExpectStarted(t, 4)
	s3.ExpectEnded(t, 4)
	if n := f.Fetches(art.Digest()); n != 1 {
		t.Errorf("worker binary fetched %d times after a wrapper restart, want 1", n)
	}
}

func TestRecyclerLossStopsWorkerAndReattaches(t *testing.T) {
	tests := []struct {
		name string
		lose func(f *fakerecycler.Fake, s *fakerecycler.Session)
	}{
		{"stream broken", func(f *fakerecycler.Fake, s *fakerecycler.Session) { s.Break() }},
		{"recycler restarts", func(f *fakerecycler.Fake, s *fakerecycler.Session) { f.Stop(); f.Restart() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-0")
			h := startWrapper(t, f, t.TempDir(), withGrace(100*time.Millisecond))
			helperDir := t.TempDir()
			f.Stage(workerArtifact(t, testhelper.ModeIgnoreTerm, helperDir))
			s := f.NextSession(t)
			f.Lease(s, 3, "w", f.ProvisionInfo(nil))
			pid := int(s.ExpectStarted(t, 3).GetPid())
			testhelper.WaitReady(t, helperDir)

			tt.lose(f, s)
			s2 := f.NextSession(t)
			// The worker is gone before the wrapper attaches again, and so is its directory.
			if testhelper.Alive(pid) {
				t.Errorf("worker %d still exists after the wrapper re-attached", pid)
			}
			if exists(h.leaseDir(3)) {
				t.Errorf("lease dir still exists after re-attach")
			}
			if s2.Hello.GetIncarnationId() != s.Hello.GetIncarnationId() {
				t.Errorf("incarnation changed on re-attach within one process")
			}
			// And it serves leases again.
			f.Lease(s2, 4, "w", f.ProvisionInfo(nil))
			s2.ExpectStarted(t, 4)
			s2.Exit(4)
			s2.ExpectEnded(t, 4)
		})
	}
}

func TestRecyclerNotThereYet(t *testing.T) {
	f := fakerecycler.Reserve(t, "slot-0")
	h := startWrapper(t, f, t.TempDir())
	testhelper.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(h.logs.String(), "cannot attach to recycler")
	}, "first attach failure was not logged")
	f.Restart()
	f.NextSession(t)
	if n := strings.Count(h.logs.String(), "cannot attach to recycler"); n > 3 {
		t.Errorf("attach failure logged %d times; want the first and then only every Nth", n)
	}
}

func TestAttachRefused(t *testing.T) {
	const secret = "the-recyclers-attach-secret-0123"
	tests := []struct {
		name          string
		slots         []string
		refuse        codes.Code
		secret        string // the recycler requires it ("": none)
		wrapperSecret string // the wrapper's --attach_secret_file content ("": none)
		wantLog       string
	}{
		{"unknown slot", []string{"other-slot"}, codes.OK, "", "", "fix the wrapper's --slot"},
		{"slot held by another live wrapper", []string{"slot-0"}, codes.AlreadyExists, "", "", "fix the wrapper's --slot"},
		{"no attach secret", []string{"slot-0"}, codes.OK, secret, "", "code=Unauthenticated"},
		{"wrong attach secret", []string{"slot-0"}, codes.OK, secret, "not-the-recyclers-secret-0123456", "code=PermissionDenied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fakerecycler.Start(t, tt.slots...)
			f.Refuse(tt.refuse)
			f.RequireAttachSecret(tt.secret)
			h := startWrapper(t, f, t.TempDir(), withAttachSecret(tt.wrapperSecret))
			if tt.secret != "" { // refused before the Hello is read
				testhelper.Eventually(t, 10*time.Second, func() bool { return strings.Contains(h.logs.String(), "recycler refused attach") },
					"wrapper did not report the refusal")
			} else {
				testhelper.Eventually(t, 10*time.Second, func() bool { return len(f.Hellos()) >= 3 },
					"wrapper did not keep retrying after a refusal")
			}
			if !strings.Contains(h.logs.String(), "level=ERROR msg=\"recycler refused attach") || !strings.Contains(h.logs.String(), tt.wantLog) {
				t.Errorf("refusal not logged at ERROR with %q:\n%s", tt.wantLog, h.logs.String())
			}
			if tt.wrapperSecret != "" && strings.Contains(h.logs.String(), tt.wrapperSecret) {
				t.Errorf("the wrapper logged its attach secret:\n%s", h.logs.String())
			}
			select {
			case err := <-h.runErr:
				t.Fatalf("wrapper gave up after a refusal: Run returned %v", err)
			default:
			}
		})
	}
}

// TestAttachSecretAndLeaseCredential: the wrapper presents its attach secret on Attach and the Lease's credential on
// every provision and artifact call (the fake refuses, and records as a bad call, anything else), starts the worker
// with the full worker id, and logs neither secret.
func TestAttachSecretAndLeaseCredential(t *testing.T) {
	const secret = "the-recyclers-attach-secret-0123"
	f := fakerecycler.Start(t, "slot-0")
	f.RequireAttachSecret(secret)
	h := startWrapper(t, f, t.TempDir(), withAttachSecret(secret))
	helperDir := t.TempDir()
	f.Stage(workerArtifact(t, testhelper.ModeExit, helperDir))
	s := f.NextSession(t)

	f.Lease(s, 1, "slot-0.g1", f.ProvisionInfo(nil)) // not prepared: the wrapper calls provision and resolve itself
	s.ExpectStarted(t, 1)
	if e := s.ExpectEnded(t, 1); e.GetOutcome() != recyclerpb.Outcome_OUTCOME_WORKER_EXITED {
		t.Errorf("lease ended %v, want WORKER_EXITED", e)
	}
	for _, m := range []string{fakerecycler.MethodGetProvisionInfo, fakerecycler.MethodResolveArtifacts, fakerecycler.MethodGetArtifact} {
		if f.Calls(m) != 1 {
			t.Errorf("%s calls = %d, want 1", m, f.Calls(m))
		}
	}
	if r := testhelper.ReadReport(t, helperDir); !slices.Contains(r.Args, "--id=slot-0.g1."+f.Credential(1)) {
		t.Errorf("worker args %q lack the Lease's full worker id", r.Args)
	}
	logs := h.logs.String()
	if strings.Contains(logs, secret) || strings.Contains(logs, f.Credential(1)) {
		t.Errorf("the wrapper logged the attach secret or the lease credential:\n%s", logs)
	}
	if !strings.Contains(logs, "worker_id=slot-0.g1 ") {
		t.Errorf("the wrapper log lacks the public worker id:\n%s", logs)
	}
}

func TestPingAnsweredWhileBooting(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	startWrapper(t, f, t.TempDir())
	art := workerArtifact(t, testhelper.ModeExit, t.TempDir())
	f.Stage(art)
	release := f.GateArtifacts()
	t.Cleanup(release)
	s := f.NextSession(t)
	f.Lease(s, 1, "w", f.ProvisionInfo(nil))
	testhelper.Eventually(t, 10*time.Second, func() bool { return f.Fetches(art.Digest()) == 1 }, "boot never fetched the binary")

	s.Ping(42)
	if m := s.Next(t); m.GetPong().GetNonce() != 42 {
		t.Fatalf("expected Pong{42} while booting, got %v", m)
	}
	release()
	s.ExpectStarted(t, 1)
	s.ExpectEnded(t, 1)
}

func TestExitWhileBootingAbortsTheBoot(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	h := startWrapper(t, f, t.TempDir())
	art := workerArtifact(t, testhelper.ModeHang, t.TempDir())
	f.Stage(art)
	release := f.GateArtifacts()
	t.Cleanup(release)
	s := f.NextSession(t)
	f.Lease(s, 5, "w", f.ProvisionInfo(nil))
	testhelper.Eventually(t, 10*time.Second, func() bool { return f.Fetches(art.Digest()) == 1 }, "boot never fetched the binary")

	s.Exit(5)
	ended := s.ExpectEnded(t, 5)
	if ended.GetOutcome() != recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION {
		t.Errorf("LeaseEnded = %v, want EXITED_ON_INSTRUCTION", ended)
	}
	if exists(h.leaseDir(5)) {
		t.Errorf("lease dir of the aborted boot still exists")
	}
	// The slot is usable again at once.
	release()
	f.Lease(s, 6, "w", f.ProvisionInfo(nil))
	s.ExpectStarted(t, 6)
	s.Exit(6)
	s.ExpectEnded(t, 6)
}

func TestExitForAnotherGenerationIsIgnored(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	startWrapper(t, f, t.TempDir())
	f.Stage(workerArtifact(t, testhelper.ModeHang, t.TempDir()))
	s := f.NextSession(t)
	f.Lease(s, 9, "w", f.ProvisionInfo(nil))
	pid := int(s.ExpectStarted(t, 9).GetPid())

	s.Exit(8)
	s.ExpectQuiet(t, 200*time.Millisecond)
	if !testhelper.Alive(pid) {
		t.Fatalf("worker %d died after an Exit for another generation", pid)
	}
	s.Exit(9)
	s.ExpectEnded(t, 9)
}

func TestLeaseWhileRunningIsRefused(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	startWrapper(t, f, t.TempDir())
	f.Stage(workerArtifact(t, testhelper.ModeHang, t.TempDir()))
	s := f.NextSession(t)
	f.Lease(s, 1, "w", f.ProvisionInfo(nil))
	pid := int(s.ExpectStarted(t, 1).GetPid())

	f.Lease(s, 2, "w2", f.ProvisionInfo(nil))
	e := s.ExpectEnded(t, 2)
	if e.GetOutcome() != recyclerpb.Outcome_OUTCOME_BOOT_FAILED || !strings.Contains(e.GetMessage(), "still runs generation 1") {
		t.Errorf("second lease ended %v, want BOOT_FAILED naming the running generation", e)
	}
	if !testhelper.Alive(pid) {
		t.Errorf("running worker was disturbed by the refused lease")
	}
	s.Exit(1)
	s.ExpectEnded(t, 1)
}

func TestShutdownStopsWorker(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	h := startWrapper(t, f, t.TempDir(), withGrace(100*time.Millisecond))
	helperDir := t.TempDir()
	f.Stage(workerArtifact(t, testhelper.ModeIgnoreTerm, helperDir))
	s := f.NextSession(t)
	f.Lease(s, 1, "w", f.ProvisionInfo(nil))
	pid := int(s.ExpectStarted(t, 1).GetPid())
	testhelper.WaitReady(t, helperDir)

	h.stop() // what SIGTERM to the wrapper does: Run returns nil
	if testhelper.Alive(pid) {
		t.Errorf("worker %d survived the wrapper's shutdown", pid)
	}
	if exists(h.leaseDir(1)) {
		t.Errorf("lease dir survived the wrapper's shutdown")
	}
	select {
	case <-s.Ended():
	case <-time.After(fakerecycler.Wait):
		t.Errorf("attach stream still open after shutdown")
	}
}

func TestBootLogsReachBeamLogging(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	startWrapper(t, f, t.TempDir())
	f.Stage(workerArtifact(t, testhelper.ModeExit, t.TempDir()))
	s := f.NextSession(t)
	f.Lease(s, 1, "w", f.ProvisionInfo(nil))
	s.ExpectStarted(t, 1)
	s.ExpectEnded(t, 1)
	testhelper.Eventually(t, 10*time.Second, func() bool {
		return slices.ContainsFunc(f.LogLines(), func(l string) bool { return strings.Contains(l, "worker started") })
	}, "boot log never reached the logging service: %v", f.LogLines())
	// The logging endpoint is the recycler's logging proxy, which checks the lease credential in the worker id.
	if want := "w." + f.Credential(1); !slices.Contains(f.LogWorkerIDs(), want) {
		t.Errorf("logging streams presented worker ids %q, want the lease's full worker id %q", f.LogWorkerIDs(), want)
	}
}

// TestBackToBackLeases: a Lease sent the moment LeaseEnded arrives must be served, never refused as "still runs
// generation N" (serve itself sends LeaseEnded after the lease goroutine is done, so the next Lease finds the slot free).
func TestBackToBackLeases(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	startWrapper(t, f, t.TempDir())
	f.Stage(workerArtifact(t, testhelper.ModeExit, t.TempDir()))
	s := f.NextSession(t)
	for gen := int64(1); gen <= 25; gen++ {
		f.Lease(s, gen, "w", f.ProvisionInfo(nil))
		s.ExpectStarted(t, gen)
		if e := s.ExpectEnded(t, gen); e.GetOutcome() != recyclerpb.Outcome_OUTCOME_WORKER_EXITED {
			t.Fatalf("lease %d ended %v, want WORKER_EXITED", gen, e)
		}
	}
}

// TestSlotsSharingAWorkDir: a wrapper starting on a work dir shared with another slot's wrapper removes only its own
// stale lease directories, never the other slot's running lease.
func TestSlotsSharingAWorkDir(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0", "slot-1")
	workDir := t.TempDir()
	h := startWrapper(t, f, workDir)
	f.Stage(workerArtifact(t, testhelper.ModeHang, t.TempDir()))
	s := f.NextSession(t)
	f.Lease(s, 1, "w", f.ProvisionInfo(nil))
	s.ExpectStarted(t, 1)
	stale := filepath.Join(workDir, "leases", "slot-1-g9")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}

	startWrapper(t, f, workDir, withSlot("slot-1"))
	if s1 := f.NextSession(t); s1.Hello.GetSlotId() != "slot-1" {
		t.Fatalf("second session is %v, want slot-1", s1.Hello)
	}
	if !exists(h.leaseDir(1)) {
		t.Errorf("starting slot-1's wrapper deleted slot-0's running lease directory")
	}
	if exists(stale) {
		t.Errorf("slot-1's stale lease directory survived its wrapper's start")
	}
	s.Exit(1)
	s.ExpectEnded(t, 1)
}
