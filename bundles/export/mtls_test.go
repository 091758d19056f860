package export

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/qwen-appliance/qwen-appliance/gateway"
	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
)

// fakeVLLM is an ASGI app answering like vLLM's OpenAI server, run by
// uvicorn with the TLS arguments vLLM passes it (--ssl-certfile,
// --ssl-keyfile, --ssl-ca-certs, --ssl-cert-reqs), so that what is tested is
// Python's ssl and uvicorn, as in the runtime image.
const fakeVLLM = `import json, sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    status, body = 200, b""
    if scope["path"] == "/v1/models":
        body = json.dumps({"object": "list", "data": [{"id": "tiny", "object": "model"}]}).encode()
    elif scope["path"] == "/v1/chat/completions":
        body = json.dumps({"id": "c1", "object": "chat.completion", "model": "tiny",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "answered by uvicorn"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}).encode()
    elif scope["path"] != "/health":
        status = 404
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})

port, certfile, keyfile, ca, reqs = sys.argv[1:6]
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning",
    ssl_certfile=certfile, ssl_keyfile=keyfile, ssl_ca_certs=ca, ssl_cert_reqs=int(reqs))
`

// uvicornPython finds Debian's python3 with uvicorn (python3-uvicorn), or
// skips.
func uvicornPython(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("QWA_UVICORN_PYTHON"), "/usr/bin/python3", "python3"} {
		if p == "" {
			continue
		}
		if err := exec.Command(p, "-c", "import uvicorn").Run(); err == nil {
			return p
		}
	}
	t.Skip("no python3 with uvicorn (apt-get install python3-uvicorn, or set QWA_UVICORN_PYTHON)")
	return ""
}

