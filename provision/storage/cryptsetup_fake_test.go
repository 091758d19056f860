package storage

import "context"

// fakeCryptsetup records calls and answers from Reply, for tests of the
// command lines without the tool.
type fakeCryptsetup struct {
	Calls   [][]string
	Secrets [][][]byte
	Reply   func(args []string, secrets [][]byte) ([]byte, error)
}

var _ cryptsetupTool = (*fakeCryptsetup)(nil)

// Run implements cryptsetupTool.
func (f *fakeCryptsetup) Run(ctx context.Context, secrets [][]byte, args ...string) ([]byte, error) {
	f.Calls = append(f.Calls, append([]string(nil), args...))
	var cp [][]byte
	for _, s := range secrets {
		cp = append(cp, append([]byte(nil), s...))
	}
	f.Secrets = append(f.Secrets, cp)
	if f.Reply == nil {
		return nil, nil
	}
	return f.Reply(args, secrets)
}
