package fetch

import "errors"

// ErrConnectedOnly is returned by Get in the appliance build (-tags
// appliance), which leaves go-getter and its cloud SDKs out: s3::, gcs::,
// git:: and other go-getter sources are fetched with the full build on the
// connected side. Plain https:// and hf:// sources need no go-getter.
var ErrConnectedOnly = errors.New("go-getter sources (s3::, gcs::, git::, ...) are fetched by the full build on the connected side; this is the appliance build")
