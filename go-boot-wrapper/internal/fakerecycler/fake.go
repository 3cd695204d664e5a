// Package fakerecycler is an in-process recycler for tests: SlotControl, ProvisionService, ArtifactRetrievalService
// and BeamFnLogging on one 127.0.0.1 port, scripted by the test. It checks the wrapper's side of the protocol (the
// worker_id, recycler-generation and recycler-lease-credential metadata, the prefetch ticket of a prefetch's
// GetArtifact, the attach secret when RequireAttachSecret was called, Hello first) the way the real recycler does.
// Imported only by tests.
package fakerecycler

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	jobpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/jobmanagement_v1"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
)

// Wait is how long the fake's Expect helpers wait before failing a test.
const Wait = 15 * time.Second

// ArtifactMode scripts how GetArtifact serves one artifact.
type ArtifactMode int

// Artifact modes.
const (
	Serve      ArtifactMode = iota // the right bytes with the right length header
	Corrupt                        // same length, one byte flipped
	Truncate                       // full length header, half the bytes, clean end of stream
	NoLength                       // right bytes, no length header
	FailStream                     // half the bytes, then UNAVAILABLE
)

// Artifact is one staged dependency.
type Artifact struct {
	Role    string // role URN, e.g. beam:artifact:role:go_worker_binary:v1 ("" for none)
	Path    string
	Content []byte
	Mode    ArtifactMode
}

// Digest is the artifact's hex sha256.
func (a Artifact) Digest() string {
	sum := sha256.Sum256(a.Content)
	return hex.EncodeToString(sum[:])
}

// Fake is the fake recycler. Create it with Start.
type Fake struct {
	t    testing.TB
	addr string

	recyclerpb.UnimplementedSlotControlServer
	fnpb.UnimplementedProvisionServiceServer
	jobpb.UnimplementedArtifactRetrievalServiceServer
	fnpb.UnimplementedBeamFnLoggingServer

	sessions chan *Session

	mu         sync.Mutex
	srv        *grpc.Server
	slots      map[string]bool
	refuse     codes.Code       // when not OK, Attach is refused with this code
	generation map[string]int64 // slot -> current lease generation
	info       map[int64]*fnpb.ProvisionInfo
	credential map[int64]string // generation -> lease credential
	secret     string           // when set, Attach requires it as recycler-attach-secret
	provErr    error            // when set, GetProvisionInfo fails with it
	artifacts  []Artifact
	gate       chan struct{} // when set, GetArtifact waits for it to close
	holds      map[string]*Hold
	fetches    map[string]int // digest -> GetArtifact calls
	calls      map[string]int // method name -> calls with valid lease metadata (or a prefetch ticket)
	tickets    map[string]*ticket
	streaming  int // GetArtifact calls being served now
	maxStreams int // the most GetArtifact calls served at once
	hellos     []*recyclerpb.Hello
	logLines   []string
	logIDs     []string
	badCalls   []string // calls that lacked the required metadata
}

