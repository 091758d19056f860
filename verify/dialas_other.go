//go:build !linux

package verify

import "errors"

func dialAs(string, int, int, string) (int, string, error) {
	return 0, "", errors.New("a connection probe as another user needs Linux")
}

const (
	dialConnected = 0
	dialRefused   = 3
	dialBlocked   = 4
)
