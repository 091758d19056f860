package export

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/qwen-appliance/qwen-appliance/gateway"
	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// The rendered audit settings keep each replica's chain across restarts,
// resolved as the StatefulSet controller and kubelet resolve them: replica
// N's pod is NAME-N and its claim TEMPLATE-NAME-N, and kubelet expands
// $(VAR) in the arguments from the container's environment, its fieldRefs
// taken from the pod (a new UID at every start). The gateway started as
// replica 0, as replica 1, then as replica 0 again (a restart) leaves one
// file on each claim, and replica 0's is one chain over both runs, each
// verified by the audit package against the audit key.
func TestRenderedAuditChainContinuesAcrossRestarts(t *testing.T) {
	helm := helmPath(t)
	_, stream := renderChart(t, helm, "gateway:\n  replicas: 2\n")
	objs, err := decodeStrict(stream)
	if err != nil {
		t.Fatal(err)
	}
	gw := gatewaySet(objs)
	claims := t.TempDir() // one directory per claim, as the provisioner makes them
	key, err := manifests.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	st := &tokens.Store{}
	if _, _, err := st.Create(tokens.CreateOptions{Name: "u", Role: tokens.RoleUser}); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "tokens.json")
	if err := st.Save(tokFile); err != nil {
		t.Fatal(err)
	}

	var lastSeq int64 = -1
	for run, ordinal := range []int{0, 1, 0} {
		log := replicaAuditLog(t, gw, ordinal, claims)
		serveOnce(t, gateway.Options{
			Upstream: "http://127.0.0.1:9", Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0",
			TokensFile: tokFile, AuditLog: log, AuditKey: &key,
		})
		files, _ := filepath.Glob(filepath.Join(filepath.Dir(log), "*"))
		if len(files) != 1 || files[0] != log {
			t.Fatalf("run %d: the claim of replica %d holds %v, want its one log %s", run, ordinal, files, log)
		}
		rep, err := audit.Verify([]string{log}, audit.VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}})
		if err != nil {
			t.Fatalf("run %d, replica %d: %v", run, ordinal, err)
		}
		if ordinal == 0 {
			if rep.FirstSeq != 0 || rep.LastSeq <= lastSeq {
				t.Fatalf("run %d: replica 0's log holds seq %d..%d, after %d before: the chain did not continue", run, rep.FirstSeq, rep.LastSeq, lastSeq)
			}
			lastSeq = rep.LastSeq
		}
	}
	if lastSeq < 0 {
		t.Fatal("replica 0 never ran")
	}
}

var kubeletVar = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// replicaAuditLog resolves the gateway's rendered --audit-log for replica
// ordinal to a path under claims, where each claim is a directory named
// after it.
func replicaAuditLog(t *testing.T, gw *appsv1.StatefulSet, ordinal int, claims string) string {
	t.Helper()
	pod := fmt.Sprintf("%s-%d", gw.Name, ordinal)
	uid := make([]byte, 16)
	rand.Read(uid)
	c := gw.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = pod
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.uid":
			env[e.Name] = hex.EncodeToString(uid)
		}
	}
	path, _ := argValue(c.Args, "--audit-log")
	path = kubeletVar.ReplaceAllStringFunc(path, func(m string) string {
		v, ok := env[m[2:len(m)-1]]
		if !ok {
			t.Fatalf("--audit-log %s: kubelet has no %s", path, m)
		}
		return v
	})
	for _, m := range c.VolumeMounts {
		rest, ok := strings.CutPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, vct := range gw.Spec.VolumeClaimTemplates {
			if vct.Name == m.Name {
				dir := filepath.Join(claims, fmt.Sprintf("%s-%s", vct.Name, pod))
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				return filepath.Join(dir, rest)
			}
		}
	}
	t.Fatalf("--audit-log %s is on no claim of the replica's own", path)
	return ""
}

// serveOnce starts the gateway, waits until it listens, and stops it.
func serveOnce(t *testing.T, o gateway.Options) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- gateway.Run(ctx, o, func(api, metrics net.Addr) { close(started) })
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("gateway did not start: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("gateway: %v", err)
	}
}