// Start serves a fake recycler on 127.0.0.1 with the given slot ids; it is stopped by t.Cleanup.
func Start(t testing.TB, slots ...string) *Fake {
	t.Helper()
	f := &Fake{
		t: t, sessions: make(chan *Session, 16), slots: map[string]bool{}, generation: map[string]int64{},
		info: map[int64]*fnpb.ProvisionInfo{}, credential: map[int64]string{}, fetches: map[string]int{}, calls: map[string]int{},
		holds: map[string]*Hold{}, tickets: map[string]*ticket{},
	}
	for _, s := range slots {
		f.slots[s] = true
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	f.serve(lis)
	t.Cleanup(f.Stop)
	return f
}

// Reserve returns a fake whose address is fixed but which is not serving yet (call Restart to serve): a recycler
// that is "not there yet" when the wrapper starts.
func Reserve(t testing.TB, slots ...string) *Fake {
	f := Start(t, slots...)
	f.Stop()
	return f
}

func (f *Fake) serve(lis net.Listener) {
	srv := grpc.NewServer()
	recyclerpb.RegisterSlotControlServer(srv, f)
	fnpb.RegisterProvisionServiceServer(srv, f)
	jobpb.RegisterArtifactRetrievalServiceServer(srv, f)
	fnpb.RegisterBeamFnLoggingServer(srv, f)
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
}

// Addr is the fake's HOST:PORT.
func (f *Fake) Addr() string { return f.addr }

// Stop stops serving and breaks every stream (the recycler went away). Safe to call more than once.
func (f *Fake) Stop() {
	f.mu.Lock()
	srv := f.srv
	f.srv = nil
	f.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// Restart serves again on the same address.
func (f *Fake) Restart() {
	f.t.Helper()
	var lis net.Listener
	var err error
	// The port was ours a moment ago; the kernel may take a moment to let it go.
	deadline := time.Now().Add(Wait)
	for {
		lis, err = net.Listen("tcp", f.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		f.t.Fatalf("restart fake recycler on %s: %v", f.addr, err)
	}
	f.serve(lis)
}

// Refuse makes Attach fail with code (codes.OK accepts again).
func (f *Fake) Refuse(code codes.Code) {
	f.mu.Lock()
	f.refuse = code
	f.mu.Unlock()
}

// RequireAttachSecret makes Attach require metadata recycler-attach-secret: secret ("": none), refusing a call
// without it with UNAUTHENTICATED and one with a different value with PERMISSION_DENIED, as the real recycler does.
func (f *Fake) RequireAttachSecret(secret string) {
	f.mu.Lock()
	f.secret = secret
	f.mu.Unlock()
}

// Credential is the lease credential minted for generation ("" if none was assigned).
func (f *Fake) Credential(generation int64) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.credential[generation]
}

// Stage sets the artifacts the current and later leases resolve to.
func (f *Fake) Stage(arts ...Artifact) {
	f.mu.Lock()
	f.artifacts = slices.Clone(arts)
	f.mu.Unlock()
}

// FailProvision makes GetProvisionInfo fail with err (nil: succeed again).
func (f *Fake) FailProvision(err error) {
	f.mu.Lock()
	f.provErr = err
	f.mu.Unlock()
}

// GateArtifacts makes GetArtifact calls wait until the returned function is called.
func (f *Fake) GateArtifacts() (release func()) {
	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.gate = nil
			f.mu.Unlock()
			close(gate)
		})
	}
}

// Hold is a GetArtifact stream the fake holds open mid-way, see HoldArtifact.
type Hold struct {
	reached, release chan struct{}
	reachedOnce      sync.Once
	releaseOnce      sync.Once
}

// Reached is closed once a GetArtifact call of the held digest has sent its header and half the bytes and waits.
func (h *Hold) Reached() <-chan struct{} { return h.reached }

// Release lets every held call (and every later one) of the digest send the rest. Safe to call more than once.
func (h *Hold) Release() { h.releaseOnce.Do(func() { close(h.release) }) }

// HoldArtifact makes every GetArtifact call of digest (hex) send the length header and the first half of the bytes,
// then wait until Release is called or the call is cancelled: a fetch in flight whose timing the test decides. The
// hold is released when the test ends.
func (f *Fake) HoldArtifact(t testing.TB, digest string) *Hold {
	h := &Hold{reached: make(chan struct{}), release: make(chan struct{})}
	f.mu.Lock()
	f.holds[digest] = h
	f.mu.Unlock()
	t.Cleanup(h.Release)
	return h
}

// StreamingNow is how many GetArtifact calls the fake is serving at this moment.
func (f *Fake) StreamingNow() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streaming
}

// MaxStreaming is the most GetArtifact calls the fake served at once so far.
func (f *Fake) MaxStreaming() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxStreams
}

// ticket is a prefetch ticket the fake issued: good for one GetArtifact of digest by slot, until expires.
type ticket struct {
	slot, digest string
	expires      time.Time
	used         bool
}

