package verify

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

func TestAuditChain(t *testing.T) {
	dir := t.TempDir()
	k := key(t, 7)
	pub := filepath.Join(dir, "audit.pub")
	must(t, os.WriteFile(pub, k.Public().MarshalText(), 0o644))
	path := filepath.Join(dir, "audit.log")
	log, err := audit.Open(audit.Options{Path: path, Key: &k})
	must(t, err)
	for _, model := range []string{"demo", "demo", "other"} {
		log.Append(audit.Record{Kind: "request", Route: "/v1/chat/completions", Model: model, Status: 200})
	}
	must(t, log.Close())
	tg := &Target{State: &state.State{Gateway: state.Gateway{AuditLog: path, AuditKey: pub}}}
	expect(t, runOne(t, "gateway.audit-chain", tg), Pass, "signed checkpoints")
	// A rotation caught halfway (its new file not yet renamed into place)
	// is not tampering.
	must(t, os.WriteFile(path+".next", []byte(`{"seq":9999}`+"\n"), 0o600))
	expect(t, runOne(t, "gateway.audit-chain", tg), Pass, "signed checkpoints")

	data, err := os.ReadFile(path)
	must(t, err)
	must(t, os.WriteFile(path, bytes.Replace(data, []byte(`"other"`), []byte(`"demo!"`), 1), 0o600))
	expect(t, runOne(t, "gateway.audit-chain", tg), Fail, "")

	expect(t, runOne(t, "gateway.audit-chain", &Target{State: &state.State{}}), NotApplicable, "")
}
