package wrapper

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"recycler.dev/go-boot-wrapper/internal/boot"
)

// MarkerFile is created by the wrapper in every work directory it adopts. The wrapper deletes files only inside a
// directory with this marker (its own lease directories and cache entries), so pointing --work_dir at a directory
// that holds anything else is refused instead of risking someone's files.
const MarkerFile = ".go-boot-wrapper"

const markerText = "This is a go-boot-wrapper work directory (leases/ and cache/). go-boot-wrapper deletes its own\n" +
	"lease directories and cache entries in it. Delete it only while no wrapper uses it.\n"

// ErrForeignWorkDir means --work_dir names a directory the wrapper did not create and cannot safely adopt.
var ErrForeignWorkDir = errors.New("work directory is not go-boot-wrapper's")

// legacyEntries are what a work directory of a wrapper version without the marker holds; such a directory is adopted.
var legacyEntries = map[string]bool{"leases": true, "cache": true}

// claimWorkDir makes dir the wrapper's work directory, or refuses it. It creates dir (with mode, exactly) if it does
// not exist, and adopts it (writes MarkerFile) if it is empty or holds only what an older wrapper left (leases/, cache/).
// It refuses, wrapping ErrForeignWorkDir, a non-directory, a directory owned by another user than this one or root
// (for example one another user created at the predictable default path), and a non-empty directory without the
// marker; it deletes nothing. Several wrappers (slots) may claim one directory concurrently: the marker is written
// before anything else is created in it, so a wrapper that sees the others' files also sees the marker.
func claimWorkDir(dir string, mode os.FileMode) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("create parent of work directory %s: %w; set --work_dir (RECYCLER_WORK_DIR) to a writable path", dir, err)
		}
		err := os.Mkdir(dir, 0o700)
		if err == nil {
			err = os.Chmod(dir, mode)
		}
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create work directory %s: %w; set --work_dir (RECYCLER_WORK_DIR) to a writable path", dir, err)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return fmt.Errorf("work directory %s: %w", dir, err)
	}
	refuse := func(why string) error {
		return fmt.Errorf("%w: %s %s; set --work_dir (RECYCLER_WORK_DIR) to a new or empty directory of its own", ErrForeignWorkDir, dir, why)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return refuse("is not a directory")
	}
	if uid := int(st.Uid); uid != os.Geteuid() && uid != 0 {
		return refuse(fmt.Sprintf("belongs to uid %d, not to this user (uid %d)", uid, os.Geteuid()))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read work directory %s: %w", dir, err)
	}
	var foreign []string
	for _, e := range entries {
		if e.Name() == MarkerFile {
			return nil // ours (or another slot's wrapper adopted it a moment ago)
		}
		if !legacyEntries[e.Name()] || !e.IsDir() {
			foreign = append(foreign, e.Name())
		}
	}
	if len(foreign) > 0 {
		if len(foreign) > 3 {
			foreign = append(foreign[:3], "...")
		}
		return refuse(fmt.Sprintf("is not empty (%q) and has no %s marker, so it was not created by go-boot-wrapper", foreign, MarkerFile))
	}
	f, err := os.OpenFile(filepath.Join(dir, MarkerFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mark work directory %s: %w; set --work_dir (RECYCLER_WORK_DIR) to a writable directory", dir, err)
	}
	if _, err := f.WriteString(markerText); err != nil {
		_ = f.Close()
		return fmt.Errorf("mark work directory %s: %w", dir, err)
	}
	return f.Close()
}

// ErrWorkerUser means the worker user cannot be used as configured.
var ErrWorkerUser = errors.New("unusable worker user")

// checkWorkerUser refuses a worker user the wrapper cannot switch to, or one that isolates nothing.
func checkWorkerUser(u boot.User) error {
	switch {
	case os.Geteuid() != 0:
		return fmt.Errorf("%w: running workers as uid %d needs the wrapper to run as root (it runs as uid %d); unset --worker_uid and --worker_gid (RECYCLER_WORKER_UID, RECYCLER_WORKER_GID) or run the wrapper as root",
			ErrWorkerUser, u.UID, os.Geteuid())
	case u.UID == 0 || u.GID == 0:
		return fmt.Errorf("%w: --worker_uid and --worker_gid must not be 0 (root), which isolates nothing", ErrWorkerUser)
	}
	return nil
}

// reachable checks that the worker user can traverse every directory from / down to dir (the worker changes into its
// lease directory after it has become that user).
func reachable(dir string, u boot.User) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := abs; ; p = filepath.Dir(p) {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			return fmt.Errorf("work directory %s: %w", p, err)
		}
		var x uint32
		switch {
		case st.Uid == u.UID:
			x = st.Mode & 0o100
		case st.Gid == u.GID:
			x = st.Mode & 0o010
		default:
			x = st.Mode & 0o001
		}
		if x == 0 {
			return fmt.Errorf("%w: the worker user (uid %d) cannot reach --work_dir %s: %s is mode %04o; make it searchable (chmod o+x) or set --work_dir (RECYCLER_WORK_DIR) elsewhere",
				ErrWorkerUser, u.UID, abs, p, st.Mode&0o7777)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
