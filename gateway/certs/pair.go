package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
)

// Files written by Pair. ca.crt and ca.key are CAFile and CAKeyFile.
const (
	RuntimeCertFile = "runtime.crt"
	RuntimeKeyFile  = "runtime.key"
	ClientCertFile  = "gateway-client.crt"
	ClientKeyFile   = "gateway-client.key"
	// ClientName is the subject of the gateway's client certificate.
	ClientName = "qwen-appliance-gateway"
)

// Pair writes the certificates for mutual TLS between the gateway and a
// runtime on another host or pod: a CA of its own (DIR/ca.crt, DIR/ca.key),
// the runtime's server certificate for o.Hosts (DIR/runtime.crt,
// DIR/runtime.key) and the gateway's client certificate
// (DIR/gateway-client.crt, DIR/gateway-client.key). Keys are 0600. The
// runtime's certificate is good as a client too, for its own health probe. The CA
// must be this pair's alone: the runtime admits every client certificate it
// signed, so a CA that also signs API clients' certificates would let them
// past the gateway. It refuses to overwrite any file.
func Pair(o Options) error {
	if len(o.Hosts) == 0 {
		return errors.New("tls pair: no runtime host name given")
	}
	if o.Validity <= 0 {
		o.Validity = 397 * 24 * time.Hour
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	names := []string{CAFile, CAKeyFile, RuntimeCertFile, RuntimeKeyFile, ClientCertFile, ClientKeyFile}
	for _, f := range names {
		if _, err := os.Lstat(filepath.Join(o.Dir, f)); err == nil {
			return fmt.Errorf("tls pair: %s already exists; refusing to overwrite", filepath.Join(o.Dir, f))
		}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return fmt.Errorf("tls pair: %w", err)
	}
	caKey, caCert, caDER, err := newCA(now, 10*o.Validity)
	if err != nil {
		return err
	}
	// The runtime's certificate may also act as a client: its pod's own
	// health probe calls the runtime over loopback with it, since vLLM
	// admits no connection without a client certificate. Only pods holding
	// it can do so, and the runtime's NetworkPolicy lets it connect nowhere.
	srvKey, srvDER, err := issue(caCert, caKey, o.Hosts, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, now, o.Validity)
	if err != nil {
		return err
	}
	cliKey, cliDER, err := Issue(caCert, caKey, []string{ClientName}, true, now, o.Validity)
	if err != nil {
		return err
	}
	for _, w := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{CAKeyFile, keyPEM(caKey), 0o600},
		{RuntimeKeyFile, keyPEM(srvKey), 0o600},
		{ClientKeyFile, keyPEM(cliKey), 0o600},
		{CAFile, certPEM(caDER), 0o644},
		{RuntimeCertFile, certPEM(srvDER), 0o644},
		{ClientCertFile, certPEM(cliDER), 0o644},
	} {
		if err := atomicfile.WriteFile(filepath.Join(o.Dir, w.name), w.data, w.perm); err != nil {
			return fmt.Errorf("tls pair: %w", err)
		}
	}
	return nil
}
