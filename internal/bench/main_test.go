package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

var (
	flagRounds  = flag.Int("bench.rounds", 5, "rounds per benchmark; each round runs the baseline and projectord once, alternating which goes first")
	flagEvents  = flag.Int("bench.events", 1_000_000, "events in the catch-up benchmark (a multiple of 5)")
	flagOrders  = flag.Int("bench.orders", 50_000, "orders in the SQL sink benchmark (about 5 events each)")
	flagLive    = flag.Duration("bench.live", 10*time.Second, "duration of each live-latency run")
	flagQuiet   = flag.Float64("bench.quiet", 0.2, "a round counts only if other processes used at most this many cores meanwhile")
	flagSummary = flag.String("bench.summary", "", "also write the markdown summary to this file")
)

func TestMain(m *testing.M) {
	flag.Parse()
	// Without -bench there is nothing to run: do not start PostgreSQL.
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run())
	}
	code := pgtest.Main(m, pgtest.WithTemplate(prepareTemplate))
	if !summary.empty() {
		summary.write(os.Stdout)
		if *flagSummary != "" {
			f, err := os.Create(*flagSummary)
			if err == nil {
				summary.write(f)
				err = f.Close()
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: error writing summary: %v\n", err)
			}
		}
	}
	os.Exit(code)
}

// prepareTemplate migrates the template and creates a native events table.
func prepareTemplate(ctx context.Context, url string) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := store.Migrate(ctx, pool, "bench"); err != nil {
		return err
	}
	for _, q := range store.NativeTableSQL("public.events") {
		if _, err := pool.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// summary collects the markdown tables printed when the run ends.
var summary = &report{}

type table struct {
	title, note string
	header      []string
	rows        [][]string
}

type report struct {
	mu        sync.Mutex
	pgVersion string
	tables    []*table
}

func (r *report) empty() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tables) == 0
}

func (r *report) setPGVersion(v string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pgVersion = v
}

// add appends a row to the table titled title, creating it with header
// and note on first use.
func (r *report) add(title, note string, header []string, row ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.tables {
		if t.title == title {
			t.rows = append(t.rows, row)
			return
		}
	}
	r.tables = append(r.tables, &table{title: title, note: note, header: header, rows: [][]string{row}})
}

func (r *report) write(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(w, "\n## projectord benchmarks\n\n")
	fmt.Fprintf(w, "%s; nproc %d, GOMAXPROCS %d, %s %s/%s; %s; medians of %d quiet rounds per figure (see \"rounds kept\")\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.GOMAXPROCS(0),
		runtime.Version(), runtime.GOOS, runtime.GOARCH, r.pgVersion, *flagRounds)
	if cpu := cpuModel(); cpu != "" {
		fmt.Fprintf(w, "CPU: %s\n", cpu)
	}
	for _, t := range r.tables {
		fmt.Fprintf(w, "\n### %s\n\n", t.title)
		if t.note != "" {
			fmt.Fprintf(w, "%s\n\n", t.note)
		}
		fmt.Fprintf(w, "| %s |\n|", strings.Join(t.header, " | "))
		for range t.header {
			fmt.Fprint(w, "---|")
		}
		fmt.Fprintln(w)
		for _, row := range t.rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
	}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
