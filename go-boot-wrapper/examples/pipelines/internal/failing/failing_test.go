package failing

import (
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"
)

func TestMain(m *testing.M) {
	ptest.MainWithDefault(m, "direct")
}

func TestBuildFailsWithMarker(t *testing.T) {
	cfg := Config{Elements: 10, FailOn: 7}
	p, s := beam.NewPipelineWithRoot()
	Build(s, cfg)
	err := ptest.Run(p)
	if err == nil {
		t.Fatal("pipeline succeeded, want it to fail")
	}
	if want := "beam-pipelines deliberate failure: element 7 rejected on purpose"; ErrorMessage(cfg) != want ||
		!strings.Contains(err.Error(), want) {
		t.Fatalf("error = %v, ErrorMessage = %q, want both to carry %q", err, ErrorMessage(cfg), want)
	}
}

func TestBuildSucceedsWhenFailOnIsOutOfRange(t *testing.T) {
	cfg := Config{Elements: 3, FailOn: 0}
	p, s := beam.NewPipelineWithRoot()
	passert.Equals(s, Build(s, cfg), "1", "2", "3")
	ptest.RunAndValidate(t, p)
	if got := strings.Join(Expected(cfg), ","); got != "1,2,3" {
		t.Fatalf("Expected = %s, want 1,2,3", got)
	}
}
