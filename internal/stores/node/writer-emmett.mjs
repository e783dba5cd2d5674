// Writes events (and a share of commands) through Emmett's own
// appendToStream, from several concurrent writers, each with its own event
// store and so its own connections, as separate application instances
// would have. Every message's data carries a unique uid, so a test can
// compare what a projection applied with what the store holds.
//
//   node writer-emmett.mjs --url URL [--writers 8] [--messages 500]
//       [--streams 4] [--run r1] [--mark-at 0] [--hold-at 0]
//
// Each writer appends --messages messages in appends of 1 to 3 to its
// --streams streams ("order-<run>w<i>s<k>"), with the expected stream
// version Emmett returned for the previous append. Every fifth append is a
// command (kind 'Command', stored with message_kind 'C', as Emmett's
// workflows store the commands they send); the rest are events. See Gate
// for --mark-at and --hold-at. Ends with one JSON line of counts.

import { getPostgreSQLEventStore } from '@event-driven-io/emmett-postgresql';
import { Gate, fail, parseArgs, report } from './writer-args.mjs';

const args = parseArgs({ url: '', writers: 8, messages: 500, streams: 4, run: 'r1', 'mark-at': 0, 'hold-at': 0 });
const gate = new Gate(args.writers, args['mark-at'], args['hold-at']);

const counts = { events: 0, commands: 0, appends: 0 };

const writer = async (w) => {
  // Default options: the store migrates its schema before its first
  // append, as every Emmett application does unless told otherwise.
  const store = getPostgreSQLEventStore(args.url);
  const versions = new Map();
  try {
    let written = 0;
    for (let append = 0; written < args.messages; append++) {
      const stream = `order-${args.run}w${w}s${append % args.streams}`;
      const size = Math.min(1 + (append % 3), args.messages - written);
      const command = append % 5 === 4;
      const messages = [];
      for (let j = 0; j < size; j++) {
        const uid = `${args.run}-w${w}-${written + j}`;
        messages.push(command
          ? { kind: 'Command', type: 'ShipOrder', data: { uid, writer: w }, metadata: { uid } }
          : { type: append % 2 === 0 ? 'OrderPlaced' : 'ItemAdded', data: { uid, writer: w, amount: written + j }, metadata: { uid } });
      }
      const expected = versions.get(stream);
      const result = await store.appendToStream(stream, messages, expected === undefined ? undefined : { expectedStreamVersion: expected });
      versions.set(stream, result.nextExpectedStreamVersion);
      written += size;
      counts.appends++;
      counts[command ? 'commands' : 'events'] += size;
      await gate.after(w, written);
    }
  } finally {
    await store.close();
  }
};

const started = Date.now();
try {
  await Promise.all(Array.from({ length: args.writers }, (_, w) => writer(w)));
} catch (err) {
  fail(`appending through Emmett: ${err.stack ?? err}`);
}
report({ store: 'emmett', writers: args.writers, ...counts, ms: Date.now() - started });
