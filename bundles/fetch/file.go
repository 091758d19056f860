package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
)

// FilePath returns the local path of a file:// URL.
func FilePath(u string) (string, error) {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "file" || (p.Host != "" && p.Host != "localhost") || p.Path == "" {
		return "", fmt.Errorf("%q: want file:///absolute/path", u)
	}
	return p.Path, nil
}

// copyFile copies a local file into part, hashing it as it goes.
func (c *Client) copyFile(ctx context.Context, w Want, part string) (d Digest, err error) {
	src, err := FilePath(w.URL)
	if err != nil {
		return Digest{}, fmt.Errorf("fetch %s: %w", w.Name, err)
	}
	in, err := os.Open(src)
	if err != nil {
		return Digest{}, fmt.Errorf("fetch %s: %w", w.Name, err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return Digest{}, fmt.Errorf("fetch %s: %w", w.Name, err)
	}
	if !st.Mode().IsRegular() {
		return Digest{}, fmt.Errorf("fetch %s: %s is not a regular file", w.Name, src)
	}
	out, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return Digest{}, fmt.Errorf("fetch %s: %w", w.Name, err)
	}
	h := newHasher(c.chunkSize(), gitSizeOf(w))
	c.Progress.Start(w.Name, st.Size(), 0)
	for {
		if err = ctx.Err(); err != nil {
			break
		}
		b := h.get()
		n, rerr := io.ReadFull(in, b.buf)
		if n > 0 {
			if _, err = out.Write(b.buf[:n]); err != nil {
				h.abandon(b)
				break
			}
			b.n = n
			h.submit(b)
			c.Progress.Add(w.Name, int64(n))
		} else {
			h.abandon(b)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	if err == nil {
		err = out.Sync()
	}
	err = errors.Join(err, out.Close())
	d = h.finish()
	if err == nil {
		err = check(w, d)
	}
	c.Progress.Done(w.Name, err)
	var me *MismatchError
	if errors.As(err, &me) {
		os.Remove(part)
		return Digest{}, me
	}
	if err != nil {
		return Digest{}, fmt.Errorf("fetch %s: %w", w.Name, err)
	}
	return d, nil
}

// HashReader hashes everything r yields the same way a download is hashed.
// Generated files and files fetched by go-getter use it.
func HashReader(ctx context.Context, r io.Reader, chunkSize int64) (Digest, error) {
	if chunkSize <= 0 {
		chunkSize = DefaultChunkSize
	}
	h := newHasher(chunkSize, -1)
	for {
		if err := ctx.Err(); err != nil {
			h.finish()
			return Digest{}, err
		}
		b := h.get()
		n, err := io.ReadFull(r, b.buf)
		b.n = n
		h.submit(b)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return h.finish(), nil
		}
		if err != nil {
			h.finish()
			return Digest{}, err
		}
	}
}
