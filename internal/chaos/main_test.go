package chaos

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var full = flag.Bool("chaos.full", false, "run every scenario several times (make chaos)")

// binary is projectord, built once per test binary.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "projectord-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "projectord")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/projectord")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "error building projectord:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	printFailovers()
	printHandovers()
	os.Exit(code)
}

func rounds() int {
	if *full {
		return 10
	}
	return 1
}

var (
	failMu    sync.Mutex
	failovers = map[string][]time.Duration{}
)

func recordFailover(scenario string, d time.Duration) {
	failMu.Lock()
	defer failMu.Unlock()
	failovers[scenario] = append(failovers[scenario], d)
}

// printFailovers prints p50 and max per scenario: the figures the
// reliability targets are stated in.
func printFailovers() {
	failMu.Lock()
	defer failMu.Unlock()
	if len(failovers) == 0 {
		return
	}
	names := make([]string, 0, len(failovers))
	for n := range failovers {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "\nfailover (fault -> new leader's first committed batch)\n")
	fmt.Fprintf(&b, "| scenario | runs | p50 | max |\n|---|---|---|---|\n")
	for _, n := range names {
		ds := append([]time.Duration(nil), failovers[n]...)
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", n, len(ds), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	}
	fmt.Print(b.String())
}

type handover struct {
	moves int64
	took  time.Duration
	led   map[string]int
}

var handovers = map[string][]handover{}

// recordHandovers notes how many leaderships a membership change moved
// and how soon the shares were right again, and logs it.
func recordHandovers(t *testing.T, change string, moves int64, took time.Duration, led map[string]int) {
	t.Helper()
	failMu.Lock()
	handovers[change] = append(handovers[change], handover{moves, took, led})
	failMu.Unlock()
	t.Logf("%s: %d handovers; shares right after %s; led now %v", change, moves, took.Round(time.Millisecond), led)
}

// printHandovers prints, per membership change, the handovers each run
// moved and how long the shares took to be right (TestChaosBalance).
func printHandovers() {
	failMu.Lock()
	defer failMu.Unlock()
	if len(handovers) == 0 {
		return
	}
	names := make([]string, 0, len(handovers))
	for n := range handovers {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "\nbalance (3 replicas, 30 projectors, 8 writers committing out of order)\n")
	fmt.Fprintf(&b, "| membership change | runs | handovers per run | shares right after (max) | led after (last run) |\n|---|---|---|---|---|\n")
	for _, n := range names {
		hs := handovers[n]
		var moves []string
		var longest time.Duration
		for _, h := range hs {
			moves = append(moves, fmt.Sprint(h.moves))
			longest = max(longest, h.took)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %v |\n", n, len(hs), strings.Join(moves, ", "), longest.Round(time.Millisecond), hs[len(hs)-1].led)
	}
	fmt.Print(b.String())
}
