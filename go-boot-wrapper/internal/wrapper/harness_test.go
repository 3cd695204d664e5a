package wrapper

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"recycler.dev/go-boot-wrapper/internal/boot"
	"recycler.dev/go-boot-wrapper/internal/fakerecycler"
	"recycler.dev/go-boot-wrapper/internal/supervisor"
	"recycler.dev/go-boot-wrapper/internal/testhelper"
)

// sup is the test process's one supervisor (it is the subreaper for every worker the tests start).
var sup *supervisor.Supervisor

func TestMain(m *testing.M) {
	testhelper.MainIfHelper()
	sup = supervisor.New(supervisor.LinuxSystem{}, slog.New(slog.DiscardHandler))
	if err := sup.BecomeReaper(); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go sup.ReapZombies(ctx, 100*time.Millisecond)
	code := m.Run()
	cancel()
	os.Exit(code)
}

// syncBuffer collects the wrapper's log; it is printed when a test fails.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // closed and replaced on every Write, for waitFor
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written != nil {
		close(s.written)
		s.written = nil
	}
	return s.b.Write(p)
}

// waitFor reports whether the log matches re within d, checking again after every write.
func (s *syncBuffer) waitFor(re *regexp.Regexp, d time.Duration) bool {
	deadline := time.After(d)
	for {
		s.mu.Lock()
		if re.Match(s.b.Bytes()) {
			s.mu.Unlock()
			return true
		}
		if s.written == nil {
			s.written = make(chan struct{})
		}
		written := s.written
		s.mu.Unlock()
		select {
		case <-written:
		case <-deadline:
			return false
		}
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is a wrapper running against a fake recycler.
type harness struct {
	t       testing.TB
	f       *fakerecycler.Fake
	w       *Wrapper
	workDir string
	logs    *syncBuffer
	cancel  context.CancelFunc
	runErr  chan error
	stopped sync.Once
}

type option func(*Config)

func withGrace(d time.Duration) option { return func(c *Config) { c.GracePeriod = d } }

func withSlot(id string) option { return func(c *Config) { c.SlotID = id } }

func withAttachSecret(s string) option { return func(c *Config) { c.AttachSecret = s } }

// startWrapper runs a wrapper (for slot-0 unless an option says otherwise) against f until the test ends, logging text.
func startWrapper(t testing.TB, f *fakerecycler.Fake, workDir string, opts ...option) *harness {
	t.Helper()
	return startWrapperLogging(t, f, workDir, func(w io.Writer, o *slog.HandlerOptions) slog.Handler { return slog.NewTextHandler(w, o) }, opts...)
}

// startWrapperLogging is startWrapper with the log handler that handler makes (for example slog.NewJSONHandler, as
// --log_format=json).
func startWrapperLogging(t testing.TB, f *fakerecycler.Fake, workDir string, handler func(io.Writer, *slog.HandlerOptions) slog.Handler,
	opts ...option) *harness {
	t.Helper()
	logs := &syncBuffer{}
	cfg := Config{
		SlotID:           "slot-0",
		RecyclerEndpoint: f.Addr(),
		WorkDir:          workDir,
		GracePeriod:      5 * time.Second,
		Version:          "test",
		MinBackoff:       5 * time.Millisecond,
		MaxBackoff:       50 * time.Millisecond,
		Getenv: func(k string) string {
			return map[string]string{"PATH": os.Getenv("PATH"), "HOME": "/home/test", "LANG": "C.UTF-8",
				"WRAPPER_SECRET": "must-not-leak"}[k]
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	w, err := New(cfg, sup, slog.New(handler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, f: f, w: w, workDir: workDir, logs: logs, cancel: cancel, runErr: make(chan error, 1)}
	go func() { h.runErr <- w.Run(ctx) }()
	t.Cleanup(func() {
		h.stop()
		_ = w.Close()
		if t.Failed() {
			t.Logf("wrapper log:\n%s", logs.String())
		}
		if bad := f.BadCalls(); len(bad) > 0 {
			t.Errorf("calls without lease metadata: %v", bad)
		}
	})
	return h
}

// stop cancels the wrapper (as SIGTERM does) and waits for Run to return nil.
func (h *harness) stop() {
	h.t.Helper()
	h.stopped.Do(func() {
		h.cancel()
		select {
		case err := <-h.runErr:
			if err != nil {
				h.t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(fakerecycler.Wait):
			h.t.Errorf("Run did not return within %v of cancellation", fakerecycler.Wait)
		}
	})
}

func (h *harness) leaseDir(gen int64) string {
	return filepath.Join(h.workDir, "leases", "slot-0-g"+strconv.FormatInt(gen, 10))
}

// workerArtifact is a worker binary (a script running the helper in mode) with the Go worker role.
func workerArtifact(t testing.TB, mode, dir string, env ...string) fakerecycler.Artifact {
	return fakerecycler.Artifact{Role: boot.URNGoWorkerBinaryRole, Path: "/staged/worker-" + mode,
		Content: testhelper.Script(t, mode, dir, env...)}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
