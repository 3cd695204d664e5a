package artifactcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
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
	if err != nil || st.Mode().Perm()&0o111 == 0 {
		t.Fatalf("materialized file %v not executable (%v)", st, err)
	}
	if b, _ := os.ReadFile(dst); !bytes.Equal(b, content) {
		t.Errorf("materialized content differs")
	}
	if err := c.Materialize(d, dst); err == nil {
		t.Errorf("Materialize over an existing file succeeded")
	}

	// A reopened cache keeps good entries and drops corrupt ones and leftovers.
	bad := digest([]byte("other"))
	if err := os.WriteFile(filepath.Join(dir, "sha256", bad), []byte("not other"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sha256", ".incoming-123"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	c2 := open(t, dir)
	if got, want := c2.Digests(), []string{"sha256:" + d}; !slices.Equal(got, want) {
		t.Errorf("reopened Digests = %v, want %v", got, want)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "sha256"))
	if len(entries) != 1 {
		t.Errorf("reopen left %d files, want only the good entry", len(entries))
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
