package attach

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
)

// silentThenAnswering ignores the first hellos (a recycler that accepted the call but hangs), then attaches and
// pings.
type silentThenAnswering struct {
	recyclerpb.UnimplementedSlotControlServer
	silent atomic.Int32
	hellos atomic.Int32
	pongs  chan int64
}

func (s *silentThenAnswering) Attach(stream grpc.BidiStreamingServer[recyclerpb.WrapperMessage, recyclerpb.RecyclerMessage]) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	s.hellos.Add(1)
	if s.silent.Add(-1) >= 0 {
		<-stream.Context().Done()
		return nil
	}
	_ = stream.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Attached{Attached: &recyclerpb.Attached{RecyclerId: "r1"}}})
	_ = stream.Send(&recyclerpb.RecyclerMessage{Kind: &recyclerpb.RecyclerMessage_Ping{Ping: &recyclerpb.Ping{Nonce: 7}}})
	for {
		m, err := stream.Recv()
		if err != nil {
			return nil
		}
		if p := m.GetPong(); p != nil {
			s.pongs <- p.GetNonce()
		}
	}
}

func TestAttachRetriesAHangingRecyclerAndAnswersPing(t *testing.T) {
	srv := &silentThenAnswering{pongs: make(chan int64, 1)}
	srv.silent.Store(2)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	recyclerpb.RegisterSlotControlServer(g, srv)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	a := NewAttacher(conn, Config{SlotID: "s", IncarnationID: NewIncarnationID(), AttachTimeout: 50 * time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := a.Attach(ctx)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(s.Close)
	if n := srv.hellos.Load(); n != 3 {
		t.Errorf("attached after %d hellos, want 3 (two unanswered, then one answered)", n)
	}
	if s.Attached.GetRecyclerId() != "r1" {
		t.Errorf("Attached = %v", s.Attached)
	}
	select {
	case n := <-srv.pongs:
		if n != 7 {
			t.Errorf("pong nonce %d, want 7", n)
		}
	case <-ctx.Done():
		t.Fatal("no pong")
	}
	// Close is idempotent and ends the session.
	s.Close()
	s.Close()
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("session not done after Close")
	}
}

func TestAttachStopsWithContext(t *testing.T) {
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	a := NewAttacher(conn, Config{SlotID: "s"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	var got error
	go func() { defer wg.Done(); _, got = a.Attach(ctx) }()
	cancel()
	wg.Wait()
	if got != context.Canceled {
		t.Errorf("Attach after cancel = %v, want context.Canceled", got)
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content string
		want          string
		wantErr       error // nil: success; else errors.Is target (or any error for a missing file)
	}{
		{"trailing newline is ignored", "0123456789abcdef-secret\n", "0123456789abcdef-secret", nil},
		{"too short", "short\n", "", ErrBadSecret},
		{"inner space", "0123456789 abcdef-secret", "", ErrBadSecret},
		{"non-ascii", "0123456789abcdef-sécret", "", ErrBadSecret},
		{"missing file", "", "", os.ErrNotExist},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "secret-"+strconv.Itoa(i))
			if tt.wantErr != os.ErrNotExist {
				if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ReadSecretFile(path)
			if tt.wantErr == nil {
				if err != nil || got != tt.want {
					t.Fatalf("ReadSecretFile = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadSecretFile error = %v, want %v", err, tt.wantErr)
			}
			if tt.content != "" && strings.Contains(err.Error(), strings.TrimSpace(tt.content)) {
				t.Errorf("error %q shows the file's content", err)
			}
		})
	}
}
