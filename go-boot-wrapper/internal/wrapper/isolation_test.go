package wrapper

import (
	"os"
	"path/filepath"
	"testing"

	"recycler.dev/go-boot-wrapper/internal/fakerecycler"
	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
	"recycler.dev/go-boot-wrapper/internal/testhelper"
)

// Regression (issue 11): the wrapper hard-linked cached binaries into each lease directory and checked only their
// size, so a worker running as the wrapper's user could chmod and rewrite the file the next lease executes.
func TestTamperedBinaryDoesNotReachTheNextLease(t *testing.T) {
	tests := []struct {
		how         string
		wantFetches int // a rewritten entry is fetched again; a chmod only restores the mode
	}{
		{how: "chmod", wantFetches: 1},
		{how: "rewrite", wantFetches: 2},
		{how: "replace", wantFetches: 2},
	}
	for _, tt := range tests {
		t.Run(tt.how, func(t *testing.T) {
			f := fakerecycler.Start(t, "slot-0")
			startWrapper(t, f, t.TempDir())
			helperDir := t.TempDir()
			art := workerArtifact(t, testhelper.ModeTamper, helperDir, "GBW_HELPER_TAMPER="+tt.how)
			f.Stage(art)
			s := f.NextSession(t)

			for gen := int64(1); gen <= 2; gen++ {
				_ = os.Remove(filepath.Join(helperDir, "report.json"))
				f.Lease(s, gen, "w", f.ProvisionInfo(nil))
				s.ExpectStarted(t, gen)
				// The tampered binary would exit 42 without a report; the original reports and exits 0.
				e := s.ExpectEnded(t, gen)
				if e.GetOutcome() != recyclerpb.Outcome_OUTCOME_WORKER_EXITED || e.GetExitCode() != 0 {
					t.Fatalf("lease %d ended %v; want the original worker's exit code 0 (tampered: %d)", gen, e, testhelper.TamperedExitCode)
				}
				testhelper.ReadReport(t, helperDir)
			}
			if n := f.Fetches(art.Digest()); n != tt.wantFetches {
				t.Errorf("worker binary fetched %d times, want %d", n, tt.wantFetches)
			}
		})
	}
}
