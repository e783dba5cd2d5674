package pgcluster

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// CreateDatabase creates database name in the cluster, as a copy of
// template ("" for PostgreSQL's default, template1).
func (c *Cluster) CreateDatabase(ctx context.Context, name, template string) error {
	return CreateDatabase(ctx, c.URL("postgres"), name, template)
}

// DropDatabase drops database name from the cluster, disconnecting its
// clients. A missing database is not an error.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	return DropDatabase(ctx, c.URL("postgres"), name)
}

// CreateDatabase creates database name on the server at adminURL, as a copy
// of template ("" for the server's default). The template must have no
// connections. It serves servers that are not a Cluster, such as the one
// named by PROJECTORD_TEST_DATABASE_URL.
func CreateDatabase(ctx context.Context, adminURL, name, template string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if err := execAdmin(ctx, adminURL, sql); err != nil {
		return fmt.Errorf("error creating database %s: %w", name, err)
	}
	return nil
}

// DropDatabase drops database name from the server at adminURL,
// disconnecting its clients. A missing database is not an error.
func DropDatabase(ctx context.Context, adminURL, name string) error {
	// FORCE (PostgreSQL 13+) terminates sessions a test left open, which
	// would otherwise make the drop fail.
	sql := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"
	if err := execAdmin(ctx, adminURL, sql); err != nil {
		return fmt.Errorf("error dropping database %s: %w", name, err)
	}
	return nil
}

// execAdmin runs one statement on its own connection. CREATE and DROP
// DATABASE cannot run inside a transaction, and a short-lived connection
// survives the server being restarted between calls.
func execAdmin(ctx context.Context, adminURL, sql string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer func() {
		// Close only sends a goodbye; don't let a cancelled ctx skip it.
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	_, err = conn.Exec(ctx, sql)
	return err
}
