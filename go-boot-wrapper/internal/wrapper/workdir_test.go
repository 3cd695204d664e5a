package wrapper

import (
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"recycler.dev/go-boot-wrapper/internal/boot"
)

// Issue 11: --work_dir pointed at someone else's directory must be refused, with nothing in it deleted; the wrapper
// deleted stale lease directories and every unknown file in its cache directory at start.
func TestWorkDirOwnership(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, dir string) // dir does not exist yet
		wantErr  error
		wantKept []string // paths (relative) that must survive New
		wantGone []string // paths the wrapper may delete (its own stale leases, unfinished admissions)
	}{
		{name: "new directory is created and marked", setup: func(*testing.T, string) {}},
		{name: "empty directory is adopted", setup: func(t *testing.T, dir string) { mkdir(t, dir) }},
		{name: "non-empty directory without the marker is refused", wantErr: ErrForeignWorkDir,
			setup: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "thesis.tex"))
				write(t, filepath.Join(dir, "leases", "slot-0-g1", "data"))
				write(t, filepath.Join(dir, "cache", "slot-0", "sha256", "notes.txt"))
			},
			wantKept: []string{"thesis.tex", "leases/slot-0-g1/data", "cache/slot-0/sha256/notes.txt"}},
		{name: "a file is refused", wantErr: ErrForeignWorkDir,
			setup: func(t *testing.T, dir string) { write(t, dir) }},
		{name: "directory of another user is refused", wantErr: ErrForeignWorkDir,
			setup: func(t *testing.T, dir string) {
				mkdir(t, dir)
				if err := os.Chown(dir, 65534, 65534); err != nil {
					t.Skipf("cannot chown: %v", err)
				}
			}},
		{name: "marked directory: only the wrapper's own files go", setup: func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, MarkerFile))
			write(t, filepath.Join(dir, "leases", "slot-0-g7", "pipeline_options.json"))
			write(t, filepath.Join(dir, "leases", "slot-0-g1-g3", "other slot"))
			write(t, filepath.Join(dir, "leases", "slot-0-gx", "not a lease"))
			write(t, filepath.Join(dir, "cache", "slot-0", "sha256", ".incoming-123"))
			write(t, filepath.Join(dir, "cache", "slot-0", "sha256", "notes.txt"))
			write(t, filepath.Join(dir, "cache", "slot-0", "sha256", "sub", "file"))
		},
			wantKept: []string{MarkerFile, "leases/slot-0-g1-g3/other slot", "leases/slot-0-gx/not a lease",
				"cache/slot-0/sha256/notes.txt", "cache/slot-0/sha256/sub/file"},
			wantGone: []string{"leases/slot-0-g7", "cache/slot-0/sha256/.incoming-123"}},
		{name: "layout of a wrapper without the marker is adopted", setup: func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "leases", "slot-0-g7", "pipeline_options.json"))
			mkdir(t, filepath.Join(dir, "cache", "slot-0", "sha256"))
		}, wantGone: []string{"leases/slot-0-g7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "work")
			tt.setup(t, dir)
			before := tree(t, dir)

			w, err := New(Config{SlotID: "slot-0", RecyclerEndpoint: "127.0.0.1:1", WorkDir: dir}, sup, slog.New(slog.DiscardHandler))
			if err == nil {
				t.Cleanup(func() { _ = w.Close() })
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("New = %v, want %v", err, tt.wantErr)
			}
			after := tree(t, dir)
			if tt.wantErr != nil {
				if !strings.Contains(err.Error(), "--work_dir") {
					t.Errorf("error %q does not name the flag to fix", err)
				}
				if !maps.Equal(before, after) {
					t.Errorf("a refused directory was changed:\nbefore %v\nafter  %v", before, after)
				}
				return
			}
			if _, ok := after[MarkerFile]; !ok {
				t.Errorf("no %s marker in the adopted work dir: %v", MarkerFile, after)
			}
			for _, p := range tt.wantKept {
				if _, ok := after[p]; !ok {
					t.Errorf("%s was deleted", p)
				}
			}
			for _, p := range tt.wantGone {
				if _, ok := after[p]; ok {
					t.Errorf("%s was not deleted", p)
				}
			}
			private := []string{"leases", "cache", "cache/slot-0", "cache/slot-0/sha256"}
			if len(before) == 0 {
				private = append(private, ".") // created by the wrapper; an existing one keeps its mode
			}
			for _, p := range private {
				if mode := after[p]; mode != fs.ModeDir|0o700 {
					t.Errorf("%s mode %v, want a directory private to the wrapper (0700)", p, mode)
				}
			}
		})
	}
}

// tree maps every path under dir (relative, "." for dir itself) to its mode; empty if dir does not exist.
func tree(t *testing.T, dir string) map[string]fs.FileMode {
	t.Helper()
	out := map[string]fs.FileMode{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = info.Mode()
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path string) {
	t.Helper()
	mkdir(t, filepath.Dir(path))
	if err := os.WriteFile(path, []byte("someone's data"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWorkerUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("as non-root every worker user is refused for that reason alone")
	}
	tests := []struct {
		name     string
		user     boot.User
		workDir  func(t *testing.T) string
		wantText string
	}{
		{name: "root isolates nothing", user: boot.User{UID: 0, GID: 0},
			workDir: func(t *testing.T) string { return filepath.Join(t.TempDir(), "work") }, wantText: "must not be 0"},
		{name: "work dir the worker cannot reach", user: boot.User{UID: 65534, GID: 65534},
			workDir:  func(t *testing.T) string { return filepath.Join(t.TempDir(), "work") }, // under a 0700 directory
			wantText: "cannot reach --work_dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.user
			w, err := New(Config{SlotID: "slot-0", RecyclerEndpoint: "127.0.0.1:1", WorkDir: tt.workDir(t), Worker: &u},
				sup, slog.New(slog.DiscardHandler))
			if err == nil {
				_ = w.Close()
			}
			if !errors.Is(err, ErrWorkerUser) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("New = %v, want ErrWorkerUser saying %q", err, tt.wantText)
			}
		})
	}
}
