// Command kbcorpus writes a folder of Markdown files of a given total size
// for scripts/bench/kb-ingest.sh: documents of shuffled CMRC 2018
// sentences (real Chinese text, vocabulary and term frequencies) under
// headings, 256 KiB each, 100 to a subfolder. The same seed writes the same
// files.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	corpus := flag.String("corpus", "kb/testdata/cmrc2018/corpus.jsonl", "CMRC 2018 passages, JSON lines")
	out := flag.String("out", "", "folder to write (created)")
	mib := flag.Int64("mib", 1024, "total size in MiB")
	flag.Parse()
	if *out == "" {
		log.Fatal("kbcorpus: pass -out DIR")
	}
	f, err := os.Open(*corpus)
	if err != nil {
		log.Fatal(err)
	}
	var sents []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var p struct{ Text string }
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			log.Fatal(err)
		}
		for _, s := range strings.SplitAfter(p.Text, "。") {
			if s = strings.TrimSpace(s); s != "" {
				sents = append(sents, s)
			}
		}
	}
	f.Close()
	r := rand.New(rand.NewPCG(16, 1))
	const fileBytes = 256 << 10
	total := *mib << 20
	for n, written := 0, int64(0); written < total; n++ {
		dir := filepath.Join(*out, fmt.Sprintf("%04d", n/100))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			log.Fatal(err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "# 文档 %d\n\n", n)
		for sec := 0; b.Len() < fileBytes; sec++ {
			fmt.Fprintf(&b, "## 第%d节\n\n", sec+1)
			for range 12 {
				b.WriteString(sents[r.IntN(len(sents))])
			}
			b.WriteString("\n\n")
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%06d.md", n)), []byte(b.String()), 0o644); err != nil {
			log.Fatal(err)
		}
		written += int64(b.Len())
	}
}
