package pgcluster

import "github.com/projectord/projectord/internal/freeport"

// freePort picks an unused port on 127.0.0.1 (outside the kernel's
// ephemeral range, so a restart of the cluster on it does not race
// outgoing connections). It stays free only until someone else takes it,
// so the caller must cope with losing it.
func freePort() (int, error) { return freeport.Pick() }