// TicketTTL is the ticket_ttl_millis of the fake's Prefetch instructions.
const TicketTTL = time.Minute

// Prefetch issues a ticket for s's slot and art, sends Prefetch{sha256:<digest>, size, ticket, ttl} and returns the
// ticket. GetArtifact accepts that ticket once, for that slot and digest, within TicketTTL, and refuses any other
// call without lease metadata with PERMISSION_DENIED, as the real recycler does.
func (f *Fake) Prefetch(s *Session, art Artifact) string {
	tk := f.IssueTicket(s.Hello.GetSlotId(), art.Digest())
	s.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Prefetch{Prefetch: &recyclerpb.Prefetch{
		Digest: "sha256:" + art.Digest(), Size: int64(len(art.Content)), Ticket: tk, TicketTtlMillis: TicketTTL.Milliseconds()}}})
	return tk
}

// IssueTicket issues a prefetch ticket for slotID and digest (hex), for tests that send a Prefetch of their own.
func (f *Fake) IssueTicket(slotID, digest string) string {
	tk := newCredential()
	f.mu.Lock()
	f.tickets[tk] = &ticket{slot: slotID, digest: digest, expires: time.Now().Add(TicketTTL)}
	f.mu.Unlock()
	return tk
}

// Fetches is how many GetArtifact calls asked for digest (leases' and prefetches').
func (f *Fake) Fetches(digest string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches[digest]
}

// Method names for Calls.
const (
	MethodGetProvisionInfo = "GetProvisionInfo"
	MethodResolveArtifacts = "ResolveArtifacts"
	MethodGetArtifact      = "GetArtifact"
	// MethodPrefetchArtifact counts GetArtifact calls without lease metadata: a prefetch's.
	MethodPrefetchArtifact = "GetArtifact(prefetch)"
)

// Calls is how many calls of method (MethodGetProvisionInfo, ...) arrived with lease metadata, for any generation,
// whether or not they succeeded; for MethodPrefetchArtifact, how many GetArtifact calls arrived without it.
func (f *Fake) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// Hellos returns every Hello received so far.
func (f *Fake) Hellos() []*recyclerpb.Hello {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.hellos)
}

// LogLines returns the messages received on the logging service.
func (f *Fake) LogLines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.logLines)
}

// LogWorkerIDs returns the worker_id metadata of every logging stream opened so far.
func (f *Fake) LogWorkerIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.logIDs)
}

// BadCalls lists provision/artifact calls that lacked or misstated the lease metadata, or the lease credential.
func (f *Fake) BadCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.badCalls)
}

// ProvisionInfo is a valid provision info for a lease: endpoints on the fake itself, the given options.
func (f *Fake) ProvisionInfo(options map[string]any) *fnpb.ProvisionInfo {
	f.t.Helper()
	info := &fnpb.ProvisionInfo{
		LoggingEndpoint:    &pipepb.ApiServiceDescriptor{Url: f.addr},
		ControlEndpoint:    &pipepb.ApiServiceDescriptor{Url: "localhost:1"},
		StatusEndpoint:     &pipepb.ApiServiceDescriptor{Url: "localhost:2"},
		RunnerCapabilities: []string{"beam:protocol:a:v1", "beam:protocol:b:v1"},
		Dependencies: []*pipepb.ArtifactInformation{{
			TypeUrn: "beam:artifact:type:file:v1", TypePayload: mustMarshal(&pipepb.ArtifactFilePayload{Path: "/staged/upstream"}),
		}},
	}
	if options != nil {
		s, err := structOf(options)
		if err != nil {
			f.t.Fatal(err)
		}
		info.PipelineOptions = s
	}
	return info
}

// Resolved is what ResolveArtifacts answers now: every staged artifact as a file artifact with its sha256.
func (f *Fake) Resolved() []*pipepb.ArtifactInformation {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*pipepb.ArtifactInformation
	for _, a := range f.artifacts {
		out = append(out, &pipepb.ArtifactInformation{
			TypeUrn:     "beam:artifact:type:file:v1",
			TypePayload: mustMarshal(&pipepb.ArtifactFilePayload{Path: a.Path, Sha256: a.Digest()}),
			RoleUrn:     a.Role,
		})
	}
	return out
}

