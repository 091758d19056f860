package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// aeadSuites are the TLS 1.2 suites the gateway offers: ECDHE key exchange
// with AES-GCM or ChaCha20-Poly1305. CBC, RSA key exchange and 3DES are left
// out. TLS 1.3 suites are not configurable and are all AEAD.
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// keyPair is a certificate and its key, read from files and swapped on
// reload, so that a renewed pair takes effect for new connections without a
// restart. It serves both ends: the API's server certificate and the
// gateway's client certificate towards an https:// runtime.
type keyPair struct {
	what              string // "TLS" or "upstream client", for errors
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// load reads the pair. The key must be readable by its owner alone, as serve
// demands of token files and the audit key.
func (c *keyPair) load() error {
	st, err := os.Stat(c.keyFile)
	if err != nil {
		return fmt.Errorf("%s key: %w", c.what, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s key %s: mode %04o lets others read it; chmod 600 it", c.what, c.keyFile, st.Mode().Perm())
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("load %s certificate %s and key %s: %w", c.what, c.certFile, c.keyFile, err)
	}
	c.cur.Store(&cert)
	return nil
}

func (c *keyPair) serverCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

func (c *keyPair) clientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if cert := c.cur.Load(); cert != nil {
		return cert, nil
	}
	return nil, fmt.Errorf("no %s certificate loaded", c.what)
}

// tlsConfig builds the server's TLS configuration; nil when TLS is off.
func tlsConfig(o *Options) (*tls.Config, *keyPair, error) {
	if o.TLSCert == "" && o.TLSKey == "" {
		if o.ClientCA != "" {
			return nil, nil, errors.New("client certificates (--client-ca) need TLS: pass --tls-cert and --tls-key")
		}
		return nil, nil, nil
	}
	if o.TLSCert == "" || o.TLSKey == "" {
		return nil, nil, errors.New("TLS needs both a certificate and a key")
	}
	cs := &keyPair{what: "TLS", certFile: o.TLSCert, keyFile: o.TLSKey}
	if err := cs.load(); err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   aeadSuites,
		GetCertificate: cs.serverCert,
		// HTTP/1.1 only: the server is not set up for HTTP/2, and OpenAI
		// clients need nothing more.
		NextProtos: []string{"http/1.1"},
	}
	if o.TLS13Only {
		cfg.MinVersion = tls.VersionTLS13
	}
	if o.ClientCA != "" {
		pem, err := os.ReadFile(o.ClientCA)
		if err != nil {
			return nil, nil, fmt.Errorf("read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("client CA %s holds no PEM certificate", o.ClientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, cs, nil
}