// secretDir lays out files as kubelet mounts a Secret: one file per key,
// copied from the 'tls pair' files as docs/kubernetes.md's kubectl
// commands put them into the Secret.
func secretDir(t *testing.T, dir string, keys map[string]string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for key, src := range keys {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, key), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// The mutual TLS the chart renders works end to end: uvicorn (vLLM's HTTP
// server) started with the runtime container's rendered TLS arguments and
// the 'tls pair' certificates admits the gateway started with the gateway
// container's rendered --upstream flags, and refuses a client without a
// certificate; the runtime's rendered probe passes, and fails without the
// certificate it presents.
func TestRenderedMutualTLSWithUvicorn(t *testing.T) {
	python := uvicornPython(t)
	helm := helmPath(t)
	_, stream := renderChart(t, helm, "")
	objs, err := decodeStrict(stream)
	if err != nil {
		t.Fatal(err)
	}
	rt := podTemplate(objs, "runtime").Spec
	gw := podTemplate(objs, "gateway").Spec
	vllm, serve := rt.Containers[0], gw.Containers[0]

	work := t.TempDir()
	serverName, _ := argValue(serve.Args, "--upstream-server-name")
	pair := filepath.Join(work, "pair")
	if err := certs.Pair(certs.Options{Dir: pair, Hosts: []string{serverName}}); err != nil {
		t.Fatal(err)
	}
	runtimeSecret := secretDir(t, filepath.Join(work, "runtime-tls"), map[string]string{
		"tls.crt": filepath.Join(pair, certs.RuntimeCertFile), "tls.key": filepath.Join(pair, certs.RuntimeKeyFile), "ca.crt": filepath.Join(pair, certs.CAFile)})
	upstreamSecret := secretDir(t, filepath.Join(work, "upstream-tls"), map[string]string{
		"tls.crt": filepath.Join(pair, certs.ClientCertFile), "tls.key": filepath.Join(pair, certs.ClientKeyFile), "ca.crt": filepath.Join(pair, certs.CAFile)})
	// A path in a container, made a path here: the Secret's mount point
	// becomes its directory above.
	local := func(c corev1.Container, path string) string {
		for _, m := range c.VolumeMounts {
			dir := map[string]string{"runtime-tls": runtimeSecret, "upstream-tls": upstreamSecret}[m.Name]
			if rest, ok := strings.CutPrefix(path, m.MountPath+"/"); ok && dir != "" {
				return filepath.Join(dir, rest)
			}
		}
		t.Fatalf("%s: %s is on no Secret volume", c.Name, path)
		return ""
	}

	// The runtime, with the rendered TLS arguments.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	script := filepath.Join(work, "fake_vllm.py")
	if err := os.WriteFile(script, []byte(fakeVLLM), 0o644); err != nil {
		t.Fatal(err)
	}
	arg := func(flag string) string {
		v, ok := argValue(vllm.Args, flag)
		if !ok {
			t.Fatalf("vLLM has no %s", flag)
		}
		return v
	}
	cmd := exec.Command(python, script, port, local(vllm, arg("--ssl-certfile")), local(vllm, arg("--ssl-keyfile")), local(vllm, arg("--ssl-ca-certs")), arg("--ssl-cert-reqs"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uvicorn did not listen: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The rendered probe, run as the container would (its paths made local).
	probe := strings.Join(vllm.LivenessProbe.Exec.Command[2:], " ")
	probe = strings.ReplaceAll(probe, "/etc/qwen-appliance/runtime-tls/", runtimeSecret+"/")
	probe = strings.ReplaceAll(probe, "127.0.0.1:8000/", "127.0.0.1:"+port+"/")
	if out, err := exec.Command(python, "-c", probe).CombinedOutput(); err != nil {
		t.Fatalf("the runtime's probe failed: %v\n%s", err, out)
	}
	noCert := strings.Replace(probe, "c.load_cert_chain(", "0 and c.load_cert_chain(", 1)
	if noCert == probe {
		t.Fatal("the probe presents no client certificate")
	}
	if out, err := exec.Command(python, "-c", noCert).CombinedOutput(); err == nil {
		t.Fatalf("the runtime answered a probe without a client certificate:\n%s", out)
	}

	// Anyone else without the gateway's certificate is refused, even one
	// that trusts the runtime's CA.
	caPEM, _ := os.ReadFile(filepath.Join(pair, certs.CAFile))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	direct := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName}}}
	if resp, err := direct.Get("https://127.0.0.1:" + port + "/metrics"); err == nil {
		resp.Body.Close()
		t.Fatalf("the runtime answered a client without a certificate: %s", resp.Status)
	}

	// The gateway, with the rendered --upstream flags; files it stages
	// from the upstream Secret come from its directory.
	staged := map[string]string{}
	for _, a := range gw.InitContainers[0].Args[1:] {
		if src, name, ok := strings.Cut(a, ":"); ok {
			staged["/run/qwen-appliance/"+name] = src
		}
	}
	stagedFile := func(flag string) string {
		v, _ := argValue(serve.Args, flag)
		return local(gw.InitContainers[0], staged[v])
	}
	up, _ := argValue(serve.Args, "--upstream")
	st := &tokens.Store{}
	tok, _, err := st.Create(tokens.CreateOptions{Name: "u", Role: tokens.RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(work, "tokens.json")
	if err := st.Save(tokFile); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- gateway.Run(ctx, gateway.Options{
			Upstream:           strings.Replace(up, "$(RUNTIME_HOST):8000", "127.0.0.1:"+port, 1),
			UpstreamServerName: serverName,
			UpstreamCA:         stagedFile("--upstream-ca"),
			UpstreamCert:       stagedFile("--upstream-cert"),
			UpstreamKey:        stagedFile("--upstream-key"),
			Listen:             "127.0.0.1:0", MetricsListen: "127.0.0.1:0",
			TokensFile: tokFile, AuditLog: filepath.Join(work, "audit.log"),
		}, func(api, metrics net.Addr) { addrs <- [2]string{api.String(), metrics.String()} })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	var a [2]string
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("gateway did not start: %v", err)
	}
	req, _ := http.NewRequest("POST", "http://"+a[0]+"/v1/chat/completions", strings.NewReader(`{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "answered by uvicorn") {
		t.Fatalf("through the gateway: %s %s", resp.Status, body)
	}
	resp, err = http.Get("http://" + a[1] + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("gateway /readyz over mutual TLS: %s", resp.Status)
	}
}
