package boot

import (
	"strings"
	"testing"

	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"google.golang.org/protobuf/proto"
)

func fileArt(t *testing.T, role, path string, rolePayload proto.Message) *pipepb.ArtifactInformation {
	t.Helper()
	tp, err := proto.Marshal(&pipepb.ArtifactFilePayload{Path: path, Sha256: strings.Repeat("a", 64)})
	if err != nil {
		t.Fatal(err)
	}
	a := &pipepb.ArtifactInformation{TypeUrn: URNFileArtifact, TypePayload: tp, RoleUrn: role}
	if rolePayload != nil {
		a.RolePayload, _ = proto.Marshal(rolePayload)
	}
	return a
}

// TestSelectWorker follows Beam's getGoWorkerArtifactName: the only artifact, else the Go worker binary role, else the
// legacy name "worker".
func TestSelectWorker(t *testing.T) {
	staging := func(name string) proto.Message { return &pipepb.ArtifactStagingToRolePayload{StagedName: name} }
	tests := []struct {
		name    string
		arts    []*pipepb.ArtifactInformation
		want    int // index, or -1 for an error
		wantErr string
	}{
		{"none", nil, -1, "no artifacts"},
		{"single artifact whatever its role", []*pipepb.ArtifactInformation{fileArt(t, "", "/x/data", nil)}, 0, ""},
		{"role wins", []*pipepb.ArtifactInformation{
			fileArt(t, "", "/x/worker", nil), fileArt(t, URNGoWorkerBinaryRole, "/x/bin", nil)}, 1, ""},
		{"legacy staged name", []*pipepb.ArtifactInformation{
			fileArt(t, "", "/x/data", nil), fileArt(t, URNStagingToRole, "/x/abc", staging("worker"))}, 1, ""},
		{"legacy path name", []*pipepb.ArtifactInformation{
			fileArt(t, "", "/x/data", nil), fileArt(t, "", "/tmp/staged/worker", nil)}, 1, ""},
		{"no match", []*pipepb.ArtifactInformation{
			fileArt(t, "", "/x/data", nil), fileArt(t, "", "/x/other", nil)}, -1, "none has the Go worker binary role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var arts []artifact
			for i, a := range tt.arts {
				var fp pipepb.ArtifactFilePayload
				_ = proto.Unmarshal(a.GetTypePayload(), &fp)
				arts = append(arts, artifact{info: a, staged: stagedName(i, a, fp.GetPath())})
			}
			got, err := selectWorker(arts)
			if tt.want < 0 {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("selectWorker error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.info != tt.arts[tt.want] {
				t.Fatalf("selectWorker = %v, %v; want artifact %d", got.info, err, tt.want)
			}
		})
	}
}

func TestStagedNameStaysInsideTheDirectory(t *testing.T) {
	tests := []struct {
		role, path, staged, want string
	}{
		{"", "/a/b/pipeline.bin", "", "3-pipeline.bin"},
		{URNStagingToRole, "/x", "../../etc/passwd", "passwd"},
		{URNStagingToRole, "/x/y", "..", "3-y"},
		{"", "/", "", "3-artifact"},
	}
	for _, tt := range tests {
		var rp proto.Message
		if tt.staged != "" {
			rp = &pipepb.ArtifactStagingToRolePayload{StagedName: tt.staged}
		}
		a := fileArt(t, tt.role, tt.path, rp)
		if got := stagedName(2, a, tt.path); got != tt.want {
			t.Errorf("stagedName(%q, %q, %q) = %q, want %q", tt.role, tt.path, tt.staged, got, tt.want)
		}
	}
}
