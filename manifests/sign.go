package manifests

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
)

// Purposes name what a signature is for. The purpose is signed along with the
// data, so a signature made for one kind of document cannot be replayed as
// another.
const (
	PurposeManifest     = "manifest"
	PurposeVerifyReport = "verify-report"
)

// Signature is one detached ed25519 signature.
type Signature struct {
	KeyID     string `json:"keyId"`
	Algorithm string `json:"algorithm"`
	Signature string `json:"signature"` // base64
}

// Signatures is the content of a detached signature file (manifest.sig).
type Signatures struct {
	Signatures []Signature `json:"signatures"`
}

// signedMessage is what is actually signed: a domain-separation prefix naming
// the purpose, a NUL, then the exact bytes.
func signedMessage(purpose string, data []byte) []byte {
	msg := make([]byte, 0, len(purpose)+24+len(data))
	msg = append(msg, "qwen-appliance/"+purpose+"/v1"...)
	msg = append(msg, 0)
	return append(msg, data...)
}

// Sign signs data for purpose with k.
func Sign(k PrivateKey, purpose string, data []byte) Signature {
	sig := ed25519.Sign(k.Key, signedMessage(purpose, data))
	return Signature{KeyID: k.ID, Algorithm: keyAlgorithm, Signature: base64.StdEncoding.EncodeToString(sig)}
}

// Add appends a signature, replacing an earlier one by the same key.
func (s *Signatures) Add(sig Signature) {
	for i, old := range s.Signatures {
		if old.KeyID == sig.KeyID {
			s.Signatures[i] = sig
			return
		}
	}
	s.Signatures = append(s.Signatures, sig)
}

// Marshal encodes the signature file.
func (s *Signatures) Marshal() []byte {
	b, _ := json.MarshalIndent(s, "", "  ")
	return append(b, '\n')
}

// ParseSignatures decodes a signature file strictly.
func ParseSignatures(data []byte) (*Signatures, error) {
	var s Signatures
	if err := jsonstrict.Decode(data, &s); err != nil {
		return nil, fmt.Errorf("parse signatures: %w", err)
	}
	if len(s.Signatures) == 0 {
		return nil, ErrUnsigned
	}
	for i, sig := range s.Signatures {
		if sig.Algorithm != keyAlgorithm {
			return nil, fmt.Errorf("parse signatures: signatures[%d].algorithm: %q is not supported (want %s)", i, sig.Algorithm, keyAlgorithm)
		}
	}
	return &s, nil
}

// Check verifies sigs over data for purpose and returns the IDs of the
// trusted keys whose signatures are valid. It needs at least threshold of
// them (1 when threshold < 1), counting each key once. Errors: ErrUnsigned,
// ErrBadSignature (a trusted key's signature does not match: the data changed
// after signing), ErrUntrustedKey (only unknown keys signed), ErrThreshold.
func Check(sigs *Signatures, purpose string, data []byte, trusted []PublicKey, threshold int) ([]string, error) {
	threshold = max(threshold, 1)
	if sigs == nil || len(sigs.Signatures) == 0 {
		return nil, ErrUnsigned
	}
	byID := make(map[string]PublicKey, len(trusted))
	for _, k := range trusted {
		byID[k.ID] = k
	}
	msg := signedMessage(purpose, data)
	var valid, bad, unknown []string
	seen := map[string]bool{}
	for _, s := range sigs.Signatures {
		if seen[s.KeyID] {
			continue
		}
		seen[s.KeyID] = true
		k, ok := byID[s.KeyID]
		if !ok {
			unknown = append(unknown, s.KeyID)
			continue
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(s.Signature)
		if err != nil || !ed25519.Verify(k.Key, msg, raw) {
			bad = append(bad, s.KeyID)
			continue
		}
		valid = append(valid, s.KeyID)
	}
	switch {
	case len(valid) >= threshold:
		return valid, nil
	case len(bad) > 0:
		return valid, fmt.Errorf("%w: signature by trusted key %s is invalid; the signed file was changed after signing", ErrBadSignature, bad[0])
	case len(valid) == 0:
		return nil, fmt.Errorf("%w: signed only by key(s) %v, none of which is trusted", ErrUntrustedKey, unknown)
	default:
		return valid, fmt.Errorf("%w: %d of %d required trusted signatures are valid (keys %v)", ErrThreshold, len(valid), threshold, valid)
	}
}
