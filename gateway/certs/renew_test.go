package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestEnsureServerReissuesWithTheSameCA(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if err := Init(Options{Dir: dir, Hosts: []string{"localhost", "127.0.0.1"}, Now: now}); err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(filepath.Join(dir, CAFile))
	if renewed, err := EnsureServer(dir, []string{"localhost", "127.0.0.1"}, now); err != nil || renewed {
		t.Fatalf("covered hosts re-issued: %v %v", renewed, err)
	}
	if renewed, err := EnsureServer(dir, []string{"llm.example", "127.0.0.1", "10.0.0.7"}, now); err != nil || !renewed {
		t.Fatalf("new host not re-issued: %v %v", renewed, err)
	}
	if ca2, _ := os.ReadFile(filepath.Join(dir, CAFile)); !bytes.Equal(ca, ca2) {
		t.Fatal("the CA changed: clients would stop trusting the gateway")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	data, _ := os.ReadFile(filepath.Join(dir, CertFile))
	b, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"llm.example", "10.0.0.7"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: h, Roots: pool}); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("server key: %v %v", fi, err)
	}
	if _, err := EnsureServer(t.TempDir(), []string{"x"}, now); err == nil {
		t.Fatal("a directory without a certificate passed")
	}
}
