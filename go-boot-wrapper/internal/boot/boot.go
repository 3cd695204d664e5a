// Package boot runs Beam's Go boot contract (sdks/go/container/boot.go) for one lease: provision info, artifacts,
// the per-lease directory with the pipeline options file, and the worker's command line and environment. It starts
// nothing: it returns a supervisor.Spec for the wrapper to start.
//
// Differences from Beam's boot, all deliberate:
//   - provision and artifact calls go to the recycler and carry the slot id, lease generation and lease credential as
//     metadata;
//   - the recycler usually sends the provision info and the resolved artifacts with the Lease (Lease.prepared); the
//     boot then uses them as the answers of GetProvisionInfo and ResolveArtifacts and makes neither call, so a lease
//     whose artifacts are all cached starts its worker without a single round trip;
//   - artifacts come through a local content-addressed cache, verified by size and sha256, so an unchanged binary is
//     never transferred twice; they are symbolically linked into the lease directory, never downloaded into a shared
//     one, and re-verified before every lease (artifactcache.Cache.Verify), so a lease runs exactly the bytes its
//     sha256 names even if an earlier worker rewrote the cached file;
//   - between leases the recycler may have the wrapper fetch a job's binary ahead of its first lease (Booter.Prefetch);
//     a boot that needs a digest being fetched waits for that fetch instead of starting a second one;
//   - after a lease the recycler may have the wrapper start the same job's next worker ahead of its lease, a standby
//     (Booter.BootStandby): the same boot from Lease.prepared and the local cache alone, without a single call;
//   - every lease gets a fresh directory (semi_persist_dir, cwd, TMPDIR) that the wrapper deletes afterwards, and the
//     worker gets a clean environment instead of the wrapper's.
package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	jobpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/jobmanagement_v1"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"recycler.dev/go-boot-wrapper/internal/artifactcache"
	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
	"recycler.dev/go-boot-wrapper/internal/supervisor"
)

// Metadata keys on every ProvisionService and ArtifactRetrievalService call, and the GetArtifact response header.
const (
	HeaderWorkerID   = "worker_id"
	HeaderGeneration = "recycler-generation"
	// HeaderLeaseCredential carries Lease.credential; a secret, never logged.
	HeaderLeaseCredential = "recycler-lease-credential"
	HeaderContentLength   = "recycler-content-length"
	// HeaderPrefetchTicket carries Prefetch.ticket on a prefetch's GetArtifact (instead of the generation and
	// credential, which a prefetch has none of); a secret, never logged.
	HeaderPrefetchTicket = "recycler-prefetch-ticket"
)

// Beam URNs (sdks/go/pkg/beam/artifact).
const (
	URNFileArtifact       = "beam:artifact:type:file:v1"
	URNGoWorkerBinaryRole = "beam:artifact:role:go_worker_binary:v1"
	URNStagingToRole      = "beam:artifact:role:staging_to:v1"
	legacyWorkerName      = "worker"
)

// Files and directories inside a lease directory.
const (
	OptionsFile = "pipeline_options.json"
	WorkerFile  = "worker"
	StagedDir   = "staged"
	TmpDir      = "tmp"
)

// Modes of the lease directory (and its subdirectories) and of the files the wrapper writes into it, set exactly
// (not filtered by the umask).
const (
	LeaseDirMode  os.FileMode = 0o700
	LeaseFileMode os.FileMode = 0o600
)

// defaultPath is the worker's PATH when the wrapper has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Failure is a boot step that failed: the stage for LeaseEnded and a one-line message that says what to fix.
type Failure struct {
	Stage   recyclerpb.BootStage
	Message string
	Err     error
}

func (f *Failure) Error() string { return f.Message }
func (f *Failure) Unwrap() error { return f.Err }

func fail(stage recyclerpb.BootStage, err error, format string, args ...any) *Failure {
	return &Failure{Stage: stage, Message: fmt.Sprintf(format, args...), Err: err}
}

