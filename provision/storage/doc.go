// Package storage keeps model weights and other company data in an encrypted
// store with strict permissions: an fscrypt v2 directory (the default on ext4
// and f2fs) or a LUKS2 volume. A random master key is wrapped by protectors
// (a key file, a passphrase, a recovery key); destroying the wrapped keys is a
// crypto-erase.
//
// It must never write a master key, key file or passphrase to disk in the
// clear, never leave a store readable by anyone but its owner, and never count
// a file as copied in before its bytes matched the signed manifest.
package storage
