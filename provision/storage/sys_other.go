//go:build !unix

package storage

const oNoFollow = 0

const oNonblock = 0

func setUmask(int) int { return 0 }
