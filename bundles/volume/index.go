package volume

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// PurposeIndex is the signature purpose of a volume index, distinct from a
// manifest's so neither signature can stand in for the other.
const PurposeIndex = "volume-index"

// IndexSchema is the index format this package writes and reads.
const IndexSchema = 1

// Volume kinds.
const (
	KindData   = "data"
	KindParity = "parity"
)

const (
	maxIndexBytes = 64 << 20
	maxVolumes    = 256 // Reed-Solomon over GF(2^8): data + parity ≤ 256
)

// Index describes a packed bundle; its signature is checked before anything
// in it is believed.
type Index struct {
	SchemaVersion  int       `json:"schemaVersion"`
	Name           string    `json:"name"`
	Version        uint64    `json:"version"`
	Created        time.Time `json:"created"`
	ManifestSHA256 string    `json:"manifestSha256"` // of the bundle's manifest.json
	StreamSize     int64     `json:"streamSize"`     // bytes of the tar stream, all data volumes together
	VolumeSize     int64     `json:"volumeSize"`     // size of every data volume but the last
	ShardSize      int64     `json:"shardSize"`      // parity shard size (data volumes padded with zeros to it); 0 without parity
	DataVolumes    int       `json:"dataVolumes"`
	ParityVolumes  int       `json:"parityVolumes"`
	Volumes        []Volume  `json:"volumes"`
	Entries        []Entry   `json:"entries"` // archive entries in stream order
}

// Volume is one file of a packed bundle.
type Volume struct {
	Number int    `json:"number"` // 1-based, data volumes first, then parity
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Entry is one file inside the tar stream.
type Entry struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	Mode string `json:"mode"`
}

var (
	hexRE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)
	modeRE = regexp.MustCompile(`^0[0-7]{3}$`)
)

// Prefix is the file-name prefix of a bundle's volumes and index.
func Prefix(name string, version uint64) string { return fmt.Sprintf("%s-v%d", name, version) }

// DataName and ParityName name volume files.
func DataName(prefix string, n int) string   { return fmt.Sprintf("%s.vol%04d.tar", prefix, n) }
func ParityName(prefix string, n int) string { return fmt.Sprintf("%s.par%04d", prefix, n) }

// IndexName and IndexSigName name the index and its signature.
func IndexName(prefix string) string    { return prefix + ".index.json" }
func IndexSigName(prefix string) string { return prefix + ".index.sig" }

// ParseIndex decodes an index strictly and checks its consistency. It does
// not check the signature; OpenIndex does.
func ParseIndex(data []byte) (*Index, error) {
	var x Index
	if err := jsonstrict.Decode(data, &x); err != nil {
		return nil, fmt.Errorf("parse index: %w", err)
	}
	if err := x.validate(); err != nil {
		return nil, fmt.Errorf("parse index: %w", err)
	}
	return &x, nil
}

