package boot

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Log is a lease's boot log: every line goes to the wrapper's own log (stderr) and, once the lease's logging endpoint
// is known, also to Beam's logging service, as Beam's boot does (sdks/go/container/tools.Logger). The Beam side is
// best effort and never blocks the boot: entries go through a bounded buffer to a background sender and are dropped
// when the buffer is full or the endpoint cannot be reached.
type Log struct {
	log *slog.Logger

	mu   sync.Mutex
	sink *beamSink
}

// NewLog returns a boot log that writes to log until ConnectBeam is called.
func NewLog(log *slog.Logger) *Log { return &Log{log: log} }

// Info logs at INFO.
func (l *Log) Info(msg string, args ...any) {
	l.emit(slog.LevelInfo, fnpb.LogEntry_Severity_INFO, msg, args)
}

// Warn logs at WARN.
func (l *Log) Warn(msg string, args ...any) {
	l.emit(slog.LevelWarn, fnpb.LogEntry_Severity_WARN, msg, args)
}

// Error logs at ERROR.
func (l *Log) Error(msg string, args ...any) {
	l.emit(slog.LevelError, fnpb.LogEntry_Severity_ERROR, msg, args)
}

func (l *Log) emit(level slog.Level, sev fnpb.LogEntry_Severity_Enum, msg string, args []any) {
	l.log.Log(context.Background(), level, msg, args...)
	// The lock is held across the (non-blocking) offer so Close cannot close the buffer in between.
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sink != nil {
		l.sink.offer(&fnpb.LogEntry{
			Severity:    sev,
			Timestamp:   timestamppb.Now(),
			Message:     "go-boot-wrapper: " + formatLine(msg, args),
			LogLocation: "go-boot-wrapper",
		})
	}
}

// ConnectBeam starts sending this log to Beam's logging service at endpoint too. Calling it again is a no-op.
func (l *Log) ConnectBeam(endpoint, workerID string) {
	if endpoint == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sink == nil {
		l.sink = startBeamSink(endpoint, workerID, l.log)
	}
}

// Close stops forwarding to Beam; entries still buffered are flushed in the background (bounded in time).
// Safe to call more than once.
func (l *Log) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sink != nil {
		l.sink.close()
		l.sink = nil
	}
}

func formatLine(msg string, args []any) string {
	var b strings.Builder
	b.WriteString(msg)
	for i := 0; i+1 < len(args); i += 2 {
		fmt.Fprintf(&b, " %v=%v", args[i], args[i+1])
	}
	return b.String()
}

const (
	beamSinkBuffer = 256
	// beamSinkLifetime bounds how long one lease's sender may live (dial, send, flush) after it starts.
	beamSinkLifetime = time.Minute
)

type beamSink struct {
	entries   chan *fnpb.LogEntry
	closeOnce sync.Once
}

func startBeamSink(endpoint, workerID string, log *slog.Logger) *beamSink {
	s := &beamSink{entries: make(chan *fnpb.LogEntry, beamSinkBuffer)}
	go s.run(endpoint, workerID, log)
	return s
}

func (s *beamSink) offer(e *fnpb.LogEntry) {
	select {
	case s.entries <- e:
	default:
	}
}

func (s *beamSink) close() { s.closeOnce.Do(func() { close(s.entries) }) }

func (s *beamSink) run(endpoint, workerID string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), beamSinkLifetime)
	defer cancel()
	drain := func() {
		for range s.entries {
		}
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Debug("boot logs not forwarded to Beam", "endpoint", endpoint, "error", err)
		drain()
		return
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "worker_id", workerID)
	stream, err := fnpb.NewBeamFnLoggingClient(conn).Logging(ctx)
	if err != nil {
		log.Debug("boot logs not forwarded to Beam", "endpoint", endpoint, "error", err)
		drain()
		return
	}
	for e := range s.entries {
		if err := stream.Send(&fnpb.LogEntry_List{LogEntries: []*fnpb.LogEntry{e}}); err != nil {
			log.Debug("boot logs not forwarded to Beam", "endpoint", endpoint, "error", err)
			drain()
			return
		}
	}
	_ = stream.CloseSend()
	// Wait for the server to finish the call so the entries are delivered, bounded by ctx.
	for {
		if _, err := stream.Recv(); err != nil {
			return
		}
	}
}
