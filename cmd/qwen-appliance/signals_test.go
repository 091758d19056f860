package main

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// liveProcs lists live (not zombie) processes whose command line contains
// every one of words, as "PID ARGV…", this test process excluded.
func liveProcs(words ...string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := strings.LastIndexByte(string(stat), ')'); i < 0 || strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue
		}
		raw, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		cmdline := strings.ReplaceAll(strings.TrimRight(string(raw), "\x00"), "\x00", " ")
		all := cmdline != ""
		for _, w := range words {
			all = all && strings.Contains(cmdline, w)
		}
		if all {
			out = append(out, e.Name()+" "+cmdline)
		}
	}
	return out
}

// procs WORD… prints the live processes whose command line contains every
// WORD, one "PID ARGV…" a line.
func cmdProcs(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: procs WORD...")
	}
	for _, l := range liveProcs(args...) {
		fmt.Fprintln(ts.Stdout(), l)
	}
}

// signal SIG WORD… sends SIG (HUP, TERM, INT or KILL) to exactly one live
// process whose command line contains every WORD.
func cmdSignal(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: signal SIG WORD...")
	}
	sig, ok := map[string]syscall.Signal{"HUP": syscall.SIGHUP, "TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "KILL": syscall.SIGKILL}[args[0]]
	if !ok {
		ts.Fatalf("unknown signal %s", args[0])
	}
	found := liveProcs(args[1:]...)
	if len(found) != 1 {
		ts.Fatalf("want exactly one process matching %q, found %q", args[1:], found)
	}
	pid, _ := strconv.Atoi(strings.Fields(found[0])[0])
	ts.Check(syscall.Kill(pid, sig))
}

// waithttp URL SECONDS waits until URL answers 200 (fails after SECONDS);
// ! waithttp URL SECONDS waits until it no longer answers.
func cmdWaitHTTP(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: waithttp URL SECONDS")
	}
	secs, err := strconv.Atoi(args[1])
	ts.Check(err)
	c := http.Client{Timeout: time.Second}
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for {
		resp, err := c.Get(args[0])
		up := err == nil && resp.StatusCode == http.StatusOK
		if resp != nil {
			resp.Body.Close()
		}
		if up != neg {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s: up=%v after %d s", args[0], up, secs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitgone SECONDS WORD… waits until no live process's command line contains
// every WORD, and fails naming those still running after SECONDS.
func cmdWaitGone(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: waitgone SECONDS WORD...")
	}
	secs, err := strconv.Atoi(args[0])
	ts.Check(err)
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for {
		left := liveProcs(args[1:]...)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("still running after %d s: %q", secs, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitmatches SECONDS FILE REGEXP N waits until at least N lines of FILE
// match REGEXP.
func cmdWaitMatches(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 4 {
		ts.Fatalf("usage: waitmatches SECONDS FILE REGEXP N")
	}
	secs, err := strconv.Atoi(args[0])
	ts.Check(err)
	re, err := regexp.Compile(args[2])
	ts.Check(err)
	n, err := strconv.Atoi(args[3])
	ts.Check(err)
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for {
		data, _ := os.ReadFile(ts.MkAbs(args[1]))
		if len(re.FindAllIndex(data, -1)) >= n {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s: fewer than %d matches of %q after %d s", args[1], n, args[2], secs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
