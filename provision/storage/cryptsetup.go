package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// cryptsetupTool runs the cryptsetup tool. Secrets never go on the command line
// or to disk: secret i is readable at /dev/fd/(3+i) for the duration of the
// call, through a pipe.
type cryptsetupTool interface {
	Run(ctx context.Context, secrets [][]byte, args ...string) (stdout []byte, err error)
}

// cryptsetupError is a failed cryptsetup run with its exit status.
type cryptsetupError struct {
	Args   []string
	Code   int // 2: no key slot opens with the key given
	Stderr string
}

func (e *cryptsetupError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = fmt.Sprintf("exit status %d", e.Code)
	}
	return fmt.Sprintf("cryptsetup %s: %s", e.Args[0], msg)
}

// execCryptsetup runs the binary at Path ("cryptsetup" from $PATH when empty).
type execCryptsetup struct{ Path string }

var _ cryptsetupTool = execCryptsetup{}

// Run implements cryptsetupTool.
func (c execCryptsetup) Run(ctx context.Context, secrets [][]byte, args ...string) ([]byte, error) {
	bin := c.Path
	if bin == "" {
		bin = "cryptsetup"
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var writers []*os.File
	for range secrets {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, r)
		writers = append(writers, w)
	}
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	if err := cmd.Start(); err != nil {
		closeAll(cmd.ExtraFiles)
		closeAll(writers)
		return nil, fmt.Errorf("cryptsetup: %w", err)
	}
	closeAll(cmd.ExtraFiles)
	done := make(chan struct{})
	for i, w := range writers {
		go func() {
			defer func() { done <- struct{}{} }()
			w.Write(secrets[i]) // a short write means cryptsetup stopped reading; its exit status says why
			w.Close()
		}()
	}
	for range writers {
		<-done
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.Bytes(), &cryptsetupError{Args: args, Code: ee.ExitCode(), Stderr: stderr.String()}
	}
	if err != nil {
		return nil, fmt.Errorf("cryptsetup %s: %w", args[0], err)
	}
	return stdout.Bytes(), nil
}

// wrongKey reports whether err is cryptsetup's "no key available".
func wrongKey(err error) bool {
	var ce *cryptsetupError
	return errors.As(err, &ce) && ce.Code == 2
}
