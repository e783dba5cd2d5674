package pgcluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// serverUsers are tried in order when we run as root. initdb and postgres
// refuse to run as root, so we drop to the account packages create for the
// server, or to nobody where there is none.
var serverUsers = []string{"postgres", "nobody"}

// serverCredential returns the identity to run initdb and postgres under, or
// nil to run them as ourselves.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range serverUsers {
		u, err := user.Lookup(name)
		if errors.As(err, new(user.UnknownUserError)) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("error looking up user %s: %w", name, err)
		}
		uid, errUID := strconv.ParseUint(u.Uid, 10, 32)
		gid, errGID := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(errUID, errGID); err != nil {
			return nil, fmt.Errorf("error parsing ids of user %s: %w", name, err)
		}
		// Groups is left empty on purpose: the child then calls
		// setgroups(0), shedding root's supplementary groups.
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root and none of the users %v exists to run PostgreSQL as", serverUsers)
}

// chownTree hands dir and everything under it to cred's user, so that the
// server can create its data directory, socket and lock files there.
func chownTree(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(path, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("error changing owner of %s: %w", path, err)
		}
		return nil
	})
}
