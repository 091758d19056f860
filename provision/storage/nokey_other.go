//go:build !linux

package storage

func isNoKey(error) bool { return false }
