// Package artifactcache is the wrapper's local content-addressed artifact store.
//
// Files live under <dir>/sha256/<64 hex> and are read-only once admitted. A file enters the cache only through Admit,
// which streams into a temporary file in the same directory, checks the declared size and the sha256, and renames the
// file into place, so a reader never sees a partial or unverified file and a crash leaves at most a temp file that the
// next Open removes.
//
// Tampering: a lease's files are symbolic links to the cache's files, and a worker running as the wrapper's user can
// chmod and rewrite them (or anything under the cache directory). So an entry is handed out again only while its file
// is provably what was verified: Verify compares a stat fingerprint (device, inode, size, mode, mtime, ctime) taken
// when the content was last hashed. Every change made through the file system (write, truncate, chmod, chown,
// replacing or renaming the file) moves ctime to the current time or changes the inode, and no system call sets ctime
// to a chosen value, so a matching fingerprint means unchanged content. A mismatch costs one full re-hash: an entry
// whose content still matches its name is kept (its mode restored), any other is deleted and fetched again. Because
// file timestamps are coarse (one clock tick), a fingerprint whose ctime is less than racyWindow older than the moment
// the entry was first handed out after its last hash is not trusted either (the "racy git" problem): a freshly
// fetched artifact is hashed once more at its next use, and at every use within a second of its fetch. See README.md
// ("Artifact integrity") for the measured costs and the alternatives.
//
// Admissions while a lease runs: a prefetch (the wrapper fetching a job's binary between leases) can hash and admit
// content while a worker of the slot is alive, and that worker can write to the cache's files (and to the temp file of
// an admission) as the wrapper's user. So every hash is tagged with whether a lease could reach the cache meanwhile
// (from its first Materialize until the wrapper calls EndExposure): such an entry counts as handed out from the moment
// its hash began, and is hashed again at its next Verify if its ctime falls within racyWindow of that moment, which
// catches a change made in the same timestamp tick as the recorded fingerprint. An entry hashed while no lease could
// reach it is trusted on its fingerprint alone at its first use, as before.
//
// Concurrency: all methods are safe for concurrent use. The mutex guards the in-memory index, the fetch claims and the
// exposure state; file system work on distinct digests runs in parallel and two admissions of the same digest both
// succeed (the second rename replaces identical content). Claim keeps two fetches of one digest from overlapping.
package artifactcache

import (
	"context"
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
	"syscall"
	"time"
)

// incomingPrefix names the temp files of admissions in progress.
const incomingPrefix = ".incoming-"

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
	entries map[string]*entry        // hex digest -> held artifact
	claims  map[string]chan struct{} // hex digest -> closed when its holder releases the claim
	// exposing: a lease's processes may reach the cache's files (set by Materialize, cleared by EndExposure);
	// exposures counts the times it was set, so a hash can tell whether a lease could reach the cache while it ran.
	exposing  bool
	exposures uint64
}

// entry is a held artifact.
type entry struct {
	size    int64
	lastUse time.Time // last admission or materialization
	// fp is the file's fingerprint when its content was last hashed; exposed is when it was first handed out to a
	// lease after that (zero: not yet).
	fp      fingerprint
	exposed time.Time
}

// racyWindow bounds the file system's timestamp granularity, with a wide margin: a change made within this time
// after a fingerprint was recorded may leave ctime unchanged.
const racyWindow = time.Second

// RacyWindow is racyWindow for callers that schedule a re-verification past it (see Verify).
const RacyWindow = racyWindow

// ErrTampered means a held artifact's file changed after it was verified and its content no longer matches its
// digest; the entry has been dropped.
var ErrTampered = errors.New("artifact changed in the local cache")

// fingerprint is the part of a file's stat that any change through the file system alters.
type fingerprint struct {
	dev, ino     uint64
	size         int64
	mode         uint32
	mtime, ctime int64 // nanoseconds since the epoch
}

func fingerprintOf(path string) (fingerprint, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fingerprint{}, err
	}
	return fingerprint{dev: st.Dev, ino: st.Ino, size: st.Size, mode: st.Mode,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, nil
}

