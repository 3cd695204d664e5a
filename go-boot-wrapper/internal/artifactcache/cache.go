// Package artifactcache is the wrapper's local content-addressed artifact store.
//
// Files live under <dir>/sha256/<64 hex> and are read-only once admitted. A file enters the cache only through Admit,
// which streams into a temporary file in the same directory, checks the declared size and the sha256, and renames the
// file into place, so a reader never sees a partial or unverified file and a crash leaves at most a temp file that the
// next Open removes.
//
// Concurrency: all methods are safe for concurrent use. The mutex guards the in-memory index; file system work on
// distinct digests runs in parallel and two admissions of the same digest both succeed (the second rename replaces
// identical content).
package artifactcache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// DigestPrefix is the prefix of the digest strings exchanged with the recycler ("sha256:<hex>").
const DigestPrefix = "sha256:"

var (
	// ErrSizeMismatch means the bytes received differ in length from the size the server declared.
	ErrSizeMismatch = errors.New("artifact size mismatch")
	// ErrDigestMismatch means the sha256 of the bytes received differs from the digest the server declared.
	ErrDigestMismatch = errors.New("artifact sha256 mismatch")
	// ErrBadDigest means a digest is not 64 lowercase hex characters.
	ErrBadDigest = errors.New("malformed sha256 digest")
)

// Cache is a directory of verified artifacts keyed by their sha256.
type Cache struct {
	dir string
	log *slog.Logger

	mu      sync.Mutex
	sizes   map[string]int64     // hex digest -> size of the admitted file
	lastUse map[string]time.Time // hex digest -> last admission or materialization
}

// Open loads (and creates if needed) the cache at dir. Leftover temp files are removed, and every existing entry is
// verified once; an entry whose content does not match its name is deleted rather than trusted.
func Open(dir string, log *slog.Logger) (*Cache, error) {
	c := &Cache{dir: filepath.Join(dir, "sha256"), log: log, sizes: map[string]int64{}, lastUse: map[string]time.Time{}}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create artifact cache directory: %w", err)
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, fmt.Errorf("read artifact cache directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(c.dir, name)
		if ValidHex(name) != nil || !e.Type().IsRegular() {
			_ = os.RemoveAll(path)
			continue
		}
		got, size, err := hashFile(path)
		if err != nil || got != name {
			log.Warn("dropping corrupt artifact cache entry", "digest", DigestPrefix+name)
			_ = os.Remove(path)
			continue
		}
		c.sizes[name] = size
		if info, err := e.Info(); err == nil {
			c.lastUse[name] = info.ModTime()
		}
	}
	return c, nil
}

// ValidHex reports whether h is a 64 character lowercase hex sha256.
func ValidHex(h string) error {
	if len(h) != 64 {
		return fmt.Errorf("%w: %q", ErrBadDigest, h)
	}
	for _, r := range h {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return fmt.Errorf("%w: %q", ErrBadDigest, h)
		}
	}
	return nil
}

// Digests returns the held digests as sorted "sha256:<hex>" strings.
func (c *Cache) Digests() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.sizes))
	for h := range c.sizes {
		out = append(out, DigestPrefix+h)
	}
	slices.Sort(out)
	return out
}

// Has reports whether the artifact with this hex digest is held.
func (c *Cache) Has(hexDigest string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.sizes[hexDigest]
	return ok
}

// Path is where the artifact with this hex digest lives (whether or not it is held).
func (c *Cache) Path(hexDigest string) string {
	return filepath.Join(c.dir, hexDigest)
}

