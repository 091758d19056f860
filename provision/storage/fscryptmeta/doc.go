// Package fscryptmeta reads and writes the metadata of Google's fscrypt tool
// (github.com/google/fscrypt, packaged by Debian as fscrypt): the protobuf
// policy and protector files under MOUNT/.fscrypt, the tool's key wrapping,
// and which mount of a filesystem holds that directory. It lets a store the
// appliance created be unlocked with the standard tool when the appliance's
// own binary is gone.
//
// It follows fscrypt v0.3.3 (Debian 12's package); the fields used here are
// the same in v0.3.6. It must never write a key in the clear, and never
// follow a link it does not own into somebody else's directory.
package fscryptmeta
