package certs

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
)

// EnsureServer makes DIR/server.crt name every host in hosts, re-issuing it
// and its key with DIR's CA when one is missing, so clients that trust the
// CA keep trusting the server after its name or address changes. It reports
// whether it re-issued; the CA is never replaced.
func EnsureServer(dir string, hosts []string, now time.Time) (bool, error) {
	if len(hosts) == 0 {
		return false, errors.New("tls: no host name given")
	}
	data, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return false, fmt.Errorf("tls: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return false, fmt.Errorf("tls: %s holds no PEM certificate", filepath.Join(dir, CertFile))
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return false, fmt.Errorf("tls: %s: %w", filepath.Join(dir, CertFile), err)
	}
	covered := true
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			covered = false
		}
	}
	if covered {
		return false, nil
	}
	ca, caKey, err := LoadCA(dir)
	if err != nil {
		return false, fmt.Errorf("tls: %w", err)
	}
	key, der, err := Issue(ca, caKey, hosts, false, now, cert.NotAfter.Sub(cert.NotBefore))
	if err != nil {
		return false, fmt.Errorf("tls: %w", err)
	}
	crt, k := PEM(key, der)
	if err := atomicfile.WriteFile(filepath.Join(dir, KeyFile), k, 0o600); err != nil {
		return false, fmt.Errorf("tls: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, CertFile), crt, 0o644); err != nil {
		return false, fmt.Errorf("tls: %w", err)
	}
	return true, nil
}
