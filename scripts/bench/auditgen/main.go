// Command auditgen writes a signed, hash-chained audit log of a given size
// with the gateway's own audit package, for scripts/bench/backup.sh.
package main

import (
	"flag"
	"log"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit/audittest"
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
	if err := audittest.Fill(*out, &k, *mib<<20); err != nil {
		log.Fatal(err)
	}
}
