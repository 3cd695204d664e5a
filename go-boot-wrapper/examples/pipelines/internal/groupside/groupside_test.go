package groupside

import (
	"slices"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"
)

func TestMain(m *testing.M) {
	ptest.MainWithDefault(m, "direct")
}

func TestBuild(t *testing.T) {
	tests := []struct {
		name     string
		elements int
		want     []string
	}{
		{name: "default size", elements: 100, want: []string{
			"r0 name=zero count=25 sum=1300 total=5050",
			"r1 name=one count=25 sum=1225 total=5050",
			"r2 name=two count=25 sum=1250 total=5050",
			"r3 name=three count=25 sum=1275 total=5050",
		}},
		{name: "fewer numbers than groups", elements: 2, want: []string{
			"r1 name=one count=1 sum=1 total=3",
			"r2 name=two count=1 sum=2 total=3",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Expected(Config{Elements: tt.elements}); !slices.Equal(got, tt.want) {
				t.Fatalf("Expected = %q, want %q", got, tt.want)
			}
			p, s := beam.NewPipelineWithRoot()
			passert.EqualsList(s, Build(s, Config{Elements: tt.elements}), tt.want)
			ptest.RunAndValidate(t, p)
		})
	}
}

func TestDescribeWithoutName(t *testing.T) {
	values := []int{4, 8}
	next := func(v *int) bool {
		if len(values) == 0 {
			return false
		}
		*v, values = values[0], values[1:]
		return true
	}
	noName := func(string) func(*string) bool { return func(*string) bool { return false } }
	if got, want := describe("r9", next, noName, 12), "r9 name=? count=2 sum=12 total=12"; got != want {
		t.Fatalf("describe = %q, want %q", got, want)
	}
}
