// Package configs holds projectord's configuration files. dev.yaml is
// embedded because `projectord dev` runs it; it stays a plain file here,
// next to example.yaml, so that it can be read, copied and validated like
// any other (`projectord config validate --config configs/dev.yaml`).
package configs

import _ "embed"

// Dev is configs/dev.yaml: the configuration `projectord dev` runs.
//
//go:embed dev.yaml
var Dev []byte
