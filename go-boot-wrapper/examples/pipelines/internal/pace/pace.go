// Package pace slows a pipeline down on purpose, so that tests can cancel a running job or kill its worker mid-job.
package pace

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
)

func init() {
	register.DoFn3x1[context.Context, beam.T, func(beam.T), error](&paceFn{})
	register.Emitter1[beam.T]()
}

// Config says how slow the paced step is. The zero value passes elements through at full speed.
type Config struct {
	// SleepPerElement is slept before each element is passed on.
	SleepPerElement time.Duration
	// Hold is slept once, before the first element a worker's DoFn instance sees.
	Hold time.Duration
	// LogTag, if set, makes the step write the line "<LogTag> element <element>" to the worker's stderr for every
	// element it passes on, so that a test can count a worker's log lines where they end up (the fault suite checks
	// that none is lost when the lease ends).
	LogTag string
}

// logOut is where LogTag lines go; a variable so the tests can read them.
var logOut io.Writer = os.Stderr

// Apply passes every element of col through unchanged, sleeping as cfg says. The step is always present, so a slow run has
// the same pipeline shape as a fast one. Sleeps end early, with the context's error, when the bundle is cancelled.
func Apply(s beam.Scope, cfg Config, col beam.PCollection) beam.PCollection {
	return beam.ParDo(s.Scope("pace"), &paceFn{SleepPerElement: cfg.SleepPerElement, Hold: cfg.Hold, LogTag: cfg.LogTag},
		col)
}

type paceFn struct {
	SleepPerElement time.Duration `json:"sleep_per_element"`
	Hold            time.Duration `json:"hold"`
	LogTag          string        `json:"log_tag"`

	held bool // per DoFn instance; not serialised
}

func (f *paceFn) ProcessElement(ctx context.Context, elem beam.T, emit func(beam.T)) error {
	if !f.held {
		f.held = true
		if err := sleep(ctx, f.Hold); err != nil {
			return err
		}
	}
	if err := sleep(ctx, f.SleepPerElement); err != nil {
		return err
	}
	if f.LogTag != "" {
		// One write per line: lines of concurrent bundles never interleave within a line.
		if _, err := fmt.Fprintf(logOut, "%s element %v\n", f.LogTag, elem); err != nil {
			return fmt.Errorf("write log line: %w", err)
		}
	}
	emit(elem)
	return nil
}

// sleep waits for d, or returns ctx's error if ctx ends first. Sleeping is the point of this package: the pipeline is
// slow on purpose, nothing is synchronised by it.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