// Admit streams r into the cache as the artifact hexDigest. size < 0 means the size is unknown and only the digest is
// checked. Nothing is admitted unless the content matches; the error wraps ErrSizeMismatch or ErrDigestMismatch then.
func (c *Cache) Admit(hexDigest string, size int64, r io.Reader) (err error) {
	if err := ValidHex(hexDigest); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(c.dir, ".incoming-*")
	if err != nil {
		return fmt.Errorf("create temp file in artifact cache: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	src := r
	if size >= 0 {
		// Read one byte past the declared size so an over-long stream is detected without buffering it all.
		src = io.LimitReader(r, size+1)
	}
	n, err := io.Copy(io.MultiWriter(tmp, h), src)
	if err != nil {
		return fmt.Errorf("receive artifact %s%s: %w", DigestPrefix, hexDigest, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("%w: %s%s declared %d bytes, received %d", ErrSizeMismatch, DigestPrefix, hexDigest, size, n)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hexDigest {
		return fmt.Errorf("%w: expected %s%s, received content hashes to %s%s", ErrDigestMismatch, DigestPrefix, hexDigest, DigestPrefix, got)
	}
	if err := tmp.Chmod(0o555); err != nil {
		return fmt.Errorf("chmod artifact: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close artifact: %w", err)
	}
	if err := os.Rename(tmp.Name(), c.Path(hexDigest)); err != nil {
		return fmt.Errorf("move artifact into cache: %w", err)
	}
	c.mu.Lock()
	c.sizes[hexDigest] = n
	c.lastUse[hexDigest] = time.Now()
	c.mu.Unlock()
	return nil
}

// Materialize places the held artifact hexDigest at dst as an executable, read-only file: a hard link when dst is on
// the cache's file system (no bytes copied), a copy otherwise. dst must not exist.
func (c *Cache) Materialize(hexDigest, dst string) error {
	c.mu.Lock()
	size, ok := c.sizes[hexDigest]
	if ok {
		c.lastUse[hexDigest] = time.Now()
	}
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("artifact %s%s is not in the local cache", DigestPrefix, hexDigest)
	}
	src := c.Path(hexDigest)
	// A cheap guard against an entry that was truncated or replaced behind our back: the size must still match.
	st, err := os.Stat(src)
	if err != nil || st.Size() != size {
		c.forget(hexDigest)
		return fmt.Errorf("artifact %s%s vanished or changed in the local cache; it will be fetched again next lease", DigestPrefix, hexDigest)
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst)
}

// Remove drops a held artifact (for example one that failed to execute); it is fetched again when next needed.
func (c *Cache) Remove(hexDigest string) {
	c.forget(hexDigest)
	_ = os.Remove(c.Path(hexDigest))
}

func (c *Cache) forget(hexDigest string) {
	c.mu.Lock()
	delete(c.sizes, hexDigest)
	delete(c.lastUse, hexDigest)
	c.mu.Unlock()
}

// Trim evicts the least recently used artifacts until the cache holds at most maxBytes, but never the most recently
// used one (the current job's binary may alone exceed the bound). maxBytes <= 0 disables trimming. Call it only while
// no boot is running: an evicted file already linked into a lease directory stays valid there, but a boot in progress
// could lose an artifact between fetch and link. It returns the evicted digests.
func (c *Cache) Trim(maxBytes int64) []string {
	if maxBytes <= 0 {
		return nil
	}
	c.mu.Lock()
	var total int64
	hexes := make([]string, 0, len(c.sizes))
	for h, n := range c.sizes {
		total += n
		hexes = append(hexes, h)
	}
	slices.SortFunc(hexes, func(a, b string) int { return c.lastUse[a].Compare(c.lastUse[b]) })
	var evict []string
	for i := 0; i < len(hexes)-1 && total > maxBytes; i++ {
		total -= c.sizes[hexes[i]]
		evict = append(evict, hexes[i])
		delete(c.sizes, hexes[i])
		delete(c.lastUse, hexes[i])
	}
	c.mu.Unlock()
	for i, h := range evict {
		_ = os.Remove(c.Path(h))
		evict[i] = DigestPrefix + h
	}
	return evict
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open cached artifact: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return fmt.Errorf("copy artifact to %s: %w", dst, err)
	}
	return out.Close()
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// HexOf strips the "sha256:" prefix of a digest string, if present.
func HexOf(digest string) string {
	return strings.TrimPrefix(digest, DigestPrefix)
}
