package backup

import (
	"bytes"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// auditStream checks the audit log's chain while the archive is being
// decrypted and written out, instead of reading the files again after:
// verify's time is then the slower of the two, not their sum. The manifest
// that says which members are the audit log comes last, so the members fed
// here are the ones whose names look like an audit log; checkAudit uses the
// result only if they turn out to be exactly the manifest's audit members,
// in order, checked against the audit.pub the archive holds, and otherwise
// reads the files again.
type auditStream struct {
	dir    string
	names  []string // members fed, in order
	pub    []byte   // the audit.pub the check trusted (nil: none in the archive yet)
	pubErr error    // audit.pub did not parse: the stream is not used
	v      *audit.Verifier
	files  chan *chunkReader
	done   chan error // the first File error, once files is closed
	closed bool
}

// isAuditName reports whether a member is named like the gateway's audit
// log or one of its rotated files.
func isAuditName(name string) bool {
	b := path.Base(name)
	return strings.HasPrefix(name, "root/") && (b == "audit.log" || strings.HasPrefix(b, "audit.log."))
}

// file returns the writer for the next audit member, starting the checking
// goroutine with the first.
func (s *auditStream) file(name string) *chunkReader {
	if s.v == nil {
		o := audit.VerifyOptions{Live: true}
		if data, err := os.ReadFile(filepath.Join(s.dir, filepath.FromSlash(auditPubMember))); err == nil {
			s.pub = data
			o.Trusted, s.pubErr = manifests.ParsePublicKeys(data)
		}
		s.v = audit.NewVerifier(o)
		s.files = make(chan *chunkReader, 1)
		s.done = make(chan error, 1)
		go func() {
			var err error
			for f := range s.files {
				if err == nil {
					err = s.v.File(filepath.Join(s.dir, filepath.FromSlash(f.name)), f)
				}
				f.drain() // a failed check still lets the extraction go on
			}
			s.done <- err
		}()
	}
	s.names = append(s.names, name)
	f := &chunkReader{name: name, c: make(chan *chunk, chunkCount/2)}
	s.files <- f
	return f
}

// stop ends the checking goroutine and returns the first error of a File.
func (s *auditStream) stop() error {
	if s == nil || s.v == nil || s.closed {
		return nil
	}
	s.closed = true
	close(s.files)
	return <-s.done
}

// result returns the stream's report for the members m lists as the audit
// log, or ok false when the stream did not check exactly those (with the
// audit.pub now in dir).
func (s *auditStream) result(dir string, m *Manifest, paths []string) (rep *audit.Report, ok bool, err error) {
	if s == nil || s.v == nil || s.pubErr != nil {
		return nil, false, nil
	}
	ferr := s.stop()
	var want []string
	for _, mb := range m.Members {
		if mb.Kind == KindAudit {
			want = append(want, mb.Name)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, filepath.FromSlash(auditPubMember)))
	if !slices.Equal(want, s.names) || !bytes.Equal(pub, s.pub) || len(paths) != len(want) {
		return nil, false, nil
	}
	if ferr != nil {
		return nil, true, ferr
	}
	rep, err = s.v.End()
	return rep, true, err
}

// chunkReader hands one member's bytes from the extracting goroutine to
// the checking one, a few chunks ahead.
type chunkReader struct {
	name string
	c    chan *chunk
	cur  *chunk
	off  int
	eof  bool
}

// send queues c, which the reader releases once read.
func (r *chunkReader) send(c *chunk) { r.c <- c }

// end marks the member's end.
func (r *chunkReader) end() { close(r.c) }

func (r *chunkReader) Read(p []byte) (int, error) {
	for r.cur == nil || r.off == len(r.cur.b) {
		if r.cur != nil {
			r.cur.release()
			r.cur = nil
		}
		if r.eof {
			return 0, io.EOF
		}
		c, ok := <-r.c
		if !ok {
			r.eof = true
			return 0, io.EOF
		}
		r.cur, r.off = c, 0
	}
	n := copy(p, r.cur.b[r.off:])
	r.off += n
	return n, nil
}

// drain releases what is left of the member unread.
func (r *chunkReader) drain() {
	if r.cur != nil {
		r.cur.release()
		r.cur = nil
	}
	for c := range r.c {
		c.release()
	}
}