// Open loads (and creates if needed, mode 0700) the cache at dir. Leftover temp files of an admission are removed,
// and every existing entry is verified once; an entry whose content does not match its name is deleted rather than
// trusted. Anything else in the directory is not the cache's: it is logged and left alone, never deleted.
func Open(dir string, log *slog.Logger) (*Cache, error) { return OpenMode(dir, 0o700, log) }

// OpenMode is Open with dirMode for the cache's directories instead of 0700: 0711 lets workers running as another
// user reach the (world-readable, read-only) files their lease links to without being able to list or change them.
func OpenMode(dir string, dirMode os.FileMode, log *slog.Logger) (*Cache, error) {
	c := &Cache{dir: filepath.Join(dir, "sha256"), log: log, entries: map[string]*entry{}, claims: map[string]chan struct{}{}}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create artifact cache directory: %w", err)
	}
	for _, d := range []string{dir, c.dir} {
		if err := os.Chmod(d, dirMode); err != nil { // exact, also when an older version created it 0755
			return nil, fmt.Errorf("chmod artifact cache directory: %w", err)
		}
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, fmt.Errorf("read artifact cache directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(c.dir, name)
		if strings.HasPrefix(name, incomingPrefix) && e.Type().IsRegular() {
			_ = os.Remove(path) // an admission that did not finish
			continue
		}
		if ValidHex(name) != nil || !e.Type().IsRegular() {
			log.Warn("ignoring a file the artifact cache did not write", "path", path)
			continue
		}
		fp, err := fingerprintOf(path)
		if err == nil {
			err = c.hashUnchanged(path, name, fp)
		}
		if err != nil {
			log.Warn("dropping corrupt artifact cache entry", "digest", DigestPrefix+name, "error", err)
			_ = os.Remove(path)
			continue
		}
		if fp.mode&0o7777 != 0o555 { // an earlier worker made it writable; the content is intact
			if err := os.Chmod(path, 0o555); err != nil {
				return nil, fmt.Errorf("chmod artifact cache entry: %w", err)
			}
			if fp, err = fingerprintOf(path); err != nil {
				return nil, fmt.Errorf("stat artifact cache entry: %w", err)
			}
		}
		c.entries[name] = &entry{size: fp.size, lastUse: time.Unix(0, fp.mtime), fp: fp}
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
	out := make([]string, 0, len(c.entries))
	for h := range c.entries {
		out = append(out, DigestPrefix+h)
	}
	slices.Sort(out)
	return out
}

// Has reports whether the artifact with this hex digest is held.
func (c *Cache) Has(hexDigest string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[hexDigest]
	return ok
}

// Verify reports whether the artifact hexDigest is held and its file is still exactly the verified content. A file
// whose fingerprint changed is hashed again: if the content still matches, its read-only mode is restored and true is
// returned; otherwise the entry is deleted (it is fetched again when needed), and the error wraps ErrTampered. A boot
// relies on it only while no process of a lease runs, so nothing can change the file between Verify and use; called
// while a lease runs (a prefetch), its answer holds for that moment, and the next boot's Verify checks again.
func (c *Cache) Verify(hexDigest string) (bool, error) {
	c.mu.Lock()
	e, ok := c.entries[hexDigest]
	var want fingerprint
	var exposed time.Time
	if ok {
		want, exposed = e.fp, e.exposed
	}
	c.mu.Unlock()
	if !ok {
		return false, nil
	}
	path := c.Path(hexDigest)
	hashing := c.beginHash() // before the fingerprint that a re-hash would record
	got, err := fingerprintOf(path)
	racy := !exposed.IsZero() && want.ctime >= exposed.Add(-racyWindow).UnixNano()
	if err == nil && got == want && !racy {
		return true, nil
	}
	// Changed (or possibly changed within one timestamp tick): the content decides.
	if err == nil {
		err = c.hashUnchanged(path, hexDigest, got)
	}
	if err == nil && got.mode&0o7777 != 0o555 {
		// A worker made it writable. Only chmod when needed: chmod moves ctime, which makes the next check racy.
		if err = os.Chmod(path, 0o555); err == nil {
			got, err = fingerprintOf(path)
		}
	}
	if err != nil {
		c.Remove(hexDigest)
		if !errors.Is(err, ErrTampered) {
			err = fmt.Errorf("%w: %s%s: %w", ErrTampered, DigestPrefix, hexDigest, err)
		}
		return false, err
	}
	c.mu.Lock()
	if e, ok := c.entries[hexDigest]; ok {
		e.fp, e.exposed = got, c.exposedSinceLocked(hashing)
	}
	c.mu.Unlock()
	if got != want {
		c.log.Warn("artifact cache entry was changed behind the cache's back; content still matches, mode restored",
			"digest", DigestPrefix+hexDigest)
	}
	return true, nil
}

// hashUnchanged checks that the file at path hashes to hexDigest and still has the fingerprint fp afterwards (so the
// hash is of the file that fp describes); the error wraps ErrTampered otherwise.
func (c *Cache) hashUnchanged(path, hexDigest string, fp fingerprint) error {
	h, _, err := hashFile(path)
	if err != nil {
		return err
	}
	if h != hexDigest {
		return fmt.Errorf("%w: %s%s now hashes to %s%s", ErrTampered, DigestPrefix, hexDigest, DigestPrefix, h)
	}
	if after, err := fingerprintOf(path); err != nil || after != fp {
		return fmt.Errorf("%w: %s%s changed while it was being verified", ErrTampered, DigestPrefix, hexDigest)
	}
	return nil
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
	hashing := c.beginHash()
	tmp, err := os.CreateTemp(c.dir, incomingPrefix+"*")
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
	fp, err := fingerprintOf(c.Path(hexDigest))
	if err != nil {
		return fmt.Errorf("stat admitted artifact: %w", err)
	}
	c.mu.Lock()
	c.entries[hexDigest] = &entry{size: n, lastUse: time.Now(), fp: fp, exposed: c.exposedSinceLocked(hashing)}
	c.mu.Unlock()
	return nil
}

// hashStart is when a hash (of an admission or a re-verification) began, and the exposure state then.
type hashStart struct {
	at        time.Time
	exposing  bool
	exposures uint64
}

func (c *Cache) beginHash() hashStart {
	c.mu.Lock()
	defer c.mu.Unlock()
	return hashStart{at: time.Now(), exposing: c.exposing, exposures: c.exposures}
}

// exposedSinceLocked is the exposed time to record for an entry whose hash began at h: zero (not handed out yet) when
// no lease could reach the cache at any moment since, else h.at, as if the entry had been handed out when its hash
// began. c.mu must be held.
func (c *Cache) exposedSinceLocked(h hashStart) time.Time {
	if h.exposing || c.exposing || c.exposures != h.exposures {
		return h.at
	}
	return time.Time{}
}

// EndExposure tells the cache that no process of a lease is alive any more, so none can reach the files Materialize
// linked: later admissions and re-verifications are trusted on their fingerprint at their first use again. Call it
// once a lease's processes are all gone (also after a boot that failed after Materialize). Idempotent.
func (c *Cache) EndExposure() {
	c.mu.Lock()
	c.exposing = false
	c.mu.Unlock()
}

// Claim waits until no one else holds the fetch claim of hexDigest, then takes it and returns the function that
// releases it (safe to call more than once). A caller that may fetch a digest holds its claim across Verify and the
// fetch, so two fetches of one digest never overlap: whoever comes second waits, then finds the digest held (or, if
// the first fetch failed, fetches it itself). waited reports whether another holder had to be waited for. The wait
// ends with ctx's error when ctx ends first; nothing is claimed then.
func (c *Cache) Claim(ctx context.Context, hexDigest string) (release func(), waited bool, err error) {
	for {
		release, busy := c.TryClaim(hexDigest)
		if release != nil {
			return release, waited, nil
		}
		waited = true
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, waited, ctx.Err()
		}
	}
}

