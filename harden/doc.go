// Package harden makes the host enforce "data never leaves the network": an
// egress-deny nftables table of its own (inet qwen_appliance), kept across
// reboots and checked against what is live, a system identity without a login
// for the services, strict directories, and hardened systemd units.
//
// It must never touch another owner's nftables table, never flush the whole
// ruleset, and never write outside the --root prefix it is given.
package harden
