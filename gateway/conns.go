package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// connPool sends requests to the upstream over kept-alive HTTP/1.1
// connections, one request at a time per connection, on the calling
// goroutine. net/http's Transport hands every exchange to two goroutines per
// connection; on the gateway's hot path that hand-off costs more than the
// rest of the gateway's own work, and the upstream is one fixed local
// address, so none of the Transport's generality is needed.
type connPool struct {
	dial    func(ctx context.Context) (net.Conn, error)
	maxIdle int

	mu   sync.Mutex
	idle []*upConn
}

type upConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

// longAgo is a deadline in the past: setting it makes blocked reads and
// writes on a connection return at once.
var longAgo = time.Unix(1, 0)

func (p *connPool) get(ctx context.Context) (*upConn, bool, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		uc := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return uc, true, nil
	}
	p.mu.Unlock()
	c, err := p.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	return &upConn{c: c, br: bufio.NewReaderSize(c, 32<<10), bw: bufio.NewWriterSize(c, 16<<10)}, false, nil
}

func (p *connPool) put(uc *upConn) {
	p.mu.Lock()
	if len(p.idle) < p.maxIdle {
		p.idle = append(p.idle, uc)
		uc = nil
	}
	p.mu.Unlock()
	if uc != nil {
		uc.c.Close()
	}
}

// do sends the request newReq makes and reads the response headers within
// headerTimeout. The request lives in ctx: when ctx ends, reads and writes
// on the connection fail at once and the connection is dropped. A request
// that fails on a reused connection before any answer arrived (the upstream
// closed it while idle) is sent once more on a new one.
func (p *connPool) do(ctx context.Context, newReq func() *http.Request, headerTimeout time.Duration) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		uc, reused, err := p.get(ctx)
		if err != nil {
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { uc.c.SetDeadline(longAgo) })
		req := newReq()
		uc.c.SetDeadline(time.Now().Add(headerTimeout))
		err = req.Write(uc.bw)
		if err == nil {
			err = uc.bw.Flush()
		}
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(uc.br, req)
		}
		if err != nil {
			stop()
			uc.c.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if reused && attempt == 0 {
				continue
			}
			return nil, err
		}
		uc.c.SetDeadline(time.Time{})
		if ctx.Err() != nil { // raced with the AfterFunc
			uc.c.SetDeadline(longAgo)
		}
		resp.Body = &upBody{rc: resp.Body, uc: uc, pool: p, stop: stop, keep: !resp.Close}
		return resp, nil
	}
}

// upBody returns its connection to the pool when the body was read to the
// end and the upstream keeps the connection; otherwise it closes it.
type upBody struct {
	rc   io.ReadCloser
	uc   *upConn
	pool *connPool
	stop func() bool
	keep bool
	eof  bool
	once sync.Once
}

func (b *upBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return n, err
}

func (b *upBody) Close() error {
	b.once.Do(func() {
		b.rc.Close()
		if b.stop() && b.eof && b.keep {
			b.pool.put(b.uc)
			return
		}
		b.uc.c.Close()
	})
	return nil
}
