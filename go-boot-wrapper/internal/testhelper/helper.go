// Package testhelper implements the helper-process pattern for this module's tests: a test binary re-executes itself
// as a scripted inner worker that exits, crashes, hangs, ignores SIGTERM, forks a grandchild that outlives it, or
// prints a lot. It is imported only by tests.
//
// The mode comes from the environment (EnvMode), because the wrapper starts workers with a clean environment and
// Beam's worker flags; the worker scripts the tests serve as artifacts set it (see Script).
package testhelper

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// EnvMode selects the helper's behaviour; a test binary started with it set runs the helper instead of tests.
	EnvMode = "GBW_HELPER_MODE"
	// EnvDir is a directory where the helper writes report.json, ready and grandchild.pid.
	EnvDir = "GBW_HELPER_DIR"
)

// NoRaceExitDelay is an environment entry for helpers: a -race binary otherwise sleeps 1 s on exit.
const NoRaceExitDelay = "GORACE=atexit_sleep_ms=0"

// Modes.
const (
	ModeExit             = "exit"              // exit with the code in GBW_HELPER_CODE (default 0)
	ModeHang             = "hang"              // block until killed (SIGTERM ends it)
	ModeIgnoreTerm       = "ignore-term"       // ignore SIGTERM, block until SIGKILL
	ModeGrandchild       = "grandchild"        // start a SIGTERM-ignoring grandchild in the same group, then exit 0
	ModeGrandchildSetsid = "grandchild-setsid" // start a grandchild in a new session (escaping the group), then exit 0
	ModeGrandchildHang   = "grandchild-hang"   // start a setsid grandchild, then hang (the worker is stopped by Exit)
	ModeChatty           = "chatty"            // write 8 MiB to stdout and stderr, then exit 0
	// ModeTamper attacks the worker binary in its cwd as GBW_HELPER_TAMPER says, then exits 0: "chmod" makes it
	// writable, "rewrite" makes it writable and overwrites it with TamperedScript, "replace" renames a file with
	// TamperedScript over the file it links to.
	ModeTamper = "tamper"
	// ModeLogUntilTerm writes LogLines numbered lines to stdout and to stderr, becomes ready, and on SIGTERM writes
	// LastLogLine to both and exits 0.
	ModeLogUntilTerm = "log-until-term"
)

// ModeLogUntilTerm's output.
const (
	LogLines    = 2000
	LastLogLine = "worker: got SIGTERM, last words"
)

// TamperedScript is what ModeTamper writes: a worker that exits with TamperedExitCode without reporting.
const (
	TamperedScript   = "#!/bin/sh\nexit 42\n"
	TamperedExitCode = 42
)

// Report is what the helper records about how it was started.
type Report struct {
	Pid     int      `json:"pid"`
	UID     int      `json:"uid"`
	GID     int      `json:"gid"`
	Pgid    int      `json:"pgid"`
	Args    []string `json:"args"`
	Env     []string `json:"env"`
	Cwd     string   `json:"cwd"`
	Options string   `json:"options"` // content of $PIPELINE_OPTIONS_FILE
}

// MainIfHelper runs the helper and exits if this process was started as one; call it first in TestMain.
func MainIfHelper() {
	mode := os.Getenv(EnvMode)
	if mode == "" {
		return
	}
	os.Exit(run(mode, os.Getenv(EnvDir)))
}

func run(mode, dir string) int {
	if dir != "" {
		writeReport(dir)
	}
	switch mode {
	case ModeExit:
		code, _ := strconv.Atoi(os.Getenv("GBW_HELPER_CODE"))
		return code
	case ModeHang:
		ready(dir)
		blockForever()
	case ModeIgnoreTerm:
		signal.Ignore(syscall.SIGTERM)
		ready(dir)
		blockForever()
	case ModeGrandchild, ModeGrandchildSetsid, ModeGrandchildHang:
		if err := startGrandchild(dir, mode != ModeGrandchild); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 3
		}
		ready(dir)
		if mode == ModeGrandchildHang {
			blockForever()
		}
		return 0
	case ModeTamper:
		if err := tamper(os.Getenv("GBW_HELPER_TAMPER")); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 3
		}
		return 0
	case ModeLogUntilTerm:
		terms := make(chan os.Signal, 1)
		signal.Notify(terms, syscall.SIGTERM)
		for i := 1; i <= LogLines; i++ {
			fmt.Fprintf(os.Stdout, "worker: stdout line %d\n", i)
			fmt.Fprintf(os.Stderr, "worker: stderr line %d\n", i)
		}
		ready(dir)
		<-terms
		fmt.Fprintln(os.Stdout, LastLogLine)
		fmt.Fprintln(os.Stderr, LastLogLine)
		return 0
	case ModeChatty:
		line := strings.Repeat("all work and no play makes jack a dull boy ", 20) + "\n"
		for n := 0; n < 8<<20; n += len(line) {
			fmt.Fprint(os.Stdout, line)
			fmt.Fprint(os.Stderr, line)
		}
		return 0
	default:
		fmt.Fprintln(os.Stderr, "helper: unknown mode", mode)
		return 4
	}
	return 0
}

