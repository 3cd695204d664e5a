package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// System is the operating-system seam of the supervisor: signals, reaping and the process table. The real
// implementation is Linux; tests may script it to reach states that real processes produce only by chance.
type System interface {
	// Kill sends sig to pid (a negative pid addresses a process group), as kill(2).
	Kill(pid int, sig syscall.Signal) error
	// Wait4 is wait4(2) without rusage.
	Wait4(pid int, options int) (int, syscall.WaitStatus, error)
	// Children lists the processes whose parent is ppid. It may miss a child that exits or is re-parented while it
	// reads (the kernel's per-thread children lists are not a snapshot); ScanChildren does not.
	Children(ppid int) ([]ProcInfo, error)
	// ScanChildren lists the processes whose parent is ppid by reading every process's state: exact, and as slow
	// as the process table is large.
	ScanChildren(ppid int) ([]ProcInfo, error)
	// Getpid is getpid(2).
	Getpid() int
	// SetChildSubreaper marks this process as child subreaper (prctl PR_SET_CHILD_SUBREAPER).
	SetChildSubreaper() error
}

// ProcInfo is the part of /proc/<pid>/stat the supervisor needs.
type ProcInfo struct {
	Pid    int
	PPid   int
	Pgrp   int
	Zombie bool
}

// LinuxSystem is the real System, backed by syscalls and /proc.
type LinuxSystem struct{}

// Kill implements System.
func (LinuxSystem) Kill(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

// Wait4 implements System.
func (LinuxSystem) Wait4(pid int, options int) (int, syscall.WaitStatus, error) {
	var ws syscall.WaitStatus
	wpid, err := syscall.Wait4(pid, &ws, options, nil)
	return wpid, ws, err
}

// Getpid implements System.
func (LinuxSystem) Getpid() int { return os.Getpid() }

// SetChildSubreaper implements System.
func (LinuxSystem) SetChildSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// Children implements System. For this process it reads /proc/self/task/*/children (a child is listed under the
// thread that forked it, an orphan under the thread it was re-parented to) and then only those children's stat files,
// instead of every process's; without CONFIG_PROC_CHILDREN, or for another process, it falls back to ScanChildren.
func (LinuxSystem) Children(ppid int) ([]ProcInfo, error) {
	if ppid != os.Getpid() {
		return LinuxSystem{}.ScanChildren(ppid)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("list /proc/self/task: %w", err)
	}
	var out []ProcInfo
	for _, task := range tasks {
		data, err := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		if errors.Is(err, os.ErrNotExist) {
			if _, statErr := os.Stat("/proc/self/task/" + task.Name()); statErr == nil {
				return LinuxSystem{}.ScanChildren(ppid) // the kernel has no children files
			}
			continue // the thread exited meanwhile
		}
		if err != nil {
			continue
		}
		for _, f := range bytes.Fields(data) {
			pid, err := strconv.Atoi(string(f))
			if err != nil {
				continue
			}
			if info, ok := readStat(pid); ok && info.PPid == ppid {
				out = append(out, info)
			}
		}
	}
	return out, nil
}

// ScanChildren implements System by scanning /proc. Processes that vanish during the scan are skipped.
func (LinuxSystem) ScanChildren(ppid int) ([]ProcInfo, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	var out []ProcInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if info, ok := readStat(pid); ok && info.PPid == ppid {
			out = append(out, info)
		}
	}
	return out, nil
}

func readStat(pid int) (ProcInfo, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcInfo{}, false
	}
	return parseStat(pid, data)
}

// parseStat reads state, ppid and pgrp from a /proc/<pid>/stat line. The command name is in parentheses and may itself
// contain spaces and parentheses, so the fields are taken after the last ')'.
func parseStat(pid int, data []byte) (ProcInfo, bool) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return ProcInfo{}, false
	}
	fields := bytes.Fields(data[i+2:])
	if len(fields) < 3 {
		return ProcInfo{}, false
	}
	ppid, err1 := strconv.Atoi(string(fields[1]))
	pgrp, err2 := strconv.Atoi(string(fields[2]))
	if err1 != nil || err2 != nil {
		return ProcInfo{}, false
	}
	return ProcInfo{Pid: pid, PPid: ppid, Pgrp: pgrp, Zombie: string(fields[0]) == "Z"}, true
}
