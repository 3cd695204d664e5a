package artifactcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func open(t *testing.T, dir string) *Cache {
	t.Helper()
	c, err := Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAdmit(t *testing.T) {
	content := bytes.Repeat([]byte("beam"), 100_000)
	good := digest(content)
	tests := []struct {
		name    string
		digest  string
		size    int64
		data    []byte
		wantErr error
	}{
		{"verified", good, int64(len(content)), content, nil},
		{"size unknown, digest checked", good, -1, content, nil},
		{"truncated", good, int64(len(content)), content[:len(content)-1], ErrSizeMismatch},
		{"too long", good, int64(len(content)), append(slices.Clone(content), 'x'), ErrSizeMismatch},
		{"corrupt", good, int64(len(content)), append(slices.Clone(content[:len(content)-1]), 'x'), ErrDigestMismatch},
		{"corrupt, size unknown", good, -1, content[1:], ErrDigestMismatch},
		{"malformed digest", "sha256:" + good, 1, []byte("x"), ErrBadDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := open(t, dir)
			err := c.Admit(tt.digest, tt.size, bytes.NewReader(tt.data))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Admit error = %v, want %v", err, tt.wantErr)
			}
			if got := c.Has(good); got != (tt.wantErr == nil) {
				t.Errorf("Has = %v after Admit error %v", got, err)
			}
			entries, _ := os.ReadDir(filepath.Join(dir, "sha256"))
			if tt.wantErr != nil && len(entries) != 0 {
				t.Errorf("rejected artifact left files behind: %v", entries)
			}
		})
	}
}

func TestMaterializeAndReopen(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir)
	content := []byte("#!/bin/sh\nexit 0\n")
	d := digest(content)
	if err := c.Admit(d, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Digests(), []string{"sha256:" + d}; !slices.Equal(got, want) {
		t.Errorf("Digests = %v, want %v", got, want)
	}
	dst := filepath.Join(t.TempDir(), "worker")
	if err := c.Materialize(d, dst); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dst)
	if err != nil || st.Mode().Perm() != 0o555 {
		t.Fatalf("materialized file %v not executable (%v)", st, err)
	}
	if b, _ := os.ReadFile(dst); !bytes.Equal(b, content) {
		t.Errorf("materialized content differs")
	}
	if err := c.Materialize(d, dst); err == nil {
		t.Errorf("Materialize over an existing file succeeded")
	}

	// A reopened cache keeps good entries, drops corrupt ones and leftovers of its own admissions, and leaves alone
	// what it did not write (it used to delete every file not named like a digest).
	bad := digest([]byte("other"))
	for name, content := range map[string]string{bad: "not other", ".incoming-123": "partial", "notes.txt": "someone's", "sub/file": "someone's"} {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, "sha256", name)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "sha256", name), []byte(content), 0o444))
	}
	c2 := open(t, dir)
	if got, want := c2.Digests(), []string{"sha256:" + d}; !slices.Equal(got, want) {
		t.Errorf("reopened Digests = %v, want %v", got, want)
	}
	var left []string
	entries, _ := os.ReadDir(filepath.Join(dir, "sha256"))
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{d, "notes.txt", "sub"}; !slices.Equal(left, want) {
		t.Errorf("reopen left %v, want %v", left, want)
	}

	// An entry changed behind the cache's back is not handed out.
	c2.Remove(d)
	if c2.Has(d) || c2.Materialize(d, filepath.Join(t.TempDir(), "w")) == nil {
		t.Errorf("removed entry still served")
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	f.n--
	p[0] = 'a'
	return 1, nil
}

func TestAdmitReadError(t *testing.T) {
	c := open(t, t.TempDir())
	d := digest([]byte("aaaa"))
	if err := c.Admit(d, 4, &failingReader{n: 2}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Admit = %v, want the reader's error", err)
	}
	if c.Has(d) {
		t.Errorf("partial artifact admitted")
	}
}

