package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors Start and Server.Wait return, wrapped, for callers that branch on them.
var (
	// ErrNoBinary: the server's executable is missing from the bundle.
	ErrNoBinary = errors.New("server executable not found")
	// ErrPortInUse: something already listens on the port.
	ErrPortInUse = errors.New("port already in use")
	// ErrGaveUp: the server kept exiting and the restart budget is spent.
	ErrGaveUp = errors.New("gave up restarting the server")
)

// Options configure Start. Zero durations and counts take the defaults noted.
type Options struct {
	Config Config

	LogFile      string        // the server's output; StateDir/server.log when empty
	Progress     io.Writer     // the supervisor's own messages; discarded when nil
	ReadyTimeout time.Duration // from launch to ready (model loaded); 5 minutes
	StopTimeout  time.Duration // from SIGTERM to SIGKILL; 20 seconds
	MaxRestarts  int           // restarts in a row before giving up; 5, and negative means none
	Backoff      time.Duration // delay before the first restart, doubling up to 30 s; 1 second
	StableAfter  time.Duration // a run this long resets the restart count; 10 minutes

	// Guard, when set, is the command (program and arguments) of a guard
	// process that starts the server for us: a program that calls Guard when
	// given these arguments, such as []string{os.Executable(), GuardArg}.
	// With a guard, the server's whole process tree goes down even when this
	// process is killed with SIGKILL; without one, only the server itself
	// gets a parent-death signal and its own children (Ollama's runner)
	// would be left running.
	Guard []string
}

func (o *Options) defaults() {
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 5 * time.Minute
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 20 * time.Second
	}
	if o.MaxRestarts == 0 {
		o.MaxRestarts = 5
	}
	if o.MaxRestarts < 0 {
		o.MaxRestarts = 0
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.StableAfter <= 0 {
		o.StableAfter = 10 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// StartError says which step of starting a server failed, with the last
// lines of the server's log.
type StartError struct {
	Kind    string // runtime kind
	Step    string // "launch", "wait for readiness", "smoke test" …
	Err     error
	Log     string // last lines of the server's output
	LogFile string
}

func (e *StartError) Error() string {
	msg := fmt.Sprintf("start %s: %s: %v", e.Kind, e.Step, e.Err)
	if e.Log != "" {
		msg += fmt.Sprintf("\nlast lines of its log (%s):\n%s", e.LogFile, e.Log)
	}
	return msg
}

func (e *StartError) Unwrap() error { return e.Err }

// Server is a running, supervised inference server that answered the smoke
// test.
type Server struct {
	Kind    string
	BaseURL string
	Model   string // the served model name
	LogFile string
	Smoke   SmokeResult // the non-streamed smoke test at start
	Stream  SmokeResult // the streamed one

	opts    Options
	adapter Adapter
	cmd     Command
	tail    *logTail

	mu       sync.Mutex
	logf     *os.File // the open LogFile; ReopenLog replaces it
	cur      *proc
	restarts int // restarts since start, for reporting

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	err      error
}

// proc is one run of the server process (or of its guard), in its own
// process group.
type proc struct {
	cmd      *exec.Cmd
	pgid     int
	lifeline *os.File // the write end of the guard's lifeline; nil unguarded
	started  time.Time
	done     chan struct{}
	err      error // valid after done is closed
}

// Start launches the server the configuration describes, waits until it is
// ready (bounded by ReadyTimeout), and runs the smoke test, streamed and not.
// On success the server keeps running under supervision until Stop is called
// or ctx is cancelled; when it exits it is restarted after a growing delay,
// and after MaxRestarts failed restarts in a row supervision ends with
// ErrGaveUp (see Wait). On failure nothing is left running and the error is a
// *StartError carrying the last lines of the server's log; it wraps
// ErrNoBinary, ErrPortInUse or ErrNotLoopback where those apply.
func Start(ctx context.Context, opts Options) (*Server, error) {
	opts.defaults()
	c, err := opts.Config.Abs()
	if err != nil {
		return nil, err
	}
	opts.Config = c
	a, err := For(c.Runtime.Kind)
	if err != nil {
		return nil, err
	}
	cmd, err := a.Command(c)
	if err != nil {
		return nil, &StartError{Kind: a.Kind(), Step: "configure", Err: err}
	}
	host, port, _ := c.Listen(a.DefaultPort())
	s := &Server{
		Kind:    a.Kind(),
		BaseURL: BaseURL(host, port),
		Model:   c.ServedModelName(),
		opts:    opts,
		adapter: a,
		cmd:     cmd,
		tail:    newLogTail(nil, 20),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	fail := func(step string, err error) error {
		return &StartError{Kind: s.Kind, Step: step, Err: err, Log: s.tail.String(), LogFile: s.LogFile}
	}
	install, err := a.Install(c)
	if err != nil {
		return nil, fail("configure", err)
	}
	// A server the bundle carries ready (llama.cpp, Ollama) must be there;
	// one that installs from the bundle (vLLM's wheelhouse) is installed
	// below, once: its executable exists afterwards.
	if err := checkExecutable(cmd.Path); err != nil && len(install) == 0 {
		return nil, fail("launch", err)
	}
	if err := checkPortFree(hostPort(host, port)); err != nil {
		return nil, fail("launch", err)
	}
	for _, d := range Dirs(cmd) {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fail("launch", err)
		}
	}
	s.LogFile = opts.LogFile
	if s.LogFile == "" {
		s.LogFile = filepath.Join(c.StateDir(a.Kind()), "server.log")
	}
	if s.logf, err = openLog(s.LogFile); err != nil {
		return nil, fail("open log", err)
	}
	s.tail.swap(s.logf)
	if checkExecutable(cmd.Path) != nil {
		if err := s.install(ctx, install); err != nil {
			s.closeLog()
			return nil, fail("install", err)
		}
		if err := checkExecutable(cmd.Path); err != nil {
			s.closeLog()
			return nil, fail("install", fmt.Errorf("the install commands ran but left no server: %w", err))
		}
	}

	p, err := s.launchReady(ctx)
	if err != nil {
		s.closeLog()
		return nil, err
	}
	if s.Smoke, s.Stream, err = s.smoke(ctx); err != nil {
		serr := fail("first answer", err)
		p.stop(opts.StopTimeout)
		s.closeLog()
		return nil, serr
	}
	s.cur = p
	go s.supervise(ctx, p)
	return s, nil
}

// smoke runs both smoke tests, bounded by ReadyTimeout: a server that
// accepts the request and never answers fails like one that refuses it.
func (s *Server) smoke(ctx context.Context) (plain, stream SmokeResult, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ReadyTimeout)
	defer cancel()
	if plain, err = Smoke(ctx, s.BaseURL, s.Model); err != nil {
		return plain, stream, err
	}
	stream, err = SmokeStream(ctx, s.BaseURL, s.Model)
	return plain, stream, err
}

// install runs the adapter's install commands in order, offline, their
// output going to the server's log; the first to fail stops it.
func (s *Server) install(ctx context.Context, cmds []Command) error {
	for _, ic := range cmds {
		fmt.Fprintf(s.tail, "install: %s %s\n", ic.Path, strings.Join(ic.Args, " "))
		cmd := exec.CommandContext(ctx, ic.Path, ic.Args...)
		cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = ic.Env, ic.Dir, s.tail, s.tail
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s: %w", filepath.Base(ic.Path), strings.Join(ic.Args, " "), err)
		}
	}
	return nil
}

