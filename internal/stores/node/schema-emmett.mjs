// Creates Emmett's PostgreSQL schema through Emmett's own API, as an
// application does before its first append (the event store's
// schema.migrate(), which runs Emmett's migrations under Dumbo's advisory
// lock and records them in dmb_migrations).
//
//   node schema-emmett.mjs postgres://user@host:port/db
//
// Prints the migrations applied and skipped as one JSON line.

import { getPostgreSQLEventStore } from '@event-driven-io/emmett-postgresql';
import { fail, report } from './writer-args.mjs';

const url = process.argv[2];
if (!url) fail('usage: node schema-emmett.mjs <postgres url>');

const store = getPostgreSQLEventStore(url);
try {
  const result = await store.schema.migrate();
  report({
    store: 'emmett',
    applied: result.applied.map((m) => m.name),
    skipped: result.skipped.map((m) => m.name),
  });
} catch (err) {
  fail(`migrating Emmett's schema: ${err.stack ?? err}`);
} finally {
  await store.close();
}
