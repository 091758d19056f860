package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
)

func newSHA() hash.Hash     { return sha256.New() }
func hexOf(b []byte) string { return hex.EncodeToString(b) }
