package main

import (
	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// byteProgress reports the bytes of one operation on name through r (total
// -1 when unknown), in the shape the hashing and copying functions take.
func byteProgress(r *progress.Reporter, name string, total int64) manifests.Progress {
	r.Start(name, total, 0)
	return func(n int64) { r.Add(name, n) }
}
