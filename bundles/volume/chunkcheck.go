package volume

import (
	"context"
	"fmt"
	"io"

	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// copyChecked copies exactly f.Size bytes from r to w, checking them against
// f's signed chunk proofs, with progress and cancellation. Bytes that differ, or a
// source that ends early, are a *mismatchError; failing to write is not.
func copyChecked(ctx context.Context, w io.Writer, r io.Reader, f manifests.File, rep *progress.Reporter) error {
	c := f.StreamCheck()
	buf := make([]byte, 1<<20)
	var done int64
	for done < f.Size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), f.Size-done)])
		if n > 0 {
			c.Write(buf[:n])
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			done += int64(n)
			rep.Add(f.Path, int64(n))
		}
		if err != nil {
			return &mismatchError{fmt.Sprintf("ended after %d of %d bytes: %v", done, f.Size, err)}
		}
	}
	if err := c.Err(); err != nil {
		return &mismatchError{err.Error()}
	}
	return nil
}

type mismatchError struct{ msg string }

func (e *mismatchError) Error() string { return e.msg }
