// Package verify re-proves, on a running host, what install set up: that the
// installed bytes are the signed ones, that the firewall denies egress, that
// the model store is encrypted and private, that the services run confined
// and offline, that the gateway refuses strangers and keeps its audit chain.
// Every check has a stable ID and maps to NIST SP 800-53 rev. 5 controls;
// every result carries the evidence it saw and when. Reports can be signed
// and later checked with VerifyReport.
//
// A check must never change the host: it reads, probes and reports.
package verify
