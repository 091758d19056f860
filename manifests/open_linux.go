//go:build linux

package manifests

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// openInRoot opens the bundle-relative path rel below root for reading
// without following any symlink on the way (openat2 RESOLVE_NO_SYMLINKS and
// RESOLVE_BENEATH), and without blocking on a FIFO. The caller checks the
// file type with Stat.
func openInRoot(root, rel string) (*os.File, error) {
	dirfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dirfd)
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(dirfd, rel, &how)
	if err == unix.ENOSYS {
		return openByLstat(root, rel)
	}
	if err != nil {
		if err == unix.ELOOP || err == unix.EXDEV {
			return nil, &FileTypeError{Path: filepath.Join(root, rel), Type: "reached through a symlink"}
		}
		return nil, &os.PathError{Op: "open", Path: rel, Err: err}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, rel)), nil
}

// openNonblock opens path read-only with O_NONBLOCK, so that opening a FIFO
// never waits for a writer.
func openNonblock(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// setBlocking clears O_NONBLOCK once the file is known to be regular.
func setBlocking(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetNonblock(int(fd), false) }); err != nil {
		return err
	}
	return serr
}
