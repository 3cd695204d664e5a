// Package attach holds a slot's SlotControl/Attach stream to the recycler: it attaches (retrying forever with capped
// exponential backoff and jitter), answers Ping at once from its own receive goroutine, and hands Lease, Exit, Prefetch
// and Standby instructions to the wrapper.
package attach

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
)

// ErrNotAttached means the recycler's first message on the stream was not Attached.
var ErrNotAttached = errors.New("recycler did not answer Hello with Attached")

// ErrBadSecret means an attach secret file holds no usable secret.
var ErrBadSecret = errors.New("unusable attach secret")

// HeaderAttachSecret is the metadata key of the attach secret on the Attach call.
const HeaderAttachSecret = "recycler-attach-secret"

// MinSecretLength is the shortest attach secret accepted, in characters (the recycler requires the same).
const MinSecretLength = 16

// ReadSecretFile reads an attach secret from path (as a Kubernetes Secret mounts it), ignoring surrounding
// whitespace. The secret travels as a gRPC header, so it must be at least MinSecretLength printable ASCII characters
// without spaces. Errors never contain the file's content.
func ReadSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read attach secret file: %w", err)
	}
	secret := strings.TrimSpace(string(b))
	if len(secret) < MinSecretLength {
		return "", fmt.Errorf("%w: %s holds fewer than %d characters", ErrBadSecret, path, MinSecretLength)
	}
	for i := 0; i < len(secret); i++ {
		if secret[i] <= ' ' || secret[i] >= 0x7f {
			return "", fmt.Errorf("%w: %s must hold printable ASCII without spaces (generate one with `head -c 32 /dev/urandom | base64`)", ErrBadSecret, path)
		}
	}
	return secret, nil
}

// Config configures an Attacher.
type Config struct {
	SlotID        string
	IncarnationID string
	Version       string
	Pid           int64
	// HeldDigests returns the local cache's digests at the moment of each attach.
	HeldDigests func() []string
	// MinBackoff and MaxBackoff bound the delay between attempts (defaults 100ms and 5s).
	MinBackoff, MaxBackoff time.Duration
	// LogEvery: after the first failure, one in LogEvery consecutive failures is logged (default 20).
	LogEvery int
	// AttachTimeout bounds the wait for the recycler's answer to Hello (default 30s).
	AttachTimeout time.Duration
	// AttachSecret is sent as HeaderAttachSecret on every Attach call ("": none). A secret: never log it.
	AttachSecret string
}

// NewIncarnationID returns a fresh random id for one wrapper process start.
func NewIncarnationID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Attacher opens sessions for one slot. Not safe for concurrent Attach calls.
type Attacher struct {
	// resetConn makes the gRPC channel try to connect now: our backoff, not gRPC's own (which grows to minutes),
	// decides when the next attempt happens.
	resetConn func()
	client    recyclerpb.SlotControlClient
	cfg       Config
	log       *slog.Logger

	backoff      Backoff
	lastRecycler string
}

// NewAttacher returns an Attacher that uses conn (a client connection to the recycler's fixed endpoint).
func NewAttacher(conn grpc.ClientConnInterface, cfg Config, log *slog.Logger) *Attacher {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = 20
	}
	if cfg.AttachTimeout <= 0 {
		cfg.AttachTimeout = 30 * time.Second
	}
	if cfg.HeldDigests == nil {
		cfg.HeldDigests = func() []string { return nil }
	}
	reset := func() {}
	if r, ok := conn.(interface{ ResetConnectBackoff() }); ok {
		reset = r.ResetConnectBackoff
	}
	return &Attacher{
		resetConn: reset,
		client:    recyclerpb.NewSlotControlClient(conn),
		cfg:       cfg,
		log:       log,
		backoff:   Backoff{Min: cfg.MinBackoff, Max: cfg.MaxBackoff},
	}
}

