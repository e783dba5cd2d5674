package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = ""
	commit  = ""
	date    = ""
)

// buildInfo is what `projectord version` prints and build_info exports.
type buildInfo struct {
	Version, Commit, Date, GoVersion string
}

// currentBuild fills what -ldflags left empty from the module's build info,
// so a `go build` or `go install` binary still says something useful.
func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			b.Version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision" && b.Commit == "":
				b.Commit = s.Value
			case s.Key == "vcs.time" && b.Date == "":
				b.Date = s.Value
			case s.Key == "vcs.modified" && s.Value == "true" && b.Commit != "" && version == "":
				b.Commit += "-dirty"
			}
		}
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	if b.Date == "" {
		b.Date = "unknown"
	}
	return b
}

func (b buildInfo) String() string {
	return fmt.Sprintf("projectord %s (commit %s, built %s, %s %s/%s)", b.Version, b.Commit, b.Date, b.GoVersion, runtime.GOOS, runtime.GOARCH)
}
