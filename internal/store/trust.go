package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// querier is a pool, a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// untrustedSQL lists schema projectord and every object in it whose owner
// is neither current_user, nor a superuser (who could run any code as us
// anyway), nor a role that already holds current_user's privileges (so
// whoever can act as it can already act as us). A role current_user is
// merely a member of is not enough: its other members could create the
// schema as that role and have their code run with our privileges. A role with CREATE on
// the database can create the schema first; its tables, views, functions,
// types and operators would then run its code with our privileges: the
// functions when we call them, a view's functions when we read it.
const untrustedSQL = `
WITH objs AS (
	SELECT 'schema' AS kind, n.nspname::text AS name, n.nspowner AS owner
	  FROM pg_catalog.pg_namespace n WHERE n.nspname = 'projectord'
	UNION ALL
	SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
			WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'i' THEN 'index'
			WHEN 'I' THEN 'index' WHEN 'f' THEN 'foreign table' ELSE 'relation' END,
		'projectord.' || c.relname, c.relowner
	  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'projectord'
	UNION ALL
	SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
		p.oid::pg_catalog.regprocedure::text, p.proowner
	  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
	 WHERE n.nspname = 'projectord'
	UNION ALL
	SELECT 'type', 'projectord.' || t.typname, t.typowner
	  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
	 WHERE n.nspname = 'projectord'
	UNION ALL
	SELECT 'operator', o.oid::pg_catalog.regoperator::text, o.oprowner
	  FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
	 WHERE n.nspname = 'projectord')
SELECT o.kind, o.name, pg_catalog.pg_get_userbyid(o.owner)::text, current_user::text
  FROM objs o JOIN pg_catalog.pg_roles r ON r.oid = o.owner
 WHERE NOT r.rolsuper AND o.owner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
   AND NOT pg_catalog.pg_has_role(o.owner, current_user, 'USAGE')
 ORDER BY o.kind = 'schema' DESC, o.kind, o.name
 LIMIT 5`

// CheckTrust returns ErrUntrustedSchema, naming each object and its owner,
// when schema projectord exists but it, or anything in it, is owned by a
// role projectord does not trust (see untrustedSQL). A missing schema is no error: migrate creates it.
func CheckTrust(ctx context.Context, q querier) error {
	rows, err := q.Query(ctx, untrustedSQL)
	if err != nil {
		return fmt.Errorf("error checking who owns schema projectord: %w", err)
	}
	var found []string
	var me string
	for rows.Next() {
		var kind, name, owner string
		if err := rows.Scan(&kind, &name, &owner, &me); err != nil {
			return fmt.Errorf("error checking who owns schema projectord: %w", err)
		}
		found = append(found, fmt.Sprintf("%s %s is owned by role %q", kind, name, owner))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("error checking who owns schema projectord: %w", err)
	}
	if len(found) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s, not by %q or a role it is a member of; projectord would run that role's code with its own privileges, so it refuses. "+
		"Check what the schema holds, drop it (DROP SCHEMA projectord CASCADE, as its owner or a superuser) and run projectord migrate as %q (README, Privileges)",
		ErrUntrustedSchema, strings.Join(found, "; "), me, me)
}