// Config is what a Booter needs besides the lease.
type Config struct {
	SlotID string
	// RecyclerEndpoint is the recycler's fixed HOST:PORT; artifact calls go there when ProvisionInfo names no
	// artifact endpoint.
	RecyclerEndpoint string
	// LeasesDir holds the per-lease directories.
	LeasesDir string
	// PassEnv names wrapper environment variables copied into every worker's environment (besides the allow-list).
	PassEnv []string
	// Getenv reads the wrapper's environment (os.Getenv when nil).
	Getenv func(string) string
	// ProvisionTimeout bounds GetProvisionInfo; ArtifactTimeout bounds resolving and fetching all artifacts.
	ProvisionTimeout, ArtifactTimeout time.Duration
	// Stdout and Stderr receive the worker's output (nil: /dev/null).
	Stdout, Stderr *os.File
	// Worker, when set, is the user the worker runs as (the wrapper runs as root): the lease directory, its
	// subdirectories and the options file are given to that user. Nil: the wrapper's own user.
	Worker *User
}

// User is a worker's user and group id. The worker gets no supplementary groups.
type User struct{ UID, GID uint32 }

// Booter prepares leases. Safe for concurrent use on different leases.
type Booter struct {
	cfg   Config
	conn  grpc.ClientConnInterface // to the recycler
	cache *artifactcache.Cache
}

// New returns a Booter that calls the recycler over conn.
func New(cfg Config, conn grpc.ClientConnInterface, cache *artifactcache.Cache) *Booter {
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.ProvisionTimeout <= 0 {
		cfg.ProvisionTimeout = 30 * time.Second
	}
	if cfg.ArtifactTimeout <= 0 {
		cfg.ArtifactTimeout = 10 * time.Minute
	}
	return &Booter{cfg: cfg, conn: conn, cache: cache}
}

// Lease is what the recycler's Lease instruction says.
type Lease struct {
	Generation int64
	// WorkerID is the inner worker's --id: the public id, ".", and the credential. A secret: log PublicID instead.
	WorkerID string
	// Credential is the lease credential, sent on every provision and artifact call. A secret: never log it.
	Credential string
	JobName    string
	// Prepared, when set, is the provision info and the resolved artifacts the recycler fetched for this lease: the
	// boot uses them instead of calling GetProvisionInfo and ResolveArtifacts, and validates them the same way. Nil
	// (an older recycler, or one that could not fetch them) means the boot makes both calls. It holds the pipeline
	// options: never log it.
	Prepared *recyclerpb.PreparedLease
}

// PublicID is the worker id without its credential ("slot-0.g7"), for logs.
func (l Lease) PublicID() string {
	if l.Credential != "" {
		if id, ok := strings.CutSuffix(l.WorkerID, "."+l.Credential); ok {
			return id
		}
	}
	return l.WorkerID
}

