package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

func init() {
	register(
		Check{
			ID: "services.runtime-port", Title: "local users other than the gateway cannot connect to the runtime",
			Severity: Critical, Controls: []string{"AC-3", "AC-6", "SC-7"},
			Rationale: "The inference server has no authentication: a local user who reaches its port chats without a token or an audit line, " +
				"and can delete or replace the model. The firewall lets only the gateway's user (and root) connect.",
			Remediation: "Re-apply the firewall ('qwen-appliance install' again, or restore the table); check that the runtime listens on a port from the reserved range.",
			Run:         checkRuntimePort,
		},
		Check{
			ID: "services.runtime-models", Title: "the runtime serves exactly the model of the signed manifest",
			Severity: High, Controls: []string{"CM-7", "CM-8", "SI-7"},
			Rationale:   "A second model, or other weights under the approved name, would answer clients although no signed bundle carried it.",
			Remediation: "Re-install the bundle; find out who added or replaced a model in the runtime's model directory.",
			Run:         checkRuntimeModels,
		},
		Check{
			ID: "services.secret-files", Title: "the token file, the audit key, the TLS key and the audit log are the gateway's alone",
			Severity: Critical, Controls: []string{"AC-3", "AC-6", "SC-12", "AU-9"},
			Rationale: "Whoever reads the token file or the audit key can mint access or re-sign an edited audit log; " +
				"neither the runtime's user nor any other local user may read them.",
			Remediation: "chown them to the service user and chmod 0600 (or re-run install); find out who changed them.",
			Run:         checkSecretFiles,
		},
	)
}

// runtimeAddr is where the recorded runtime listens.
func (t *Target) runtimeAddr() (string, bool) {
	if t.State == nil || len(t.State.Runtime.Listen) == 0 {
		return "", false
	}
	return t.State.Runtime.Listen[0], true
}

// otherUID is a uid that is neither root nor one of the service users.
func (t *Target) otherUID() int {
	gw, _ := t.serviceUID()
	rt, _, _ := t.runtimeUID()
	for uid := 65534; ; uid-- {
		if uid != gw && uid != rt {
			return uid
		}
	}
}

