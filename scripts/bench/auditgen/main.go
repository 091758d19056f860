// Command auditgen writes a signed, hash-chained audit log of a given size
// with the gateway's own audit package, for scripts/bench/backup.sh.
package main

import (
	"flag"
	"log"
	"os"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

func main() {
	out := flag.String("out", "", "audit log to write")
	keyFile := flag.String("key", "", "checkpoint key")
	mib := flag.Int64("mib", 1024, "size in MiB")
	flag.Parse()
	k, err := manifests.LoadPrivateKey(*keyFile)
	if err != nil {
		log.Fatal(err)
	}
	l, err := audit.Open(audit.Options{Path: *out, Key: &k})
	if err != nil {
		log.Fatal(err)
	}
	r := audit.Record{RequestID: "0123456789abcdef0123456789abcdef", TokenID: "0123456789abcdef", Client: "10.20.0.7:51234",
		Method: "POST", Route: "/v1/chat/completions", Model: "qwen2.5-7b-instruct", Status: 200, LatencyMs: 812.5, TTFTMs: 95.25,
		PromptTokens: 412, CompletionTokens: 233}
	for i := 0; ; i++ {
		if i%65536 == 0 {
			if err := l.Flush(); err != nil {
				log.Fatal(err)
			}
			if st, err := os.Stat(*out); err == nil && st.Size() >= *mib<<20 {
				break
			}
		}
		l.Append(r)
	}
	if err := l.Close(); err != nil {
		log.Fatal(err)
	}
}