// Prepared is a booted lease, ready to start.
type Prepared struct {
	Dir  string
	Spec supervisor.Spec
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// SafeName is a slot id usable as a file name.
func SafeName(slotID string) string { return unsafeName.ReplaceAllString(slotID, "_") }

// LeaseDirPrefix is the name prefix of every lease directory of this slot: "<slot>-g".
func LeaseDirPrefix(slotID string) string { return SafeName(slotID) + "-g" }

// LeaseDir is the directory of the lease with this generation.
func (b *Booter) LeaseDir(generation int64) string {
	return filepath.Join(b.cfg.LeasesDir, LeaseDirPrefix(b.cfg.SlotID)+strconv.FormatInt(generation, 10))
}

// ErrNotHeld means a standby's artifact is not in the local cache now (or is being fetched): a standby fetches nothing.
var ErrNotHeld = errors.New("artifact not held in the local cache")

// ErrNotPrepared means a standby came without its prepared inputs: a standby makes no call to get them.
var ErrNotPrepared = errors.New("standby without prepared inputs")

// Boot runs the boot steps for lease. On failure it removes what it created and returns a *Failure (or ctx's error
// when ctx ended, e.g. because an Exit aborted the boot). On success the caller owns Prepared.Dir.
func (b *Booter) Boot(ctx context.Context, lease Lease, log *Log) (*Prepared, error) {
	return b.run(ctx, lease, log, false)
}

// BootStandby boots a standby (recyclerpb.Standby, described as a Lease of the standby's generation) exactly as Boot
// would boot that Lease (same lease directory, options file, command line and environment), but makes no call at all:
// the recycler refuses every call for a generation that is not a lease yet. So lease.Prepared is required (else a
// *Failure wrapping ErrNotPrepared), every artifact must be in the local cache now and verify (else a *Failure
// wrapping ErrNotHeld; one that a prefetch is fetching at this moment counts as missing: a standby waits for nothing),
// and log is not forwarded to Beam's logging service. Failures and ownership of Prepared.Dir are as for Boot.
func (b *Booter) BootStandby(ctx context.Context, lease Lease, log *Log) (*Prepared, error) {
	return b.run(ctx, lease, log, true)
}

func (b *Booter) run(ctx context.Context, lease Lease, log *Log, standby bool) (*Prepared, error) {
	if standby && lease.Prepared == nil {
		return nil, fail(recyclerpb.BootStage_BOOT_STAGE_PROVISION, ErrNotPrepared,
			"the standby carries no prepared inputs; the recycler must send Standby.prepared (a standby makes no call to get them)")
	}
	p, err := b.boot(ctx, lease, log, standby)
	if err != nil {
		_ = os.RemoveAll(b.LeaseDir(lease.Generation))
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return p, nil
}

func (b *Booter) boot(ctx context.Context, lease Lease, log *Log, standby bool) (*Prepared, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, HeaderWorkerID, b.cfg.SlotID, HeaderGeneration, strconv.FormatInt(lease.Generation, 10),
		HeaderLeaseCredential, lease.Credential)

	// (1) Provision info: from the Lease, else from the recycler.
	info, ferr := b.provision(ctx, lease.Prepared)
	if ferr != nil {
		return nil, ferr
	}
	// The logging endpoint is the recycler's logging proxy, which checks the credential in the worker id (as for the
	// worker's own log stream) and forwards under the runner's id, so the credential never reaches the runner. Not for
	// a standby: its generation is no lease yet, and the runner has nobody to show its boot to.
	if !standby {
		log.ConnectBeam(info.GetLoggingEndpoint().GetUrl(), lease.WorkerID)
	}
	log.Info("provisioned", "control_endpoint", info.GetControlEndpoint().GetUrl(), "artifacts", len(info.GetDependencies()),
		"prepared", lease.Prepared != nil)

	// (2) A fresh lease directory: nothing of a previous lease (or a previous wrapper) survives in it.
	dir := b.LeaseDir(lease.Generation)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fail(recyclerpb.BootStage_BOOT_STAGE_START, err, "cannot clear lease directory %s: %v; check --work_dir", dir, err)
	}
	// Private to the wrapper's user whatever the umask: it holds the pipeline options, which may carry secrets.
	for _, d := range []string{dir, filepath.Join(dir, TmpDir), filepath.Join(dir, StagedDir)} {
		if err := mkdirExact(d, LeaseDirMode); err != nil {
			return nil, fail(recyclerpb.BootStage_BOOT_STAGE_START, err, "cannot create lease directory %s: %v; check --work_dir is writable", d, err)
		}
		if err := b.giveToWorker(d); err != nil {
			return nil, fail(recyclerpb.BootStage_BOOT_STAGE_START, err, "cannot give lease directory %s to the worker user: %v; the wrapper must run as root to use --worker_uid", d, err)
		}
	}

	// (3) Artifacts into the cache, then into the lease directory.
	actx, cancel := context.WithTimeout(ctx, b.cfg.ArtifactTimeout)
	defer cancel()
	worker, ferr := b.artifacts(actx, info, lease.Prepared, dir, log, standby)
	if ferr != nil {
		return nil, ferr
	}

	// (4) Pipeline options file, as Beam's boot writes it (protojson of the options Struct).
	options := "{}"
	if info.GetPipelineOptions() != nil {
		js, err := protojson.Marshal(info.GetPipelineOptions())
		if err != nil {
			return nil, fail(recyclerpb.BootStage_BOOT_STAGE_PROVISION, err, "pipeline options in provision info are not valid JSON: %v", err)
		}
		options = string(js)
	}
	optionsPath := filepath.Join(dir, OptionsFile)
	if err := writeFileExact(optionsPath, []byte(options), LeaseFileMode); err != nil {
		return nil, fail(recyclerpb.BootStage_BOOT_STAGE_START, err, "cannot write %s: %v; check --work_dir has space", optionsPath, err)
	}
	if err := b.giveToWorker(optionsPath); err != nil {
		return nil, fail(recyclerpb.BootStage_BOOT_STAGE_START, err, "cannot give %s to the worker user: %v", optionsPath, err)
	}

	// (5) The worker's command line and environment, as Beam's boot starts it.
	return &Prepared{Dir: dir, Spec: supervisor.Spec{
		Path: worker,
		Args: []string{
			"--worker=true",
			"--id=" + lease.WorkerID,
			"--logging_endpoint=" + info.GetLoggingEndpoint().GetUrl(),
			"--control_endpoint=" + info.GetControlEndpoint().GetUrl(),
			"--semi_persist_dir=" + dir,
		},
		Env:        b.env(info, dir, optionsPath),
		Dir:        dir,
		Stdout:     b.cfg.Stdout,
		Stderr:     b.cfg.Stderr,
		Credential: b.credential(),
	}}, nil
}

