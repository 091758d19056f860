package volume

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/reedsolomon"

	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// streamBlock is the Reed-Solomon block per shard: memory is (data+parity)
// blocks, whatever the volume size.
const streamBlock = 1 << 20

// zeros is an endless reader of zero bytes, the padding of short volumes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// padded reads a data volume and pads it with zeros to the shard size.
func padded(r io.Reader, size, shard int64) io.Reader {
	return io.MultiReader(io.LimitReader(r, size), io.LimitReader(zeros{}, shard-size))
}

// ctxReader stops a long stream when ctx ends and reports progress.
type ctxReader struct {
	ctx  context.Context
	r    io.Reader
	rep  *progress.Reporter
	name string
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.rep.Add(c.name, int64(n))
	return n, err
}

// hashWriter writes to a file and hashes what it writes.
type hashWriter struct {
	f *os.File
	h hash.Hash
	n int64
}

func (w *hashWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	return n, err
}

// encodeParity reads the data volumes once more and writes the parity
// volumes, hashing each as it is written.
func encodeParity(ctx context.Context, dir, prefix string, x *Index, parity int, created *[]string, rep *progress.Reporter) (vols []Volume, err error) {
	enc, err := reedsolomon.NewStream(x.DataVolumes, parity, reedsolomon.WithStreamBlockSize(streamBlock))
	if err != nil {
		return nil, err
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	data := make([]io.Reader, x.DataVolumes)
	const label = "parity"
	rep.Start(label, x.StreamSize, 0)
	for i := range data {
		v := x.Volumes[i]
		f, err := os.Open(filepath.Join(dir, v.Name))
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		data[i] = ctxReader{ctx, padded(f, v.Size, x.ShardSize), rep, label}
	}
	outs := make([]io.Writer, parity)
	hws := make([]*hashWriter, parity)
	for j := range outs {
		name := ParityName(prefix, j+1)
		p := filepath.Join(dir, name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, err
		}
		*created = append(*created, p)
		files = append(files, f)
		hws[j] = &hashWriter{f: f, h: sha256.New()}
		outs[j] = hws[j]
	}
	err = enc.Encode(data, outs)
	rep.Done(label, err)
	if err != nil {
		return nil, err
	}
	for j, w := range hws {
		if err := w.f.Sync(); err != nil {
			return nil, err
		}
		vols = append(vols, Volume{Number: x.DataVolumes + j + 1, Name: ParityName(prefix, j+1), Kind: KindParity,
			Size: w.n, SHA256: hex.EncodeToString(w.h.Sum(nil))})
	}
	return vols, nil
}

// rebuild recreates the volumes numbered in missing from the good ones
// (found: volume number → path) into tmp, checks each against the index, and
// returns their paths.
func rebuild(ctx context.Context, x *Index, found map[int]string, missing []int, tmp string, rep *progress.Reporter) (map[int]string, error) {
	enc, err := reedsolomon.NewStream(x.DataVolumes, x.ParityVolumes, reedsolomon.WithStreamBlockSize(streamBlock))
	if err != nil {
		return nil, err
	}
	n := x.DataVolumes + x.ParityVolumes
	valid := make([]io.Reader, n)
	fill := make([]io.Writer, n)
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	const label = "rebuild"
	rep.Start(label, int64(n-len(missing))*x.ShardSize, 0)
	for num, p := range found {
		f, err := manifests.OpenMedia(p)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		v := x.Volumes[num-1]
		valid[num-1] = ctxReader{ctx, padded(f, v.Size, x.ShardSize), rep, label}
	}
	out := map[int]string{}
	hws := map[int]*hashWriter{}
	for _, num := range missing {
		v := x.Volumes[num-1]
		p := filepath.Join(tmp, v.Name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		hw := &hashWriter{f: f, h: sha256.New()}
		hws[num] = hw
		// Data volumes are rebuilt padded; keep only their real bytes.
		fill[num-1] = &limitWriter{w: hw, n: v.Size}
		out[num] = p
	}
	err = enc.Reconstruct(valid, fill)
	rep.Done(label, err)
	if err != nil {
		return nil, err
	}
	for num, hw := range hws {
		v := x.Volumes[num-1]
		if got := hex.EncodeToString(hw.h.Sum(nil)); hw.n != v.Size || got != v.SHA256 {
			return nil, fmt.Errorf("rebuilt volume %d (%s) does not match the index; more volumes are damaged than the checks found", num, v.Name)
		}
	}
	return out, nil
}

// limitWriter passes on the first n bytes and silently drops the rest.
type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	k := min(int64(len(p)), l.n)
	if k > 0 {
		m, err := l.w.Write(p[:k])
		l.n -= int64(m)
		if err != nil {
			return m, err
		}
	}
	return len(p), nil
}
