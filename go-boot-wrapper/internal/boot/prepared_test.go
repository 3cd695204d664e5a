package boot

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"recycler.dev/go-boot-wrapper/internal/artifactcache"
	"recycler.dev/go-boot-wrapper/internal/fakerecycler"
	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
)

// secretOption is a pipeline option value that must never appear in a log line or a failure message.
const secretOption = "s3cr3t-option-value"

// lockedBuffer collects a test's log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// bootEnv is a Booter for slot-0 talking to a fake recycler, with its own cache and leases directory.
type bootEnv struct {
	f      *fakerecycler.Fake
	b      *Booter
	cache  *artifactcache.Cache
	leases string
	logs   *lockedBuffer
	bin    fakerecycler.Artifact // the staged worker binary
}

func newBootEnv(t testing.TB) *bootEnv {
	t.Helper()
	f := fakerecycler.Start(t, "slot-0")
	conn, err := grpc.NewClient(f.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	cache, err := artifactcache.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	e := &bootEnv{f: f, cache: cache, leases: t.TempDir(), logs: &lockedBuffer{},
		bin: fakerecycler.Artifact{Role: URNGoWorkerBinaryRole, Path: "/staged/worker", Content: []byte("#!/bin/sh\nexit 0\n")}}
	e.b = New(Config{SlotID: "slot-0", RecyclerEndpoint: f.Addr(), LeasesDir: e.leases,
		Getenv: func(k string) string { return map[string]string{"PATH": "/bin", "HOME": "/home/test"}[k] }}, conn, cache)
	f.Stage(e.bin)
	t.Cleanup(func() {
		if bad := f.BadCalls(); len(bad) > 0 {
			t.Errorf("calls without lease metadata: %v", bad)
		}
		if t.Failed() {
			t.Logf("boot log:\n%s", e.logs.String())
		}
	})
	return e
}

func (e *bootEnv) warm(t testing.TB) {
	t.Helper()
	if err := e.cache.Admit(e.bin.Digest(), int64(len(e.bin.Content)), bytes.NewReader(e.bin.Content)); err != nil {
		t.Fatal(err)
	}
}

func (e *bootEnv) info() *fnpb.ProvisionInfo {
	return e.f.ProvisionInfo(map[string]any{"beam:option:job_name:v1": "prepared-job", "secret": secretOption})
}

// boot runs one boot of generation gen, made current at the fake with info.
func (e *bootEnv) boot(t testing.TB, gen int64, info *fnpb.ProvisionInfo, prepared *recyclerpb.PreparedLease) (*Prepared, error) {
	t.Helper()
	cred := e.f.Assign("slot-0", gen, info)
	log := NewLog(slog.New(slog.NewTextHandler(e.logs, nil)))
	defer log.Close()
	p, err := e.b.Boot(context.Background(), Lease{Generation: gen, WorkerID: "slot-0.g1." + cred, Credential: cred, Prepared: prepared}, log)
	if p != nil {
		t.Cleanup(func() { _ = os.RemoveAll(p.Dir) })
	}
	return p, err
}

// TestPreparedLease: with Lease.prepared the boot makes neither GetProvisionInfo nor ResolveArtifacts, and GetArtifact
// only for a digest the cache lacks; without it, the boot asks for both as before. The result is the same either way.
func TestPreparedLease(t *testing.T) {
	tests := []struct {
		name                                  string
		prepared, warm                        bool
		otherArtifactEndpoint                 bool // info.artifact_endpoint spells the recycler's address differently
		wantProvision, wantResolve, wantFetch int
	}{
		{name: "prepared, warm cache: no call at all", prepared: true, warm: true},
		{name: "prepared, cold cache: only GetArtifact", prepared: true, wantFetch: 1},
		{name: "prepared, cold cache, own artifact connection", prepared: true, otherArtifactEndpoint: true, wantFetch: 1},
		{name: "not prepared, own artifact connection", otherArtifactEndpoint: true, wantProvision: 1, wantResolve: 1, wantFetch: 1},
		{name: "not prepared, warm cache: provision and resolve", warm: true, wantProvision: 1, wantResolve: 1},
		{name: "not prepared, cold cache: every call", wantProvision: 1, wantResolve: 1, wantFetch: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t)
			if tt.warm {
				e.warm(t)
			}
			info := e.info()
			if tt.otherArtifactEndpoint {
				_, port, _ := strings.Cut(e.f.Addr(), ":")
				info.ArtifactEndpoint = &pipepb.ApiServiceDescriptor{Url: "localhost:" + port}
			}
			var prepared *recyclerpb.PreparedLease
			if tt.prepared {
				prepared = e.f.Prepared(info)
			}

			p, err := e.boot(t, 1, info, prepared)
			if err != nil {
				t.Fatalf("Boot: %v", err)
			}
			calls := map[string]int{
				fakerecycler.MethodGetProvisionInfo: tt.wantProvision,
				fakerecycler.MethodResolveArtifacts: tt.wantResolve,
				fakerecycler.MethodGetArtifact:      tt.wantFetch,
			}
			for m, want := range calls {
				if got := e.f.Calls(m); got != want {
					t.Errorf("%s calls = %d, want %d", m, got, want)
				}
			}
			if got, err := os.ReadFile(p.Spec.Path); err != nil || !bytes.Equal(got, e.bin.Content) {
				t.Errorf("worker binary %s = %q (%v), want the staged content", p.Spec.Path, got, err)
			}
			if !e.cache.Has(e.bin.Digest()) {
				t.Errorf("cache lacks the worker binary after the boot")
			}
			dir := filepath.Join(e.leases, "slot-0-g1")
			// --id is the full worker id of the Lease: the public id and the lease credential.
			wantArgs := []string{"--worker=true", "--id=slot-0.g1." + e.f.Credential(1), "--logging_endpoint=" + e.f.Addr(),
				"--control_endpoint=localhost:1", "--semi_persist_dir=" + dir}
			if p.Dir != dir || p.Spec.Path != filepath.Join(dir, WorkerFile) || !slices.Equal(p.Spec.Args, wantArgs) {
				t.Errorf("prepared = dir %q path %q args %q; want dir %q and args %q", p.Dir, p.Spec.Path, p.Spec.Args, dir, wantArgs)
			}
			optionsPath := filepath.Join(dir, OptionsFile)
			if !slices.Contains(p.Spec.Env, "PIPELINE_OPTIONS_FILE="+optionsPath) || !slices.Contains(p.Spec.Env, "STATUS_ENDPOINT=localhost:2") {
				t.Errorf("worker env %q lacks PIPELINE_OPTIONS_FILE or STATUS_ENDPOINT", p.Spec.Env)
			}
			if opts, err := os.ReadFile(optionsPath); err != nil || !bytes.Contains(opts, []byte("prepared-job")) {
				t.Errorf("options file = %q (%v), want the lease's options", opts, err)
			}
			logs := e.logs.String()
			wantLog := "prepared=false"
			if tt.prepared {
				wantLog = "prepared=true"
			}
			if !strings.Contains(logs, "msg=provisioned") || !strings.Contains(logs, wantLog) {
				t.Errorf("boot log lacks the provisioned line with %s:\n%s", wantLog, logs)
			}
			if strings.Contains(logs, secretOption) {
				t.Errorf("boot log contains a pipeline option value:\n%s", logs)
			}
			if strings.Contains(logs, e.f.Credential(1)) {
				t.Errorf("boot log contains the lease credential:\n%s", logs)
			}
		})
	}
}