// giveToWorker makes path the worker user's, when the worker runs as its own user.
func (b *Booter) giveToWorker(path string) error {
	if b.cfg.Worker == nil {
		return nil
	}
	return os.Lchown(path, int(b.cfg.Worker.UID), int(b.cfg.Worker.GID))
}

func (b *Booter) credential() *syscall.Credential {
	if b.cfg.Worker == nil {
		return nil
	}
	return &syscall.Credential{Uid: b.cfg.Worker.UID, Gid: b.cfg.Worker.GID, Groups: []uint32{}}
}

// Where a lease's boot inputs came from, as named in failure messages.
const (
	fromPrepared         = "Lease.prepared"
	fromGetProvisionInfo = "GetProvisionInfo"
	fromResolveArtifacts = "ResolveArtifacts"
)

// provision returns the lease's provision info: prepared's when the Lease carried it, else GetProvisionInfo's answer.
// Either way it must name a control and a logging endpoint.
func (b *Booter) provision(ctx context.Context, prepared *recyclerpb.PreparedLease) (*fnpb.ProvisionInfo, *Failure) {
	stage := recyclerpb.BootStage_BOOT_STAGE_PROVISION
	info, source := prepared.GetProvisionInfo(), fromPrepared
	if prepared == nil {
		source = fromGetProvisionInfo
		pctx, cancel := context.WithTimeout(ctx, b.cfg.ProvisionTimeout)
		defer cancel()
		resp, err := fnpb.NewProvisionServiceClient(b.conn).GetProvisionInfo(pctx, &fnpb.GetProvisionInfoRequest{})
		if err != nil {
			return nil, fail(stage, err,
				"GetProvisionInfo from recycler %s failed (%s: %s); the lease may have been revoked or the runner's provision service is unreachable",
				b.cfg.RecyclerEndpoint, status.Code(err), status.Convert(err).Message())
		}
		info = resp.GetInfo()
	}
	switch {
	case info == nil:
		return nil, fail(stage, nil, "provision info from %s is empty; the recycler must forward the runner's ProvisionInfo", source)
	case info.GetControlEndpoint().GetUrl() == "":
		return nil, fail(stage, nil, "provision info from %s has no control endpoint; the recycler must set control_endpoint", source)
	case info.GetLoggingEndpoint().GetUrl() == "":
		return nil, fail(stage, nil, "provision info from %s has no logging endpoint; the runner must provide logging_endpoint", source)
	}
	return info, nil
}

// artifact is a resolved dependency.
type artifact struct {
	info   *pipepb.ArtifactInformation
	hex    string
	staged string // file name under <lease>/staged, as Beam's materialize names it
}