// TryClaim is Claim without the wait: it takes the fetch claim of hexDigest and returns the function that releases it
// when no one holds the claim, and otherwise returns a nil release and a channel closed when the holder releases it.
// A standby, which waits for no fetch, uses it to tell "held now" from "being fetched".
func (c *Cache) TryClaim(hexDigest string) (release func(), busy <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if held, ok := c.claims[hexDigest]; ok {
		return nil, held
	}
	done := make(chan struct{})
	c.claims[hexDigest] = done
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.claims, hexDigest)
			c.mu.Unlock()
			close(done)
		})
	}, nil
}

// Claimed reports whether someone holds the fetch claim of hexDigest now (for logs and tests; it may change at once).
func (c *Cache) Claimed(hexDigest string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, held := c.claims[hexDigest]
	return held
}

// Materialize places the held artifact hexDigest at dst as a symbolic link to the cache's read-only file. dst must
// not exist. Call Verify first: Materialize only re-checks the fingerprint (a stat), and fails with ErrTampered,
// dropping the entry, if the file changed since.
//
// A symbolic link, not a hard link or a copy: creating or deleting a hard link moves the cached inode's ctime, which
// would make every lease's fingerprint check fail and cost a full hash, and a copy costs 35 to 50 ms for an 84 to 130
// MB binary (README.md, "Artifact integrity"). Through a symbolic link the cached inode changes only when someone
// changes it, which Verify detects.
func (c *Cache) Materialize(hexDigest, dst string) error {
	now := time.Now()
	c.mu.Lock()
	if !c.exposing {
		c.exposing = true
		c.exposures++
	}
	e, ok := c.entries[hexDigest]
	var want fingerprint
	if ok {
		e.lastUse = now
		if e.exposed.IsZero() {
			e.exposed = now
		}
		want = e.fp
	}
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("artifact %s%s is not in the local cache", DigestPrefix, hexDigest)
	}
	src := c.Path(hexDigest)
	if got, err := fingerprintOf(src); err != nil || got != want {
		c.Remove(hexDigest)
		return fmt.Errorf("%w: %s%s changed since it was verified; it will be fetched again next lease", ErrTampered, DigestPrefix, hexDigest)
	}
	if err := os.Symlink(src, dst); err != nil {
		return fmt.Errorf("link artifact: %w", err)
	}
	return nil
}

