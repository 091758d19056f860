package volume

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// Problem kinds of a volume.
const (
	ProblemMissing    = "missing"      // no file holds the volume
	ProblemCorrupt    = "corrupt"      // a file named as the volume differs from the index
	ProblemDuplicate  = "duplicate"    // a second file holds the same volume
	ProblemOutOfOrder = "out-of-order" // a file named as one volume holds another
)

// Problem is one thing wrong with the volumes on hand.
type Problem struct {
	Kind   string `json:"kind"`
	Volume int    `json:"volume"` // the volume number concerned
	File   string `json:"file,omitempty"`
	Detail string `json:"detail"`
}

func (p Problem) String() string { return p.Detail }

// Survey is what checking the volumes in a directory found.
type Survey struct {
	Found    map[int]string `json:"-"`       // volume number → a file with exactly its bytes
	Missing  []int          `json:"missing"` // volumes with no good copy
	Problems []Problem      `json:"problems"`
}

var volName = regexp.MustCompile(`\.(vol|par)(\d{4,})(\.tar)?$`)

// Check hashes every candidate file in dir (named like a volume, or of a
// volume's size) once and matches it to the index by content, so renamed or
// reordered copies are still used. It never modifies a file.
func Check(ctx context.Context, dir string, x *Index, rep *progress.Reporter) (*Survey, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("check volumes: %w", err)
	}
	bySum := map[string][]int{}
	sizes := map[int64]bool{}
	for _, v := range x.Volumes {
		bySum[v.SHA256] = append(bySum[v.SHA256], v.Number)
		sizes[v.Size] = true
	}
	prefix := Prefix(x.Name, x.Version)
	s := &Survey{Found: map[int]string{}}
	named := map[string]int{} // file name → volume number its name claims
	for _, v := range x.Volumes {
		named[v.Name] = v.Number
	}
	var total int64
	type cand struct {
		name string
		size int64
	}
	var cands []cand
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".index.json") || strings.HasSuffix(name, ".index.sig") {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			if _, ok := named[name]; ok {
				s.Problems = append(s.Problems, Problem{Kind: ProblemCorrupt, Volume: named[name], File: name, Detail: fmt.Sprintf("%s is not a regular file", name)})
			}
			continue
		}
		_, isNamed := named[name]
		if !isNamed && !sizes[info.Size()] && !(strings.HasPrefix(name, prefix) && volName.MatchString(name)) {
			continue // unrelated file
		}
		cands = append(cands, cand{name, info.Size()})
		total += info.Size()
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].name < cands[j].name })
	rep.SetTotal(total)
	// Volumes are hashed in parallel, one per core.
	sums := make([]string, len(cands))
	errs := make([]error, len(cands))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, c := range cands {
		if !sizes[c.size] {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			sums[i], errs[i] = hashFile(ctx, filepath.Join(dir, c.name), rep)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("check volumes: %w", err)
	}
	// Files under their own names first, so that volumes with equal bytes
	// (one data volume and its parity, or two volumes of zeros) each keep
	// their own file; then content decides for the rest.
	used := make([]bool, len(cands))
	for i, c := range cands {
		if n, ok := named[c.name]; ok && sums[i] == x.Volumes[n-1].SHA256 && s.Found[n] == "" {
			s.Found[n] = filepath.Join(dir, c.name)
			used[i] = true
		}
	}
	for i, c := range cands {
		if used[i] {
			continue
		}
		claimed, isNamed := named[c.name]
		nums := bySum[sums[i]]
		num := 0
		for _, n := range nums {
			if s.Found[n] == "" {
				num = n
				break
			}
		}
		switch {
		case len(nums) > 0 && num == 0:
			s.Problems = append(s.Problems, Problem{Kind: ProblemDuplicate, Volume: nums[0], File: c.name,
				Detail: fmt.Sprintf("%s is a second copy of volume %d (%s); ignored", c.name, nums[0], filepath.Base(s.Found[nums[0]]))})
		case num > 0:
			s.Found[num] = filepath.Join(dir, c.name)
			how := "under another name"
			if isNamed {
				how = fmt.Sprintf("under the name of volume %d", claimed)
			}
			s.Problems = append(s.Problems, Problem{Kind: ProblemOutOfOrder, Volume: num, File: c.name,
				Detail: fmt.Sprintf("%s holds volume %d (%s) %s; used as volume %d", c.name, num, x.Volumes[num-1].Name, how, num)})
		case isNamed:
			v := x.Volumes[claimed-1]
			detail := fmt.Sprintf("%s is corrupt: its SHA-256 differs from the signed index", c.name)
			if c.size != v.Size {
				detail = fmt.Sprintf("%s is corrupt: %d bytes, the signed index says %d", c.name, c.size, v.Size)
			}
			s.Problems = append(s.Problems, Problem{Kind: ProblemCorrupt, Volume: claimed, File: c.name, Detail: detail})
		default:
			if m := volName.FindStringSubmatch(c.name); m != nil && strings.HasPrefix(c.name, prefix) {
				n, _ := strconv.Atoi(m[2])
				s.Problems = append(s.Problems, Problem{Kind: ProblemCorrupt, Volume: n, File: c.name,
					Detail: fmt.Sprintf("%s is not a volume of this bundle's index (corrupt or from another pack)", c.name)})
			}
		}
	}
	for _, v := range x.Volumes {
		if s.Found[v.Number] == "" {
			s.Missing = append(s.Missing, v.Number)
			if !hasProblem(s.Problems, v.Number, ProblemCorrupt) {
				s.Problems = append(s.Problems, Problem{Kind: ProblemMissing, Volume: v.Number, File: v.Name,
					Detail: fmt.Sprintf("volume %d (%s, %s) is missing", v.Number, v.Name, v.Kind)})
			}
		}
	}
	sort.SliceStable(s.Problems, func(i, j int) bool { return s.Problems[i].Volume < s.Problems[j].Volume })
	return s, nil
}

func hasProblem(ps []Problem, vol int, kind string) bool {
	for _, p := range ps {
		if p.Volume == vol && p.Kind == kind {
			return true
		}
	}
	return false
}

func hashFile(ctx context.Context, p string, rep *progress.Reporter) (string, error) {
	f, err := manifests.OpenMedia(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	name := filepath.Base(p)
	rep.Start(name, -1, 0)
	_, err = io.CopyBuffer(h, ctxReader{ctx, f, rep, name}, make([]byte, 1<<20))
	rep.Done(name, err)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// VolumesError says the volumes cannot be used as they are: it lists every
// problem and whether parity can rebuild them. It matches
// manifests.ErrVerification.
type VolumesError struct {
	Problems    []Problem
	Missing     int
	Parity      int
	Rebuildable bool
}

func (e *VolumesError) Error() string {
	var b strings.Builder
	if e.Rebuildable {
		fmt.Fprintf(&b, "%d volume(s) unusable; the %d parity volume(s) can rebuild them ('bundle unpack' does)", e.Missing, e.Parity)
	} else {
		fmt.Fprintf(&b, "%d volume(s) unusable and only %d parity volume(s) to rebuild them", e.Missing, e.Parity)
	}
	for _, p := range e.Problems {
		b.WriteString("; ")
		b.WriteString(p.Detail)
	}
	return b.String()
}

// Is makes a VolumesError match manifests.ErrVerification.
func (e *VolumesError) Is(target error) bool { return target == manifests.ErrVerification }
