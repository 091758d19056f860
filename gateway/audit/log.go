package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/internal/flock"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// Options configure a Log.
type Options struct {
	Path string
	// Key signs checkpoints; nil leaves the log chained but unsigned, so
	// that truncation at its end cannot be detected.
	Key *manifests.PrivateKey
	// CheckpointEvery and CheckpointLines bound how much of the chain is
	// unsigned at any time (defaults 30s and 1000 lines).
	CheckpointEvery time.Duration
	CheckpointLines int
	// SyncEvery is the group commit window: a batch waits until this long
	// after the previous fsync began, collecting the lines that arrive
	// meanwhile, so a busy gateway fsyncs at most this often and a quiet
	// one at once (default 5ms; Flush never waits).
	SyncEvery time.Duration
	// MaxBytes rotates the file when it grows past this size (0: never).
	MaxBytes int64
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Log appends records from one goroutine, fsyncing each batch. Appends never
// block on the disk unless its queue is full; they are never dropped.
//
// Other processes may append to the same file meanwhile (a "kb ingest" while
// the gateway serves): each batch holds the file's lock and continues the
// chain from the file's last line, so there is one chain however many write.
type Log struct {
	o      Options
	f      *os.File
	w      *bufio.Writer // batches a burst of lines into one write
	size   int64         // of the file as this Log last left it (-1: not read yet)
	seq    int64         // of the last line written
	prev   string
	unsign int       // lines since the last checkpoint
	line   []byte    // reused by write
	synced time.Time // when the last fsync began

	ch      chan item
	done    chan struct{}
	chMu    sync.RWMutex // Close takes it to close ch; senders hold it shared
	closed  bool
	closing bool // loop: batch saw ch closed

	mu  sync.Mutex
	err error
}

type item struct {
	rec   *Record
	flush chan error
}

// Open opens (or creates) the log at o.Path, continuing the chain of what is
// there, and writes a start record. It refuses a file whose last line is
// incomplete or not valid: run "audit verify" on it and move it aside.
func Open(o Options) (*Log, error) {
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = 30 * time.Second
	}
	if o.CheckpointLines <= 0 {
		o.CheckpointLines = 1000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SyncEvery <= 0 {
		o.SyncEvery = 5 * time.Millisecond
	}
	l := &Log{o: o, seq: -1, size: -1, ch: make(chan item, 4096), done: make(chan struct{})}
	if err := l.openFile(); err != nil {
		return nil, err
	}
	if err := l.lock(); err != nil {
		l.f.Close()
		return nil, err
	}
	start := &Record{Kind: KindStart}
	l.describeKey(start)
	err := l.write(start)
	// Anchor the chain at once: until the first checkpoint nothing would be
	// covered by the key, and a verifier could not tell a fresh log from a
	// truncated one.
	if err == nil && l.o.Key != nil {
		err = l.checkpoint(KindCheckpoint)
	}
	if err == nil {
		err = l.sync()
	}
	if err = errors.Join(err, l.unlock()); err != nil {
		l.f.Close()
		return nil, fmt.Errorf("audit log %s: %w", o.Path, err)
	}
	go l.loop()
	return l, nil
}

func (l *Log) describeKey(r *Record) {
	if l.o.Key != nil {
		r.KeyID = l.o.Key.ID
		r.PublicKey = string(bytes.TrimSpace(l.o.Key.Public().MarshalText()))
	}
}

// openFile opens o.Path for appending, creating it when missing.
func (l *Log) openFile() error {
	if err := finishRotation(l.o.Path); err != nil {
		return err
	}
	f, err := os.OpenFile(l.o.Path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	l.f = f
	if l.w == nil {
		l.w = bufio.NewWriterSize(f, 256<<10)
	} else {
		l.w.Reset(f)
	}
	return nil
}

// lock takes the file's lock for one batch and continues the chain from the
// file's last line, which another process may have written since this Log's
// last batch. A file rotated meanwhile is followed to the one now at the
// path. The batch ends with unlock.
func (l *Log) lock() error {
	for {
		if err := flock.Lock(l.f); err != nil {
			return fmt.Errorf("lock audit log %s: %w", l.o.Path, err)
		}
		held, err := l.f.Stat()
		if err != nil {
			return errors.Join(err, l.unlock())
		}
		now, err := os.Stat(l.o.Path)
		if err == nil && os.SameFile(held, now) {
			if err := l.refresh(held.Size()); err != nil {
				return errors.Join(err, l.unlock())
			}
			return nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return errors.Join(err, l.unlock())
		}
		// Rotated by another writer (or removed): closing drops the lock.
		l.f.Close()
		if err := l.openFile(); err != nil {
			return err
		}
	}
}

// unlock ends a batch that lock began.
func (l *Log) unlock() error {
	if err := flock.Unlock(l.f); err != nil {
		return fmt.Errorf("unlock audit log %s: %w", l.o.Path, err)
	}
	return nil
}

// refresh recovers seq and prev from the file's last line when the file is
// not as this Log left it.
func (l *Log) refresh(size int64) error {
	if size == l.size {
		return nil
	}
	if size == 0 && l.seq >= 0 {
		return fmt.Errorf("audit log %s was removed or emptied while in use (this writer's last seq was %d)", l.o.Path, l.seq)
	}
	cut, last, err := CompletePrefix(l.f)
	var torn *Torn
	if err == nil && cut < size {
		if torn, err = l.moveTornTail(cut, size); err == nil {
			size = cut
		}
	}
	if err != nil {
		return fmt.Errorf("audit log %s: %w; check it with 'qwen-appliance audit verify' and move it aside", l.o.Path, err)
	}
	if size == 0 && l.seq >= 0 {
		return fmt.Errorf("audit log %s was emptied while in use (this writer's last seq was %d)", l.o.Path, l.seq)
	}
	l.size = size
	if last != nil {
		var r Record
		if err := json.Unmarshal(last, &r); err != nil {
			return fmt.Errorf("audit log %s: last line is not a record: %v; move it aside", l.o.Path, err)
		}
		l.seq, l.prev = r.Seq, lineHash(last)
	}
	if torn != nil {
		return l.write(&Record{Kind: KindRepair, Torn: torn})
	}
	return nil
}

// moveTornTail moves the bytes of the file from cut (just after its last
// newline) to size to a file of their own beside the log
// (PATH.torn-STAMP), synced, and cuts the log back to its last complete
// line. Every writer writes only while it holds the file's lock, which its
// death releases, and this runs under that lock: the bytes are what a
// writer killed in the middle of a write (or a power loss) left, never a
// line still being written, and never a line that counted, since a line
// ends with its newline. Serving resumes instead of failing until someone
// moves the file aside, and nothing is lost: the record that follows names
// the file and its hash. (CompletePrefix has refused a tail longer than a
// line can be.)
func (l *Log) moveTornTail(cut, size int64) (*Torn, error) {
	tail := make([]byte, size-cut)
	if _, err := l.f.ReadAt(tail, cut); err != nil && err != io.EOF {
		return nil, err
	}
	name := l.o.Path + ".torn-" + l.o.Now().UTC().Format(rotatedStamp)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("move the incomplete last line aside: %w", err)
	}
	_, err = f.Write(tail)
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		os.Remove(name)
		return nil, fmt.Errorf("move the incomplete last line aside: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(name)); err != nil {
		return nil, err
	}
	if err := errors.Join(l.f.Truncate(cut), l.f.Sync()); err != nil {
		return nil, fmt.Errorf("cut the incomplete last line: %w", err)
	}
	sum := sha256.Sum256(tail)
	return &Torn{File: filepath.Base(name), Bytes: int64(len(tail)), SHA256: hex.EncodeToString(sum[:])}, nil
}

// errTorn is CompletePrefix's error for a file ending in more than a line
// can be without a newline.
var errTorn = errors.New("ends with an incomplete line (crash during a write, or truncated)")

// CompletePrefix returns how many bytes of f end with its last newline
// (what of a log file counts: a writer, or a crash, may have left part of
// a line after it) and the last complete line, without its newline (nil
// when there is none). It reads f from its end, a chunk at a time, and
// refuses a tail or a last line longer than a line can be.
func CompletePrefix(f *os.File) (int64, []byte, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, nil, err
	}
	end := st.Size()
	const chunk = 64 << 10
	var buf []byte // f from off to end
	prefix := int64(-1)
	for off := end; off > 0; {
		n := min(int64(chunk), off)
		off -= n
		b := make([]byte, n)
		if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
			return 0, nil, err
		}
		buf = append(b, buf...)
		if prefix < 0 {
			i := bytes.LastIndexByte(buf, '\n')
			if i < 0 {
				if int64(len(buf)) > maxLine {
					return 0, nil, fmt.Errorf("%w, and its last %d bytes hold no newline: more than a line can be", errTorn, len(buf))
				}
				continue
			}
			prefix = off + int64(i) + 1
			if end-prefix > maxLine {
				return 0, nil, fmt.Errorf("%w, and its last %d bytes hold no newline: more than a line can be", errTorn, end-prefix)
			}
			buf = buf[:i] // the last complete line, and what is before it
		}
		if j := bytes.LastIndexByte(buf, '\n'); j >= 0 {
			return prefix, buf[j+1:], nil
		}
		if int64(len(buf)) > maxLine {
			return 0, nil, fmt.Errorf("the last line is longer than 16 MiB")
		}
	}
	if prefix < 0 {
		return 0, nil, nil
	}
	return prefix, buf, nil
}