// Prepared is what a recycler that fetched the lease's inputs in advance puts in Lease.prepared: info and Resolved().
// Tests may alter it before passing it to LeasePrepared.
func (f *Fake) Prepared(info *fnpb.ProvisionInfo) *recyclerpb.PreparedLease {
	return &recyclerpb.PreparedLease{ProvisionInfo: info, Artifacts: f.Resolved()}
}

// Assign makes generation slotID's current lease with info (what GetProvisionInfo answers for it) and a fresh lease
// credential, which it returns, without sending anything: for tests that drive a boot.Booter directly. Lease and
// LeasePrepared do it before sending the Lease.
func (f *Fake) Assign(slotID string, generation int64, info *fnpb.ProvisionInfo) string {
	cred := newCredential()
	f.mu.Lock()
	f.generation[slotID] = generation
	f.info[generation] = info
	f.credential[generation] = cred
	f.mu.Unlock()
	return cred
}

// Lease makes generation the slot's current lease with info, and sends Lease without prepared (an older recycler, or
// one that could not fetch the inputs): the wrapper must call GetProvisionInfo and ResolveArtifacts. As the real
// recycler does, the Lease's worker_id is workerID + "." + the lease credential (see Credential).
func (f *Fake) Lease(s *Session, generation int64, workerID string, info *fnpb.ProvisionInfo) {
	f.LeasePrepared(s, generation, workerID, info, nil)
}

// LeasePrepared is Lease with Lease.prepared set to prepared (nil: none). GetProvisionInfo and ResolveArtifacts still
// answer info and the staged artifacts, so a wrapper that ignored prepared would still boot; Calls tells.
func (f *Fake) LeasePrepared(s *Session, generation int64, workerID string, info *fnpb.ProvisionInfo, prepared *recyclerpb.PreparedLease) {
	cred := f.Assign(s.Hello.GetSlotId(), generation, info)
	s.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Lease{Lease: &recyclerpb.Lease{
		Generation: generation, WorkerId: workerID + "." + cred, Credential: cred, JobName: "test-job", Prepared: prepared}}})
}

// Standby reserves generation for s's slot's next lease with info and a fresh lease credential, which it returns, and
// sends Standby{generation, workerID + "." + credential, credential, "test-job", prepared}. The generation does not
// become the slot's current lease (as for the real recycler, every provision and artifact call for it fails with
// FAILED_PRECONDITION, and Calls counts it) until AdoptLease.
func (f *Fake) Standby(s *Session, generation int64, workerID string, info *fnpb.ProvisionInfo, prepared *recyclerpb.PreparedLease) string {
	cred := newCredential()
	f.mu.Lock()
	f.info[generation] = info
	f.credential[generation] = cred
	f.mu.Unlock()
	s.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Standby{Standby: &recyclerpb.Standby{
		Generation: generation, WorkerId: workerID + "." + cred, Credential: cred, JobName: "test-job", Prepared: prepared}}})
	return cred
}

// AdoptLease makes generation, reserved by Standby, the slot's current lease and sends the Lease that adopts the
// standby: the standby's worker id and credential, prepared (which may be nil) and adopt_standby set.
func (f *Fake) AdoptLease(s *Session, generation int64, workerID string, prepared *recyclerpb.PreparedLease) {
	f.mu.Lock()
	cred, ok := f.credential[generation]
	if ok {
		f.generation[s.Hello.GetSlotId()] = generation
	}
	f.mu.Unlock()
	if !ok {
		f.t.Fatalf("AdoptLease of generation %d, which no Standby reserved", generation)
	}
	s.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Lease{Lease: &recyclerpb.Lease{
		Generation: generation, WorkerId: workerID + "." + cred, Credential: cred, JobName: "test-job", Prepared: prepared,
		AdoptStandby: true}}})
}

