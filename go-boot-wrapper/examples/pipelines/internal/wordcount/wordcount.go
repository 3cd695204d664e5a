// Package wordcount counts the words of a bundled text (or of a local file).
//
// Words are the maximal runs of ASCII letters, lower-cased. Each output line is "<word>: <count>".
package wordcount

import (
	_ "embed"
	"fmt"
	"regexp"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/textio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/stats"

	"recycler.dev/examples/pipelines/internal/pace"

	// --input is a local file.
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
)

//go:embed corpus.txt
var corpus string

func init() {
	register.Function2x0(extractWords)
	register.Function2x1(formatCount)
	register.Emitter1[string]()
}

var wordRE = regexp.MustCompile(`[a-z]+`)

// Config selects the input.
type Config struct {
	// Input is a local text file to count; empty means the bundled corpus.
	Input string
	Pace  pace.Config
}

// Lines returns the bundled corpus, one element per line.
func Lines() []string {
	return strings.Split(strings.TrimSuffix(corpus, "\n"), "\n")
}

// Build adds the word count to s and returns its output lines, a PCollection<string> of "<word>: <count>".
func Build(s beam.Scope, cfg Config) beam.PCollection {
	s = s.Scope("wordcount")
	var lines beam.PCollection
	if cfg.Input != "" {
		lines = textio.Read(s, cfg.Input)
	} else {
		lines = beam.CreateList(s, Lines())
	}
	lines = pace.Apply(s, cfg.Pace, lines)
	words := beam.ParDo(s, extractWords, lines)
	return beam.ParDo(s, formatCount, stats.Count(s, words))
}

// Expected computes in plain Go, without Beam, the output lines Build produces for lines.
func Expected(lines []string) []string {
	counts := map[string]int{}
	for _, line := range lines {
		for _, w := range wordRE.FindAllString(strings.ToLower(line), -1) {
			counts[w]++
		}
	}
	out := make([]string, 0, len(counts))
	for w, n := range counts {
		out = append(out, formatCount(w, n))
	}
	return out
}

func extractWords(line string, emit func(string)) {
	for _, w := range wordRE.FindAllString(strings.ToLower(line), -1) {
		emit(w)
	}
}

func formatCount(word string, count int) string {
	return fmt.Sprintf("%s: %d", word, count)
}
