package wordcount

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"
)

func TestMain(m *testing.M) {
	ptest.MainWithDefault(m, "direct")
}

func TestBuildCountsBundledCorpus(t *testing.T) {
	p, s := beam.NewPipelineWithRoot()
	out := Build(s, Config{})
	passert.EqualsList(s, out, Expected(Lines()))
	// Spot checks written by hand, so the oracle itself is checked too.
	passert.True(s, out, func(line string) bool { return line != "" })
	ptest.RunAndValidate(t, p)

	want := map[string]bool{"the: 10": true, "job: 5": true, "slot: 5": true, "worker: 5": true, "a: 6": true}
	for _, line := range Expected(Lines()) {
		delete(want, line)
	}
	if len(want) != 0 {
		t.Fatalf("Expected lacks %v", want)
	}
}

func TestBuildReadsInputFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(path, []byte("Go go GO!\nbeam, go\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, s := beam.NewPipelineWithRoot()
	passert.Equals(s, Build(s, Config{Input: path}), "go: 4", "beam: 1")
	ptest.RunAndValidate(t, p)
}

func TestExtractWords(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{line: "", want: nil},
		{line: "The wrapper's PID, twice: twice.", want: []string{"the", "wrapper", "s", "pid", "twice", "twice"}},
		{line: "go1.26 x86_64", want: []string{"go", "x"}},
	}
	for _, tt := range tests {
		var got []string
		extractWords(tt.line, func(w string) { got = append(got, w) })
		if len(got) != len(tt.want) {
			t.Fatalf("extractWords(%q) = %q, want %q", tt.line, got, tt.want)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Fatalf("extractWords(%q) = %q, want %q", tt.line, got, tt.want)
			}
		}
	}
}
