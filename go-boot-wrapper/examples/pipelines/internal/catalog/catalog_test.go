package catalog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"

	"recycler.dev/examples/pipelines/internal/pace"
)

func TestMain(m *testing.M) {
	ptest.MainWithDefault(m, "direct")
}

// golden reads the documented expected output of a pipeline run with default flags (testdata/expected/<name>.txt).
func golden(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "expected", name+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func defaults(pipeline, output string) Config {
	return Config{Pipeline: pipeline, Output: output, Elements: 100, FailOn: 7, Runner: "direct"}
}

func TestRunWritesGoldenOutput(t *testing.T) {
	for _, name := range []string{WordCount, GroupSide} {
		t.Run(name, func(t *testing.T) {
			cfg := defaults(name, filepath.Join(t.TempDir(), "out.txt"))
			if err := Run(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(cfg.Output)
			if err != nil {
				t.Fatal(err)
			}
			if want := golden(t, name); string(got) != want {
				t.Fatalf("output:\n%s\nwant:\n%s", got, want)
			}
			if expected, err := Expected(cfg); err != nil || expected != string(got) {
				t.Fatalf("Expected = %q, %v; want the file content", expected, err)
			}
		})
	}
}

func TestRunFailPipeline(t *testing.T) {
	cfg := defaults(Fail, filepath.Join(t.TempDir(), "out.txt"))
	err := Run(context.Background(), cfg)
	want := strings.TrimSuffix(golden(t, Fail), "\n")
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Run error = %v, want one containing %q", err, want)
	}
	if _, statErr := os.Stat(cfg.Output); !errors.Is(statErr, os.ErrNotExist) {
		t.Fatalf("output file exists after a failed job (stat: %v)", statErr)
	}
	if expected, _ := Expected(cfg); expected != want+"\n" {
		t.Fatalf("Expected = %q, want %q", expected, want+"\n")
	}
}

func TestRunFailPipelineOutOfRangeSucceeds(t *testing.T) {
	cfg := defaults(Fail, filepath.Join(t.TempDir(), "out.txt"))
	cfg.Elements, cfg.FailOn = 3, 4
	if err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(cfg.Output); string(got) != "1\n2\n3\n" {
		t.Fatalf("output = %q, want 1..3", got)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name        string
		mutate      func(*Config)
		forExpected bool
		wantErr     string
	}{
		{name: "ok", mutate: func(*Config) {}},
		{name: "no pipeline", mutate: func(c *Config) { c.Pipeline = "" }, wantErr: "--pipeline is required"},
		{name: "unknown pipeline", mutate: func(c *Config) { c.Pipeline = "nope" }, wantErr: `unknown --pipeline "nope"`},
		{name: "no output", mutate: func(c *Config) { c.Output = "" }, wantErr: "--output is required"},
		{name: "no output for expected", mutate: func(c *Config) { c.Output = "" }, forExpected: true},
		{name: "no elements", mutate: func(c *Config) { c.Elements = 0 }, wantErr: "--elements must be at least 1"},
		{name: "negative hold", mutate: func(c *Config) { c.Pace = pace.Config{Hold: -time.Second} }, wantErr: "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaults(WordCount, "/tmp/x")
			tt.mutate(&cfg)
			err := cfg.Validate(tt.forExpected)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want ErrUsage containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestPortable(t *testing.T) {
	for runner, want := range map[string]bool{"": false, "direct": false, "universal": true, "flink": true} {
		if got := (Config{Runner: runner}).Portable(); got != want {
			t.Errorf("Portable(%q) = %v, want %v", runner, got, want)
		}
	}
}
