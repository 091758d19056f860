//go:build appliance

package fetch

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// The appliance build refuses go-getter sources with a clear error instead
// of carrying go-getter's cloud SDKs to the isolated host.
func TestApplianceBuildHasNoGetter(t *testing.T) {
	err := Get(context.Background(), "s3::https://s3.amazonaws.com/bucket/model.gguf", filepath.Join(t.TempDir(), "x"), false)
	if !errors.Is(err, ErrConnectedOnly) {
		t.Fatalf("got %v, want ErrConnectedOnly", err)
	}
}
