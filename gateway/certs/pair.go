package certs

import "crypto/x509"

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
	return o.write("tls pair", []leaf{
		// The runtime's certificate may also act as a client: its pod's own
		// health probe calls the runtime over loopback with it, since vLLM
		// admits no connection without a client certificate. Only pods
		// holding it can do so, and the runtime's NetworkPolicy lets it
		// connect nowhere.
		{RuntimeKeyFile, RuntimeCertFile, o.Hosts, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{ClientKeyFile, ClientCertFile, []string{ClientName}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	})
}
