package wrapper

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"recycler.dev/go-boot-wrapper/internal/fakerecycler"
	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
	"recycler.dev/go-boot-wrapper/internal/testhelper"
)

// standbyEnv is a wrapper whose cache already holds the job's worker binary (prefetched), as the recycler offers a
// standby only with artifacts the wrapper holds.
type standbyEnv struct {
	f         *fakerecycler.Fake
	h         *harness
	s         *fakerecycler.Session
	art       fakerecycler.Artifact
	helperDir string
	hold      *fakerecycler.Hold // a test's hold on the binary's GetArtifact, if any
}

func newStandbyEnv(t testing.TB, mode string, env ...string) *standbyEnv {
	t.Helper()
	f := fakerecycler.Start(t, "slot-0")
	h := startWrapper(t, f, t.TempDir(), withGrace(200*time.Millisecond))
	return warmStandbyEnv(t, f, h, mode, env...)
}

func warmStandbyEnv(t testing.TB, f *fakerecycler.Fake, h *harness, mode string, env ...string) *standbyEnv {
	t.Helper()
	e := &standbyEnv{f: f, h: h, s: f.NextSession(t), helperDir: t.TempDir()}
	e.art = workerArtifact(t, mode, e.helperDir, env...)
	f.Stage(e.art)
	f.Prefetch(e.s, e.art)
	if p := e.s.ExpectPrefetched(t, "sha256:"+e.art.Digest()); !p.GetOk() {
		t.Fatalf("warming the cache: %v", p)
	}
	return e
}

// standby sends Standby{gen} with the job's prepared inputs and returns the lease credential reserved for it.
func (e *standbyEnv) standby(gen int64) string {
	info := e.f.ProvisionInfo(map[string]any{"beam:option:job_name:v1": "standby-job"})
	return e.f.Standby(e.s, gen, "slot-0.g"+strconv.FormatInt(gen, 10), info, e.f.Prepared(info))
}

