// Package pgtest gives every test its own PostgreSQL database, cloned from a
// template that is prepared once per test binary.
//
// A test binary opts in from TestMain:
//
//	func TestMain(m *testing.M) {
//		os.Exit(pgtest.Main(m, pgtest.WithTemplate(migrate)))
//	}
//
// Main starts one ephemeral cluster (package pgcluster) for the whole binary,
// or uses the server named by PROJECTORD_TEST_DATABASE_URL, and removes
// everything it created when the tests end, including when the run is
// interrupted with SIGINT or SIGTERM. Tests then call NewDatabase.
//
// This package must not import internal/store: store's own tests use it.
// The caller passes the migrations in as the template's setup function.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projectord/projectord/internal/store/pgcluster"
)

// EnvURL names the environment variable that points tests at an existing
// server instead of an ephemeral cluster. Its value is a postgres:// URL of
// a maintenance database, as a role allowed to create databases.
const EnvURL = "PROJECTORD_TEST_DATABASE_URL"

// dropTimeout bounds creating or dropping one database.
const dropTimeout = 30 * time.Second

// Option configures Main.
type Option func(*config)

type config struct {
	setup func(ctx context.Context, url string) error
}

// WithTemplate has Main prepare the template database by calling setup with
// its URL, typically to run the migrations. setup should close its
// connections before returning; PostgreSQL copies only templates nobody is
// connected to, so leftovers are terminated.
func WithTemplate(setup func(ctx context.Context, url string) error) Option {
	return func(c *config) { c.setup = setup }
}

// active is the environment Main set up; nil outside Main.
var active atomic.Pointer[env]

// seq numbers databases so that their names show creation order.
var seq atomic.Int64

// NewDatabase returns the URL of a new database cloned from the template,
// dropped when t ends. Main must be running in TestMain.
func NewDatabase(t testing.TB) string {
	t.Helper()
	e := active.Load()
	if e == nil {
		t.Fatal("pgtest: no test server; call pgtest.Main from TestMain")
	}
	name := fmt.Sprintf("t_%d_%s", seq.Add(1), randomSuffix())
	ctx, cancel := context.WithTimeout(t.Context(), dropTimeout)
	defer cancel()
	if err := e.create(ctx, name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := e.drop(name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return e.url(name)
}

// Cluster returns the ephemeral cluster behind the tests, for tests that
// stop or restart the server. It is nil when PROJECTORD_TEST_DATABASE_URL
// names an existing server, or outside Main.
func Cluster() *pgcluster.Cluster {
	if e := active.Load(); e != nil {
		return e.cluster
	}
	return nil
}

// AdminURL returns the URL of the server's maintenance database, as a role
// that may create databases; "" outside Main.
func AdminURL() string {
	if e := active.Load(); e != nil {
		return e.admin.String()
	}
	return ""
}

// env is one test binary's server and template.
type env struct {
	cluster  *pgcluster.Cluster // nil with an external server
	admin    *url.URL
	template string

	// createMu serialises CREATE DATABASE. A copy keeps one server process
	// busy for a few hundred milliseconds (about 250ms for a near-empty
	// template with PostgreSQL 15 on 2 cores), so concurrent copies gain
	// little, and on a shared external server a binary full of parallel
	// tests should not fire them all at once. It also lets teardown wait
	// for a copy in flight, which would otherwise outlive the list of
	// databases to drop.
	createMu sync.Mutex

	mu   sync.Mutex
	live map[string]struct{} // created and not yet dropped
	torn bool
}

// newEnv starts or connects to the server and prepares the template. On
// error it has already removed whatever it created.
func newEnv(ctx context.Context, cfg config) (*env, error) {
	e := &env{live: map[string]struct{}{}}
	if raw := os.Getenv(EnvURL); raw != "" {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, fmt.Errorf("%s must be a URL like postgres://user:password@host:5432/postgres", EnvURL)
		}
		e.admin = u
	} else {
		c, err := pgcluster.Start(ctx, pgcluster.Options{})
		if err != nil {
			return nil, err
		}
		e.cluster = c
		e.admin, _ = url.Parse(c.URL("postgres")) // well-formed by construction
	}

	if err := e.prepareTemplate(ctx, cfg.setup); err != nil {
		e.teardown()
		return nil, err
	}
	return e, nil
}

func (e *env) prepareTemplate(ctx context.Context, setup func(context.Context, string) error) error {
	// The random part keeps test binaries sharing an external server apart.
	name := "projectord_template_" + randomSuffix()
	if err := e.create(ctx, name); err != nil {
		return fmt.Errorf("error creating template database on %s: %w", e.admin.Redacted(), err)
	}
	e.template = name
	if setup != nil {
		if err := setup(ctx, e.url(name)); err != nil {
			return fmt.Errorf("error preparing template database: %w", err)
		}
	}
	conn, err := pgx.Connect(ctx, e.admin.String())
	if err != nil {
		return fmt.Errorf("error sealing template database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Nothing may connect to the template from now on, and sessions setup
	// left behind would make every copy fail.
	_, err = conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH ALLOW_CONNECTIONS false")
	if err == nil {
		_, err = conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
	}
	if err != nil {
		return fmt.Errorf("error sealing template database: %w", err)
	}
	return nil
}

// create creates database name from the template (from the server's
// default while the template itself is being created) and records it for
// teardown.
func (e *env) create(ctx context.Context, name string) error {
	e.createMu.Lock()
	defer e.createMu.Unlock()
	e.mu.Lock()
	torn := e.torn
	if !torn {
		e.live[name] = struct{}{}
	}
	e.mu.Unlock()
	if torn {
		return errors.New("test server already torn down")
	}
	if err := pgcluster.CreateDatabase(ctx, e.admin.String(), name, e.template); err != nil {
		e.forget(name)
		return err
	}
	return nil
}

func (e *env) drop(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
	defer cancel()
	if err := pgcluster.DropDatabase(ctx, e.admin.String(), name); err != nil {
		return err
	}
	e.forget(name)
	return nil
}

func (e *env) forget(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.live, name)
}

// teardown removes everything the env created: the whole cluster, or the
// databases it made on an external server. Only the first call acts.
// Problems are reported on stderr because there is no test left to fail.
func (e *env) teardown() {
	// Wait for a copy in flight, so that its database is on the list.
	e.createMu.Lock()
	defer e.createMu.Unlock()
	e.mu.Lock()
	if e.torn {
		e.mu.Unlock()
		return
	}
	e.torn = true
	names := slices.Sorted(maps.Keys(e.live))
	e.mu.Unlock()

	if e.cluster != nil {
		if err := e.cluster.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
		return
	}
	for _, name := range names {
		if err := e.drop(name); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
	}
}

// url returns the URL of database name on the env's server.
func (e *env) url(name string) string {
	u := *e.admin
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// randomSuffix keeps names from colliding across test binaries that share
// an external server.
func randomSuffix() string {
	return fmt.Sprintf("%08x", rand.Uint32())
}