// dialIn connects to addr as this process (root) inside the recorded
// network namespace.
func (t *Target) dialIn(addr string) error {
	return inNetNS(t.State.Firewall.NetNS, func() error {
		c, err := net.DialTimeout("tcp", addr, probeTimeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func checkRuntimePort(_ context.Context, t *Target) Outcome {
	addr, ok := t.runtimeAddr()
	if !ok {
		return notApplicable("install recorded no runtime address")
	}
	// Something must listen, or a refusal proves nothing.
	if err := t.dialIn(addr); err != nil {
		return fail(fmt.Sprintf("nothing answers on the runtime's address %s, so its protection cannot be proven", addr), ev("root", "%v", err))
	}
	evs := []Evidence{ev("root", "connected to %s (the runtime listens)", addr)}
	other := t.otherUID()
	code, out, err := dialAs(t.State.Firewall.NetNS, other, other, addr)
	if err != nil {
		return errored(err, evs...)
	}
	evs = append(evs, ev(fmt.Sprintf("uid %d", other), "%s", out))
	switch code {
	case dialConnected:
		return fail(fmt.Sprintf("uid %d, a user other than the gateway's, connected to the runtime at %s", other, addr), evs...)
	case dialRefused, dialBlocked:
	default:
		return errored(fmt.Errorf("connection probe as uid %d exited %d: %s", other, code, out), evs...)
	}
	// The rule must not be a wall for the gateway as well.
	if gw, err := t.serviceUID(); err == nil && gw > 0 {
		code, out, err := dialAs(t.State.Firewall.NetNS, gw, gw, addr)
		if err != nil {
			return errored(err, evs...)
		}
		evs = append(evs, ev(fmt.Sprintf("gateway uid %d", gw), "%s", out))
		if code != dialConnected {
			return fail(fmt.Sprintf("the gateway's user (uid %d) cannot connect to the runtime at %s either", gw, addr), evs...)
		}
	}
	return pass(fmt.Sprintf("uid %d is kept off the runtime at %s; the gateway's user gets through", other, addr), evs...)
}

// runtimeClient talks plain HTTP to the runtime inside the recorded
// network namespace.
func (t *Target) runtimeClient() *http.Client {
	netns := t.State.Firewall.NetNS
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = inNetNS(netns, func() error {
			c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 10 * time.Second}
}

// runtimeCall sends one request to the runtime and returns the body of a
// 200 answer (at most 1 MiB).
func runtimeCall(ctx context.Context, c *http.Client, method, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, strings.TrimSpace(string(data)))
	}
	return data, nil
}

// servedModel is one model a runtime lists.
type servedModel struct {
	Name   string
	Digest string // the weights' SHA-256, where the runtime tells it
}

// parseOllamaTags reads Ollama's GET /api/tags answer.
func parseOllamaTags(data []byte) ([]string, error) {
	var v struct {
		Models *[]struct {
			Name string `json:"name"`
		} `json:"models"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("model list: %w", err)
	}
	if v.Models == nil {
		return nil, errors.New("model list: no \"models\" field")
	}
	var out []string
	for _, m := range *v.Models {
		if m.Name == "" {
			return nil, errors.New("model list: a model without a name")
		}
		out = append(out, m.Name)
	}
	return out, nil
}

// blobFrom finds the weights' blob in the Modelfile Ollama's POST /api/show
// returns: "FROM /…/blobs/sha256-HEX".
var blobFrom = regexp.MustCompile(`(?m)^FROM \S*/blobs/sha256-([0-9a-f]{64})\s*$`)

// parseOllamaShow reads the weights' SHA-256 from Ollama's /api/show answer.
func parseOllamaShow(data []byte) (string, error) {
	var v struct {
		Modelfile string `json:"modelfile"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return "", fmt.Errorf("model details: %w", err)
	}
	m := blobFrom.FindAllStringSubmatch(v.Modelfile, -1)
	if len(m) != 1 {
		return "", fmt.Errorf("model details: %d weight blobs in the Modelfile, want 1", len(m))
	}
	return m[0][1], nil
}

// parseOpenAIModels reads an OpenAI-style GET /v1/models answer.
func parseOpenAIModels(data []byte) ([]string, error) {
	var v struct {
		Data *[]struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("model list: %w", err)
	}
	if v.Data == nil {
		return nil, errors.New("model list: no \"data\" field")
	}
	var out []string
	for _, m := range *v.Data {
		out = append(out, m.ID)
	}
	return out, nil
}

// served asks the runtime which models it serves: Ollama by its own API,
// with each model's weights digest; others by the OpenAI model list.
func (t *Target) served(ctx context.Context, kind, addr string) ([]servedModel, error) {
	c := t.runtimeClient()
	base := "http://" + addr
	if kind != "ollama" {
		data, err := runtimeCall(ctx, c, http.MethodGet, base+"/v1/models", nil)
		if err != nil {
			return nil, err
		}
		names, err := parseOpenAIModels(data)
		var out []servedModel
		for _, n := range names {
			out = append(out, servedModel{Name: n})
		}
		return out, err
	}
	data, err := runtimeCall(ctx, c, http.MethodGet, base+"/api/tags", nil)
	if err != nil {
		return nil, err
	}
	names, err := parseOllamaTags(data)
	if err != nil {
		return nil, err
	}
	var out []servedModel
	for _, n := range names {
		body, _ := json.Marshal(map[string]string{"model": n})
		data, err := runtimeCall(ctx, c, http.MethodPost, base+"/api/show", body)
		if err != nil {
			return nil, err
		}
		d, err := parseOllamaShow(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		out = append(out, servedModel{Name: n, Digest: d})
	}
	return out, nil
}

func checkRuntimeModels(ctx context.Context, t *Target) Outcome {
	addr, ok := t.runtimeAddr()
	if !ok {
		return notApplicable("install recorded no runtime address")
	}
	s, err := t.signedManifest()
	if err != nil {
		return errored(err)
	}
	m := s.Manifest
	want := m.Runtime.ServedModelName
	if want == "" {
		want = m.Name
	}
	// The weights' digest, where the model is one file.
	var wantDigest string
	if i := slices.IndexFunc(m.Files, func(f manifests.File) bool { return f.Path == m.Runtime.ModelPath }); i >= 0 {
		wantDigest = m.Files[i].SHA256
	}
	got, err := t.served(ctx, t.State.Runtime.Kind, addr)
	if err != nil {
		return errored(fmt.Errorf("ask the runtime at %s: %w", addr, err))
	}
	var evs []Evidence
	var problems []string
	for _, sm := range got {
		name := strings.TrimSuffix(sm.Name, ":latest")
		switch {
		case name != want:
			problems = append(problems, fmt.Sprintf("%s is not in the manifest", sm.Name))
			evs = append(evs, ev(sm.Name, "served, but the manifest names %s", want))
		case sm.Digest != "" && wantDigest != "" && sm.Digest != wantDigest:
			problems = append(problems, fmt.Sprintf("%s serves other weights", sm.Name))
			evs = append(evs, ev(sm.Name, "weights sha256 %s, manifest's %s is %s", sm.Digest, m.Runtime.ModelPath, wantDigest))
		case sm.Digest != "":
			evs = append(evs, ev(sm.Name, "weights sha256 %s as %s in the manifest", sm.Digest, m.Runtime.ModelPath))
		default:
			evs = append(evs, ev(sm.Name, "named in the manifest"))
		}
	}
	if len(got) == 0 {
		problems = append(problems, "the runtime serves no model")
	}
	if len(got) > 1 {
		problems = append(problems, fmt.Sprintf("the runtime serves %d models, the manifest one", len(got)))
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fail(strings.Join(problems, "; "), evs...)
	}
	return pass(fmt.Sprintf("the runtime at %s serves %s and nothing else", addr, want), evs...)
}

// secretFiles are the gateway's secrets and its audit log, as recorded (or
// where install puts them, for records that do not name them).
func (t *Target) secretFiles() map[string]string {
	g := t.State.Gateway
	out := map[string]string{"token file": g.TokensFile, "audit log": g.AuditLog, "audit key": g.AuditSigningKey, "TLS key": g.TLSKey}
	if out["audit key"] == "" && g.AuditKey != "" {
		out["audit key"] = strings.TrimSuffix(g.AuditKey, ".pub") + ".key"
	}
	if out["TLS key"] == "" && g.CACert != "" {
		out["TLS key"] = filepath.Join(filepath.Dir(g.CACert), "server.key")
	}
	for k, v := range out {
		if v == "" {
			delete(out, k)
		}
	}
	return out
}

func checkSecretFiles(_ context.Context, t *Target) Outcome {
	if t.State == nil || t.State.Gateway.TokensFile == "" {
		return notApplicable(errNoGateway.Error())
	}
	want, err := t.serviceUID()
	if err != nil {
		return errored(err)
	}
	files := t.secretFiles()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var evs []Evidence
	bad := 0
	for _, n := range names {
		p := files[n]
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			bad++
			evs = append(evs, ev(n, "%s is missing", p))
			continue
		case err != nil:
			return errored(err, evs...)
		}
		var why []string
		if !fi.Mode().IsRegular() {
			why = append(why, fmt.Sprintf("is not a regular file (%s)", fi.Mode().Type()))
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			why = append(why, fmt.Sprintf("mode %04o lets group or others in", perm))
		}
		if uid := fileUID(fi); want >= 0 && uid != want {
			why = append(why, fmt.Sprintf("owned by uid %d, the gateway's user %s is %d", uid, t.State.ServiceUser, want))
		}
		if len(why) > 0 {
			bad++
			evs = append(evs, ev(n, "%s: %s", p, strings.Join(why, ", ")))
			continue
		}
		evs = append(evs, ev(n, "%s: mode %04o, uid %d", p, fi.Mode().Perm(), fileUID(fi)))
	}
	if bad > 0 {
		return fail(fmt.Sprintf("%d of %d secret files are not the gateway's alone", bad, len(names)), evs...)
	}
	return pass(fmt.Sprintf("%d secret files private to the gateway's user", len(names)), evs...)
}
