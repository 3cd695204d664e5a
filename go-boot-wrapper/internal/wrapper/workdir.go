package wrapper

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
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

// claimWorkDir makes dir the wrapper's work directory, or refuses it. It creates dir (mode 0700) if it does not
// exist, and adopts it (writes MarkerFile) if it is empty or holds only what an older wrapper left (leases/, cache/).
// It refuses, wrapping ErrForeignWorkDir, a non-directory, a directory owned by another user than this one or root
// (for example one another user created at the predictable default path), and a non-empty directory without the
// marker; it deletes nothing. Several wrappers (slots) may claim one directory concurrently: the marker is written
// before anything else is created in it, so a wrapper that sees the others' files also sees the marker.
func claimWorkDir(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("create parent of work directory %s: %w; set --work_dir (RECYCLER_WORK_DIR) to a writable path", dir, err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
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