func checkExecutable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", path, ErrNoBinary)
		}
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s: not an executable file: %w", path, ErrNoBinary)
	}
	return nil
}

func checkPortFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%s: %w (pass another --port, or stop what listens there)", addr, ErrPortInUse)
		}
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l.Close()
}

// launchReady starts the process and waits until it is ready; on failure the
// process group is gone when it returns.
func (s *Server) launchReady(ctx context.Context) (*proc, error) {
	fail := func(step string, err error) error {
		return &StartError{Kind: s.Kind, Step: step, Err: err, Log: s.tail.String(), LogFile: s.LogFile}
	}
	fmt.Fprintf(s.tail, "--- qwen-appliance: starting %s at %s ---\n", s.Kind, time.Now().UTC().Format(time.RFC3339))
	cmd := exec.Command(s.cmd.Path, s.cmd.Args...)
	var lifeline *os.File
	if g := s.opts.Guard; len(g) > 0 {
		cmd = exec.Command(g[0], append(append(g[1:len(g):len(g)], s.cmd.Path), s.cmd.Args...)...)
		cmd.Args[0] = "qwen-appliance" // the guard's name in ps, and the one a test binary dispatches on
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fail("launch", err)
		}
		defer r.Close()                // the guard holds its own copy
		cmd.ExtraFiles = []*os.File{r} // descriptor 3: lifelineFD
		lifeline = w
	}
	cmd.Env, cmd.Dir = s.cmd.Env, s.cmd.Dir
	cmd.Stdout, cmd.Stderr = s.tail, s.tail
	setProcessGroup(cmd, lifeline != nil)
	if err := cmd.Start(); err != nil {
		if lifeline != nil {
			lifeline.Close()
		}
		return nil, fail("launch", err)
	}
	p := &proc{cmd: cmd, pgid: cmd.Process.Pid, lifeline: lifeline, started: time.Now(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if p.lifeline != nil {
			p.lifeline.Close()
		}
		close(p.done)
	}()
	fmt.Fprintf(s.opts.Progress, "started %s (pid %d), waiting for %s to be ready\n", s.Kind, p.pgid, s.BaseURL)
	if step, err := s.waitReady(ctx, p); err != nil {
		p.stop(s.opts.StopTimeout)
		return nil, fail(step, err)
	}
	return p, nil
}