// Append queues r; the log fills in Seq, Time (when zero), Kind and Prev.
func (l *Log) Append(r Record) {
	if r.Kind == "" {
		r.Kind = KindRequest
	}
	l.send(item{rec: &r})
}

// send queues it unless the log is closed (a record that arrives after
// Close is dropped, and counted as an error).
func (l *Log) send(it item) bool {
	l.chMu.RLock()
	defer l.chMu.RUnlock()
	if l.closed {
		l.setErr(errors.New("audit record after the log was closed"))
		return false
	}
	l.ch <- it
	return true
}

// Flush waits until everything appended so far is on disk.
func (l *Log) Flush() error {
	c := make(chan error, 1)
	if !l.send(item{flush: c}) {
		return l.Err()
	}
	return <-c
}

// Err reports the first write error; the gateway refuses requests once the
// log cannot be written, rather than serve them unaudited.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Close writes a signed stop record and closes the file. Records appended
// after Close are dropped and make Err non-nil.
func (l *Log) Close() error {
	l.chMu.Lock()
	if !l.closed {
		l.closed = true
		close(l.ch)
	}
	l.chMu.Unlock()
	<-l.done
	return l.Err()
}

func (l *Log) setErr(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
}

func (l *Log) loop() {
	defer close(l.done)
	tick := time.NewTicker(l.o.CheckpointEvery)
	defer tick.Stop()
	for {
		select {
		case it, ok := <-l.ch:
			if !ok {
				l.setErr(l.finish())
				return
			}
			if l.batch(it); l.closing {
				l.setErr(l.finish())
				return
			}
		case <-tick.C:
			if l.unsign > 0 && l.o.Key != nil {
				if err := l.lock(); err != nil {
					l.setErr(err)
					continue
				}
				l.setErr(l.checkpoint(KindCheckpoint))
				l.setErr(l.sync())
				l.setErr(l.unlock())
			}
		}
	}
}

