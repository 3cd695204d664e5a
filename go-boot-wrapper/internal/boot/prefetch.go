package boot

import (
	"context"
	"errors"
	"fmt"
	"strings"

	jobpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/jobmanagement_v1"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"recycler.dev/go-boot-wrapper/internal/artifactcache"
)

// ErrBadPrefetch means a Prefetch instruction cannot be acted on as given (malformed digest, negative size, no
// ticket); nothing was fetched.
var ErrBadPrefetch = errors.New("unusable prefetch instruction")

// Prefetch makes the local cache hold the artifact digest ("sha256:<64 lowercase hex>") ahead of the lease that will
// need it, as the recycler's Prefetch instruction asks. If the cache already holds it (Verify), it returns
// alreadyHeld at once. Otherwise it fetches it with GetArtifact from the recycler (the wrapper's own connection, not a
// lease's artifact endpoint) with the metadata worker_id (the slot id) and HeaderPrefetchTicket (ticket, a secret),
// and admits it exactly as a lease's fetch does: size from the response header, which must equal size, and sha256;
// nothing enters the cache unless both match. It returns the bytes fetched.
//
// It holds the digest's fetch claim throughout, so a lease that needs the digest meanwhile waits for this fetch instead
// of starting another (and a prefetch of a digest a lease is fetching waits for that lease's fetch, then finds it
// held). The whole call, the wait for the claim included, is bounded by the artifact timeout and by ctx.
func (b *Booter) Prefetch(ctx context.Context, digest string, size int64, ticket string) (fetched int64, alreadyHeld bool, err error) {
	hex, ok := strings.CutPrefix(digest, artifactcache.DigestPrefix)
	if !ok || artifactcache.ValidHex(hex) != nil {
		return 0, false, fmt.Errorf("%w: digest %q is not %s<64 lowercase hex>", ErrBadPrefetch, digest, artifactcache.DigestPrefix)
	}
	if size < 0 {
		return 0, false, fmt.Errorf("%w: negative size %d for %s", ErrBadPrefetch, size, digest)
	}
	if ticket == "" {
		return 0, false, fmt.Errorf("%w: no ticket for %s", ErrBadPrefetch, digest)
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.ArtifactTimeout)
	defer cancel()
	release, _, err := b.cache.Claim(ctx, hex)
	if err != nil {
		return 0, false, fmt.Errorf("waiting for the fetch of %s already in progress: %w", digest, err)
	}
	defer release()
	// A changed entry (err != nil) has been dropped: fetch it again, as a lease would.
	if held, _ := b.cache.Verify(hex); held {
		return 0, true, nil
	}
	// The request names the content, not a job's file: the recycler serves its cached copy of that digest.
	payload, err := proto.Marshal(&pipepb.ArtifactFilePayload{Path: "sha256/" + hex, Sha256: hex})
	if err != nil {
		return 0, false, err
	}
	a := artifact{
		info: &pipepb.ArtifactInformation{TypeUrn: URNFileArtifact, TypePayload: payload, RoleUrn: URNGoWorkerBinaryRole},
		hex:  hex,
	}
	ctx = metadata.AppendToOutgoingContext(ctx, HeaderWorkerID, b.cfg.SlotID, HeaderPrefetchTicket, ticket)
	n, err := b.fetch(ctx, jobpb.NewArtifactRetrievalServiceClient(b.conn), a, size)
	if err != nil {
		return 0, false, fmt.Errorf("fetching %s from recycler %s failed: %w", digest, b.cfg.RecyclerEndpoint, err)
	}
	return n, false, nil
}
