package storage

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Protector kinds: what an operator holds to unlock a store.
const (
	kindKeyFile    = "key-file"
	kindPassphrase = "passphrase"
	kindRecovery   = "recovery"
)

// Credential is one secret that may open a store: exactly one field is set.
type Credential struct {
	KeyFile     string // path of a key file (at least 32 bytes, mode 0400 or 0600)
	Passphrase  []byte
	RecoveryKey string // as printed at init, dashes and case ignored
}

// kind names the protector kind the credential opens.
func (c Credential) kind() string {
	switch {
	case c.KeyFile != "":
		return kindKeyFile
	case c.Passphrase != nil:
		return kindPassphrase
	case c.RecoveryKey != "":
		return kindRecovery
	}
	return ""
}

func (c Credential) String() string {
	switch c.kind() {
	case kindKeyFile:
		return "key file " + c.KeyFile
	case kindPassphrase:
		return "passphrase"
	case kindRecovery:
		return "recovery key"
	}
	return "no key"
}

// KDF is the argon2id cost used to turn a passphrase into a wrapping key.
// Higher costs slow down guessing; tests use the smallest.
type KDF struct {
	Time      uint32 `json:"time"`      // passes
	MemoryKiB uint32 `json:"memoryKiB"` // memory per derivation
	Threads   uint8  `json:"threads"`
}

// DefaultKDF costs about a second and 256 MiB on a server core.
var DefaultKDF = KDF{Time: 4, MemoryKiB: 256 << 10, Threads: 4}

// Validate checks the cost is one argon2id accepts and bounded.
func (k KDF) Validate() error {
	switch {
	case k.Time < 1 || k.Time > 64:
		return fmt.Errorf("argon2id time %d is not between 1 and 64", k.Time)
	case k.Threads < 1:
		return fmt.Errorf("argon2id threads must be at least 1")
	case k.MemoryKiB < 8*uint32(k.Threads) || k.MemoryKiB > 4<<20:
		return fmt.Errorf("argon2id memory %d KiB is not between %d KiB and 4 GiB", k.MemoryKiB, 8*uint32(k.Threads))
	}
	return nil
}

// keyFileLimits bound what a key file may be.
const (
	minKeyFile = 32
	maxKeyFile = 8192
)

// readKeyFile reads a key file, refusing one that others can read or that is
// too short to be a key.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read key file %s: not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("read key file %s: mode %04o lets other users read it (want 0400 or 0600)", path, st.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	if len(data) < minKeyFile || len(data) > maxKeyFile {
		return nil, fmt.Errorf("read key file %s: %d bytes, want %d to %d", path, len(data), minKeyFile, maxKeyFile)
	}
	return data, nil
}

// NewKeyFile writes 32 random bytes to path with mode 0400; it refuses to
// replace an existing file.
func NewKeyFile(path string) error {
	key := make([]byte, 32)
	rand.Read(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	_, err = f.Write(key)
	err = errors.Join(err, f.Sync(), f.Close())
	clear(key)
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("create key file %s: %w", path, err)
	}
	return nil
}

// recoveryBytes is the entropy of a recovery key.
const recoveryBytes = 32

// newRecoveryKey returns a fresh recovery key in its printed form: 64 hex
// digits in eight dash-separated groups.
func newRecoveryKey() string {
	b := make([]byte, recoveryBytes)
	rand.Read(b)
	return formatRecoveryKey(b)
}

func formatRecoveryKey(b []byte) string {
	h := hex.EncodeToString(b)
	var parts []string
	for i := 0; i < len(h); i += 8 {
		parts = append(parts, h[i:i+8])
	}
	return strings.Join(parts, "-")
}

// parseRecoveryKey reads a recovery key as printed at init; dashes, spaces
// and letter case do not matter.
func parseRecoveryKey(s string) ([]byte, error) {
	clean := strings.Map(func(r rune) rune {
		switch r {
		case '-', ' ', '\t', '\n', '\r':
			return -1
		}
		return r
	}, strings.ToLower(s))
	if len(clean) != 2*recoveryBytes {
		return nil, fmt.Errorf("recovery key: %d hex digits, want %d", len(clean), 2*recoveryBytes)
	}
	b, err := hex.DecodeString(clean)
	if err != nil {
		return nil, fmt.Errorf("recovery key: not hexadecimal")
	}
	return b, nil
}

// secret returns the bytes a credential contributes: the key file's
// contents, the passphrase, or the decoded recovery key.
func (c Credential) secret() ([]byte, error) {
	switch c.kind() {
	case kindKeyFile:
		return readKeyFile(c.KeyFile)
	case kindPassphrase:
		if len(c.Passphrase) == 0 {
			return nil, errors.New("empty passphrase")
		}
		return append([]byte(nil), c.Passphrase...), nil
	case kindRecovery:
		return parseRecoveryKey(c.RecoveryKey)
	}
	return nil, errors.New("no key given")
}

// wrappingKey derives the 32-byte key that wraps the master key for one
// protector. Key files and recovery keys carry full entropy and go through
// HKDF; passphrases go through argon2id with the protector's cost.
func wrappingKey(kind string, secret, salt []byte, kdf *KDF) ([]byte, error) {
	switch kind {
	case kindPassphrase:
		if kdf == nil {
			return nil, errors.New("passphrase protector without argon2id parameters")
		}
		if err := kdf.Validate(); err != nil {
			return nil, err
		}
		return argon2.IDKey(secret, salt, kdf.Time, kdf.MemoryKiB, kdf.Threads, 32), nil
	case kindKeyFile, kindRecovery:
		return hkdf.Key(sha256.New, secret, salt, "qwen-appliance storage "+kind+" v1", 32)
	}
	return nil, fmt.Errorf("unknown protector kind %q", kind)
}

// seal wraps key with kek in AES-256-GCM; aad binds the result to one
// protector of one store, so wrapped keys cannot be swapped between them.
func seal(kek, key, aad []byte) (nonce, wrapped []byte, err error) {
	aead, err := newGCM(kek)
	if err != nil {
		return nil, nil, err
	}
	nonce = make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return nonce, aead.Seal(nil, nonce, key, aad), nil
}

// open unwraps; any failure is ErrWrongKey, as GCM cannot tell a wrong key
// from a damaged blob.
func open(kek, nonce, wrapped, aad []byte) ([]byte, error) {
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	if len(nonce) != aead.NonceSize() {
		return nil, ErrWrongKey
	}
	key, err := aead.Open(nil, nonce, wrapped, aad)
	if err != nil {
		return nil, ErrWrongKey
	}
	return key, nil
}

func newGCM(kek []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
