// Package audittest writes large audit logs for benchmarks: the backup
// benchmark and scripts/bench/backup.sh (through auditgen) time the same
// kind of log.
package audittest

import (
	"os"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// Fill writes a log at path, checkpoints signed with key, of request
// records like a busy gateway's, until the file holds at least size bytes;
// then it closes the log with its signed stop record.
func Fill(path string, key *manifests.PrivateKey, size int64) error {
	l, err := audit.Open(audit.Options{Path: path, Key: key})
	if err != nil {
		return err
	}
	r := audit.Record{RequestID: "0123456789abcdef0123456789abcdef", TokenID: "0123456789abcdef", Client: "10.20.0.7:51234",
		Method: "POST", Route: "/v1/chat/completions", Model: "qwen2.5-7b-instruct", Status: 200, LatencyMs: 812.5, TTFTMs: 95.25,
		PromptTokens: 412, CompletionTokens: 233}
	for i := 0; ; i++ {
		if i%65536 == 0 {
			if err := l.Flush(); err != nil {
				l.Close()
				return err
			}
			if st, err := os.Stat(path); err == nil && st.Size() >= size {
				break
			}
		}
		l.Append(r)
	}
	return l.Close()
}
