// Package certs makes the internal certificate authority and the server
// certificate the gateway serves TLS with, for sites without a PKI of their
// own. It must never overwrite an existing key.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
)

// Options say what to issue.
type Options struct {
	Dir   string
	Hosts []string // DNS names or IP addresses; the first is the subject
	// Validity of the server certificate (default 397 days); the CA gets ten
	// times as long.
	Validity time.Duration
	Now      time.Time // zero: time.Now()
}

// Files written by Init.
const (
	CAFile     = "ca.crt"
	CAKeyFile  = "ca.key"
	CertFile   = "server.crt"
	KeyFile    = "server.key"
	commonName = "qwen-appliance internal CA"
)

// Init writes DIR/ca.crt, DIR/ca.key (0600, to issue more later),
// DIR/server.crt and DIR/server.key (0600): an ECDSA P-256 CA and a server
// certificate for the hosts. It refuses to overwrite any of them.
func Init(o Options) error {
	return o.write("tls init", []leaf{{KeyFile, CertFile, o.Hosts, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}})
}

// leaf is one certificate a CA of write's issues, with its files.
type leaf struct {
	keyFile, certFile string
	hosts             []string // the subject first, all in the alternative names
	usage             []x509.ExtKeyUsage
}

// write makes a new CA (DIR/ca.crt, DIR/ca.key) and the leaves it signs,
// keys 0600 and certificates 0644, refusing to overwrite any file. op
// names the command in errors.
func (o Options) write(op string, leaves []leaf) error {
	if len(o.Hosts) == 0 {
		return fmt.Errorf("%s: no host name given", op)
	}
	if o.Validity <= 0 {
		o.Validity = 397 * 24 * time.Hour
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	names := []string{CAFile, CAKeyFile}
	for _, l := range leaves {
		names = append(names, l.keyFile, l.certFile)
	}
	for _, f := range names {
		if _, err := os.Lstat(filepath.Join(o.Dir, f)); err == nil {
			return fmt.Errorf("%s: %s already exists; refusing to overwrite", op, filepath.Join(o.Dir, f))
		}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	caKey, caCert, caDER, err := newCA(now, 10*o.Validity)
	if err != nil {
		return err
	}
	type file struct {
		name string
		data []byte
		perm os.FileMode
	}
	keys := []file{{CAKeyFile, keyPEM(caKey), 0o600}}
	certs := []file{{CAFile, certPEM(caDER), 0o644}}
	for _, l := range leaves {
		key, der, err := issue(caCert, caKey, l.hosts, l.usage, now, o.Validity)
		if err != nil {
			return err
		}
		keys = append(keys, file{l.keyFile, keyPEM(key), 0o600})
		certs = append(certs, file{l.certFile, certPEM(der), 0o644})
	}
	for _, w := range append(keys, certs...) {
		if err := atomicfile.WriteFile(filepath.Join(o.Dir, w.name), w.data, w.perm); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	return nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA(now time.Time, validity time.Duration) (*ecdsa.PrivateKey, *x509.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tls init: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tls init: create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, der, err
}

// Issue makes a key and a certificate signed by the CA: a server
// certificate for hosts, or a client certificate (for mTLS) naming hosts[0].
func Issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string, client bool, now time.Time, validity time.Duration) (*ecdsa.PrivateKey, []byte, error) {
	if client {
		return issue(ca, caKey, hosts, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, now, validity)
	}
	return issue(ca, caKey, hosts, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, now, validity)
}

// issue makes a certificate for the given uses; one that may serve names
// every host in its alternative names.
func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string, usages []x509.ExtKeyUsage, now time.Time, validity time.Duration) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
	}
	if slices.Contains(usages, x509.ExtKeyUsageServerAuth) {
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %s: %w", hosts[0], err)
	}
	return key, der, nil
}

// LoadCA reads DIR/ca.crt and DIR/ca.key.
func LoadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, err
	}
	cp, _ := pem.Decode(cb)
	kp, _ := pem.Decode(kb)
	if cp == nil || kp == nil {
		return nil, nil, fmt.Errorf("load CA from %s: not PEM", dir)
	}
	cert, err := x509.ParseCertificate(cp.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("load CA: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kp.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("load CA key: %w", err)
	}
	return cert, key, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(k *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalECPrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// PEM encodes a certificate and key issued by Issue.
func PEM(k *ecdsa.PrivateKey, der []byte) (certPEMBytes, keyPEMBytes []byte) {
	return certPEM(der), keyPEM(k)
}
