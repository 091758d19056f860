package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
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
	c       net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
	written int64 // bytes that reached c, so do knows whether a request left
}

// countingConn counts the bytes written to the connection under bw.
type countingConn struct{ uc *upConn }

func (w countingConn) Write(p []byte) (int, error) {
	n, err := w.uc.c.Write(p)
	w.uc.written += int64(n)
	return n, err
}

// upRequest is one request to the upstream. The gateway writes it itself
// rather than through http.Request: every part is a constant or made by the
// gateway (the path comes from the route table, the ID from newRequestID),
// never a client's header, so nothing needs escaping, and building and
// serializing an http.Request cost more than the rest of the exchange.
type upRequest struct {
	method, path, host string
	requestID          string
	accept             string
	body               []byte // sent as application/json when not nil
}

// writeTo writes r as HTTP/1.1 and flushes it.
func (r *upRequest) writeTo(w *bufio.Writer) error {
	for _, s := range [...]string{r.method, " ", r.path, " HTTP/1.1\r\nHost: ", r.host,
		"\r\nUser-Agent: qwen-appliance\r\nX-Request-Id: ", r.requestID, "\r\nAccept: ", r.accept, "\r\n"} {
		w.WriteString(s)
	}
	if r.body != nil {
		w.WriteString("Content-Type: application/json\r\nContent-Length: ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(len(r.body)), 10))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	w.Write(r.body)
	return w.Flush()
}

// longAgo is a deadline in the past: setting it makes blocked reads and
// writes on a connection return at once.
var longAgo = time.Unix(1, 0)

// get takes an idle connection that the upstream has not closed, or dials
// a new one.
func (p *connPool) get(ctx context.Context) (*upConn, bool, error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		uc := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if uc.br.Buffered() == 0 && idleAlive(uc.c) {
			return uc, true, nil
		}
		uc.c.Close() // closed by the upstream while idle, or sent unasked-for bytes
	}
	c, err := p.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	uc := &upConn{c: c, br: bufio.NewReaderSize(c, 32<<10)}
	uc.bw = bufio.NewWriterSize(countingConn{uc}, 16<<10)
	return uc, false, nil
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

// do sends req and reads the response headers. The whole exchange, body
// included, must end by deadline: it is the connection's deadline until the
// body is closed, which costs no timer of its own. The request lives in ctx:
// when ctx ends, reads and writes on the connection fail at once and the
// connection is dropped. A request that fails on a reused connection before
// any answer arrived (the upstream closed it as it was taken) is sent once
// more on a new one, as net/http's Transport does: only when none of it
// reached the connection, or when it is a GET. A POST the upstream may have
// received is never sent twice: a completion generated twice costs twice.
func (p *connPool) do(ctx context.Context, req *upRequest, deadline time.Time) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		uc, reused, err := p.get(ctx)
		if err != nil {
			return nil, err
		}
		before := uc.written
		stop := context.AfterFunc(ctx, func() { uc.c.SetDeadline(longAgo) })
		uc.c.SetDeadline(deadline)
		err = req.writeTo(uc.bw)
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(uc.br, nil) // nil: a GET or POST, never HEAD
		}
		if err != nil {
			stop()
			uc.c.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if reused && attempt == 0 && (uc.written == before || req.method == http.MethodGet) {
				continue
			}
			return nil, err
		}
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