// artifacts resolves, fetches and links the lease's artifacts and returns the path of the worker binary. The resolved
// artifacts are prepared's when the Lease carried them, else ResolveArtifacts' answer; either way each must be a file
// artifact with a valid sha256, and only the digests the local cache lacks are fetched (for a standby: none, see held).
func (b *Booter) artifacts(ctx context.Context, info *fnpb.ProvisionInfo, prepared *recyclerpb.PreparedLease, dir string, log *Log,
	standby bool) (string, *Failure) {
	stage := recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS
	if len(info.GetDependencies()) == 0 {
		return "", fail(stage, nil, "the job staged no artifacts (no Go worker binary); submit the pipeline with the Go SDK so it stages its binary")
	}
	svc := b.artifactService(info)
	defer svc.close()
	resolved, source := prepared.GetArtifacts(), fromPrepared
	if prepared == nil {
		source = fromResolveArtifacts
		client, err := svc.client()
		if err != nil {
			return "", fail(stage, err, "cannot connect to artifact endpoint %s: %v", svc.endpoint, err)
		}
		resp, err := client.ResolveArtifacts(ctx, &jobpb.ResolveArtifactsRequest{Artifacts: info.GetDependencies()})
		if err != nil {
			return "", fail(stage, err, "ResolveArtifacts at %s failed (%s: %s)", svc.endpoint, status.Code(err), status.Convert(err).Message())
		}
		resolved = resp.GetReplacements()
	}
	if len(resolved) == 0 {
		return "", fail(stage, nil, "%s has no artifacts for the job's %d dependencies; the recycler must resolve each to a %s artifact with its sha256",
			source, len(info.GetDependencies()), URNFileArtifact)
	}
	var arts []artifact
	for i, a := range resolved {
		if a.GetTypeUrn() != URNFileArtifact {
			return "", fail(stage, nil, "artifact %d from %s has type %q; the recycler must resolve every artifact to %s with a sha256", i, source, a.GetTypeUrn(), URNFileArtifact)
		}
		var fp pipepb.ArtifactFilePayload
		if err := proto.Unmarshal(a.GetTypePayload(), &fp); err != nil {
			return "", fail(stage, err, "artifact %d from %s has an unreadable file payload: %v", i, source, err)
		}
		h := strings.ToLower(artifactcache.HexOf(fp.GetSha256()))
		if err := artifactcache.ValidHex(h); err != nil {
			return "", fail(stage, err, "artifact %d (%s) from %s has no valid sha256 (%q); the recycler must compute it", i, fp.GetPath(), source, fp.GetSha256())
		}
		arts = append(arts, artifact{info: a, hex: h, staged: stagedName(i, a, fp.GetPath())})
	}
	worker, err := selectWorker(arts)
	if err != nil {
		return "", fail(stage, err, "%v; stage the Go worker binary with role %s", err, URNGoWorkerBinaryRole)
	}
	for _, a := range arts {
		ensure := b.ensure
		if standby {
			ensure = b.held
		}
		if ferr := ensure(ctx, svc, a, log); ferr != nil {
			return "", ferr
		}
	}
	for _, a := range arts {
		if err := b.cache.Materialize(a.hex, filepath.Join(dir, StagedDir, a.staged)); err != nil {
			return "", fail(stage, err, "placing artifact %s in the lease directory failed: %v", a.staged, err)
		}
	}
	bin := filepath.Join(dir, WorkerFile)
	if err := b.cache.Materialize(worker.hex, bin); err != nil {
		return "", fail(stage, err, "placing the worker binary in the lease directory failed: %v", err)
	}
	return bin, nil
}

