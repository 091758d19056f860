//go:build appliance

package fetch

import (
	"context"
	"fmt"
)

// Get is not in the appliance build: the isolated host never fetches, and
// leaving go-getter out leaves the AWS, GCS and gRPC client libraries out of
// the binary it runs. It returns an error wrapping ErrConnectedOnly.
func Get(ctx context.Context, src, dst string, dir bool) error {
	return fmt.Errorf("fetch %s: %w", src, ErrConnectedOnly)
}
