package space

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// EmptyOrAbsent refuses an output directory that exists and is not empty, so
// that no command mixes its output with files already there. A missing
// directory is fine; the caller creates it.
func EmptyOrAbsent(out string) error {
	ents, err := os.ReadDir(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case len(ents) > 0:
		return fmt.Errorf("%s exists and is not empty; choose a new --out", out)
	}
	return nil
}