// Remove drops a held artifact (for example one that failed to execute); it is fetched again when next needed.
func (c *Cache) Remove(hexDigest string) {
	c.forget(hexDigest)
	_ = os.Remove(c.Path(hexDigest))
}

func (c *Cache) forget(hexDigest string) {
	c.mu.Lock()
	delete(c.entries, hexDigest)
	c.mu.Unlock()
}

// Trim evicts the least recently used artifacts until the cache holds at most maxBytes, but never the most recently
// used one (the current job's binary may alone exceed the bound). maxBytes <= 0 disables trimming. Call it only while
// no boot is running: an evicted file already linked into a lease directory stays valid there, but a boot in progress
// could lose an artifact between fetch and link, and a running worker would lose its staged files. It returns the evicted digests.
func (c *Cache) Trim(maxBytes int64) []string {
	if maxBytes <= 0 {
		return nil
	}
	c.mu.Lock()
	var total int64
	hexes := make([]string, 0, len(c.entries))
	for h, e := range c.entries {
		total += e.size
		hexes = append(hexes, h)
	}
	slices.SortFunc(hexes, func(a, b string) int { return c.entries[a].lastUse.Compare(c.entries[b].lastUse) })
	var evict []string
	for i := 0; i < len(hexes)-1 && total > maxBytes; i++ {
		total -= c.entries[hexes[i]].size
		evict = append(evict, hexes[i])
		delete(c.entries, hexes[i])
	}
	c.mu.Unlock()
	for i, h := range evict {
		_ = os.Remove(c.Path(h))
		evict[i] = DigestPrefix + h
	}
	return evict
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