// Attach returns an attached session, retrying until it gets one; it fails only when ctx ends (with ctx's error).
// Refusals (NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS) are configuration problems an operator must see, so they are
// logged at ERROR, but retried all the same: the wrapper never exits on its own.
func (a *Attacher) Attach(ctx context.Context) (*Session, error) {
	failures := 0
	var lastCode codes.Code = codes.OK
	for {
		s, err := a.try(ctx)
		if err == nil {
			a.backoff.Reset()
			a.logAttached(s, failures)
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		failures++
		code := status.Code(err)
		if failures == 1 || failures%a.cfg.LogEvery == 0 || code != lastCode {
			a.logFailure(err, code, failures)
		}
		lastCode = code
		t := time.NewTimer(a.backoff.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func (a *Attacher) logFailure(err error, code codes.Code, failures int) {
	switch code {
	case codes.Unauthenticated, codes.PermissionDenied:
		a.log.Error("recycler refused attach; give the wrapper the recycler's attach secret with --attach_secret_file (retrying)",
			"code", code.String(), "error", status.Convert(err).Message(), "attempts", failures)
	case codes.NotFound, codes.InvalidArgument, codes.AlreadyExists, codes.Unimplemented:
		a.log.Error("recycler refused attach; fix the wrapper's --slot or the recycler's slot ids (retrying)",
			"code", code.String(), "error", status.Convert(err).Message(), "attempts", failures)
	default:
		a.log.Warn("cannot attach to recycler (retrying)", "code", code.String(), "error", err, "attempts", failures)
	}
}

func (a *Attacher) logAttached(s *Session, failures int) {
	id := s.Attached.GetRecyclerId()
	args := []any{"recycler_id", id, "last_generation", s.Attached.GetLastGeneration(), "failed_attempts", failures}
	if a.lastRecycler != "" && a.lastRecycler != id {
		a.log.Info("attached to a different recycler process", append(args, "previous_recycler_id", a.lastRecycler)...)
	} else {
		a.log.Info("attached", args...)
	}
	a.lastRecycler = id
}

// try makes one attach attempt.
func (a *Attacher) try(ctx context.Context) (*Session, error) {
	a.resetConn()
	// The stream outlives ctx's cancellation on purpose: on shutdown the wrapper first stops its worker, and only
	// then closes the session, so the recycler never sees the slot detached while the worker still runs.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if a.cfg.AttachSecret != "" {
		sctx = metadata.AppendToOutgoingContext(sctx, HeaderAttachSecret, a.cfg.AttachSecret)
	}
	stream, err := a.client.Attach(sctx)
	if err != nil {
		cancel()
		return nil, err
	}
	hello := &recyclerpb.Hello{
		SlotId:         a.cfg.SlotID,
		IncarnationId:  a.cfg.IncarnationID,
		HeldDigests:    a.cfg.HeldDigests(),
		WrapperVersion: a.cfg.Version,
		WrapperPid:     a.cfg.Pid,
	}
	if err := stream.Send(&recyclerpb.WrapperMessage{Kind: &recyclerpb.WrapperMessage_Hello{Hello: hello}}); err != nil {
		// A failed Send reports io.EOF; the real cause (the call's status) comes from Recv.
		_, rerr := recvWithin(ctx, stream, a.cfg.AttachTimeout, cancel)
		cancel()
		if rerr != nil {
			return nil, rerr
		}
		return nil, err
	}
	first, err := recvWithin(ctx, stream, a.cfg.AttachTimeout, cancel)
	if err != nil {
		cancel()
		return nil, err
	}
	attached := first.GetAttached()
	if attached == nil {
		cancel()
		return nil, fmt.Errorf("%w: got %T", ErrNotAttached, first.GetKind())
	}
	s := &Session{
		stream:   stream,
		cancel:   cancel,
		Attached: attached,
		events:   make(chan *recyclerpb.RecyclerMessage, 16),
		done:     make(chan struct{}),
		log:      a.log,
	}
	go s.recvLoop(sctx)
	return s, nil
}

// recvWithin receives one message, giving up (and cancelling the stream) after timeout or when ctx ends.
func recvWithin(ctx context.Context, stream grpc.BidiStreamingClient[recyclerpb.WrapperMessage, recyclerpb.RecyclerMessage],
	timeout time.Duration, cancel context.CancelFunc) (*recyclerpb.RecyclerMessage, error) {
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	t := time.AfterFunc(timeout, cancel)
	defer t.Stop()
	msg, err := stream.Recv()
	if err != nil && ctx.Err() == nil && status.Code(err) == codes.Canceled {
		return nil, status.Errorf(codes.DeadlineExceeded, "no answer to Hello within %v", timeout)
	}
	return msg, err
}

// Session is one attached stream. Events delivers Lease, Exit, Prefetch and Standby messages in order and is closed
// when the stream ends; Err then says why.
type Session struct {
	// Attached is the recycler's answer to Hello.
	Attached *recyclerpb.Attached

	stream grpc.BidiStreamingClient[recyclerpb.WrapperMessage, recyclerpb.RecyclerMessage]
	cancel context.CancelFunc
	log    *slog.Logger
	events chan *recyclerpb.RecyclerMessage
	done   chan struct{}
	err    error // written before done is closed

	// sendMu serialises Send: gRPC allows one sender at a time, and Pong is sent from the receive goroutine.
	sendMu    sync.Mutex
	closeOnce sync.Once
}

// Events delivers Lease, Exit, Prefetch and Standby instructions; it is closed when the stream ends.
func (s *Session) Events() <-chan *recyclerpb.RecyclerMessage { return s.events }

// Done is closed when the stream has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the stream ended; valid after Done is closed.
func (s *Session) Err() error {
	<-s.done
	return s.err
}

// Send sends a report to the recycler.
func (s *Session) Send(m *recyclerpb.WrapperMessage) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(m)
}

// Close ends the stream from our side. Safe to call more than once.
func (s *Session) Close() {
	s.closeOnce.Do(func() {
		s.sendMu.Lock()
		_ = s.stream.CloseSend()
		s.sendMu.Unlock()
		s.cancel()
	})
}

func (s *Session) recvLoop(ctx context.Context) {
	defer close(s.done)
	defer close(s.events)
	defer s.cancel()
	for {
		m, err := s.stream.Recv()
		if err != nil {
			s.err = err
			return
		}
		switch k := m.GetKind().(type) {
		case *recyclerpb.RecyclerMessage_Ping:
			pong := &recyclerpb.WrapperMessage{Kind: &recyclerpb.WrapperMessage_Pong{Pong: &recyclerpb.Pong{Nonce: k.Ping.GetNonce()}}}
			if err := s.Send(pong); err != nil {
				s.log.Debug("cannot send pong", "error", err)
			}
		case *recyclerpb.RecyclerMessage_Lease, *recyclerpb.RecyclerMessage_Exit, *recyclerpb.RecyclerMessage_Prefetch,
			*recyclerpb.RecyclerMessage_Standby:
			select {
			case s.events <- m:
			case <-ctx.Done():
				s.err = ctx.Err()
				return
			}
		default:
			s.log.Warn("ignoring unexpected message from recycler", "kind", fmt.Sprintf("%T", k))
		}
	}
}
