// bench-emmett-consume.mjs is the peer of internal/bench's Emmett catch-up
// benchmark: Emmett's own PostgreSQL consumer (postgreSQLEventStoreConsumer)
// with one reactor whose handler does nothing, reading emt_messages from
// the beginning until it has seen --events events.
//
//   node bench-emmett-consume.mjs --url postgres://... --events N \
//     [--batch-size B] [--pulling-ms P] [--processor-id ID]
//
// Without --batch-size and --pulling-ms the consumer runs with Emmett's
// defaults (100 messages per batch, 50 ms between batches), as an
// application that does not tune it gets.
//
// The benchmark measures CPU around the consumption only, so the script
// talks a small line protocol on stdio: once set up it prints
// {"ready":true}; on a line from stdin it consumes and prints
// {"events":N,"last_global_position":"...","seconds":S,"cpu_seconds":C}
// (wall and CPU time of this process over the consumption alone); then it
// waits for stdin to close before closing its connections, so that the
// server processes serving it are still there to be measured.
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { postgreSQLEventStoreConsumer } from '@event-driven-io/emmett-postgresql';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    events: { type: 'string' },
    'batch-size': { type: 'string' },
    'pulling-ms': { type: 'string' },
    'processor-id': { type: 'string', default: 'projectord-bench-noop' },
  },
});
const events = Number.parseInt(args.events ?? '', 10);
if (!args.url || !(events > 0)) {
  console.error('usage: bench-emmett-consume.mjs --url URL --events N [--batch-size B] [--pulling-ms P] [--processor-id ID]');
  process.exit(2);
}
const pulling = {};
if (args['batch-size'] !== undefined) pulling.batchSize = Number.parseInt(args['batch-size'], 10);
if (args['pulling-ms'] !== undefined) pulling.pullingFrequencyInMs = Number.parseInt(args['pulling-ms'], 10);

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const send = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const consumer = postgreSQLEventStoreConsumer({ connectionString: args.url, pulling });
let seen = 0;
let last = 0n;
consumer.reactor({
  processorId: args['processor-id'],
  eachMessage: async () => {},
  // The reactor's own stop condition: it stops the consumer after the
  // batch holding the last event, having stored that event's checkpoint.
  stopAfter: (message) => {
    seen++;
    last = message.metadata.globalPosition;
    return seen >= events;
  },
});

let failed = false;
try {
  send({ ready: true });
  const go = await lines.next();
  if (go.done) throw new Error('stdin closed before the go line');
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await consumer.start();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  send({ events: seen, last_global_position: last.toString(), seconds, cpu_seconds: (cpu.user + cpu.system) / 1e6 });
  while (!(await lines.next()).done) {
    // Drain until the benchmark closes stdin.
  }
} catch (err) {
  failed = true;
  console.error(`bench-emmett-consume: ${err?.stack ?? err}`);
} finally {
  await consumer.close();
}
process.exit(failed ? 1 : 0);