// waitReady polls the health endpoint, runs the adapter's Prepare step, then
// polls the model list until it names the served model.
func (s *Server) waitReady(ctx context.Context, p *proc) (step string, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ReadyTimeout)
	defer cancel()
	ep := s.adapter.Endpoints()
	poll := func(ok func() bool) error {
		delay := 50 * time.Millisecond
		for !ok() {
			select {
			case <-p.done:
				return fmt.Errorf("exited before it was ready (%v)", exitStatus(p.err))
			case <-ctx.Done():
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return fmt.Errorf("not ready after %s", s.opts.ReadyTimeout)
				}
				return ctx.Err()
			case <-time.After(delay):
			}
			delay = min(delay*2, 500*time.Millisecond)
		}
		return nil
	}
	if err := poll(func() bool { ok, _ := getOK(ctx, s.BaseURL, ep.Health); return ok }); err != nil {
		return "wait for " + ep.Health, err
	}
	if err := s.adapter.Prepare(ctx, s.opts.Config, s.tail); err != nil {
		return "prepare", err
	}
	if err := poll(func() bool {
		ok, body := getOK(ctx, s.BaseURL, ep.Models)
		return ok && modelListed(body, s.Model)
	}); err != nil {
		return fmt.Sprintf("wait for model %q in %s", s.Model, ep.Models), err
	}
	return "", nil
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// stop ends the process group: SIGTERM, then SIGKILL after grace, then
// SIGKILL for anything of the group still alive, and waits until no member is
// left (bounded).
func (p *proc) stop(grace time.Duration) {
	_ = signalGroup(p.pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = signalGroup(p.pgid, syscall.SIGKILL)
		<-p.done
	}
	_ = signalGroup(p.pgid, syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for len(GroupMembers(p.pgid)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) supervise(ctx context.Context, p *proc) {
	defer close(s.done)
	defer s.closeLog()
	o := s.opts
	failures := 0
	for {
		select {
		case <-p.done:
		case <-s.stop:
			p.stop(o.StopTimeout)
			return
		case <-ctx.Done():
			p.stop(o.StopTimeout)
			s.err = ctx.Err()
			return
		}
		_ = signalGroup(p.pgid, syscall.SIGKILL) // whatever it left behind
		if time.Since(p.started) >= o.StableAfter {
			failures = 0
		}
		why := fmt.Sprintf("%s exited (%v)", s.Kind, exitStatus(p.err))
		for {
			failures++
			if failures > o.MaxRestarts {
				s.err = &StartError{Kind: s.Kind, Step: "supervise",
					Err: fmt.Errorf("%s; %w after %d restarts", why, ErrGaveUp, o.MaxRestarts),
					Log: s.tail.String(), LogFile: s.LogFile}
				s.setCur(nil)
				return
			}
			delay := min(o.Backoff<<(failures-1), 30*time.Second)
			fmt.Fprintf(o.Progress, "%s; restart %d of %d in %s\n", why, failures, o.MaxRestarts, delay)
			select {
			case <-time.After(delay):
			case <-s.stop:
				s.setCur(nil)
				return
			case <-ctx.Done():
				s.err = ctx.Err()
				s.setCur(nil)
				return
			}
			np, err := s.launchReady(ctx)
			if err == nil {
				// A restarted server proves itself like the first one.
				if _, _, serr := s.smoke(ctx); serr != nil {
					err = &StartError{Kind: s.Kind, Step: "first answer", Err: serr, Log: s.tail.String(), LogFile: s.LogFile}
					np.stop(o.StopTimeout)
				}
			}
			if err == nil {
				p = np
				s.setCur(p)
				s.mu.Lock()
				s.restarts++
				s.mu.Unlock()
				fmt.Fprintf(o.Progress, "%s restarted and ready\n", s.Kind)
				break
			}
			why = err.Error()
		}
	}
}

// openLog opens the server's log for appending.
func openLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
}

func (s *Server) closeLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logf != nil {
		s.tail.swap(nil)
		s.logf.Close()
		s.logf = nil
	}
}

// ReopenLog closes the server's log file and opens LogFile again, so that
// a log rotated away (renamed by logrotate) is continued in a fresh file.
// The server keeps running; nothing of its output is lost in between.
func (s *Server) ReopenLog() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logf == nil {
		return errors.New("reopen log: the server is no longer supervised")
	}
	f, err := openLog(s.LogFile)
	if err != nil {
		return fmt.Errorf("reopen log: %w", err)
	}
	s.tail.swap(f)
	old := s.logf
	s.logf = f
	return old.Close()
}

func (s *Server) setCur(p *proc) {
	s.mu.Lock()
	s.cur = p
	s.mu.Unlock()
}

// PID is the process id (and process group id) of the running server, or 0
// while none runs.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return 0
	}
	return s.cur.pgid
}

// Restarts is how many times the server has been restarted since Start.
func (s *Server) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// Stop stops the server gracefully (SIGTERM to its process group, SIGKILL
// after StopTimeout) and returns once nothing of it is left running. It
// returns the error that had already ended supervision, if any.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	return s.err
}

// Done is closed when supervision has ended: after Stop, after ctx was
// cancelled, or after the restart budget was spent.
func (s *Server) Done() <-chan struct{} { return s.done }

// Wait blocks until supervision ends and returns why: nil after Stop, the
// context's error after cancellation, or a *StartError wrapping ErrGaveUp.
func (s *Server) Wait() error {
	<-s.done
	return s.err
}