// NextSession waits for the next accepted Attach.
func (f *Fake) NextSession(t testing.TB) *Session {
	t.Helper()
	select {
	case s := <-f.sessions:
		return s
	case <-time.After(Wait):
		t.Fatalf("no wrapper attached within %v", Wait)
		return nil
	}
}

// checkLease validates the lease metadata of a provision/artifact call and returns the generation.
func (f *Fake) checkLease(ctx context.Context, call string) (int64, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	slot := first(md.Get("worker_id"))
	gen, err := strconv.ParseInt(first(md.Get("recycler-generation")), 10, 64)
	f.mu.Lock()
	defer f.mu.Unlock()
	if slot == "" || err != nil {
		f.badCalls = append(f.badCalls, fmt.Sprintf("%s: metadata %v", call, md))
		return 0, status.Error(codes.InvalidArgument, "missing worker_id or recycler-generation metadata")
	}
	f.calls[call]++
	cred := first(md.Get("recycler-lease-credential"))
	if cred == "" {
		f.badCalls = append(f.badCalls, fmt.Sprintf("%s: no recycler-lease-credential", call))
		return 0, status.Error(codes.Unauthenticated, "the recycler-lease-credential header is missing")
	}
	if cur, ok := f.generation[slot]; !ok || cur != gen {
		return 0, status.Errorf(codes.FailedPrecondition, "generation %d is not slot %s's current lease", gen, slot)
	}
	if subtle.ConstantTimeCompare([]byte(cred), []byte(f.credential[gen])) != 1 {
		f.badCalls = append(f.badCalls, fmt.Sprintf("%s: wrong recycler-lease-credential", call))
		return 0, status.Errorf(codes.PermissionDenied, "wrong lease credential for slot %s generation %d", slot, gen)
	}
	return gen, nil
}

// GetProvisionInfo implements ProvisionService.
func (f *Fake) GetProvisionInfo(ctx context.Context, _ *fnpb.GetProvisionInfoRequest) (*fnpb.GetProvisionInfoResponse, error) {
	gen, err := f.checkLease(ctx, MethodGetProvisionInfo)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.provErr != nil {
		return nil, f.provErr
	}
	return &fnpb.GetProvisionInfoResponse{Info: f.info[gen]}, nil
}

// ResolveArtifacts implements ArtifactRetrievalService: every staged artifact as a file artifact with its sha256.
func (f *Fake) ResolveArtifacts(ctx context.Context, _ *jobpb.ResolveArtifactsRequest) (*jobpb.ResolveArtifactsResponse, error) {
	if _, err := f.checkLease(ctx, MethodResolveArtifacts); err != nil {
		return nil, err
	}
	return &jobpb.ResolveArtifactsResponse{Replacements: f.Resolved()}, nil
}

// checkPrefetch validates a GetArtifact call without a lease generation as a prefetch's: worker_id, a ticket the
// fake issued for that slot and digest (unused, unexpired), no lease credential, and a request for the content itself.
func (f *Fake) checkPrefetch(ctx context.Context, req *jobpb.GetArtifactRequest, fp *pipepb.ArtifactFilePayload) error {
	md, _ := metadata.FromIncomingContext(ctx)
	slot, tk := first(md.Get("worker_id")), first(md.Get("recycler-prefetch-ticket"))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[MethodPrefetchArtifact]++
	bad := func(code codes.Code, msg string) error {
		f.badCalls = append(f.badCalls, "prefetch GetArtifact: "+msg)
		return status.Error(code, msg)
	}
	switch {
	case slot == "":
		return bad(codes.InvalidArgument, "missing worker_id metadata")
	case len(md.Get("recycler-lease-credential")) > 0 || len(md.Get("recycler-generation")) > 0:
		return bad(codes.InvalidArgument, "a prefetch carries no lease generation or credential")
	case tk == "":
		return bad(codes.PermissionDenied, "neither recycler-generation nor recycler-prefetch-ticket metadata")
	case req.GetArtifact().GetTypeUrn() != "beam:artifact:type:file:v1" || fp.GetPath() != "sha256/"+fp.GetSha256():
		return bad(codes.InvalidArgument, fmt.Sprintf("a prefetch asks for a file artifact with path sha256/<hex>, got %v", req.GetArtifact()))
	}
	want := f.tickets[tk]
	if want == nil || want.slot != slot || want.digest != fp.GetSha256() || want.used || time.Now().After(want.expires) {
		return status.Errorf(codes.PermissionDenied, "prefetch ticket not valid for slot %s and sha256:%s (unknown, used or expired)", slot, fp.GetSha256())
	}
	want.used = true
	return nil
}