func TestTrimEvictsLeastRecentlyUsed(t *testing.T) {
	c := open(t, t.TempDir())
	blobs := [][]byte{bytes.Repeat([]byte("a"), 100), bytes.Repeat([]byte("b"), 100), bytes.Repeat([]byte("c"), 100)}
	for _, b := range blobs {
		if err := c.Admit(digest(b), int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	// Using "a" makes "b" the least recently used.
	if err := c.Materialize(digest(blobs[0]), filepath.Join(t.TempDir(), "a")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		max       int64
		wantHeld  []string
		wantEvict []string
	}{
		{0, []string{digest(blobs[0]), digest(blobs[1]), digest(blobs[2])}, nil},
		{300, []string{digest(blobs[0]), digest(blobs[1]), digest(blobs[2])}, nil},
		{250, []string{digest(blobs[0]), digest(blobs[2])}, []string{digest(blobs[1])}},
		{1, []string{digest(blobs[0])}, []string{digest(blobs[2])}}, // the most recently used stays, even over the bound
	}
	for _, tt := range tests {
		evicted := c.Trim(tt.max)
		var want []string
		for _, d := range tt.wantEvict {
			want = append(want, DigestPrefix+d)
		}
		if !slices.Equal(evicted, want) {
			t.Errorf("Trim(%d) evicted %v, want %v", tt.max, evicted, want)
		}
		var held []string
		for _, d := range tt.wantHeld {
			held = append(held, DigestPrefix+d)
		}
		slices.Sort(held)
		if got := c.Digests(); !slices.Equal(got, held) {
			t.Errorf("after Trim(%d) held %v, want %v", tt.max, got, held)
		}
		for _, d := range tt.wantEvict {
			if _, err := os.Stat(c.Path(d)); err == nil {
				t.Errorf("evicted %s still on disk", d)
			}
		}
	}
}

// A lease's files are symbolic links to the cache's files, and its worker runs as the wrapper's user: whatever it does to
// them, the next lease must get exactly the bytes the digest names, or a fresh fetch.
func TestVerifyAfterTampering(t *testing.T) {
	content := []byte("#!/bin/sh\nexit 0\n")
	d := digest(content)
	tests := []struct {
		name       string
		tamper     func(t *testing.T, cached, linked string)
		wantKept   bool
		wantErr    error
		wantRehash bool // the fingerprint changed, so the content was hashed again
	}{
		{name: "untouched", tamper: func(*testing.T, string, string) {}, wantKept: true},
		{name: "chmod only", wantKept: true, wantRehash: true, tamper: func(t *testing.T, _, linked string) {
			must(t, os.Chmod(linked, 0o777))
		}},
		{name: "rewritten through the lease's link", wantErr: ErrTampered, tamper: func(t *testing.T, _, linked string) {
			must(t, os.Chmod(linked, 0o755))
			must(t, os.WriteFile(linked, []byte("#!/bin/sh\nexit 42\n"), 0o755))
		}},
		{name: "same length, one byte changed", wantErr: ErrTampered, tamper: func(t *testing.T, cached, _ string) {
			must(t, os.Chmod(cached, 0o755))
			f, err := os.OpenFile(cached, os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteAt([]byte("X"), 3)
			must(t, err)
			must(t, f.Close())
		}},
		{name: "replaced by another file", wantErr: ErrTampered, tamper: func(t *testing.T, cached, _ string) {
			other := cached + ".evil"
			must(t, os.WriteFile(other, []byte("#!/bin/sh\nexit 43\n"), 0o555))
			must(t, os.Rename(other, cached))
		}},
		{name: "replaced by an identical copy", wantKept: true, wantRehash: true, tamper: func(t *testing.T, cached, _ string) {
			other := cached + ".copy"
			must(t, os.WriteFile(other, content, 0o555))
			must(t, os.Rename(other, cached))
		}},
		{name: "deleted", wantErr: ErrTampered, tamper: func(t *testing.T, cached, _ string) {
			must(t, os.Remove(cached))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			c, err := Open(t.TempDir(), slog.New(slog.NewTextHandler(&logs, nil)))
			must(t, err)
			must(t, c.Admit(d, int64(len(content)), bytes.NewReader(content)))
			// Let the admission's ctime fall outside the racy window, as it has for any entry older than a second.
			c.backdate(d)
			linked := filepath.Join(t.TempDir(), "worker")
			must(t, c.Materialize(d, linked))
			tt.tamper(t, c.Path(d), linked)

			kept, err := c.Verify(d)
			if kept != tt.wantKept || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify = %v, %v; want %v, %v", kept, err, tt.wantKept, tt.wantErr)
			}
			if kept {
				b, err := os.ReadFile(c.Path(d))
				st, serr := os.Stat(c.Path(d))
				if err != nil || !bytes.Equal(b, content) || serr != nil || st.Mode().Perm() != 0o555 {
					t.Errorf("kept entry: content %q (%v), mode %v; want the original, read-only", b, err, st.Mode())
				}
				if got := strings.Contains(logs.String(), "changed behind the cache's back"); got != tt.wantRehash {
					t.Errorf("logged a changed entry = %v, want %v", got, tt.wantRehash)
				}
				must(t, c.Materialize(d, filepath.Join(t.TempDir(), "next")))
				return
			}
			if c.Has(d) || slices.Contains(c.Digests(), DigestPrefix+d) {
				t.Errorf("tampered entry still held")
			}
			if _, err := os.Stat(c.Path(d)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("tampered file still in the cache (%v)", err)
			}
			// It can be admitted again and then serves the right bytes.
			must(t, c.Admit(d, int64(len(content)), bytes.NewReader(content)))
			next := filepath.Join(t.TempDir(), "next")
			must(t, c.Materialize(d, next))
			if b, _ := os.ReadFile(next); !bytes.Equal(b, content) {
				t.Errorf("re-admitted entry serves %q", b)
			}
		})
	}
}

// A fingerprint recorded within one timestamp tick of a lease's start proves nothing: such an entry is hashed again.
func TestVerifyRehashesARacyEntry(t *testing.T) {
	content := []byte("racy")
	d := digest(content)
	c := open(t, t.TempDir())
	must(t, c.Admit(d, int64(len(content)), bytes.NewReader(content)))
	must(t, c.Materialize(d, filepath.Join(t.TempDir(), "w"))) // handed out right after admission: racy
	fp := rewriteSameTick(t, c, d, []byte("RACY"))
	c.mu.Lock()
	c.entries[d].exposed = time.Unix(0, fp.ctime) // exposed in the same tick as the last change
	c.mu.Unlock()

	if kept, err := c.Verify(d); kept || !errors.Is(err, ErrTampered) {
		t.Errorf("Verify of a racy, changed entry = %v, %v; want it dropped with ErrTampered", kept, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// backdate moves the entry's recorded verification out of the racy window.
func (c *Cache) backdate(hexDigest string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries[hexDigest].exposed = time.Unix(0, c.entries[hexDigest].fp.ctime).Add(2 * racyWindow)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An entry a worker made writable before the wrapper restarted is read-only again after Open, content unchanged.
func TestReopenRestoresReadOnlyMode(t *testing.T) {
	dir := t.TempDir()
	content := []byte("kept")
	d := digest(content)
	must(t, open(t, dir).Admit(d, int64(len(content)), bytes.NewReader(content)))
	path := filepath.Join(dir, "sha256", d)
	must(t, os.Chmod(path, 0o777))

	c := open(t, dir)
	st, err := os.Stat(path)
	must(t, err)
	if !c.Has(d) || st.Mode().Perm() != 0o555 {
		t.Errorf("after reopen: held %v, mode %v; want held and 0555", c.Has(d), st.Mode().Perm())
	}
	if ok, err := c.Verify(d); !ok || err != nil {
		t.Errorf("Verify after reopen = %v, %v", ok, err)
	}
}

// Claim keeps two fetches of one digest from overlapping: the second waits (bounded by its context) until the first
// releases, and a release only ever releases its own claim.
func TestClaim(t *testing.T) {
	c := open(t, t.TempDir())
	a, b := digest([]byte("a")), digest([]byte("b"))
	releaseA, waited, err := c.Claim(context.Background(), a)
	if err != nil || waited || !c.Claimed(a) {
		t.Fatalf("first Claim = %v, waited %v, claimed %v; want it at once", err, waited, c.Claimed(a))
	}
	// Another digest is not held up.
	releaseB, waited, err := c.Claim(context.Background(), b)
	if err != nil || waited {
		t.Fatalf("Claim of another digest = %v, waited %v", err, waited)
	}
	releaseB()
	// TryClaim does not wait: a held claim is refused (with the channel its release closes), a free one is taken.
	if release, busy := c.TryClaim(a); release != nil || busy == nil {
		t.Fatalf("TryClaim of a claimed digest = release %v, busy %v; want no claim and the holder's channel", release != nil, busy)
	}
	if release, busy := c.TryClaim(b); release == nil || busy != nil || !c.Claimed(b) {
		t.Fatalf("TryClaim of a free digest = release %v, busy %v; want the claim", release != nil, busy)
	} else {
		release()
	}
	// The same digest waits; a wait that ends claims nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, waited, err := c.Claim(ctx, a); !errors.Is(err, context.Canceled) || !waited {
		t.Fatalf("Claim of a claimed digest with an ended context = %v, waited %v; want context.Canceled after waiting", err, waited)
	}
	got := make(chan func(), 1)
	go func() {
		release, _, err := c.Claim(context.Background(), a)
		if err != nil {
			t.Error(err)
		}
		got <- release
	}()
	releaseA()
	var releaseA2 func()
	select {
	case releaseA2 = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting Claim did not get the claim after its release")
	}
	releaseA() // a second release of the first claim must not release the second
	if !c.Claimed(a) {
		t.Fatal("releasing a claim twice released the next holder's claim")
	}
	releaseA2()
	if c.Claimed(a) {
		t.Fatal("claim still held after its release")
	}
}

// While a lease's processes may reach the cache (from Materialize until EndExposure), a hash proves only what the
// file held at that moment: the entry counts as handed out from the start of the hash, so a change made in the same
// timestamp tick as its fingerprint is caught by the next Verify. A prefetch admits and verifies while a lease runs.
func TestHashWhileExposedIsRacy(t *testing.T) {
	running := []byte("the running lease's binary")
	next := []byte("#!/bin/sh\nexit 0\n")
	d := digest(next)
	tests := []struct {
		name string
		// prepare makes d held, with a lease's exposure as the case says.
		prepare  func(t *testing.T, c *Cache)
		wantRacy bool
	}{
		{name: "admitted while a lease runs", wantRacy: true, prepare: func(t *testing.T, c *Cache) {
			exposeOther(t, c, running)
			must(t, c.Admit(d, int64(len(next)), bytes.NewReader(next)))
		}},
		{name: "a lease started and ended during the admission", wantRacy: true, prepare: func(t *testing.T, c *Cache) {
			must(t, c.Admit(d, int64(len(next)), &hookReader{r: bytes.NewReader(next), hook: func() {
				exposeOther(t, c, running)
				c.EndExposure()
			}}))
		}},
		{name: "re-verified while a lease runs", wantRacy: true, prepare: func(t *testing.T, c *Cache) {
			must(t, c.Admit(d, int64(len(next)), bytes.NewReader(next)))
			exposeOther(t, c, running)
			must(t, os.Chmod(c.Path(d), 0o777)) // a changed fingerprint: Verify hashes again (and restores the mode)
			if ok, err := c.Verify(d); !ok || err != nil {
				t.Fatalf("Verify of an intact entry = %v, %v", ok, err)
			}
		}},
		{name: "admitted after the lease ended", wantRacy: false, prepare: func(t *testing.T, c *Cache) {
			exposeOther(t, c, running)
			c.EndExposure()
			must(t, c.Admit(d, int64(len(next)), bytes.NewReader(next)))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := open(t, t.TempDir())
			tt.prepare(t, c)
			c.mu.Lock()
			exposed := c.entries[d].exposed
			c.mu.Unlock()
			if racy := !exposed.IsZero(); racy != tt.wantRacy {
				t.Fatalf("entry counts as handed out: %v, want %v", racy, tt.wantRacy)
			}
			if !tt.wantRacy {
				return // trusted on its fingerprint at its first use, as any entry hashed while no lease runs
			}
			rewriteSameTick(t, c, d, []byte("#!/bin/sh\nexit 9\n")) // by the running worker
			if ok, err := c.Verify(d); ok || !errors.Is(err, ErrTampered) {
				t.Errorf("Verify = %v, %v; want the changed entry dropped with ErrTampered", ok, err)
			}
		})
	}
}

// rewriteSameTick corrupts d's file with content and puts the recorded fingerprint in line with the result, as a write
// in the same timestamp tick as the recorded fingerprint would leave it, and returns that fingerprint.
func rewriteSameTick(t *testing.T, c *Cache, d string, content []byte) fingerprint {
	t.Helper()
	must(t, os.Chmod(c.Path(d), 0o755))
	must(t, os.WriteFile(c.Path(d), content, 0o755))
	must(t, os.Chmod(c.Path(d), 0o555))
	fp, err := fingerprintOf(c.Path(d))
	must(t, err)
	c.mu.Lock()
	c.entries[d].fp = fp
	c.mu.Unlock()
	return fp
}

// exposeOther admits content and materializes it, as a running lease has: the cache is exposed from then on.
func exposeOther(t *testing.T, c *Cache, content []byte) {
	t.Helper()
	d := digest(content)
	if !c.Has(d) {
		must(t, c.Admit(d, int64(len(content)), bytes.NewReader(content)))
	}
	must(t, c.Materialize(d, filepath.Join(t.TempDir(), "worker")))
}

// hookReader calls hook once, before its first read.
type hookReader struct {
	r    io.Reader
	hook func()
	once sync.Once
}

func (h *hookReader) Read(p []byte) (int, error) {
	h.once.Do(h.hook)
	return h.r.Read(p)
}

// An entry admitted while a lease could reach the cache is hashed again at its next Verify; once that Verify runs more
// than the racy window after the file's last change (the wrapper does so in the background after a prefetch), later
// Verify calls trust its fingerprint, and still catch a change.
func TestVerifyPastTheRacyWindowSettlesAnExposedAdmission(t *testing.T) {
	running := []byte("the standby worker's binary")
	next := []byte("#!/bin/sh\nexit 0\n")
	d := digest(next)
	c := open(t, t.TempDir())
	exposeOther(t, c, running)
	must(t, c.Admit(d, int64(len(next)), bytes.NewReader(next)))
	racy := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		e := c.entries[d]
		return !e.exposed.IsZero() && e.fp.ctime >= e.exposed.Add(-racyWindow).UnixNano()
	}
	if !racy() {
		t.Fatal("an admission while a lease runs must count as racy")
	}

	// Real time must pass: the racy window is measured against the file's real ctime, which no clock seam moves.
	time.Sleep(RacyWindow + 100*time.Millisecond)
	if ok, err := c.Verify(d); !ok || err != nil {
		t.Fatalf("Verify of an intact entry = %v, %v", ok, err)
	}
	if racy() {
		t.Error("after a Verify past the racy window the fingerprint must be trusted (no hash at the next use)")
	}

	must(t, os.Chmod(c.Path(d), 0o755)) // the still running worker changes it: ctime moves
	must(t, os.WriteFile(c.Path(d), []byte("#!/bin/sh\nexit 9\n"), 0o755))
	if ok, err := c.Verify(d); ok || !errors.Is(err, ErrTampered) {
		t.Errorf("Verify after a change = %v, %v; want it dropped with ErrTampered", ok, err)
	}
}