// TestPreparedLeaseFailures: bad prepared data fails the boot at the stage that would have produced it, naming what
// is wrong and where it came from, and without falling back to the calls the recycler was meant to have made.
func TestPreparedLeaseFailures(t *testing.T) {
	filePayload := func(sha string) []byte {
		b, _ := proto.Marshal(&pipepb.ArtifactFilePayload{Path: "/staged/worker", Sha256: sha})
		return b
	}
	tests := []struct {
		name      string
		corrupt   bool // the fake serves corrupt bytes for the (uncached) binary
		edit      func(p *recyclerpb.PreparedLease)
		wantStage recyclerpb.BootStage
		wantMsg   []string
	}{
		{name: "no provision info", wantStage: recyclerpb.BootStage_BOOT_STAGE_PROVISION,
			edit:    func(p *recyclerpb.PreparedLease) { p.ProvisionInfo = nil },
			wantMsg: []string{"provision info from Lease.prepared is empty"}},
		{name: "no control endpoint", wantStage: recyclerpb.BootStage_BOOT_STAGE_PROVISION,
			edit:    func(p *recyclerpb.PreparedLease) { p.ProvisionInfo.ControlEndpoint = nil },
			wantMsg: []string{"provision info from Lease.prepared has no control endpoint", "control_endpoint"}},
		{name: "no logging endpoint", wantStage: recyclerpb.BootStage_BOOT_STAGE_PROVISION,
			edit:    func(p *recyclerpb.PreparedLease) { p.ProvisionInfo.LoggingEndpoint = &pipepb.ApiServiceDescriptor{} },
			wantMsg: []string{"provision info from Lease.prepared has no logging endpoint"}},
		{name: "no resolved artifacts", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS,
			edit:    func(p *recyclerpb.PreparedLease) { p.Artifacts = nil },
			wantMsg: []string{"Lease.prepared has no artifacts for the job's 1 dependencies"}},
		{name: "artifact without sha256", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS,
			edit:    func(p *recyclerpb.PreparedLease) { p.Artifacts[0].TypePayload = filePayload("") },
			wantMsg: []string{"artifact 0 (/staged/worker) from Lease.prepared has no valid sha256", "the recycler must compute it"}},
		{name: "artifact with a malformed sha256", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS,
			edit:    func(p *recyclerpb.PreparedLease) { p.Artifacts[0].TypePayload = filePayload("sha256:xyz") },
			wantMsg: []string{"from Lease.prepared has no valid sha256"}},
		{name: "artifact of another type", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS,
			edit:    func(p *recyclerpb.PreparedLease) { p.Artifacts[0].TypeUrn = "beam:artifact:type:url:v1" },
			wantMsg: []string{`artifact 0 from Lease.prepared has type "beam:artifact:type:url:v1"`, URNFileArtifact}},
		{name: "artifact with an unreadable payload", wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS,
			edit:    func(p *recyclerpb.PreparedLease) { p.Artifacts[0].TypePayload = []byte{0xff, 0xff} },
			wantMsg: []string{"artifact 0 from Lease.prepared has an unreadable file payload"}},
		{name: "fetched bytes do not match the prepared sha256", corrupt: true, wantStage: recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS,
			edit:    func(p *recyclerpb.PreparedLease) {},
			wantMsg: []string{"fetching artifact sha256:", "sha256 mismatch"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t)
			if tt.corrupt {
				bad := e.bin
				bad.Mode = fakerecycler.Corrupt
				e.f.Stage(bad)
			}
			info := e.info()
			prepared := e.f.Prepared(proto.Clone(info).(*fnpb.ProvisionInfo))
			tt.edit(prepared)

			_, err := e.boot(t, 1, info, prepared)
			var f *Failure
			if !errors.As(err, &f) {
				t.Fatalf("Boot error = %v, want a *Failure", err)
			}
			if f.Stage != tt.wantStage {
				t.Errorf("stage = %v, want %v (message %q)", f.Stage, tt.wantStage, f.Message)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(f.Message, w) {
					t.Errorf("message %q lacks %q", f.Message, w)
				}
			}
			if strings.Contains(f.Message, "\n") || strings.Contains(f.Message, secretOption) {
				t.Errorf("message %q is not one line free of pipeline options", f.Message)
			}
			// The fake would have answered both calls correctly: a boot that fell back to them would have succeeded.
			if n, m := e.f.Calls(fakerecycler.MethodGetProvisionInfo), e.f.Calls(fakerecycler.MethodResolveArtifacts); n != 0 || m != 0 {
				t.Errorf("GetProvisionInfo called %d times and ResolveArtifacts %d times for a prepared lease, want 0", n, m)
			}
			if _, err := os.Stat(filepath.Join(e.leases, "slot-0-g1")); !os.IsNotExist(err) {
				t.Errorf("lease dir of the failed boot still exists (%v)", err)
			}
			if e.cache.Has(e.bin.Digest()) {
				t.Errorf("a bad artifact entered the cache")
			}
		})
	}
}

