package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/projectord/projectord/internal/store/pgtest"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuSample is the CPU time used so far by this process (the client) and by
// each process of the ephemeral PostgreSQL cluster (the postmaster and its
// children), by pid.
type cpuSample struct {
	client    time.Duration
	server    map[int]int64 // pid -> utime+stime in ticks
	machine   time.Duration // busy time of all CPUs, everyone's
	clientOK  bool
	machineOK bool
}

func sampleCPU() cpuSample {
	var s cpuSample
	s.client, s.clientOK = clientCPU()
	s.server = serverCPU()
	s.machine, s.machineOK = machineBusy()
	return s
}

// cpuUse is the CPU time spent between two samples.
type cpuUse struct {
	client, server time.Duration
	ok             bool // both measured
	// foreign is CPU time other processes used meanwhile (other tests,
	// builds): what makes wall times on a shared machine noise.
	foreign   time.Duration
	foreignOK bool
}

// since returns the CPU used from start to s. A server process that exited
// in between is missed (its time is unknowable), so the benchmarks keep
// their pools open across a measurement; one that started in between counts
// in full.
func (s cpuSample) since(start cpuSample) cpuUse {
	u := cpuUse{client: s.client - start.client, ok: s.clientOK && start.clientOK && s.server != nil && start.server != nil}
	var ticks int64
	for pid, t := range s.server {
		if t0, ok := start.server[pid]; ok && t0 <= t {
			ticks += t - t0
		} else if !ok {
			ticks += t
		}
	}
	u.server = time.Duration(ticks) * clockTick
	if u.ok && s.machineOK && start.machineOK {
		u.foreign = max(0, s.machine-start.machine-u.client-u.server)
		u.foreignOK = true
	}
	return u
}

// machineBusy is the user, system and steal time of all CPUs from /proc/stat.
func machineBusy() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	// cpu user nice system idle iowait irq softirq steal ... Interrupt
	// time is left out: it is mostly our own loopback traffic, which no
	// process is charged for.
	if len(f) < 9 || string(f[0]) != "cpu" {
		return 0, false
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 8} {
		v, err := strconv.ParseInt(string(f[i]), 10, 64)
		if err != nil {
			return 0, false
		}
		busy += v
	}
	return time.Duration(busy) * clockTick, true
}

// serverCPU returns user+system ticks of the test cluster's processes, or
// nil with an external server (PROJECTORD_TEST_DATABASE_URL) or without /proc.
func serverCPU() map[int]int64 {
	c := pgtest.Cluster()
	if c == nil || c.PID() == 0 {
		return nil
	}
	root := c.PID()
	paths, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil || len(paths) == 0 {
		return nil
	}
	out := map[int]int64{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		pid, ppid, t, ok := parseStat(b)
		if ok && (pid == root || ppid == root) {
			out[pid] = t
		}
	}
	if _, ok := out[root]; !ok {
		return nil
	}
	return out
}

// parseStat returns pid, ppid and utime+stime (in ticks) from /proc/<pid>/stat.
func parseStat(b []byte) (pid, ppid int, ticks int64, ok bool) {
	open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || close < open {
		return 0, 0, 0, false
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return 0, 0, 0, false
	}
	// After the command: state(3) ppid(4) ... utime(14) stime(15).
	f := bytes.Fields(b[close+1:])
	if len(f) < 13 {
		return 0, 0, 0, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	ut, err2 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err3 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, 0, false
	}
	return pid, ppid, ut + st, true
}