// batch writes it and whatever else is queued, then fsyncs once: under load
// one fsync covers many requests. Lines that arrive within SyncEvery of the
// previous fsync wait for the rest of that window (group commit), unless
// someone is waiting in Flush.
func (l *Log) batch(it item) {
	var waiters []chan error
	if err := l.lock(); err != nil {
		// Nothing can be written: Err turns the gateway away from serving.
		l.setErr(err)
		if it.flush != nil {
			it.flush <- l.Err()
		}
		return
	}
	take := func(it item) {
		if it.rec != nil {
			l.setErr(l.write(it.rec))
		}
		if it.flush != nil {
			waiters = append(waiters, it.flush)
		}
		if l.unsign >= l.o.CheckpointLines && l.o.Key != nil {
			l.setErr(l.checkpoint(KindCheckpoint))
		}
	}
	// next takes one more queued item, waiting for one until wait fires (a
	// nil wait: not at all); false when there was none or the queue is
	// closed.
	next := func(wait <-chan time.Time) bool {
		var it item
		ok := false
		if wait == nil {
			select {
			case it, ok = <-l.ch:
			default:
				return false
			}
		} else {
			select {
			case it, ok = <-l.ch:
			case <-wait:
				return false
			}
		}
		if !ok {
			l.closing = true
			return false
		}
		take(it)
		return true
	}
	take(it)
	for next(nil) {
	}
	if wait := l.o.SyncEvery - time.Since(l.synced); wait > 0 && len(waiters) == 0 && !l.closing {
		t := time.NewTimer(wait)
		for len(waiters) == 0 && next(t.C) {
		}
		t.Stop()
		for next(nil) {
		}
	}
	l.synced = time.Now()
	l.setErr(l.sync())
	l.setErr(l.maybeRotate())
	l.setErr(l.unlock())
	err := l.Err()
	for _, c := range waiters {
		c <- err
	}
}

func (l *Log) finish() error {
	if err := l.lock(); err != nil {
		return errors.Join(err, l.f.Close())
	}
	err := l.checkpoint(KindStop)
	return errors.Join(err, l.sync(), l.f.Close())
}

