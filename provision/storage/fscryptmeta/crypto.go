package fscryptmeta

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrBadAuth means a wrapped key's HMAC did not match: the wrapping key is
// wrong or the data was changed.
var ErrBadAuth = errors.New("key authentication check failed")

// stretch derives the encryption and authentication keys from a 32-byte
// wrapping key with unsalted HKDF-SHA256, as fscrypt's crypto.stretchKey.
func stretch(wrappingKey []byte) (enc, auth []byte, err error) {
	if len(wrappingKey) != InternalKeyLen {
		return nil, nil, fmt.Errorf("wrapping key is %d bytes, want %d", len(wrappingKey), InternalKeyLen)
	}
	both, err := hkdf.Key(sha256.New, wrappingKey, nil, "", 2*InternalKeyLen)
	if err != nil {
		return nil, nil, err
	}
	return both[:InternalKeyLen], both[InternalKeyLen:], nil
}

func ctr(key, iv, in []byte) []byte {
	block, _ := aes.NewCipher(key) // 32 bytes, checked by stretch
	out := make([]byte, len(in))
	cipher.NewCTR(block, iv).XORKeyStream(out, in)
	return out
}

func mac(key, iv, data []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(iv)
	h.Write(data)
	return h.Sum(nil)
}

// Wrap encrypts secret under a 32-byte wrapping key as fscrypt's crypto.Wrap
// does: a random IV, AES-256-CTR, then HMAC-SHA256 over IV and ciphertext.
func Wrap(wrappingKey, secret []byte) (WrappedKey, error) {
	enc, auth, err := stretch(wrappingKey)
	if err != nil {
		return WrappedKey{}, err
	}
	defer clear(enc)
	defer clear(auth)
	w := WrappedKey{IV: make([]byte, ivLen)}
	rand.Read(w.IV)
	w.EncryptedKey = ctr(enc, w.IV, secret)
	w.HMAC = mac(auth, w.IV, w.EncryptedKey)
	return w, nil
}

// Unwrap checks the HMAC and decrypts. It returns ErrBadAuth when the
// wrapping key does not fit.
func Unwrap(wrappingKey []byte, w WrappedKey) ([]byte, error) {
	enc, auth, err := stretch(wrappingKey)
	if err != nil {
		return nil, err
	}
	defer clear(enc)
	defer clear(auth)
	if len(w.IV) != ivLen || !hmac.Equal(mac(auth, w.IV, w.EncryptedKey), w.HMAC) {
		return nil, ErrBadAuth
	}
	return ctr(enc, w.IV, w.EncryptedKey), nil
}

// ProtectorDescriptor names a protector by its key: the first 8 bytes of
// SHA-512(SHA-512(key)) in hex, as fscrypt's v1 descriptor.
func ProtectorDescriptor(protectorKey []byte) string {
	h1 := sha512.Sum512(protectorKey)
	h2 := sha512.Sum512(h1[:])
	return hex.EncodeToString(h2[:protectorDescriptorLen/2])
}

// keyIdentifier computes the kernel's identifier of a v2 policy key
// (HKDF-SHA512, info "fscrypt\0" and HKDF_CONTEXT_KEY_IDENTIFIER), which is
// also the policy's descriptor.
func keyIdentifier(policyKey []byte) ([16]byte, error) {
	var id [16]byte
	b, err := hkdf.Key(sha512.New, policyKey, nil, "fscrypt\x00\x01", len(id))
	copy(id[:], b)
	return id, err
}
