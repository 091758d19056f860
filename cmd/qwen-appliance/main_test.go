package main

import (
	"github.com/qwen-appliance/qwen-appliance/bundles/space"
	"github.com/qwen-appliance/qwen-appliance/provision/runtime"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"qwen-appliance": main})
}

// TestScript runs the black-box CLI scripts in testdata/script.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkfile":      cmdMkfile,
			"flipbyte":    cmdFlipbyte,
			"sandbox":     cmdSandbox,
			"killservice": cmdKillService,
			"nsprocs":     cmdNSProcs,
			"snapshot":    cmdSnapshot,
			"container":   cmdContainer,
			"asuser":      cmdAsUser,
			"dialas":      cmdDialAs,
			"whoruns":     cmdWhoRuns,
			"procs":       cmdProcs,
			"hubserver":   cmdHubServer,
			"hubcount":    cmdHubCount,
			"signal":      cmdSignal,
			"waithttp":    cmdWaitHTTP,
			"waitgone":    cmdWaitGone,
			"waitmatches": cmdWaitMatches,
			"ociextract":  cmdOCIExtract,
			"fleetreport": cmdFleetReport,
			"ollamaserve": cmdOllamaServe,
		},
		Condition: scriptConditions,
		Setup: func(env *testscript.Env) error {
			env.Setenv("OLLAMA", runtime.FindOllama())
			// No remote session, whatever session runs the tests: scripts
			// that test anti-lockout set their own.
			env.Setenv("SSH_CONNECTION", "")
			return nil
		},
	})
}

// mkfile NAME SIZE writes SIZE deterministic pseudo-random bytes to NAME.
func cmdMkfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mkfile NAME SIZE")
	}
	n, err := space.Parse(args[1])
	ts.Check(err)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	p := ts.MkAbs(args[0])
	ts.Check(os.MkdirAll(filepath.Dir(p), 0o755))
	ts.Check(os.WriteFile(p, b, 0o644))
}

// flipbyte FILE OFFSET inverts one bit of the byte at OFFSET.
func cmdFlipbyte(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: flipbyte FILE OFFSET")
	}
	off, err := strconv.ParseInt(args[1], 10, 64)
	ts.Check(err)
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_RDWR, 0)
	ts.Check(err)
	defer f.Close()
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	ts.Check(err)
	b[0] ^= 1
	_, err = f.WriteAt(b, off)
	ts.Check(err)
}
