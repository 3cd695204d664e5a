package pace

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"
)

func TestMain(m *testing.M) {
	ptest.MainWithDefault(m, "direct")
}

func TestApplyPassesElementsThrough(t *testing.T) {
	p, s := beam.NewPipelineWithRoot()
	out := Apply(s, Config{}, beam.Create(s, "a", "b", "c"))
	passert.Equals(s, out, "a", "b", "c")
	ptest.RunAndValidate(t, p)
}

func TestProcessElement(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name     string
		fn       paceFn
		ctx      context.Context
		wantErr  error
		wantEmit bool
	}{
		{name: "zero config emits", fn: paceFn{}, ctx: context.Background(), wantEmit: true},
		{name: "hold ends with cancellation", fn: paceFn{Hold: time.Hour}, ctx: cancelled, wantErr: context.Canceled},
		{name: "sleep ends with cancellation", fn: paceFn{SleepPerElement: time.Hour}, ctx: cancelled, wantErr: context.Canceled},
		// A hold already served is not served again: with an hour-long hold this would otherwise never return.
		{name: "hold is served once", fn: paceFn{Hold: time.Hour, held: true}, ctx: context.Background(), wantEmit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []beam.T
			err := tt.fn.ProcessElement(tt.ctx, "x", func(e beam.T) { got = append(got, e) })
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ProcessElement error = %v, want %v", err, tt.wantErr)
			}
			if emitted := len(got) == 1 && got[0] == "x"; emitted != tt.wantEmit {
				t.Fatalf("emitted %v, want emit=%v", got, tt.wantEmit)
			}
			if !tt.fn.held {
				t.Fatal("held not set after the first element")
			}
		})
	}
}

func TestLogTagWritesOneLinePerElement(t *testing.T) {
	var buf bytes.Buffer
	old := logOut
	logOut = &buf
	t.Cleanup(func() { logOut = old })
	fn := paceFn{LogTag: "job7"}
	for _, e := range []string{"a", "b"} {
		if err := fn.ProcessElement(context.Background(), e, func(beam.T) {}); err != nil {
			t.Fatalf("ProcessElement(%q) error = %v", e, err)
		}
	}
	if got, want := buf.String(), "job7 element a\njob7 element b\n"; got != want {
		t.Fatalf("log lines = %q, want %q", got, want)
	}
	buf.Reset()
	if err := (&paceFn{}).ProcessElement(context.Background(), "c", func(beam.T) {}); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Fatalf("without LogTag the step wrote %q", buf.String())
	}
}
