package fakerecycler

import (
	"crypto/subtle"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
)

// Session is one accepted Attach stream, as the test sees it.
type Session struct {
	Hello *recyclerpb.Hello

	out   chan *recyclerpb.RecyclerMessage
	in    chan *recyclerpb.WrapperMessage
	brk   chan struct{}
	ended chan struct{}
}

// Attach implements SlotControl.
func (f *Fake) Attach(stream grpc.BidiStreamingServer[recyclerpb.WrapperMessage, recyclerpb.RecyclerMessage]) error {
	f.mu.Lock()
	secret := f.secret
	f.mu.Unlock()
	if secret != "" {
		md, _ := metadata.FromIncomingContext(stream.Context())
		switch got := first(md.Get("recycler-attach-secret")); {
		case got == "":
			return status.Error(codes.Unauthenticated, "the recycler-attach-secret header is missing")
		case subtle.ConstantTimeCompare([]byte(got), []byte(secret)) != 1:
			return status.Error(codes.PermissionDenied, "the attach secret is wrong")
		}
	}
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := m.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "first message must be Hello")
	}
	f.mu.Lock()
	f.hellos = append(f.hellos, hello)
	refuse, known := f.refuse, f.slots[hello.GetSlotId()]
	f.mu.Unlock()
	if !known {
		return status.Errorf(codes.NotFound, "unknown slot %q", hello.GetSlotId())
	}
	if refuse != codes.OK {
		return status.Errorf(refuse, "slot %q refused by test", hello.GetSlotId())
	}
	if err := stream.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Attached{
		Attached: &recyclerpb.Attached{RecyclerId: "fake"}}}); err != nil {
		return err
	}
	s := &Session{
		Hello: hello,
		out:   make(chan *recyclerpb.RecyclerMessage, 16),
		in:    make(chan *recyclerpb.WrapperMessage, 64),
		brk:   make(chan struct{}),
		ended: make(chan struct{}),
	}
	defer close(s.ended)
	f.sessions <- s
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			s.in <- m
		}
	}()
	for {
		select {
		case m := <-s.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-s.brk:
			return status.Error(codes.Unavailable, "stream broken by test")
		case <-recvErr:
			return nil
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// Send queues a message to the wrapper.
func (s *Session) Send(m *recyclerpb.RecyclerMessage) { s.out <- m }

// Exit sends Exit{generation}.
func (s *Session) Exit(generation int64) {
	s.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Exit{Exit: &recyclerpb.Exit{
		Generation: generation, Reason: recyclerpb.ExitReason_EXIT_REASON_RUNNER_CLOSED}}})
}

// ExitFor sends Exit{generation, reason}.
func (s *Session) ExitFor(generation int64, reason recyclerpb.ExitReason) {
	s.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Exit{Exit: &recyclerpb.Exit{
		Generation: generation, Reason: reason}}})
}

// Ping sends Ping{nonce}.
func (s *Session) Ping(nonce int64) {
	s.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Ping{Ping: &recyclerpb.Ping{Nonce: nonce}}})
}

// Break ends the stream with UNAVAILABLE, as a recycler that lost the wrapper would.
func (s *Session) Break() { close(s.brk) }

// Ended is closed when the server side of the stream has returned.
func (s *Session) Ended() <-chan struct{} { return s.ended }

// Next waits for the wrapper's next message.
func (s *Session) Next(t testing.TB) *recyclerpb.WrapperMessage {
	t.Helper()
	return s.NextWithin(t, Wait)
}

// NextWithin waits up to d for the wrapper's next message.
func (s *Session) NextWithin(t testing.TB, d time.Duration) *recyclerpb.WrapperMessage {
	t.Helper()
	select {
	case m := <-s.in:
		return m
	case <-time.After(d):
		t.Fatalf("wrapper sent nothing within %v", d)
		return nil
	}
}

// ExpectStarted waits for WorkerStarted{generation} and returns it.
func (s *Session) ExpectStarted(t testing.TB, generation int64) *recyclerpb.WorkerStarted {
	t.Helper()
	m := s.Next(t)
	ws := m.GetWorkerStarted()
	if ws == nil || ws.GetGeneration() != generation {
		t.Fatalf("expected WorkerStarted{generation=%d}, got %v", generation, describe(m))
	}
	return ws
}

// ExpectEnded waits for LeaseEnded{generation} and returns it.
func (s *Session) ExpectEnded(t testing.TB, generation int64) *recyclerpb.LeaseEnded {
	t.Helper()
	m := s.Next(t)
	le := m.GetLeaseEnded()
	if le == nil || le.GetGeneration() != generation {
		t.Fatalf("expected LeaseEnded{generation=%d}, got %v", generation, describe(m))
	}
	return le
}

// ExpectStandbyEnded waits for StandbyEnded{generation} and returns it.
func (s *Session) ExpectStandbyEnded(t testing.TB, generation int64) *recyclerpb.StandbyEnded {
	t.Helper()
	m := s.Next(t)
	se := m.GetStandbyEnded()
	if se == nil || se.GetGeneration() != generation {
		t.Fatalf("expected StandbyEnded{generation=%d}, got %v", generation, describe(m))
	}
	return se
}

// ExpectPong sends Ping{nonce} and fails unless the wrapper's next message is its Pong: a check that the wrapper sent
// nothing else before it answered the Ping (its receive goroutine answers Pings, so a message another goroutine of the
// wrapper sends later is not caught).
func (s *Session) ExpectPong(t testing.TB, nonce int64) {
	t.Helper()
	s.Ping(nonce)
	if m := s.Next(t); m.GetPong().GetNonce() != nonce {
		t.Fatalf("expected Pong{%d}, got %v", nonce, describe(m))
	}
}

// ExpectPrefetched waits for Prefetched{digest} ("sha256:<hex>" as sent) and returns it.
func (s *Session) ExpectPrefetched(t testing.TB, digest string) *recyclerpb.Prefetched {
	t.Helper()
	m := s.Next(t)
	p := m.GetPrefetched()
	if p == nil || p.GetDigest() != digest {
		t.Fatalf("expected Prefetched{digest=%s}, got %v", digest, describe(m))
	}
	return p
}

// Received returns the wrapper's messages received and not yet taken, without waiting.
func (s *Session) Received() []*recyclerpb.WrapperMessage {
	var out []*recyclerpb.WrapperMessage
	for {
		select {
		case m := <-s.in:
			out = append(out, m)
		default:
			return out
		}
	}
}

// ExpectQuiet fails if the wrapper sends anything within d.
func (s *Session) ExpectQuiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-s.in:
		t.Fatalf("expected no message, got %v", describe(m))
	case <-time.After(d):
	}
}

func describe(m *recyclerpb.WrapperMessage) string {
	if m == nil {
		return "nothing"
	}
	return fmt.Sprintf("%T %v", m.GetKind(), m)
}

func structOf(m map[string]any) (*structpb.Struct, error) { return structpb.NewStruct(m) }
