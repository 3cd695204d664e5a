package supervisor

import (
	"bytes"
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
	// Children lists the processes whose parent is ppid.
	Children(ppid int) ([]ProcInfo, error)
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

// Children implements System by scanning /proc. Processes that vanish during the scan are skipped.
func (LinuxSystem) Children(ppid int) ([]ProcInfo, error) {
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
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		info, ok := parseStat(pid, data)
		if ok && info.PPid == ppid {
			out = append(out, info)
		}
	}
	return out, nil
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
