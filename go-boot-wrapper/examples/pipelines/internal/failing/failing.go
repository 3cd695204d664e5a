// Package failing is a pipeline whose DoFn fails on purpose, with an error message a test can recognise.
package failing

import (
	"fmt"
	"strconv"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"recycler.dev/examples/pipelines/internal/pace"
)

// Marker starts the error message of the failing DoFn; it reaches the runner's job error and the launcher's output.
const Marker = "beam-pipelines deliberate failure"

func init() {
	register.DoFn2x1[int, func(string), error](&rejectFn{})
}

// Config sizes the input and picks the element that fails.
type Config struct {
	// Elements is N: the input is the numbers 1..N.
	Elements int
	// FailOn is the number whose processing fails; a value outside 1..N makes the pipeline succeed.
	FailOn int
	Pace   pace.Config
}

// Build adds the pipeline to s and returns its output lines (the numbers other than FailOn, as decimal strings); with
// FailOn in 1..N the job fails before anything is written.
func Build(s beam.Scope, cfg Config) beam.PCollection {
	s = s.Scope("failing")
	numbers := make([]int, cfg.Elements)
	for i := range numbers {
		numbers[i] = i + 1
	}
	paced := pace.Apply(s, cfg.Pace, beam.CreateList(s, numbers))
	return beam.ParDo(s, &rejectFn{FailOn: cfg.FailOn}, paced)
}

// ErrorMessage is the message the DoFn fails with for cfg.
func ErrorMessage(cfg Config) string {
	return rejection(cfg.FailOn).Error()
}

func rejection(n int) error {
	return fmt.Errorf("%s: element %d rejected on purpose", Marker, n)
}

type rejectFn struct {
	FailOn int `json:"fail_on"`
}

func (f *rejectFn) ProcessElement(n int, emit func(string)) error {
	if n == f.FailOn {
		return rejection(n)
	}
	emit(strconv.Itoa(n))
	return nil
}

// Expected is the output lines of a run that does not fail (FailOn outside 1..N).
func Expected(cfg Config) []string {
	var out []string
	for n := 1; n <= cfg.Elements; n++ {
		if n != cfg.FailOn {
			out = append(out, strconv.Itoa(n))
		}
	}
	return out
}