// write appends one record as one line.
func (l *Log) write(r *Record) error {
	r.Seq = l.seq + 1
	r.Prev = l.prev
	if r.Time.IsZero() {
		r.Time = l.o.Now()
	}
	r.Time = r.Time.UTC()
	r.validUTF8()
	line, ok := appendRequest(l.line[:0], r)
	if !ok {
		var err error
		if line, err = json.Marshal(r); err != nil {
			return fmt.Errorf("audit record: %w", err)
		}
	}
	line = append(line, '\n')
	if ok {
		l.line = line
	}
	if _, err := l.w.Write(line); err != nil {
		return fmt.Errorf("write audit log %s: %w", l.o.Path, err)
	}
	line = line[:len(line)-1]
	l.seq, l.prev = r.Seq, lineHash(line)
	l.size += int64(len(line)) + 1
	l.unsign++
	return nil
}

// checkpoint writes a checkpoint (or stop) record, signed when there is a key.
func (l *Log) checkpoint(kind string) error {
	r := &Record{Kind: kind, Seq: l.seq + 1, Prev: l.prev, Time: l.o.Now().UTC()}
	if l.o.Key != nil {
		sig := manifests.Sign(*l.o.Key, Purpose, signedText(r))
		r.Signature = &sig
	}
	if err := l.write(r); err != nil {
		return err
	}
	l.unsign = 0
	return nil
}

// maybeRotate moves a full file aside and starts a new one whose first line
// links to the old file's last line. It runs inside a batch: the old file's
// lock is held until the new file, with its rotate record, is at the path,
// so a writer waiting for the old lock finds the new file complete.
func (l *Log) maybeRotate() error {
	if l.o.MaxBytes <= 0 || l.size < l.o.MaxBytes {
		return nil
	}
	if err := l.checkpoint(KindCheckpoint); err != nil {
		return err
	}
	if err := l.sync(); err != nil {
		return fmt.Errorf("rotate audit log: %w", err)
	}
	old := l.o.Path + "." + l.o.Now().UTC().Format(rotatedStamp)
	next := l.o.Path + ".next"
	os.Remove(next) // left by a crash between the renames below
	f, err := os.OpenFile(next, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("rotate audit log: %w", err)
	}
	if err := flock.TryLock(f); err != nil {
		f.Close()
		return fmt.Errorf("rotate audit log: %w", err)
	}
	prev := l.f
	l.f, l.size = f, 0
	l.w.Reset(f)
	r := &Record{Kind: KindRotate, Previous: filepath.Base(old)}
	l.describeKey(r)
	err = l.write(r)
	if err == nil {
		err = l.sync()
	}
	if err == nil {
		err = os.Rename(l.o.Path, old)
	}
	if err == nil {
		err = os.Rename(next, l.o.Path)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("rotate audit log: %w", err), prev.Close())
	}
	return prev.Close()
}

// rotatedStamp ends a rotated file's name: PATH.STAMP, in UTC, so that
// names sort oldest first.
const rotatedStamp = "20060102T150405.000000000Z"

// Files lists the files of the log at path, oldest first: its rotated files
// (PATH.STAMP) and then path itself. Other names beside it are not the log's:
// PATH.next, a rotation's new file until it is renamed to path, and whatever
// an operator left there.
func Files(path string) ([]string, error) {
	names, err := filepath.Glob(path + ".*")
	if err != nil {
		return nil, err
	}
	var files []string
	for _, n := range names {
		if _, err := time.Parse(rotatedStamp, strings.TrimPrefix(n, path+".")); err == nil {
			files = append(files, n)
		}
	}
	sort.Strings(files)
	return append(files, path), nil
}

// finishRotation completes a rotation that stopped between its two renames
// because its process died: the old file already has its time-stamped name,
// and the new one, whose first line links to it, is still at PATH.next with
// nothing at PATH. Opening PATH then would start a second chain at seq 0,
// which verify rightly reports as a break. A rotation still under way holds
// PATH.next's lock until both renames are done; then this waits for it.
func finishRotation(path string) error {
	next := path + ".next"
	for wait := 0; ; wait++ {
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			return nil
		}
		f, err := os.OpenFile(next, os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			return nil // a new log
		}
		if err != nil {
			return fmt.Errorf("audit log %s: finish an interrupted rotation: %w", path, err)
		}
		if err := flock.TryLock(f); err != nil {
			f.Close()
			if wait == 400 {
				return fmt.Errorf("audit log %s: %s stays locked by a rotation for 2s", path, next)
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		// Ours now; check again, since another process may have finished it.
		if _, err = os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			err = os.Rename(next, path)
		} else {
			err = nil
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("audit log %s: finish an interrupted rotation: %w", path, err)
		}
		return nil
	}
}

// sync writes out buffered lines and fsyncs the file.
func (l *Log) sync() error {
	if err := l.w.Flush(); err != nil {
		return fmt.Errorf("write audit log %s: %w", l.o.Path, err)
	}
	return l.f.Sync()
}
