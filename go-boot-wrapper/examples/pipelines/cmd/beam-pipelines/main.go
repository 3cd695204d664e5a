// Command beam-pipelines holds the sample Beam Go pipelines of the end-to-end test, compiled into one binary (the
// deployment model of the recycler's users): the launcher picks one with --pipeline, and the same binary is staged to
// the runner as the Go worker, which runs whichever pipeline it is handed.
//
// Exit codes: 0 the job succeeded, 1 the job failed or could not be submitted, 2 bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/options/jobopts"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners"

	// Runners selectable with --runner: "universal" (any portable job server, such as Beam's Flink job server),
	// its alias "flink", and "direct" (in-process, for a quick local check).
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/flink"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/universal"

	"recycler.dev/examples/pipelines/internal/catalog"
	"recycler.dev/examples/pipelines/internal/pace"
)

var (
	pipelineName    = flag.String("pipeline", "", "Pipeline to run: "+strings.Join(catalog.Names(), ", ")+" (required).")
	output          = flag.String("output", "", "Local path of the single output file the pipeline writes (required, except with --print_expected).")
	input           = flag.String("input", "", "Local text file the wordcount pipeline counts instead of its bundled text (optional).")
	elements        = flag.Int("elements", 100, "N: the groupside and fail pipelines read the numbers 1..N (optional).")
	failOn          = flag.Int("fail_on", 7, "The number the fail pipeline fails on; outside 1..N it succeeds (optional).")
	sleepPerElement = flag.Duration("sleep_per_element", 0, "Sleep before passing on each input element, to slow the job down (optional).")
	hold            = flag.Duration("hold", 0, "Sleep once, before the first input element of each worker, to keep the job running (optional).")
	logTag          = flag.String("log_tag", "", "Write \"<tag> element <element>\" to the worker's stderr for every element the paced step passes on (optional).")
	printExpected   = flag.Bool("print_expected", false, "Print the exact output file content (for fail: the job's error message) computed without Beam, and exit (optional).")
)

const (
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	flag.Parse()
	// With --worker=true (how boot starts the staged binary) Init runs the SDK harness and never returns.
	beam.Init()

	cfg := catalog.Config{
		Pipeline:  *pipelineName,
		Output:    *output,
		Input:     *input,
		Elements:  *elements,
		FailOn:    *failOn,
		Pace:      pace.Config{SleepPerElement: *sleepPerElement, Hold: *hold, LogTag: *logTag},
		Runner:    *runners.Runner,
		WorkerBin: *jobopts.WorkerBinary,
	}
	if err := cfg.Validate(*printExpected); err != nil {
		fmt.Fprintf(os.Stderr, "beam-pipelines: %v\n", err)
		os.Exit(exitUsage)
	}
	if *printExpected {
		text, err := catalog.Expected(cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "beam-pipelines: %v\n", err)
			os.Exit(exitFailed)
		}
		fmt.Print(text)
		return
	}
	if err := stageSelf(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "beam-pipelines: %v\n", err)
		os.Exit(exitFailed)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := catalog.Run(ctx, cfg); err != nil {
		stop()
		fmt.Fprintf(os.Stderr, "beam-pipelines: pipeline %s failed: %v\n", cfg.Pipeline, err)
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "beam-pipelines: interrupted; the job may still run on the runner")
		}
		os.Exit(exitFailed)
	}
}

// stageSelf makes a portable runner stage this very binary as the Go worker. Beam Go v2.70.0 never reuses the running
// binary on its own (runnerlib.IsWorkerCompatibleBinary always answers false) and otherwise runs `go build` on the
// main package's sources at submission time, producing a different binary; LOOPBACK serves the worker in-process and
// stages nothing, and an explicit --worker_binary wins.
func stageSelf(cfg catalog.Config) error {
	if !cfg.Portable() || jobopts.IsLoopback() || cfg.WorkerBin != "" {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary to stage as the worker (pass --worker_binary): %w", err)
	}
	return flag.Set("worker_binary", self)
}
