package main

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/options/jobopts"

	"recycler.dev/examples/pipelines/internal/catalog"
)

// The helper-process pattern: with this variable set the test binary runs main() with the arguments after "--".
const helperEnv = "BEAM_PIPELINES_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{os.Args[0]}, os.Args[i+1:]...)
				break
			}
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runMain(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

func TestPrintExpectedMatchesDocumentedOutputs(t *testing.T) {
	for _, name := range catalog.Names() {
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("..", "..", "testdata", "expected", name+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			stdout, stderr, code := runMain(t, "--pipeline="+name, "--print_expected")
			if code != 0 || stdout != string(want) {
				t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s\nwant stdout:\n%s", code, stdout, stderr, want)
			}
		})
	}
}

func TestBadFlagsExitWithUsageCode(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{args: nil, want: "--pipeline is required"},
		{args: []string{"--pipeline=nope"}, want: `unknown --pipeline "nope"`},
		{args: []string{"--pipeline=wordcount"}, want: "--output is required"},
	}
	for _, tt := range tests {
		_, stderr, code := runMain(t, tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("args %q: exit %d, stderr %q; want exit %d with %q", tt.args, code, stderr, exitUsage, tt.want)
		}
	}
}

func TestStageSelf(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		runner    string
		envType   string
		workerBin string
		want      string
	}{
		{name: "portable external stages itself", runner: "universal", envType: "EXTERNAL", want: self},
		{name: "flink alias stages itself", runner: "flink", envType: "PROCESS", want: self},
		{name: "loopback stages nothing", runner: "universal", envType: "LOOPBACK", want: ""},
		{name: "direct stages nothing", runner: "direct", envType: "EXTERNAL", want: ""},
		{name: "explicit binary wins", runner: "universal", envType: "EXTERNAL", workerBin: "/opt/w", want: "/opt/w"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setFlag(t, "environment_type", tt.envType)
			setFlag(t, "worker_binary", tt.workerBin)
			if err := stageSelf(catalog.Config{Runner: tt.runner, WorkerBin: tt.workerBin}); err != nil {
				t.Fatal(err)
			}
			if got := *jobopts.WorkerBinary; got != tt.want {
				t.Fatalf("--worker_binary = %q, want %q", got, tt.want)
			}
		})
	}
}

func setFlag(t *testing.T, name, value string) {
	t.Helper()
	old := flag.Lookup(name).Value.String()
	if err := flag.Set(name, value); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = flag.Set(name, old) })
}
