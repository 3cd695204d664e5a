package artifactcache

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkPlaceBinary measures what each way of giving a lease its worker binary costs for binaries of the size the
// benchmarks use (84 MB) and a large one (130 MB), with the source in the page cache as it is for a warm lease:
//   - link: the hard link the wrapper used to make (no isolation: the worker shares the cache's inode);
//   - symlink+check: what Materialize does now: a stat fingerprint check and a symbolic link;
//   - copy: a private copy (Go's io.Copy, which uses copy_file_range on Linux);
//   - copy+hash: a private copy streamed through sha256 (verify while copying);
//   - hash: sha256 of the cached file alone (verify before exec);
//   - reflink: FICLONE, skipped where the file system has no reflinks (ext4).
//
// Run: go test -run '^$' -bench PlaceBinary -benchtime 5x ./internal/artifactcache
func BenchmarkPlaceBinary(b *testing.B) {
	for _, mb := range []int{84, 130} {
		src := filepath.Join(b.TempDir(), "src")
		writeRandom(b, src, int64(mb)<<20)
		strategies := []struct {
			name  string
			place func(dst string) error
		}{
			{"link", func(dst string) error { return os.Link(src, dst) }},
			{"symlink+check", func(dst string) error {
				if _, err := fingerprintOf(src); err != nil {
					return err
				}
				return os.Symlink(src, dst)
			}},
			{"copy", func(dst string) error { return copyFile(src, dst) }},
			{"copy+hash", func(dst string) error { return copyHashing(src, dst) }},
			{"hash", func(string) error { _, _, err := hashFile(src); return err }},
			{"reflink", func(dst string) error { return reflink(src, dst) }},
		}
		for _, s := range strategies {
			b.Run(fmt.Sprintf("%s/%dMB", s.name, mb), func(b *testing.B) {
				dir := b.TempDir()
				b.SetBytes(int64(mb) << 20)
				for i := 0; b.Loop(); i++ {
					dst := filepath.Join(dir, fmt.Sprint(i))
					if err := s.place(dst); err != nil {
						if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) {
							b.Skipf("%s not supported here: %v", s.name, err)
						}
						b.Fatal(err)
					}
					b.StopTimer()
					_ = os.Remove(dst)
					b.StartTimer()
				}
			})
		}
	}
}

func writeRandom(b *testing.B, path string, n int64) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r, err := os.Open("/dev/urandom")
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if _, err := io.CopyN(f, r, n); err != nil {
		b.Fatal(err)
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o500)
	if err != nil {
		return err
	}
	defer out.Close()
	_, err = io.Copy(out, in) // copy_file_range on Linux
	return err
}

func copyHashing(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o500)
	if err != nil {
		return err
	}
	defer out.Close()
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), in)
	return err
}

func reflink(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o500)
	if err != nil {
		return err
	}
	defer out.Close()
	return unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
}
