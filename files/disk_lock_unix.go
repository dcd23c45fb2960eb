//go:build unix

package files

import (
	"errors"
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on f (flock), waiting for it. The lock
// goes with the process: a process that dies leaves its marker unlocked.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
}

// tryLockFile takes an exclusive lock on f if nobody holds one.
func tryLockFile(f *os.File) (bool, error) {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}
