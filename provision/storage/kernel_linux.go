//go:build linux

package storage

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fscryptKernel is the seam around the fscrypt ioctls. fsDir is any
// directory on the store's filesystem (keys belong to a filesystem, not to a
// directory).
type fscryptKernel interface {
	addKey(fsDir *os.File, raw []byte) (id [16]byte, err error)
	removeKey(fsDir *os.File, id [16]byte) (busy bool, err error)
	keyStatus(fsDir *os.File, id [16]byte) (uint32, error)
	setPolicy(dir *os.File, p unix.FscryptPolicyV2) error
	// getPolicy returns unix.ENODATA for a directory without a policy.
	getPolicy(dir *os.File) (unix.FscryptPolicyV2, error)
}

// realKernel issues the ioctls.
type realKernel struct{}

var _ fscryptKernel = realKernel{}

func ioctl(f *os.File, req uint, arg unsafe.Pointer) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if cerr := conn.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(arg))
	}); cerr != nil {
		return cerr
	}
	if errno != 0 {
		return errno
	}
	return nil
}

func (realKernel) addKey(fsDir *os.File, raw []byte) (id [16]byte, err error) {
	hdr := int(unsafe.Sizeof(unix.FscryptAddKeyArg{}))
	buf := make([]byte, hdr+len(raw)) // struct fscrypt_add_key_arg with raw[] after it
	defer clear(buf)
	arg := (*unix.FscryptAddKeyArg)(unsafe.Pointer(&buf[0]))
	arg.Key_spec.Type = unix.FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER
	arg.Raw_size = uint32(len(raw))
	copy(buf[hdr:], raw)
	if err := ioctl(fsDir, unix.FS_IOC_ADD_ENCRYPTION_KEY, unsafe.Pointer(&buf[0])); err != nil {
		return id, fmt.Errorf("add fscrypt key: %w", err)
	}
	copy(id[:], arg.Key_spec.U[:16])
	return id, nil
}

func keySpec(id [16]byte) unix.FscryptKeySpecifier {
	s := unix.FscryptKeySpecifier{Type: unix.FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER}
	copy(s.U[:], id[:])
	return s
}

func (realKernel) removeKey(fsDir *os.File, id [16]byte) (bool, error) {
	arg := unix.FscryptRemoveKeyArg{Key_spec: keySpec(id)}
	// ALL_USERS: the store belongs to the appliance, not to whoever added it.
	if err := ioctl(fsDir, unix.FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS, unsafe.Pointer(&arg)); err != nil {
		return false, fmt.Errorf("remove fscrypt key: %w", err)
	}
	return arg.Removal_status_flags&unix.FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY != 0, nil
}

func (realKernel) keyStatus(fsDir *os.File, id [16]byte) (uint32, error) {
	arg := unix.FscryptGetKeyStatusArg{Key_spec: keySpec(id)}
	if err := ioctl(fsDir, unix.FS_IOC_GET_ENCRYPTION_KEY_STATUS, unsafe.Pointer(&arg)); err != nil {
		return 0, fmt.Errorf("fscrypt key status: %w", err)
	}
	return arg.Status, nil
}

func (realKernel) setPolicy(dir *os.File, p unix.FscryptPolicyV2) error {
	if err := ioctl(dir, unix.FS_IOC_SET_ENCRYPTION_POLICY, unsafe.Pointer(&p)); err != nil {
		return fmt.Errorf("set fscrypt policy: %w", err)
	}
	return nil
}

func (realKernel) getPolicy(dir *os.File) (unix.FscryptPolicyV2, error) {
	var p unix.FscryptPolicyV2
	arg := unix.FscryptGetPolicyExArg{Size: uint64(len(unix.FscryptGetPolicyExArg{}.Policy))}
	if err := ioctl(dir, unix.FS_IOC_GET_ENCRYPTION_POLICY_EX, unsafe.Pointer(&arg)); err != nil {
		return p, fmt.Errorf("get fscrypt policy: %w", err)
	}
	if arg.Policy[0] != unix.FSCRYPT_POLICY_V2 {
		return p, fmt.Errorf("get fscrypt policy: version %d, not v2", arg.Policy[0])
	}
	p = *(*unix.FscryptPolicyV2)(unsafe.Pointer(&arg.Policy[0]))
	return p, nil
}

// fsTypeName names the filesystem holding path, for error messages.
func fsTypeName(path string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "unknown"
	}
	switch uint32(st.Type) {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case 0x65735546:
		return "fuse"
	}
	return fmt.Sprintf("type 0x%x", uint32(st.Type))
}