// GetArtifact implements ArtifactRetrievalService, serving each artifact as its Mode says. A call with a prefetch
// ticket, or without the recycler-generation metadata, is a prefetch's (checkPrefetch).
func (f *Fake) GetArtifact(req *jobpb.GetArtifactRequest, stream jobpb.ArtifactRetrievalService_GetArtifactServer) error {
	var fp pipepb.ArtifactFilePayload
	if err := proto.Unmarshal(req.GetArtifact().GetTypePayload(), &fp); err != nil {
		return status.Error(codes.InvalidArgument, "bad payload")
	}
	md, _ := metadata.FromIncomingContext(stream.Context())
	if len(md.Get("recycler-generation")) == 0 || len(md.Get("recycler-prefetch-ticket")) > 0 {
		if err := f.checkPrefetch(stream.Context(), req, &fp); err != nil {
			return err
		}
	} else if _, err := f.checkLease(stream.Context(), MethodGetArtifact); err != nil {
		return err
	}
	f.mu.Lock()
	f.streaming++
	f.maxStreams = max(f.maxStreams, f.streaming)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.streaming--
		f.mu.Unlock()
	}()
	f.mu.Lock()
	f.fetches[fp.GetSha256()]++
	hold := f.holds[fp.GetSha256()]
	gate := f.gate
	var art *Artifact
	for i := range f.artifacts {
		if f.artifacts[i].Digest() == fp.GetSha256() {
			art = &f.artifacts[i]
		}
	}
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	if art == nil {
		return status.Errorf(codes.NotFound, "no artifact %s", fp.GetSha256())
	}
	data := art.Content
	if art.Mode != NoLength {
		if err := stream.SendHeader(metadata.Pairs("recycler-content-length", strconv.Itoa(len(data)))); err != nil {
			return err
		}
	}
	switch art.Mode {
	case Corrupt:
		data = slices.Clone(data)
		data[len(data)/2] ^= 0xff
	case Truncate, FailStream:
		data = data[:len(data)/2]
	}
	send := func(data []byte) error {
		for off := 0; off < len(data); off += 64 << 10 {
			end := min(off+64<<10, len(data))
			if err := stream.Send(&jobpb.GetArtifactResponse{Data: data[off:end]}); err != nil {
				return err
			}
		}
		return nil
	}
	if hold != nil {
		if err := send(data[:len(data)/2]); err != nil {
			return err
		}
		data = data[len(data)/2:]
		hold.reachedOnce.Do(func() { close(hold.reached) })
		select {
		case <-hold.release:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	if err := send(data); err != nil {
		return err
	}
	if art.Mode == FailStream {
		return status.Error(codes.Unavailable, "upstream broke")
	}
	return nil
}

// Logging implements BeamFnLogging.
func (f *Fake) Logging(stream fnpb.BeamFnLogging_LoggingServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	f.mu.Lock()
	f.logIDs = append(f.logIDs, first(md.Get("worker_id")))
	f.mu.Unlock()
	for {
		list, err := stream.Recv()
		if err != nil {
			return nil
		}
		f.mu.Lock()
		for _, e := range list.GetLogEntries() {
			f.logLines = append(f.logLines, e.GetMessage())
		}
		f.mu.Unlock()
	}
}

// newCredential is 128 random bits in lowercase hex, as the recycler's lease credentials and prefetch tickets are.
func newCredential() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}
