package wrapper

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"google.golang.org/protobuf/proto"

	"recycler.dev/go-boot-wrapper/internal/fakerecycler"
	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
	"recycler.dev/go-boot-wrapper/internal/testhelper"
)

// TestPreparedLease: a Lease carrying prepared boots without GetProvisionInfo and ResolveArtifacts; the first lease
// fetches the binary it lacks (and only that), the next one on a warm cache makes no call at all before the worker
// starts, with the same command line, environment and options file as the unprepared path.
func TestPreparedLease(t *testing.T) {
	f := fakerecycler.Start(t, "slot-0")
	h := startWrapper(t, f, t.TempDir())
	helperDir := t.TempDir()
	art := workerArtifact(t, testhelper.ModeExit, helperDir)
	f.Stage(art)
	s := f.NextSession(t)
	wantCalls := func(provision, resolve, fetch int) {
		t.Helper()
		for m, want := range map[string]int{fakerecycler.MethodGetProvisionInfo: provision,
			fakerecycler.MethodResolveArtifacts: resolve, fakerecycler.MethodGetArtifact: fetch} {
			if got := f.Calls(m); got != want {
				t.Errorf("%s calls = %d, want %d", m, got, want)
			}
		}
	}

	for gen := int64(1); gen <= 2; gen++ {
		workerID := "slot-0.g" + strconv.FormatInt(gen, 10)
		info := f.ProvisionInfo(map[string]any{"beam:option:job_name:v1": "prepared"})
		f.LeasePrepared(s, gen, workerID, info, f.Prepared(info))
		s.ExpectStarted(t, gen)
		r := testhelper.ReadReport(t, helperDir)
		dir := h.leaseDir(gen)
		// The worker's --id is the Lease's worker_id: the public id and the lease credential.
		wantArgs := []string{"--worker=true", "--id=" + workerID + "." + f.Credential(gen), "--logging_endpoint=" + f.Addr(),
			"--control_endpoint=localhost:1", "--semi_persist_dir=" + dir}
		if !slices.Equal(r.Args, wantArgs) || r.Cwd != dir {
			t.Errorf("lease %d: worker args %q cwd %q, want %q in %q", gen, r.Args, r.Cwd, wantArgs, dir)
		}
		checkEnv(t, r.Env, dir)
		var opts map[string]any
		if err := json.Unmarshal([]byte(r.Options), &opts); err != nil || opts["beam:option:job_name:v1"] != "prepared" {
			t.Errorf("lease %d: pipeline options file = %q (%v), want the lease's options", gen, r.Options, err)
		}
		if e := s.ExpectEnded(t, gen); e.GetOutcome() != recyclerpb.Outcome_OUTCOME_WORKER_EXITED ||
			!slices.Contains(e.GetHeldDigests(), "sha256:"+art.Digest()) {
			t.Errorf("lease %d ended %v, want WORKER_EXITED holding the binary", gen, e)
		}
		// Both leases: no provision or resolve call; one fetch in all, by the first (cold) lease.
		wantCalls(0, 0, 1)
		if err := os.Remove(filepath.Join(helperDir, "report.json")); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(h.logs.String(), "prepared=true") {
		t.Errorf("wrapper log does not say the lease came prepared:\n%s", h.logs.String())
	}

	// A Lease without prepared (an older recycler) still boots the old way.
	f.Lease(s, 3, "slot-0.g3", f.ProvisionInfo(nil))
	s.ExpectStarted(t, 3)
	s.ExpectEnded(t, 3)
	wantCalls(1, 1, 1)
}

// TestPreparedLeaseBootFailures: bad prepared data ends the lease BOOT_FAILED at the stage it belongs to, with a
// message naming the problem, and the slot serves the next lease.
func TestPreparedLeaseBootFailures(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(p *recyclerpb.PreparedLease)
		wantStage recyclerpb.BootStage
		wantMsg   string
	}{
		{name: "no control endpoint", wantStage: recyclerpb.BootStage_BOOT_STAGE_PROVISION,
			edit:    func(p *recyclerpb.PreparedLease) { p.ProvisionInfo.ControlEndpoint = nil },
			wantMsg: "provision info from Lease.prepared has no control endpoint"},
		{name: "artifact without sha256", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS,
			edit: func(p *recyclerpb.PreparedLease) {
				p.Artifacts[0].TypePayload, _ = proto.Marshal(&pipepb.ArtifactFilePayload{Path: "/staged/worker"})
			},
			wantMsg: "from Lease.prepared has no valid sha256"},
		{name: "artifact of another type", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS,
			edit:    func(p *recyclerpb.PreparedLease) { p.Artifacts[0].TypeUrn = "beam:artifact:type:url:v1" },
			wantMsg: `from Lease.prepared has type "beam:artifact:type:url:v1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-0")
			h := startWrapper(t, f, t.TempDir())
			f.Stage(workerArtifact(t, testhelper.ModeExit, t.TempDir()))
			s := f.NextSession(t)

			info := f.ProvisionInfo(nil)
			prepared := f.Prepared(f.ProvisionInfo(nil))
			tt.edit(prepared)
			f.LeasePrepared(s, 1, "w", info, prepared)
			ended := s.ExpectEnded(t, 1)
			if ended.GetOutcome() != recyclerpb.Outcome_OUTCOME_BOOT_FAILED || ended.GetStage() != tt.wantStage ||
				!strings.Contains(ended.GetMessage(), tt.wantMsg) {
				t.Errorf("LeaseEnded = %v, want BOOT_FAILED at %v with a message containing %q", ended, tt.wantStage, tt.wantMsg)
			}
			if n, m := f.Calls(fakerecycler.MethodGetProvisionInfo), f.Calls(fakerecycler.MethodResolveArtifacts); n != 0 || m != 0 {
				t.Errorf("prepared lease fell back to GetProvisionInfo (%d) or ResolveArtifacts (%d)", n, m)
			}
			if exists(h.leaseDir(1)) {
				t.Errorf("lease dir of the failed boot still exists")
			}

			info = f.ProvisionInfo(nil)
			f.LeasePrepared(s, 2, "w", info, f.Prepared(info))
			s.ExpectStarted(t, 2)
			s.ExpectEnded(t, 2)
		})
	}
}
