// Package catalog maps a pipeline name to its construction, its expected output and how it is run.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"recycler.dev/examples/pipelines/internal/failing"
	"recycler.dev/examples/pipelines/internal/groupside"
	"recycler.dev/examples/pipelines/internal/pace"
	"recycler.dev/examples/pipelines/internal/sink"
	"recycler.dev/examples/pipelines/internal/wordcount"
)

// Pipeline names accepted by --pipeline.
const (
	WordCount = "wordcount"
	GroupSide = "groupside"
	Fail      = "fail"
)

// ErrUsage marks a configuration mistake of the caller.
var ErrUsage = errors.New("usage")

// Config is everything the launcher decides from its flags.
type Config struct {
	Pipeline  string
	Output    string
	Input     string
	Elements  int
	FailOn    int
	Pace      pace.Config
	Runner    string
	WorkerBin string
}

// Names lists the pipelines, sorted.
func Names() []string {
	names := []string{WordCount, GroupSide, Fail}
	sort.Strings(names)
	return names
}

// Validate rejects flags that cannot make a run; forExpected relaxes what only a real run needs.
func (c Config) Validate(forExpected bool) error {
	switch c.Pipeline {
	case WordCount, GroupSide, Fail:
	case "":
		return fmt.Errorf("%w: --pipeline is required (one of %s)", ErrUsage, strings.Join(Names(), ", "))
	default:
		return fmt.Errorf("%w: unknown --pipeline %q (want one of %s)", ErrUsage, c.Pipeline, strings.Join(Names(), ", "))
	}
	if c.Elements < 1 {
		return fmt.Errorf("%w: --elements must be at least 1, got %d", ErrUsage, c.Elements)
	}
	if c.Pace.SleepPerElement < 0 || c.Pace.Hold < 0 {
		return fmt.Errorf("%w: --sleep_per_element and --hold must not be negative", ErrUsage)
	}
	if !forExpected && c.Output == "" {
		return fmt.Errorf("%w: --output is required: the local path of the output file", ErrUsage)
	}
	return nil
}

// Portable reports whether the runner submits to a job server (and so stages a worker binary).
func (c Config) Portable() bool {
	return c.Runner != "" && c.Runner != "direct"
}

// Build constructs the configured pipeline, ending in the single sorted output file.
func Build(c Config) *beam.Pipeline {
	p, s := beam.NewPipelineWithRoot()
	sink.WriteSorted(s, c.Output, Lines(s, c))
	return p
}

// Lines adds the configured pipeline to s and returns its output lines before sorting.
func Lines(s beam.Scope, c Config) beam.PCollection {
	switch c.Pipeline {
	case WordCount:
		return wordcount.Build(s, wordcount.Config{Input: c.Input, Pace: c.Pace})
	case GroupSide:
		return groupside.Build(s, groupside.Config{Elements: c.Elements, Pace: c.Pace})
	case Fail:
		return failing.Build(s, failing.Config{Elements: c.Elements, FailOn: c.FailOn, Pace: c.Pace})
	default:
		panic(fmt.Sprintf("unvalidated pipeline name %q", c.Pipeline))
	}
}

// Run builds and runs the pipeline on c.Runner ("direct" when empty) and waits for the job to end.
func Run(ctx context.Context, c Config) error {
	runner := c.Runner
	if runner == "" {
		runner = "direct"
	}
	_, err := beam.Run(ctx, runner, Build(c))
	return err
}

// Expected is the exact content of the output file, computed without Beam. For a fail pipeline that fails, it is the
// error message (plus newline) the job fails with, and no output file is written.
func Expected(c Config) (string, error) {
	switch c.Pipeline {
	case WordCount:
		lines := wordcount.Lines()
		if c.Input != "" {
			b, err := os.ReadFile(c.Input)
			if err != nil {
				return "", fmt.Errorf("read --input: %w", err)
			}
			lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		}
		return sink.Content(wordcount.Expected(lines)), nil
	case GroupSide:
		return sink.Content(groupside.Expected(groupside.Config{Elements: c.Elements})), nil
	case Fail:
		fc := failing.Config{Elements: c.Elements, FailOn: c.FailOn}
		if c.FailOn >= 1 && c.FailOn <= c.Elements {
			return failing.ErrorMessage(fc) + "\n", nil
		}
		return sink.Content(failing.Expected(fc)), nil
	default:
		return "", fmt.Errorf("%w: unknown --pipeline %q", ErrUsage, c.Pipeline)
	}
}