// ensure makes the cache hold a verified copy of a, fetching it if needed. It holds a's fetch claim throughout, so a
// fetch of the same digest already in progress (a prefetch) is waited for, not repeated: once it ends, Verify finds
// the digest held, or, if that fetch failed, this one fetches it.
func (b *Booter) ensure(ctx context.Context, svc *artifactService, a artifact, log *Log) *Failure {
	stage := recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS
	digest := artifactcache.DigestPrefix + a.hex
	if b.cache.Claimed(a.hex) {
		log.Info("waiting for the fetch of this artifact already in progress", "digest", digest)
	}
	start := time.Now()
	release, waited, err := b.cache.Claim(ctx, a.hex)
	if err != nil {
		return fail(stage, err, "timed out after %v waiting for the fetch of artifact %s (%s) already in progress (a prefetch); check that the recycler can serve it",
			time.Since(start).Round(time.Millisecond), digest, a.staged)
	}
	defer release()
	if waited {
		log.Info("the fetch in progress ended", "digest", digest, "waited", time.Since(start).Round(time.Millisecond))
	}
	// Verify, not Has: a previous lease's worker may have rewritten the cached file (its lease linked it); a changed
	// entry is dropped and fetched again here.
	ok, err := b.cache.Verify(a.hex)
	if err != nil {
		log.Warn("artifact changed in the local cache since it was verified; fetching it again", "digest", digest, "error", err)
	}
	if ok {
		return nil
	}
	client, err := svc.client()
	if err != nil {
		return fail(stage, err, "cannot connect to artifact endpoint %s: %v", svc.endpoint, err)
	}
	start = time.Now()
	n, err := b.fetch(ctx, client, a, -1)
	if err != nil {
		return fail(stage, err, "fetching artifact %s (%s) from %s failed: %v", digest, a.staged, svc.endpoint, err)
	}
	log.Info("fetched artifact", "digest", digest, "bytes", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// held is ensure for a standby: it makes the cache verify its copy of a, and fails (wrapping ErrNotHeld) when there is
// none, without fetching and without waiting for a fetch in progress. It takes a's fetch claim for the Verify, as
// ensure does, so it never verifies an entry that a fetch is replacing.
func (b *Booter) held(_ context.Context, _ *artifactService, a artifact, log *Log) *Failure {
	stage := recyclerpb.BootStage_BOOT_STAGE_ARTIFACTS
	digest := artifactcache.DigestPrefix + a.hex
	release, _ := b.cache.TryClaim(a.hex)
	if release == nil {
		return fail(stage, ErrNotHeld, "artifact %s (%s) is being fetched right now (a prefetch); a standby waits for no fetch: offer it once the prefetch is answered",
			digest, a.staged)
	}
	defer release()
	ok, err := b.cache.Verify(a.hex)
	if err != nil {
		log.Warn("artifact changed in the local cache since it was verified; a standby cannot fetch it again", "digest", digest, "error", err)
	}
	if !ok {
		return fail(stage, ErrNotHeld, "artifact %s (%s) is not in the local cache; a standby fetches nothing: offer it only with artifacts the wrapper holds (Hello and the last LeaseEnded or Prefetched list them)",
			digest, a.staged)
	}
	return nil
}

// artifactService is the lease's ArtifactRetrievalService: over the recycler connection, or over a connection of its
// own when info.artifact_endpoint names another address. That connection is created on first use, so a boot that
// makes no artifact call (prepared, everything cached) creates none. Not safe for concurrent use.
type artifactService struct {
	b        *Booter
	endpoint string
	own      *grpc.ClientConn // nil unless client created it
	c        jobpb.ArtifactRetrievalServiceClient
}

func (b *Booter) artifactService(info *fnpb.ProvisionInfo) *artifactService {
	endpoint := info.GetArtifactEndpoint().GetUrl()
	if endpoint == "" {
		endpoint = b.cfg.RecyclerEndpoint
	}
	return &artifactService{b: b, endpoint: endpoint}
}

func (s *artifactService) client() (jobpb.ArtifactRetrievalServiceClient, error) {
	if s.c == nil {
		conn := s.b.conn
		if s.endpoint != s.b.cfg.RecyclerEndpoint {
			cc, err := grpc.NewClient(s.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, err
			}
			s.own, conn = cc, cc
		}
		s.c = jobpb.NewArtifactRetrievalServiceClient(conn)
	}
	return s.c, nil
}

func (s *artifactService) close() {
	if s.own != nil {
		_ = s.own.Close()
	}
}

// fetch streams one artifact into the cache, verifying the size from the response header and the sha256. wantSize,
// when not negative, is the size the caller was told: a header stating another size fails the fetch, and without a
// header the bytes must have that size.
func (b *Booter) fetch(ctx context.Context, client jobpb.ArtifactRetrievalServiceClient, a artifact, wantSize int64) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if we stop reading early
	stream, err := client.GetArtifact(ctx, &jobpb.GetArtifactRequest{Artifact: a.info})
	if err != nil {
		return 0, err
	}
	hdr, err := stream.Header()
	if err != nil {
		return 0, err
	}
	size := int64(-1)
	if v := hdr.Get(HeaderContentLength); len(v) > 0 {
		size, err = strconv.ParseInt(v[0], 10, 64)
		if err != nil || size < 0 {
			return 0, fmt.Errorf("bad %s header %q", HeaderContentLength, v[0])
		}
	}
	switch {
	case wantSize >= 0 && size < 0:
		size = wantSize
	case wantSize >= 0 && size != wantSize:
		return 0, fmt.Errorf("%w: %s%s: the recycler announced %d bytes, its %s header says %d",
			artifactcache.ErrSizeMismatch, artifactcache.DigestPrefix, a.hex, wantSize, HeaderContentLength, size)
	}
	r := &streamReader{recv: stream.Recv}
	if err := b.cache.Admit(a.hex, size, r); err != nil {
		return 0, err
	}
	return r.n, nil
}

// streamReader adapts a GetArtifact stream to io.Reader.
type streamReader struct {
	recv func() (*jobpb.GetArtifactResponse, error)
	buf  []byte
	n    int64
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		m, err := r.recv()
		if errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		if err != nil {
			if r.n == 0 {
				return 0, fmt.Errorf("artifact fetch failed before any byte arrived (%s: %s)", status.Code(err), status.Convert(err).Message())
			}
			return 0, fmt.Errorf("artifact stream broke after %d bytes (%s: %s)", r.n, status.Code(err), status.Convert(err).Message())
		}
		r.buf = m.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	r.n += int64(n)
	return n, nil
}

// stagedName names an artifact in <lease>/staged the way Beam's materialize does: the staging_to role's name, else
// "<n>-<base name of the path>". Only the base name is used, so no name escapes the directory.
func stagedName(i int, a *pipepb.ArtifactInformation, path string) string {
	if a.GetRoleUrn() == URNStagingToRole {
		var role pipepb.ArtifactStagingToRolePayload
		if proto.Unmarshal(a.GetRolePayload(), &role) == nil && role.GetStagedName() != "" {
			if n := filepath.Base(role.GetStagedName()); n != "." && n != "/" && n != ".." {
				return n
			}
		}
	}
	base := filepath.Base(path)
	if base == "." || base == "/" || base == ".." {
		base = "artifact"
	}
	return strconv.Itoa(i+1) + "-" + base
}

// selectWorker picks the worker binary as Beam's boot does (getGoWorkerArtifactName): the only artifact if there is
// one, else the one with the Go worker binary role, else the one named "worker".
func selectWorker(arts []artifact) (artifact, error) {
	switch len(arts) {
	case 0:
		return artifact{}, errors.New("no artifacts staged")
	case 1:
		return arts[0], nil
	}
	for _, a := range arts {
		if a.info.GetRoleUrn() == URNGoWorkerBinaryRole {
			return a, nil
		}
	}
	for _, a := range arts {
		var fp pipepb.ArtifactFilePayload
		_ = proto.Unmarshal(a.info.GetTypePayload(), &fp)
		if a.staged == legacyWorkerName || filepath.Base(fp.GetPath()) == legacyWorkerName {
			return a, nil
		}
	}
	return artifact{}, fmt.Errorf("%d artifacts staged but none has the Go worker binary role or is named %q", len(arts), legacyWorkerName)
}

// env is the worker's complete environment: a small allow-list from the wrapper, --pass_env, and Beam's variables.
func (b *Booter) env(info *fnpb.ProvisionInfo, dir, optionsPath string) []string {
	get := b.cfg.Getenv
	path := get("PATH")
	if path == "" {
		path = defaultPath
	}
	home := get("HOME")
	if home == "" {
		home = dir
	}
	env := []string{"PATH=" + path, "HOME=" + home, "TMPDIR=" + filepath.Join(dir, TmpDir)}
	for _, k := range []string{"LANG", "LC_ALL", "TZ"} {
		if v := get(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	for _, k := range b.cfg.PassEnv {
		if v := get(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, "PIPELINE_OPTIONS_FILE="+optionsPath)
	if caps := info.GetRunnerCapabilities(); len(caps) > 0 {
		env = append(env, "RUNNER_CAPABILITIES="+strings.Join(caps, " "))
	}
	if s := info.GetStatusEndpoint().GetUrl(); s != "" {
		env = append(env, "STATUS_ENDPOINT="+s)
	}
	return env
}

// mkdirExact creates the directory dir (its parent must exist) with exactly mode: Mkdir's mode is filtered by the
// umask, so it is set again afterwards.
func mkdirExact(dir string, mode os.FileMode) error {
	if err := os.Mkdir(dir, mode); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

// writeFileExact creates path (it must not exist) with data and exactly mode, whatever the umask.
func writeFileExact(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
