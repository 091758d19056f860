package manifests

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Key file formats, one key per line, '#' starts a comment line:
//
//	qwen-appliance-public-key ed25519 KEYID BASE64(32-byte public key) [comment]
//	qwen-appliance-private-key ed25519 KEYID BASE64(32-byte seed)
//
// KEYID is the first 16 hex digits of SHA-256 over the public key; it is
// checked against the key when a file is read, so a damaged key file is
// caught.
const (
	publicKeyTag  = "qwen-appliance-public-key"
	privateKeyTag = "qwen-appliance-private-key"
	keyAlgorithm  = "ed25519"
)

// PublicKey is a trusted ed25519 key with its ID.
type PublicKey struct {
	ID      string
	Key     ed25519.PublicKey
	Comment string
}

// PrivateKey is an ed25519 signing key with its ID.
type PrivateKey struct {
	ID  string
	Key ed25519.PrivateKey
}

// Public returns the public half of k.
func (k PrivateKey) Public() PublicKey {
	pub := k.Key.Public().(ed25519.PublicKey)
	return PublicKey{ID: keyID(pub), Key: pub}
}

func keyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// GenerateKey makes a new signing key from r (crypto/rand when nil).
func GenerateKey(r io.Reader) (PrivateKey, error) {
	if r == nil {
		r = rand.Reader
	}
	_, priv, err := ed25519.GenerateKey(r)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("generate key: %w", err)
	}
	return PrivateKey{ID: keyID(priv.Public().(ed25519.PublicKey)), Key: priv}, nil
}

// MarshalText encodes the public key in its file format.
func (k PublicKey) MarshalText() []byte {
	line := fmt.Sprintf("%s %s %s %s", publicKeyTag, keyAlgorithm, k.ID, base64.StdEncoding.EncodeToString(k.Key))
	if c := strings.TrimSpace(k.Comment); c != "" {
		line += " " + strings.Join(strings.Fields(c), " ")
	}
	return []byte(line + "\n")
}

// MarshalText encodes the private key in its file format.
func (k PrivateKey) MarshalText() []byte {
	return []byte(fmt.Sprintf("%s %s %s %s\n", privateKeyTag, keyAlgorithm, k.ID, base64.StdEncoding.EncodeToString(k.Key.Seed())))
}

// WriteKeyPair writes NAME.key (mode 0600) and NAME.pub (mode 0644). It
// refuses to overwrite either file and leaves neither behind on failure.
func WriteKeyPair(name string, k PrivateKey, comment string) (err error) {
	priv, pubPath := name+".key", name+".pub"
	for _, p := range []string{priv, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("write key pair: %s already exists; refusing to overwrite", p)
		}
	}
	if err := writeNew(priv, k.MarshalText(), 0o600); err != nil {
		return fmt.Errorf("write key pair: %w", err)
	}
	pub := k.Public()
	pub.Comment = comment
	if err := writeNew(pubPath, pub.MarshalText(), 0o644); err != nil {
		return errors.Join(fmt.Errorf("write key pair: %w", err), os.Remove(priv))
	}
	return nil
}

// writeNew creates path exclusively with mode perm, writes data and syncs it.
func writeNew(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, f.Close())
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := f.Chmod(perm); err != nil { // umask may have narrowed it
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

// ParsePublicKeys reads one or more public keys from key-file text.
func ParsePublicKeys(data []byte) ([]PublicKey, error) {
	var keys []PublicKey
	err := eachKeyLine(data, publicKeyTag, func(id string, raw []byte, comment string) error {
		if len(raw) != ed25519.PublicKeySize {
			return fmt.Errorf("public key is %d bytes, want %d", len(raw), ed25519.PublicKeySize)
		}
		pub := ed25519.PublicKey(raw)
		if keyID(pub) != id {
			return fmt.Errorf("key ID %s does not match the key (damaged file?)", id)
		}
		keys = append(keys, PublicKey{ID: id, Key: pub, Comment: comment})
		return nil
	})
	if err == nil && len(keys) == 0 {
		err = errors.New("no public key found")
	}
	return keys, err
}

// ParsePrivateKey reads a private key from key-file text.
func ParsePrivateKey(data []byte) (PrivateKey, error) {
	var keys []PrivateKey
	err := eachKeyLine(data, privateKeyTag, func(id string, raw []byte, _ string) error {
		if len(raw) != ed25519.SeedSize {
			return fmt.Errorf("private key seed is %d bytes, want %d", len(raw), ed25519.SeedSize)
		}
		k := PrivateKey{ID: id, Key: ed25519.NewKeyFromSeed(raw)}
		if k.Public().ID != id {
			return fmt.Errorf("key ID %s does not match the key (damaged file?)", id)
		}
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		return PrivateKey{}, err
	}
	if len(keys) != 1 {
		return PrivateKey{}, fmt.Errorf("want exactly one private key, found %d", len(keys))
	}
	return keys[0], nil
}

func eachKeyLine(data []byte, tag string, fn func(id string, raw []byte, comment string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != tag || f[1] != keyAlgorithm {
			other := publicKeyTag
			if tag == publicKeyTag {
				other = privateKeyTag
			}
			if len(f) > 0 && f[0] == other {
				return fmt.Errorf("line %d: this is a %s, not a %s", n, strings.ReplaceAll(other, "-", " "), strings.ReplaceAll(tag, "-", " "))
			}
			return fmt.Errorf("line %d: not a %q line", n, tag+" "+keyAlgorithm+" KEYID BASE64")
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(f[3])
		if err != nil {
			return fmt.Errorf("line %d: key is not base64: %w", n, err)
		}
		if err := fn(f[2], raw, strings.Join(f[4:], " ")); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
	}
	return sc.Err()
}

// maxPublicKeyFile bounds a public-key file (a few hundred bytes a key).
const maxPublicKeyFile = 1 << 20

// LoadPublicKeys reads the public keys in each of the named files. A file
// that is not a regular file is refused (a *FileTypeError) rather than
// waited on.
func LoadPublicKeys(paths ...string) ([]PublicKey, error) {
	var all []PublicKey
	for _, p := range paths {
		// Key files may sit on the same media as the bundle: opened
		// without blocking (a FIFO is refused, not waited on) and read
		// up to a bound.
		f, err := OpenMedia(p)
		if err != nil {
			return nil, fmt.Errorf("read public key: %w", err)
		}
		data, err := readAtMost(f, p, maxPublicKeyFile)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		keys, err := ParsePublicKeys(data)
		if err != nil {
			return nil, fmt.Errorf("public key %s: %w", p, err)
		}
		all = append(all, keys...)
	}
	return all, nil
}

// LoadPrivateKey reads a private key file, refusing one that group or others
// can read.
func LoadPrivateKey(path string) (PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("read private key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return PrivateKey{}, fmt.Errorf("private key %s: mode %04o lets others read it; chmod 600 it", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("read private key: %w", err)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("private key %s: %w", path, err)
	}
	return k, nil
}