func tamper(how string) error {
	const bin = "worker" // the lease directory is the worker's cwd
	switch how {
	case "chmod":
		target, err := filepath.EvalSymlinks(bin)
		if err != nil {
			return err
		}
		return os.Chmod(target, 0o777)
	case "rewrite":
		if err := os.Chmod(bin, 0o755); err != nil {
			return err
		}
		return os.WriteFile(bin, []byte(TamperedScript), 0o755)
	case "replace":
		target, err := filepath.EvalSymlinks(bin)
		if err != nil {
			return err
		}
		if err := os.WriteFile(target+".evil", []byte(TamperedScript), 0o555); err != nil {
			return err
		}
		return os.Rename(target+".evil", target)
	default:
		return fmt.Errorf("unknown GBW_HELPER_TAMPER %q", how)
	}
}

func startGrandchild(dir string, setsid bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = []string{EnvMode + "=" + ModeIgnoreTerm, NoRaceExitDelay}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid}
	if err := cmd.Start(); err != nil {
		return err
	}
	if dir != "" {
		if err := writeAtomic(filepath.Join(dir, "grandchild.pid"), []byte(strconv.Itoa(cmd.Process.Pid))); err != nil {
			return err
		}
	}
	return nil
}

func writeReport(dir string) {
	wd, _ := os.Getwd()
	r := Report{Pid: os.Getpid(), UID: os.Getuid(), GID: os.Getgid(), Pgid: syscall.Getpgrp(), Args: os.Args[1:], Env: os.Environ(), Cwd: wd}
	if f := os.Getenv("PIPELINE_OPTIONS_FILE"); f != "" {
		b, _ := os.ReadFile(f)
		r.Options = string(b)
	}
	b, _ := json.Marshal(r)
	_ = writeAtomic(filepath.Join(dir, "report.json"), b)
}

func ready(dir string) {
	if dir != "" {
		_ = writeAtomic(filepath.Join(dir, "ready"), []byte("ok"))
	}
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Script returns a /bin/sh worker script that runs this test binary as a helper in mode, reporting into dir. Serving
// a few bytes of script instead of the test binary keeps artifact transfers in tests small.
func Script(t testing.TB, mode, dir string, extraEnv ...string) []byte {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return ScriptFor(self, mode, dir, extraEnv...)
}

// ScriptFor is Script running the test binary at the path self (for example a copy another user can execute).
func ScriptFor(self, mode, dir string, extraEnv ...string) []byte {
	env := append([]string{EnvMode + "=" + mode, EnvDir + "=" + dir, NoRaceExitDelay}, extraEnv...)
	return []byte(fmt.Sprintf("#!/bin/sh\nexec env %s '%s' \"$@\"\n", strings.Join(env, " "), self))
}

// Eventually polls cond every few milliseconds until it holds or timeout passes (then fails the test with msg).
// Polling, as Awaitility does, is how a test observes another process without sleeping a guessed time.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: "+msg, append([]any{timeout}, args...)...)
		}
		<-tick.C
	}
}

// ReadReport waits for dir/report.json and decodes it.
func ReadReport(t testing.TB, dir string) Report {
	t.Helper()
	var r Report
	Eventually(t, 10*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "report.json"))
		return err == nil && json.Unmarshal(b, &r) == nil
	}, "helper wrote no report in %s", dir)
	return r
}

// WaitReady waits for the helper's ready file in dir.
func WaitReady(t testing.TB, dir string) {
	t.Helper()
	Eventually(t, 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dir, "ready"))
		return err == nil
	}, "helper in %s never became ready", dir)
}

// GrandchildPid waits for dir/grandchild.pid and returns it.
func GrandchildPid(t testing.TB, dir string) int {
	t.Helper()
	var pid int
	Eventually(t, 10*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "grandchild.pid"))
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(string(b))
		return err == nil
	}, "helper in %s wrote no grandchild pid", dir)
	return pid
}

// Alive reports whether pid exists (a zombie counts as existing: it is not reaped yet).
func Alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// Gone reports whether pid no longer runs: it does not exist, or it is a zombie (dead, and its parent, perhaps not
// this process, has not reaped it yet).
func Gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && strings.HasPrefix(string(b[i:]), ") Z")
}

// blockForever parks the helper until a signal ends it. A bare select{} would be reported by the Go runtime as a
// deadlock (exit 2) once no other goroutine exists.
func blockForever() {
	for {
		time.Sleep(time.Hour)
	}
}
