// Package sink writes a pipeline's result as one local file whose content is deterministic: the lines sorted, each
// ended by a newline.
package sink

import (
	"sort"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/textio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	// Output paths are local files (the worker runs on the machine that checks them).
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
)

func init() {
	register.Function2x1(joinSorted)
	register.Iter1[string]()
}

// WriteSorted writes the PCollection<string> lines to the single file filename: all lines sorted byte-wise, each
// followed by "\n". An empty lines collection writes no file.
func WriteSorted(s beam.Scope, filename string, lines beam.PCollection) {
	s = s.Scope("sink.WriteSorted")
	textio.Write(s, filename, Sorted(s, lines))
}

// Sorted returns a PCollection<string> holding one element: the lines sorted byte-wise and joined with "\n" (no
// trailing newline; textio.Write adds it). A single-key GroupByKey brings every line to one call, whatever the
// parallelism, so the result never depends on how the runner split the work.
func Sorted(s beam.Scope, lines beam.PCollection) beam.PCollection {
	grouped := beam.GroupByKey(s, beam.AddFixedKey(s, lines))
	return beam.ParDo(s, joinSorted, grouped)
}

func joinSorted(_ int, iter func(*string) bool) string {
	var all []string
	var line string
	for iter(&line) {
		all = append(all, line)
	}
	sort.Strings(all)
	return strings.Join(all, "\n")
}

// Content is the exact file content WriteSorted produces for lines; tests and --print_expected use it.
func Content(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	sorted := append([]string(nil), lines...)
	sort.Strings(sorted)
	return strings.Join(sorted, "\n") + "\n"
}
