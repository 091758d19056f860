package certs

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPair(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pair")
	if err := Pair(Options{Dir: dir, Hosts: []string{"rel-qwen-appliance-runtime", "rel-qwen-appliance-runtime.llm.svc"}}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{CAKeyFile, RuntimeKeyFile, ClientKeyFile} {
		if st, err := os.Stat(filepath.Join(dir, k)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", k, st, err)
		}
	}
	ca := readCert(t, filepath.Join(dir, CAFile))
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	srv := readCert(t, filepath.Join(dir, RuntimeCertFile))
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: "rel-qwen-appliance-runtime.llm.svc", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("runtime certificate: %v", err)
	}
	// It may also call its own /health (the pod's probe) as a client.
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the runtime's certificate cannot act as a client for its probe: %v", err)
	}
	cli := readCert(t, filepath.Join(dir, ClientCertFile))
	if _, err := cli.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || cli.Subject.CommonName != ClientName {
		t.Errorf("client certificate %s: %v", cli.Subject, err)
	}
	if _, err := cli.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("the gateway's client certificate also serves as a server certificate")
	}
	if err := Pair(Options{Dir: dir, Hosts: []string{"x"}}); err == nil {
		t.Error("tls pair overwrote an existing CA")
	}
	if err := Pair(Options{Dir: t.TempDir()}); err == nil {
		t.Error("no host name accepted")
	}
}
