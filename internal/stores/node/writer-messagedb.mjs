// Writes messages through Message DB's own server function,
// message_store.write_message, from several concurrent writers, each on
// its own connection, connected as Message DB's role message_store as its
// clients are: write_message calls acquire_lock and stream_version
// unqualified, so it works only with schema message_store on the
// search_path, which the role's default "$user" gives it. Every message's
// data carries a unique uid, so a test can compare what a projection
// applied with what the store holds.
//
//   node writer-messagedb.mjs --url URL [--writers 8] [--messages 500]
//       [--streams 4] [--run r1] [--mark-at 0] [--hold-at 0]
//
// Each writer writes --messages messages to its --streams streams
// ("<category>-<run>w<i>s<k>", four categories shared between writers, so
// writers of one category take turns on its advisory lock) with the
// expected version write_message returned last. Every third write is a
// batch of 2 or 3 messages in one transaction, as Eventide's writer
// writes a batch; every other message has metadata, the rest NULL. See
// Gate for --mark-at and --hold-at. Ends with one JSON line of counts.

import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { Gate, fail, parseArgs, report } from './writer-args.mjs';

const args = parseArgs({ url: '', writers: 8, messages: 500, streams: 4, run: 'r1', 'mark-at': 0, 'hold-at': 0 });
const gate = new Gate(args.writers, args['mark-at'], args['hold-at']);
const categories = ['account', 'order', 'invoice', 'ledger'];

const counts = { messages: 0, transactions: 0, nullMetadata: 0 };

const write = (client, stream, type, data, metadata, expected) =>
  client.query('SELECT message_store.write_message($1, $2, $3, $4, $5, $6) AS position',
    [randomUUID(), stream, type, JSON.stringify(data), metadata === null ? null : JSON.stringify(metadata), expected]);

const writer = async (w) => {
  const client = new pg.Client({ connectionString: args.url, application_name: `writer-messagedb-${w}` });
  await client.connect();
  const versions = new Map();
  try {
    let written = 0;
    for (let tx = 0; written < args.messages; tx++) {
      const stream = `${categories[w % categories.length]}-${args.run}w${w}s${tx % args.streams}`;
      const size = Math.min(tx % 3 === 2 ? 2 + (tx % 2) : 1, args.messages - written);
      if (size > 1) await client.query('BEGIN');
      try {
        for (let j = 0; j < size; j++) {
          const n = written + j;
          const uid = `${args.run}-w${w}-${n}`;
          const metadata = n % 2 === 0 ? { uid, correlationStreamName: `saga-${args.run}w${w}` } : null;
          const expected = versions.has(stream) ? versions.get(stream) : -1;
          const res = await write(client, stream, n % 3 === 0 ? 'Deposited' : 'Withdrawn', { uid, writer: w, amount: n }, metadata, expected);
          versions.set(stream, res.rows[0].position);
          if (metadata === null) counts.nullMetadata++;
        }
        if (size > 1) await client.query('COMMIT');
      } catch (err) {
        if (size > 1) await client.query('ROLLBACK').catch(() => {});
        throw err;
      }
      written += size;
      counts.messages += size;
      counts.transactions++;
      await gate.after(w, written);
    }
  } finally {
    await client.end();
  }
};

const started = Date.now();
try {
  await Promise.all(Array.from({ length: args.writers }, (_, w) => writer(w)));
} catch (err) {
  fail(`writing through message_store.write_message: ${err.stack ?? err}`);
}
report({ store: 'messagedb', writers: args.writers, ...counts, ms: Date.now() - started });