// report waits for the helper's report and ready files and takes them, so that the next worker writes its own.
func (e *standbyEnv) report(t testing.TB) testhelper.Report {
	t.Helper()
	r := testhelper.ReadReport(t, e.helperDir)
	testhelper.WaitReady(t, e.helperDir)
	for _, n := range []string{"report.json", "ready"} {
		if err := os.Remove(filepath.Join(e.helperDir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// serveLease runs a prepared lease of generation gen on the slot to its end: the slot is free and serves as usual.
func (e *standbyEnv) serveLease(t *testing.T, gen int64) {
	t.Helper()
	info := e.f.ProvisionInfo(nil)
	e.f.LeasePrepared(e.s, gen, "slot-0.g"+strconv.FormatInt(gen, 10), info, e.f.Prepared(info))
	e.s.ExpectStarted(t, gen)
	e.report(t)
	e.s.Exit(gen)
	e.s.ExpectEnded(t, gen)
}

// noLeaseCalls fails the test if any provision or artifact call with lease metadata arrived, or a GetArtifact with a
// prefetch ticket other than the one that warmed the cache.
func (e *standbyEnv) noLeaseCalls(t *testing.T, when string) {
	t.Helper()
	for m, want := range map[string]int{fakerecycler.MethodGetProvisionInfo: 0, fakerecycler.MethodResolveArtifacts: 0,
		fakerecycler.MethodGetArtifact: 0, fakerecycler.MethodPrefetchArtifact: 1} {
		if got := e.f.Calls(m); got != want {
			t.Errorf("%s: %s calls = %d, want %d", when, m, got, want)
		}
	}
}

// TestStandbyAdopted: a standby is booted exactly as its Lease would be (same directory, command line, environment,
// options file) without a single call and without WorkerStarted; the Lease that adopts it gets WorkerStarted with the
// standby's pid at once, again without a call, and from then on runs and ends as any lease.
func TestStandbyAdopted(t *testing.T) {
	e := newStandbyEnv(t, testhelper.ModeHang)
	cred := e.standby(2)
	r := e.report(t)
	dir := e.h.leaseDir(2)
	wantArgs := []string{"--worker=true", "--id=slot-0.g2." + cred, "--logging_endpoint=" + e.f.Addr(),
		"--control_endpoint=localhost:1", "--semi_persist_dir=" + dir}
	if !slices.Equal(r.Args, wantArgs) || r.Cwd != dir || r.Pgid != r.Pid {
		t.Errorf("standby worker args %q cwd %q pgid %d; want %q in %q leading its own group", r.Args, r.Cwd, r.Pgid, wantArgs, dir)
	}
	checkEnv(t, r.Env, dir)
	var opts map[string]any
	if err := json.Unmarshal([]byte(r.Options), &opts); err != nil || opts["beam:option:job_name:v1"] != "standby-job" {
		t.Errorf("pipeline options file = %q (%v), want the standby's options", r.Options, err)
	}
	e.s.ExpectPong(t, 1) // no WorkerStarted for a standby
	e.noLeaseCalls(t, "standby")
	logs := e.h.logs.String()
	if !strings.Contains(logs, "msg=\"standby started\" slot=slot-0 standby=true generation=2 worker_id=slot-0.g2 pid="+strconv.Itoa(r.Pid)) {
		t.Errorf("no standby started line with the public id and pid:\n%s", logs)
	}
	if slices.ContainsFunc(e.f.LogWorkerIDs(), func(id string) bool { return strings.Contains(id, cred) }) {
		t.Errorf("the standby's boot log was forwarded to Beam's logging service: %v", e.f.LogWorkerIDs())
	}

	info := e.f.ProvisionInfo(nil)
	e.f.AdoptLease(e.s, 2, "slot-0.g2", e.f.Prepared(info))
	if ws := e.s.ExpectStarted(t, 2); ws.GetPid() != int64(r.Pid) {
		t.Errorf("WorkerStarted pid %d, want the standby's %d", ws.GetPid(), r.Pid)
	}
	e.noLeaseCalls(t, "adoption")
	if !testhelper.Alive(r.Pid) {
		t.Fatalf("the adopted worker %d is gone", r.Pid)
	}
	// The line is written just after WorkerStarted is sent (its took ends there): wait for it.
	started := regexp.MustCompile(`msg="worker started" slot=slot-0 generation=2 worker_id=slot-0.g2 pid=` +
		strconv.Itoa(r.Pid) + ` adopted_standby=true took=\S+`)
	if !e.h.logs.waitFor(started, 5*time.Second) {
		t.Fatalf("no worker started line for the adoption with its time:\n%s", e.h.logs.String())
	}

	e.s.Exit(2)
	ended := e.s.ExpectEnded(t, 2)
	if ended.GetOutcome() != recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION || ended.GetSignal() != "SIGTERM" ||
		!slices.Contains(ended.GetHeldDigests(), "sha256:"+e.art.Digest()) {
		t.Errorf("LeaseEnded = %v, want EXITED_ON_INSTRUCTION by SIGTERM holding the binary", ended)
	}
	if testhelper.Alive(r.Pid) || exists(dir) {
		t.Errorf("after LeaseEnded: worker alive %v, lease dir exists %v", testhelper.Alive(r.Pid), exists(dir))
	}
	if logs := e.h.logs.String(); strings.Contains(logs, cred) {
		t.Errorf("the wrapper logged the lease credential:\n%s", logs)
	}
	// The adopted lease's boot lines reach Beam's logging service under the lease's worker id, as a booted lease's do.
	testhelper.Eventually(t, fakerecycler.Wait, func() bool { return slices.Contains(e.f.LogWorkerIDs(), "slot-0.g2."+cred) },
		"the adopted lease's boot log never reached the logging service: %v", e.f.LogWorkerIDs())
}

// breakdownLine is how recycler-core's benchmark Breakdown finds a lease's wrapper lines in --log_format=json output.
var breakdownLine = regexp.MustCompile(`"time":"([^"]+)".*"msg":"([^"]+)","slot":"([^"]+)","generation":(\d+)`)

// TestStandbyLogLinesForTheBreakdown: the benchmark's Breakdown takes the first "lease", "provisioned" and "worker
// started" line of each slot and generation; for an adopted lease "lease" and "worker started" must be the adoption's,
// in that order, and "provisioned" absent (the Breakdown counts its segments 0 then), never the standby's boot.
func TestStandbyLogLinesForTheBreakdown(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	h := startWrapperLogging(t, f, t.TempDir(), func(w io.Writer, o *slog.HandlerOptions) slog.Handler { return slog.NewJSONHandler(w, o) })
	e := warmStandbyEnv(t, f, h, testhelper.ModeHang)
	e.standby(2)
	e.report(t)
	before := len(h.logs.String())
	if !strings.Contains(h.logs.String(), `"msg":"standby started"`) {
		t.Fatalf("no standby started line:\n%s", h.logs.String())
	}
	info := f.ProvisionInfo(nil)
	f.AdoptLease(e.s, 2, "slot-0.g2", f.Prepared(info))
	e.s.ExpectStarted(t, 2)
	testhelper.Eventually(t, fakerecycler.Wait, func() bool { return strings.Contains(h.logs.String(), `"msg":"worker started"`) },
		"no worker started line")

	logs := h.logs.String()
	first := map[string]int{}
	for _, m := range breakdownLine.FindAllStringSubmatchIndex(logs, -1) {
		msg, gen := logs[m[4]:m[5]], logs[m[8]:m[9]]
		if gen != "2" {
			continue
		}
		if m[0] < before {
			t.Errorf("a line of the standby's boot looks like its lease's to the Breakdown: %s", logs[m[0]:m[1]])
		}
		if _, ok := first[msg]; !ok {
			first[msg] = m[0]
		}
	}
	l, okL := first["lease"]
	w, okW := first["worker started"]
	_, okP := first["provisioned"]
	if !okL || !okW || l > w || okP {
		t.Errorf("want lease and worker started lines of generation 2 in that order and no provisioned line, got positions %v:\n%s",
			first, logs[before:])
	}
	e.s.Exit(2)
	e.s.ExpectEnded(t, 2)
}

// TestStandbyReplacedByALease: a Lease that does not adopt the standby (another generation, adopt_standby unset, or
// another worker id than the standby's, which its running worker cannot take) has it killed and its directory
// deleted, StandbyEnded sent, and only then boots.
func TestStandbyReplacedByALease(t *testing.T) {
	tests := []struct {
		name    string
		gen     int64
		adopt   bool
		wantMsg string
	}{
		{name: "another generation", gen: 3, wantMsg: "replaced by lease 3"},
		{name: "same generation without adopt_standby", gen: 2, wantMsg: "replaced by lease 2"},
		{name: "adopt_standby with another worker id", gen: 2, adopt: true, wantMsg: "replaced by lease 2 (its worker_id is not the standby's)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStandbyEnv(t, testhelper.ModeHang)
			e.standby(2)
			standby := e.report(t)

			info := e.f.ProvisionInfo(nil)
			id := "slot-0.g" + strconv.FormatInt(tt.gen, 10)
			cred := e.f.Assign("slot-0", tt.gen, info) // a fresh credential, as for any new lease
			e.s.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Lease{Lease: &recyclerpb.Lease{
				Generation: tt.gen, WorkerId: id + "." + cred, Credential: cred, Prepared: e.f.Prepared(info), AdoptStandby: tt.adopt}}})
			if se := e.s.ExpectStandbyEnded(t, 2); se.GetMessage() != tt.wantMsg {
				t.Errorf("StandbyEnded message %q, want %q", se.GetMessage(), tt.wantMsg)
			}
			if !testhelper.Gone(standby.Pid) {
				t.Errorf("standby worker %d still runs after StandbyEnded", standby.Pid)
			}
			if tt.gen != 2 && exists(e.h.leaseDir(2)) { // a Lease of generation 2 recreates it at once
				t.Errorf("the standby's directory survived its StandbyEnded")
			}
			ws := e.s.ExpectStarted(t, tt.gen)
			r := e.report(t)
			if ws.GetPid() == int64(standby.Pid) || ws.GetPid() != int64(r.Pid) || !slices.Contains(r.Args, "--id="+id+"."+cred) {
				t.Errorf("WorkerStarted pid %d, worker %d with args %q; want a fresh worker of the Lease (standby was %d)",
					ws.GetPid(), r.Pid, r.Args, standby.Pid)
			}
			e.s.Exit(tt.gen)
			if le := e.s.ExpectEnded(t, tt.gen); le.GetOutcome() != recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION {
				t.Errorf("LeaseEnded = %v, want EXITED_ON_INSTRUCTION", le)
			}
		})
	}
}

// TestStandbyUnused: Exit{STANDBY_UNUSED} for the standby's generation stops it: StandbyEnded once its worker and
// directory are gone, no LeaseEnded, and the slot serves the next lease.
func TestStandbyUnused(t *testing.T) {
	e := newStandbyEnv(t, testhelper.ModeIgnoreTerm)
	e.standby(2)
	standby := e.report(t)

	e.s.ExitFor(2, recyclerpb.ExitReason_EXIT_REASON_STANDBY_UNUSED)
	se := e.s.ExpectStandbyEnded(t, 2)
	if !strings.Contains(se.GetMessage(), "EXIT_REASON_STANDBY_UNUSED") {
		t.Errorf("StandbyEnded message %q does not name the exit reason", se.GetMessage())
	}
	if !testhelper.Gone(standby.Pid) || exists(e.h.leaseDir(2)) {
		t.Errorf("after StandbyEnded: worker gone %v, directory exists %v", testhelper.Gone(standby.Pid), exists(e.h.leaseDir(2)))
	}
	// A second Exit of that generation is ignored; the next message is the next lease's, not a LeaseEnded{2}.
	e.s.ExitFor(2, recyclerpb.ExitReason_EXIT_REASON_STANDBY_UNUSED)
	e.serveLease(t, 3)
}

// TestInstructionsRightBehindAStandbysEnd: instructions that reach the wrapper while a standby is being stopped or
// adopted apply in order: a Lease right behind the Exit that stops the standby boots after StandbyEnded; an Exit right
// behind the Lease that replaces the standby ends that Lease; an Exit right behind the adopting Lease ends the lease
// the standby became.
func TestInstructionsRightBehindAStandbysEnd(t *testing.T) {
	t.Run("lease behind the exit", func(t *testing.T) {
		e := newStandbyEnv(t, testhelper.ModeIgnoreTerm)
		e.standby(2)
		e.report(t)
		e.s.ExitFor(2, recyclerpb.ExitReason_EXIT_REASON_STANDBY_UNUSED)
		info := e.f.ProvisionInfo(nil)
		e.f.LeasePrepared(e.s, 3, "slot-0.g3", info, e.f.Prepared(info))
		e.s.ExpectStandbyEnded(t, 2)
		e.s.ExpectStarted(t, 3)
		e.s.Exit(3)
		e.s.ExpectEnded(t, 3)
	})
	t.Run("exit behind the replacing lease", func(t *testing.T) {
		e := newStandbyEnv(t, testhelper.ModeIgnoreTerm)
		e.standby(2)
		e.report(t)
		info := e.f.ProvisionInfo(nil)
		e.f.LeasePrepared(e.s, 3, "slot-0.g3", info, e.f.Prepared(info))
		e.s.Exit(3)
		e.s.ExpectStandbyEnded(t, 2)
		// Lease 3 ends on its Exit: at once if the Exit came before it started (the usual case), else after its start.
		m := e.s.Next(t)
		if m.GetWorkerStarted().GetGeneration() == 3 {
			m = e.s.Next(t)
		}
		if le := m.GetLeaseEnded(); le.GetGeneration() != 3 || le.GetOutcome() != recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION {
			t.Errorf("got %v, want LeaseEnded{3, EXITED_ON_INSTRUCTION}", m)
		}
		if exists(e.h.leaseDir(3)) || exists(e.h.leaseDir(2)) {
			t.Errorf("a lease directory survived")
		}
	})
	t.Run("exit behind the adopting lease", func(t *testing.T) {
		e := newStandbyEnv(t, testhelper.ModeHang)
		e.standby(2)
		standby := e.report(t)
		e.f.AdoptLease(e.s, 2, "slot-0.g2", nil)
		e.s.Exit(2)
		if ws := e.s.ExpectStarted(t, 2); ws.GetPid() != int64(standby.Pid) {
			t.Errorf("WorkerStarted pid %d, want the standby's %d", ws.GetPid(), standby.Pid)
		}
		if le := e.s.ExpectEnded(t, 2); le.GetOutcome() != recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION || le.GetSignal() != "SIGTERM" {
			t.Errorf("LeaseEnded = %v, want the adopted worker stopped by SIGTERM on the Exit", le)
		}
	})
}

// TestStandbyDeclined: a standby that cannot start now from what the wrapper holds, or that finds the slot busy, is
// answered StandbyEnded{"declined: ..."} at once, with no call to the recycler and no directory left; whatever ran
// before goes on untouched.
func TestStandbyDeclined(t *testing.T) {
	tests := []struct {
		name       string
		binary     []byte // the worker binary's content (nil: a helper worker that hangs)
		warm       bool   // prefetch the binary before the standby
		prepared   bool   // the standby carries its prepared inputs
		prefetches int    // prefetch GetArtifact calls in all
		// before runs ahead of Standby{2}; after checks what must still hold once it is declined.
		before, after func(t *testing.T, e *standbyEnv)
		wantMsg       string
	}{
		{name: "binary not held", prepared: true, wantMsg: "is not in the local cache; a standby fetches nothing"},
		{name: "binary being prefetched", prepared: true, prefetches: 1, wantMsg: "is being fetched right now",
			before: func(t *testing.T, e *standbyEnv) {
				e.hold = e.f.HoldArtifact(t, e.art.Digest())
				e.f.Prefetch(e.s, e.art)
				waitFor(t, e.hold.Reached(), "the prefetch's GetArtifact")
			},
			after: func(t *testing.T, e *standbyEnv) {
				// The decline came while the fetch was held mid-stream (the standby waited for nothing); the prefetch
				// goes on, and then a standby starts.
				e.hold.Release()
				if p := e.s.ExpectPrefetched(t, "sha256:"+e.art.Digest()); !p.GetOk() {
					t.Errorf("Prefetched = %v, want ok", p)
				}
				e.standby(3)
				testhelper.WaitReady(t, e.helperDir)
				e.s.ExitFor(3, recyclerpb.ExitReason_EXIT_REASON_STANDBY_UNUSED)
				e.s.ExpectStandbyEnded(t, 3)
			}},
		{name: "no prepared inputs", warm: true, prefetches: 1, wantMsg: "carries no prepared inputs"},
		{name: "binary cannot be executed", binary: []byte("\x7fELF not really a binary"), warm: true, prepared: true, prefetches: 1,
			wantMsg: "cannot execute the staged worker binary"},
		{name: "a lease runs", warm: true, prepared: true, prefetches: 1, wantMsg: "busy with a lease of generation 1",
			before: func(t *testing.T, e *standbyEnv) {
				info := e.f.ProvisionInfo(nil)
				e.f.LeasePrepared(e.s, 1, "slot-0.g1", info, e.f.Prepared(info))
				e.s.ExpectStarted(t, 1)
			},
			after: func(t *testing.T, e *standbyEnv) {
				e.s.Exit(1)
				if le := e.s.ExpectEnded(t, 1); le.GetOutcome() != recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION {
					t.Errorf("the running lease ended %v, want EXITED_ON_INSTRUCTION", le)
				}
			}},
		{name: "another standby runs", warm: true, prepared: true, prefetches: 1, wantMsg: "busy with another standby of generation 3",
			before: func(t *testing.T, e *standbyEnv) {
				e.standby(3)
				testhelper.WaitReady(t, e.helperDir)
			},
			after: func(t *testing.T, e *standbyEnv) {
				e.f.AdoptLease(e.s, 3, "slot-0.g3", nil)
				e.s.ExpectStarted(t, 3)
				e.s.Exit(3)
				e.s.ExpectEnded(t, 3)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-0")
			h := startWrapper(t, f, t.TempDir())
			e := &standbyEnv{f: f, h: h, s: f.NextSession(t), helperDir: t.TempDir()}
			e.art = workerArtifact(t, testhelper.ModeHang, e.helperDir)
			if tt.binary != nil {
				e.art.Content = tt.binary
			}
			f.Stage(e.art)
			if tt.warm {
				f.Prefetch(e.s, e.art)
				if p := e.s.ExpectPrefetched(t, "sha256:"+e.art.Digest()); !p.GetOk() {
					t.Fatalf("warming the cache: %v", p)
				}
			}
			if tt.before != nil {
				tt.before(t, e)
			}
			info := f.ProvisionInfo(nil)
			var prepared *recyclerpb.PreparedLease
			if tt.prepared {
				prepared = f.Prepared(info)
			}
			f.Standby(e.s, 2, "slot-0.g2", info, prepared)
			se := e.s.ExpectStandbyEnded(t, 2)
			if !strings.HasPrefix(se.GetMessage(), "declined: ") || !strings.Contains(se.GetMessage(), tt.wantMsg) ||
				strings.Contains(se.GetMessage(), "\n") {
				t.Errorf("StandbyEnded message %q, want one line \"declined: ...%s...\"", se.GetMessage(), tt.wantMsg)
			}
			for m, want := range map[string]int{fakerecycler.MethodGetProvisionInfo: 0, fakerecycler.MethodResolveArtifacts: 0,
				fakerecycler.MethodGetArtifact: 0, fakerecycler.MethodPrefetchArtifact: tt.prefetches} {
				if got := f.Calls(m); got != want {
					t.Errorf("%s calls = %d, want %d", m, got, want)
				}
			}
			if exists(h.leaseDir(2)) {
				t.Errorf("the declined standby's directory exists")
			}
			if tt.after != nil {
				tt.after(t, e)
			}
		})
	}
}

// TestStandbyWorkerEnds: a standby worker that exits (or is killed) on its own is reaped and its directory deleted,
// and StandbyEnded says how it ended. A Lease that then comes to adopt it boots a fresh worker as usual (from its
// prepared inputs when it has them, else with the calls).
func TestStandbyWorkerEnds(t *testing.T) {
	tests := []struct {
		name     string
		mode     string
		env      []string
		kill     bool // the test SIGKILLs the standby worker
		prepared bool // the adopting Lease carries prepared
		wantMsg  string
		wantEnd  recyclerpb.Outcome // how the adopting Lease's fresh worker ends
	}{
		{name: "exits with a code", mode: testhelper.ModeExit, env: []string{"GBW_HELPER_CODE=3"}, prepared: true,
			wantMsg: "exited with code 3", wantEnd: recyclerpb.Outcome_OUTCOME_WORKER_EXITED},
		{name: "killed by a signal", mode: testhelper.ModeHang, kill: true,
			wantMsg: "killed by SIGKILL", wantEnd: recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStandbyEnv(t, tt.mode, tt.env...)
			e.standby(2)
			standby := testhelper.ReadReport(t, e.helperDir)
			if err := os.Remove(filepath.Join(e.helperDir, "report.json")); err != nil {
				t.Fatal(err)
			}
			if tt.kill {
				testhelper.WaitReady(t, e.helperDir)
				if err := syscall.Kill(standby.Pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			if se := e.s.ExpectStandbyEnded(t, 2); se.GetMessage() != tt.wantMsg {
				t.Errorf("StandbyEnded message %q, want %q", se.GetMessage(), tt.wantMsg)
			}
			if !testhelper.Gone(standby.Pid) || exists(e.h.leaseDir(2)) {
				t.Errorf("after StandbyEnded: worker gone %v, directory exists %v", testhelper.Gone(standby.Pid), exists(e.h.leaseDir(2)))
			}

			// The recycler's Lease crossed the StandbyEnded: it still asks to adopt.
			var prepared *recyclerpb.PreparedLease
			if tt.prepared {
				prepared = e.f.Prepared(e.f.ProvisionInfo(nil))
			}
			e.f.AdoptLease(e.s, 2, "slot-0.g2", prepared)
			ws := e.s.ExpectStarted(t, 2)
			r := testhelper.ReadReport(t, e.helperDir)
			if ws.GetPid() == int64(standby.Pid) || ws.GetPid() != int64(r.Pid) || r.Cwd != e.h.leaseDir(2) {
				t.Errorf("WorkerStarted pid %d, worker %d in %q; want a fresh worker in %q (the standby was %d)",
					ws.GetPid(), r.Pid, r.Cwd, e.h.leaseDir(2), standby.Pid)
			}
			calls := 0
			if !tt.prepared {
				calls = 1
			}
			if n, m := e.f.Calls(fakerecycler.MethodGetProvisionInfo), e.f.Calls(fakerecycler.MethodResolveArtifacts); n != calls || m != calls {
				t.Errorf("GetProvisionInfo %d, ResolveArtifacts %d calls; want %d each", n, m, calls)
			}
			if tt.wantEnd == recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION {
				testhelper.WaitReady(t, e.helperDir)
				e.s.Exit(2)
			}
			if le := e.s.ExpectEnded(t, 2); le.GetOutcome() != tt.wantEnd {
				t.Errorf("LeaseEnded = %v, want %v", le, tt.wantEnd)
			}
		})
	}
}

// TestAdoptRacesTheStandbysDeath: the standby dies just as the Lease that adopts it arrives. Either the wrapper saw the
// death first (StandbyEnded, then a fresh worker for the Lease) or the Lease first (WorkerStarted with the standby's
// pid, then LeaseEnded for its death); never both, never neither.
func TestAdoptRacesTheStandbysDeath(t *testing.T) {
	for i := range 5 {
		t.Run("round "+strconv.Itoa(i), func(t *testing.T) {
			e := newStandbyEnv(t, testhelper.ModeHang)
			e.standby(2)
			standby := e.report(t)
			if err := syscall.Kill(standby.Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			info := e.f.ProvisionInfo(nil)
			e.f.AdoptLease(e.s, 2, "slot-0.g2", e.f.Prepared(info))
			m := e.s.Next(t)
			switch {
			case m.GetStandbyEnded().GetGeneration() == 2:
				if ws := e.s.ExpectStarted(t, 2); ws.GetPid() == int64(standby.Pid) {
					t.Errorf("WorkerStarted names the dead standby %d after StandbyEnded", standby.Pid)
				}
				e.report(t)
				e.s.Exit(2)
				e.s.ExpectEnded(t, 2)
			case m.GetWorkerStarted().GetGeneration() == 2:
				if m.GetWorkerStarted().GetPid() != int64(standby.Pid) {
					t.Errorf("WorkerStarted %v first, want the standby's pid %d", m, standby.Pid)
				}
				if le := e.s.ExpectEnded(t, 2); le.GetOutcome() != recyclerpb.Outcome_OUTCOME_WORKER_EXITED || le.GetSignal() != "SIGKILL" {
					t.Errorf("LeaseEnded = %v, want the adopted worker's death by SIGKILL", le)
				}
			default:
				t.Fatalf("first message %v, want StandbyEnded{2} or WorkerStarted{2}", m)
			}
			// Nothing more of generation 2: the next message is the next lease's.
			e.f.LeasePrepared(e.s, 3, "slot-0.g3", info, e.f.Prepared(info))
			e.s.ExpectStarted(t, 3)
			e.s.Exit(3)
			e.s.ExpectEnded(t, 3)
		})
	}
}

// TestStandbyStoppedWithTheSession: the standby belongs to the attach session: a broken stream, a restarted recycler
// or the wrapper's shutdown kills it and deletes its directory, without a StandbyEnded (the new session starts
// without standby).
func TestStandbyStoppedWithTheSession(t *testing.T) {
	tests := []struct {
		name string
		lose func(e *standbyEnv)
	}{
		{"stream broken", func(e *standbyEnv) { e.s.Break() }},
		{"recycler restarts", func(e *standbyEnv) { e.f.Stop(); e.f.Restart() }},
		{"wrapper stops", func(e *standbyEnv) { e.h.stop() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStandbyEnv(t, testhelper.ModeIgnoreTerm)
			e.standby(2)
			standby := e.report(t)

			tt.lose(e)
			if tt.name == "wrapper stops" {
				waitFor(t, e.s.Ended(), "the end of the attach stream")
			} else {
				s2 := e.f.NextSession(t)
				// The next lease's WorkerStarted is the first message on the new stream: no StandbyEnded{2}.
				info := e.f.ProvisionInfo(nil)
				e.f.LeasePrepared(s2, 3, "slot-0.g3", info, e.f.Prepared(info))
				s2.ExpectStarted(t, 3)
				s2.Exit(3)
				s2.ExpectEnded(t, 3)
			}
			// Before the wrapper re-attached (or Run returned), the standby was gone.
			if !testhelper.Gone(standby.Pid) || exists(e.h.leaseDir(2)) {
				t.Errorf("standby gone %v, directory exists %v", testhelper.Gone(standby.Pid), exists(e.h.leaseDir(2)))
			}
			for _, m := range e.s.Received() {
				if m.GetStandbyEnded() != nil {
					t.Errorf("StandbyEnded sent for a standby the session took along: %v", m)
				}
			}
		})
	}
}

// TestPrefetchWhileStandbyRuns: a prefetch is served while a standby waits, and the standby is then adopted as usual.
func TestPrefetchWhileStandbyRuns(t *testing.T) {
	e := newStandbyEnv(t, testhelper.ModeHang)
	e.standby(2)
	standby := e.report(t)
	next := workerArtifact(t, testhelper.ModeExit, t.TempDir())
	e.f.Stage(e.art, next)
	e.f.Prefetch(e.s, next)
	if p := e.s.ExpectPrefetched(t, "sha256:"+next.Digest()); !p.GetOk() ||
		!slices.Equal(p.GetHeldDigests(), sortedDigests(e.art, next)) {
		t.Errorf("Prefetched = %v, want ok holding both binaries", p)
	}
	e.f.AdoptLease(e.s, 2, "slot-0.g2", nil)
	if ws := e.s.ExpectStarted(t, 2); ws.GetPid() != int64(standby.Pid) {
		t.Errorf("WorkerStarted pid %d, want the standby's %d", ws.GetPid(), standby.Pid)
	}
	e.s.Exit(2)
	e.s.ExpectEnded(t, 2)
}

func sortedDigests(arts ...fakerecycler.Artifact) []string {
	var out []string
	for _, a := range arts {
		out = append(out, "sha256:"+a.Digest())
	}
	slices.Sort(out)
	return out
}

// BenchmarkLeaseToWorkerStarted prints the time from the fake recycler sending a Lease to its receiving WorkerStarted
// (two loopback gRPC hops included), with prepared inputs and a warm cache: "booted" boots the lease and forks the
// worker, "adopted" takes over a standby that already runs. A real Go worker's own start (runtime init, beam.Init,
// control dial: about 20 ms) follows WorkerStarted for a booted lease and precedes the Lease for an adopted one; the
// helper worker here does not model it.
func BenchmarkLeaseToWorkerStarted(b *testing.B) {
	for _, adopt := range []bool{false, true} {
		name := "booted"
		if adopt {
			name = "adopted"
		}
		b.Run(name, func(b *testing.B) {
			e := newStandbyEnv(b, testhelper.ModeHang)
			info := e.f.ProvisionInfo(nil)
			gen := int64(1)
			for b.Loop() {
				gen++
				id := "slot-0.g" + strconv.FormatInt(gen, 10)
				if adopt {
					b.StopTimer()
					e.f.Standby(e.s, gen, id, info, e.f.Prepared(info))
					e.report(b)
					b.StartTimer()
					e.f.AdoptLease(e.s, gen, id, e.f.Prepared(info))
				} else {
					e.f.LeasePrepared(e.s, gen, id, info, e.f.Prepared(info))
				}
				e.s.ExpectStarted(b, gen)
				b.StopTimer() // ending the lease is not its start
				e.s.Exit(gen)
				e.s.ExpectEnded(b, gen)
				b.StartTimer()
			}
			if adopt { // the wrapper's own figure: Lease received to WorkerStarted sent, as its log states it
				var sum time.Duration
				tooks := adoptionTook.FindAllStringSubmatch(e.h.logs.String(), -1)
				for _, m := range tooks {
					d, err := time.ParseDuration(m[1])
					if err != nil {
						b.Fatal(err)
					}
					sum += d
				}
				if len(tooks) > 0 {
					b.ReportMetric(float64(sum.Microseconds())/float64(len(tooks)), "wrapper-µs/adoption")
				}
			}
		})
	}
}

var adoptionTook = regexp.MustCompile(`msg="worker started" .* adopted_standby=true took=(\S+)`)

// TestStandbyQueuedBehindTheStandbyItReplaces: the recycler replaces a slot's standby with another (a new job's worker
// started speculatively) by an Exit for the old one and, right behind it, the new Standby; or by the new Standby alone,
// of a later generation. Either way the old standby is stopped and reported first, then the new one starts exactly as
// any standby and is adopted as usual. An Exit for the queued standby before it started stops it unstarted.
func TestStandbyQueuedBehindTheStandbyItReplaces(t *testing.T) {
	tests := []struct {
		name      string
		exitFirst bool
		wantOld   string
	}{
		{name: "exit, then standby", exitFirst: true, wantOld: "EXIT_REASON_STANDBY_UNUSED"},
		{name: "a later standby alone", wantOld: "replaced by standby 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStandbyEnv(t, testhelper.ModeHang)
			e.standby(2)
			old := e.report(t)
			if tt.exitFirst {
				e.s.ExitFor(2, recyclerpb.ExitReason_EXIT_REASON_STANDBY_UNUSED)
			}
			cred := e.standby(3)
			if se := e.s.ExpectStandbyEnded(t, 2); !strings.Contains(se.GetMessage(), tt.wantOld) {
				t.Errorf("old standby's StandbyEnded message %q, want it to contain %q", se.GetMessage(), tt.wantOld)
			}
			if !testhelper.Gone(old.Pid) {
				t.Errorf("old standby worker %d still runs", old.Pid)
			}
			r := e.report(t)
			if r.Pid == old.Pid || !slices.Contains(r.Args, "--id=slot-0.g3."+cred) {
				t.Fatalf("queued standby: worker %d with args %q, want a fresh worker of generation 3", r.Pid, r.Args)
			}
			info := e.f.ProvisionInfo(nil)
			e.f.AdoptLease(e.s, 3, "slot-0.g3", e.f.Prepared(info))
			if ws := e.s.ExpectStarted(t, 3); ws.GetPid() != int64(r.Pid) {
				t.Errorf("WorkerStarted pid %d, want the queued standby's %d", ws.GetPid(), r.Pid)
			}
			e.noLeaseCalls(t, "queued standby")
			e.s.Exit(3)
			if le := e.s.ExpectEnded(t, 3); le.GetOutcome() != recyclerpb.Outcome_OUTCOME_EXITED_ON_INSTRUCTION {
				t.Errorf("LeaseEnded = %v, want EXITED_ON_INSTRUCTION", le)
			}
		})
	}

	t.Run("exit for the queued standby", func(t *testing.T) {
		e := newStandbyEnv(t, testhelper.ModeIgnoreTerm)
		e.standby(2)
		e.report(t)
		e.s.ExitFor(2, recyclerpb.ExitReason_EXIT_REASON_STANDBY_UNUSED)
		e.standby(3)
		e.s.ExitFor(3, recyclerpb.ExitReason_EXIT_REASON_STANDBY_UNUSED)
		got := map[int64]string{}
		for range 2 {
			se := e.s.Next(t).GetStandbyEnded()
			if se == nil {
				t.Fatalf("expected two StandbyEnded, got %v", got)
			}
			got[se.GetGeneration()] = se.GetMessage()
		}
		if !strings.Contains(got[3], "before it started") || !strings.Contains(got[2], "EXIT_REASON_STANDBY_UNUSED") {
			t.Errorf("StandbyEnded messages %v, want generation 2 stopped and 3 stopped before it started", got)
		}
		e.serveLease(t, 4)
	})
}