func (x *Index) validate() error {
	if x.SchemaVersion != IndexSchema {
		return fmt.Errorf("schemaVersion %d is not supported (want %d)", x.SchemaVersion, IndexSchema)
	}
	if !nameRE.MatchString(x.Name) || x.Version == 0 {
		return fmt.Errorf("name %q / version %d invalid", x.Name, x.Version)
	}
	if !hexRE.MatchString(x.ManifestSHA256) {
		return errors.New("manifestSha256: not 64 hex digits")
	}
	if x.DataVolumes < 1 || x.ParityVolumes < 0 || x.DataVolumes+x.ParityVolumes > maxVolumes {
		return fmt.Errorf("%d data and %d parity volumes: want 1-%d in all", x.DataVolumes, x.ParityVolumes, maxVolumes)
	}
	if len(x.Volumes) != x.DataVolumes+x.ParityVolumes {
		return fmt.Errorf("volumes: %d listed, want %d", len(x.Volumes), x.DataVolumes+x.ParityVolumes)
	}
	if x.VolumeSize < 1 {
		return errors.New("volumeSize must be positive")
	}
	prefix := Prefix(x.Name, x.Version)
	var sum int64
	for i, v := range x.Volumes {
		want := DataName(prefix, i+1)
		kind := KindData
		if i >= x.DataVolumes {
			want, kind = ParityName(prefix, i+1-x.DataVolumes), KindParity
		}
		switch {
		case v.Number != i+1:
			return fmt.Errorf("volumes[%d].number: %d, want %d", i, v.Number, i+1)
		case v.Name != want || v.Kind != kind:
			return fmt.Errorf("volumes[%d]: %s %q, want %s %q", i, v.Kind, v.Name, kind, want)
		case !hexRE.MatchString(v.SHA256):
			return fmt.Errorf("volumes[%d].sha256: not 64 hex digits", i)
		case v.Size < 1:
			return fmt.Errorf("volumes[%d].size: %d", i, v.Size)
		}
		if kind == KindData {
			last := i == x.DataVolumes-1
			if (!last && v.Size != x.VolumeSize) || (last && v.Size > x.VolumeSize) {
				return fmt.Errorf("volumes[%d].size: %d does not fit volumeSize %d", i, v.Size, x.VolumeSize)
			}
			sum += v.Size
		} else if v.Size != x.ShardSize {
			return fmt.Errorf("volumes[%d].size: %d, parity volumes are %d bytes", i, v.Size, x.ShardSize)
		}
	}
	if sum != x.StreamSize {
		return fmt.Errorf("streamSize %d is not the sum of the data volumes (%d)", x.StreamSize, sum)
	}
	if x.ParityVolumes > 0 && x.ShardSize != x.Volumes[0].Size {
		return fmt.Errorf("shardSize %d, want the first volume's size %d", x.ShardSize, x.Volumes[0].Size)
	}
	if x.ParityVolumes == 0 && x.ShardSize != 0 {
		return errors.New("shardSize without parity volumes")
	}
	if len(x.Entries) < 2 || x.Entries[0].Path != manifests.ManifestFile || x.Entries[1].Path != manifests.SignatureFile {
		return fmt.Errorf("entries: must start with %s and %s", manifests.ManifestFile, manifests.SignatureFile)
	}
	seen := map[string]bool{}
	var content int64
	for i, e := range x.Entries {
		if err := manifests.ValidatePath(e.Path); err != nil {
			return fmt.Errorf("entries[%d].path %q: %v", i, e.Path, err)
		}
		if seen[e.Path] {
			return fmt.Errorf("entries[%d].path %q listed twice", i, e.Path)
		}
		seen[e.Path] = true
		if e.Size < 0 || !modeRE.MatchString(e.Mode) {
			return fmt.Errorf("entries[%d]: size %d, mode %q", i, e.Size, e.Mode)
		}
		content += e.Size
		if content > x.StreamSize {
			return fmt.Errorf("entries: %d bytes of content do not fit a %d-byte stream", content, x.StreamSize)
		}
	}
	return nil
}

// ContentSize is the sum of the entries' sizes: what unpacking writes.
func (x *Index) ContentSize() int64 {
	var n int64
	for _, e := range x.Entries {
		n += e.Size
	}
	return n
}

// FindIndex returns the path of the one index file in dir.
func FindIndex(dir string) (string, error) {
	m, err := filepath.Glob(filepath.Join(dir, "*.index.json"))
	if err != nil {
		return "", err
	}
	sort.Strings(m)
	switch len(m) {
	case 0:
		return "", fmt.Errorf("%s: no *.index.json volume index; copy it from the first medium", dir)
	case 1:
		return m[0], nil
	}
	return "", fmt.Errorf("%s: several volume indexes (%s); keep one bundle per directory", dir, strings.Join(m, ", "))
}

// OpenIndex reads the index in dir and checks its signature by one of the
// trusted keys (purpose "volume-index"). With no trusted keys the index is
// returned unverified (for inspect) and verified reports false. Signature
// failures match manifests.ErrVerification.
func OpenIndex(dir string, trusted []manifests.PublicKey) (x *Index, verified bool, err error) {
	p, err := FindIndex(dir)
	if err != nil {
		return nil, false, err
	}
	data, err := readBounded(p, maxIndexBytes)
	if err != nil {
		return nil, false, err
	}
	if len(trusted) > 0 {
		sigPath := strings.TrimSuffix(p, ".json") + ".sig"
		sigData, err := readBounded(sigPath, 1<<20)
		if err != nil {
			return nil, false, fmt.Errorf("%w: volume index signature: %v", manifests.ErrUnsigned, err)
		}
		sigs, err := manifests.ParseSignatures(sigData)
		if err != nil {
			return nil, false, fmt.Errorf("%w: %s: %v", manifests.ErrUnsigned, filepath.Base(sigPath), err)
		}
		if _, err := manifests.Check(sigs, PurposeIndex, data, trusted, 1); err != nil {
			return nil, false, fmt.Errorf("volume index %s: %w", filepath.Base(p), err)
		}
		verified = true
	}
	x, err = ParseIndex(data)
	if err != nil {
		if verified {
			return nil, false, fmt.Errorf("%w: %v", manifests.ErrNotCanonical, err)
		}
		return nil, false, err
	}
	if base := filepath.Base(p); base != IndexName(Prefix(x.Name, x.Version)) {
		return nil, false, fmt.Errorf("%s names bundle %s version %d, expected file name %s", base, x.Name, x.Version, IndexName(Prefix(x.Name, x.Version)))
	}
	return x, verified, nil
}

func readBounded(p string, limit int64) ([]byte, error) {
	f, err := manifests.OpenMedia(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, limit)
	}
	return data, nil
}