// BenchmarkBoot prints the time from Lease to a startable worker (everything before fork/exec) on a warm cache, with
// and without Lease.prepared, against the in-process fake recycler on 127.0.0.1 (the real recycler's round trips
// cost more: it forwards them to the runner).
func BenchmarkBoot(b *testing.B) {
	for _, prepared := range []bool{true, false} {
		b.Run("prepared="+strconv.FormatBool(prepared), func(b *testing.B) {
			e := newBootEnv(b)
			e.warm(b)
			info := e.info()
			var p *recyclerpb.PreparedLease
			if prepared {
				p = e.f.Prepared(info)
			}
			gen := int64(0)
			for b.Loop() {
				gen++
				got, err := e.boot(b, gen, info, p)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer() // deleting the directory is the lease's end, not its start
				_ = os.RemoveAll(got.Dir)
				b.StartTimer()
			}
		})
	}
}

// TestBootStandby: a standby boots exactly as its Lease would from the prepared inputs and a warm cache, and makes no
// call at all; whatever it would need a call or a wait for fails it at once, leaving no directory.
func TestBootStandby(t *testing.T) {
	tests := []struct {
		name     string
		warm     bool
		prepared bool
		setup    func(t *testing.T, e *bootEnv) // after warming
		wantErr  error                          // nil: the boot succeeds
		wantMsg  string
	}{
		{name: "prepared, warm cache", warm: true, prepared: true},
		{name: "binary not held", prepared: true, wantErr: ErrNotHeld, wantMsg: "is not in the local cache; a standby fetches nothing"},
		{name: "binary being fetched", warm: true, prepared: true, wantErr: ErrNotHeld, wantMsg: "is being fetched right now",
			setup: func(t *testing.T, e *bootEnv) {
				release, _ := e.cache.TryClaim(e.bin.Digest()) // as a prefetch in flight holds it
				t.Cleanup(release)
			}},
		{name: "binary changed in the cache", warm: true, prepared: true, wantErr: ErrNotHeld, wantMsg: "is not in the local cache",
			setup: func(t *testing.T, e *bootEnv) {
				path := e.cache.Path(e.bin.Digest())
				if err := os.Chmod(path, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 42\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "no prepared inputs", warm: true, wantErr: ErrNotPrepared, wantMsg: "the standby carries no prepared inputs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t)
			if tt.warm {
				e.warm(t)
			}
			if tt.setup != nil {
				tt.setup(t, e)
			}
			info := e.info()
			var prepared *recyclerpb.PreparedLease
			if tt.prepared {
				prepared = e.f.Prepared(info)
			}
			const cred = "0123456789abcdef0123456789abcdef" // the fake knows no lease of this generation: any call fails
			log := NewLog(slog.New(slog.NewTextHandler(e.logs, nil)))
			defer log.Close()
			p, err := e.b.BootStandby(context.Background(), Lease{Generation: 2, WorkerID: "slot-0.g2." + cred, Credential: cred,
				Prepared: prepared}, log)
			for _, m := range []string{fakerecycler.MethodGetProvisionInfo, fakerecycler.MethodResolveArtifacts,
				fakerecycler.MethodGetArtifact, fakerecycler.MethodPrefetchArtifact} {
				if n := e.f.Calls(m); n != 0 {
					t.Errorf("%s calls = %d, want none for a standby", m, n)
				}
			}
			dir := filepath.Join(e.leases, "slot-0-g2")
			if tt.wantErr != nil {
				var f *Failure
				if !errors.Is(err, tt.wantErr) || !errors.As(err, &f) || !strings.Contains(f.Message, tt.wantMsg) {
					t.Fatalf("BootStandby error = %v, want a *Failure wrapping %v with %q", err, tt.wantErr, tt.wantMsg)
				}
				if _, err := os.Stat(dir); !os.IsNotExist(err) {
					t.Errorf("the failed standby's directory exists (%v)", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("BootStandby: %v", err)
			}
			t.Cleanup(func() { _ = os.RemoveAll(p.Dir) })
			wantArgs := []string{"--worker=true", "--id=slot-0.g2." + cred, "--logging_endpoint=" + e.f.Addr(),
				"--control_endpoint=localhost:1", "--semi_persist_dir=" + dir}
			if p.Dir != dir || p.Spec.Path != filepath.Join(dir, WorkerFile) || !slices.Equal(p.Spec.Args, wantArgs) ||
				!slices.Contains(p.Spec.Env, "PIPELINE_OPTIONS_FILE="+filepath.Join(dir, OptionsFile)) {
				t.Errorf("prepared = dir %q path %q args %q env %q; want the Lease's boot in %q", p.Dir, p.Spec.Path, p.Spec.Args, p.Spec.Env, dir)
			}
			if got, err := os.ReadFile(p.Spec.Path); err != nil || !bytes.Equal(got, e.bin.Content) {
				t.Errorf("worker binary %s = %q (%v), want the cached content", p.Spec.Path, got, err)
			}
		})
	}
}
