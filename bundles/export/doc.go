// Package export turns a verified, signed bundle into what a Kubernetes
// cluster runs: OCI images built without Docker (the model image holds the
// signed bundle byte for byte; the gateway image holds this tool's binary),
// a Helm chart whose every pod passes Pod Security "restricted" and whose
// NetworkPolicy mirrors the appliance's egress-deny firewall, and a Zarf
// package description that carries both across the gap.
//
// It must never put bytes into an image that differ from what the manifest
// signed (every file is hashed again while its layer is written), write a
// secret into a chart or an image, or start anything on a cluster.
package export
