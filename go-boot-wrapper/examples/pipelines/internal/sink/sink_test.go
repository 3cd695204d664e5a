package sink

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

func TestSortedIsOneSortedElement(t *testing.T) {
	p, s := beam.NewPipelineWithRoot()
	out := Sorted(s, beam.Create(s, "pear", "apple", "fig", "apple"))
	passert.Equals(s, out, "apple\napple\nfig\npear")
	ptest.RunAndValidate(t, p)
}

func TestWriteSortedWritesContent(t *testing.T) {
	lines := []string{"b: 2", "a: 10", "c: 1"}
	path := filepath.Join(t.TempDir(), "out.txt")
	p, s := beam.NewPipelineWithRoot()
	WriteSorted(s, path, beam.CreateList(s, lines))
	ptest.RunAndValidate(t, p)

	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a: 10\nb: 2\nc: 1\n"; string(got) != want || Content(lines) != want {
		t.Fatalf("file = %q, Content = %q, want %q", got, Content(lines), want)
	}
}

func TestContent(t *testing.T) {
	tests := []struct {
		lines []string
		want  string
	}{
		{lines: nil, want: ""},
		{lines: []string{"x"}, want: "x\n"},
		{lines: []string{"b", "B", "a"}, want: "B\na\nb\n"},
	}
	for _, tt := range tests {
		if got := Content(tt.lines); got != tt.want {
			t.Errorf("Content(%q) = %q, want %q", tt.lines, got, tt.want)
		}
	}
}
