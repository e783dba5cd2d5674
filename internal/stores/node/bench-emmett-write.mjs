// bench-emmett-write.mjs creates Emmett's schema with Emmett's own
// migration code and appends orders' events with Emmett's own
// appendToStream, for internal/bench's store benchmarks.
//
//   node bench-emmett-write.mjs --url postgres://... --orders 20000 [--concurrency 1]
//
// Orders are shaped as the Go benchmarks' loadOrders shapes them: per order
// an OrderPlaced, 1 to 5 ItemAdded and, for 9 orders in 10, an
// OrderShipped, 3 to 7 events and exactly 5 on average when --orders is a
// multiple of 5. Each order is one appendToStream call, so one transaction
// of its own, as an application appends a command's events. Prints one
// line of JSON on stdout: {"events":N,"last_global_position":"...","seconds":S}.
//
// Appending concurrently makes transaction order differ from
// global_position order, and Emmett 0.42's consumer, which orders by
// transaction_id but resumes after a global_position, then skips events
// (87,574 of 100,000 seen with 4 appenders; fixed on Emmett's main branch
// in 580d0a3e, in no release yet). Its benchmark appends one order at a
// time (the default) so that its peer can read every event.
import { parseArgs } from 'node:util';
import { getPostgreSQLEventStore } from '@event-driven-io/emmett-postgresql';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    orders: { type: 'string' },
    concurrency: { type: 'string', default: '1' },
  },
});
if (!args.url || !args.orders) {
  console.error('usage: bench-emmett-write.mjs --url URL --orders N [--concurrency C]');
  process.exit(2);
}
const orders = Number.parseInt(args.orders, 10);
const concurrency = Number.parseInt(args.concurrency, 10);
if (!(orders > 0) || !(concurrency > 0)) {
  console.error(`--orders and --concurrency must be positive integers, got ${args.orders} and ${args.concurrency}`);
  process.exit(2);
}

// orderEvents mirrors loadOrders' SQL: the same lengths, types and
// payload fields, so the rows are about as wide as the native table's.
const channels = ['web', 'app', 'store'];
function orderEvents(o) {
  const len = 3 + ((o * 7) % 5);
  const id = `order-${o}`;
  const metadata = { correlation_id: `c${o}`, user: `user-${o % 101}` };
  const events = [];
  for (let s = 1; s <= len; s++) {
    if (s === 1) {
      events.push({ type: 'OrderPlaced', data: { order_id: id, customer: `customer-${o % 997}`, channel: channels[o % 3] }, metadata });
    } else if (s === len && o % 10 !== 0) {
      events.push({ type: 'OrderShipped', data: { order_id: id, carrier: 'dhl', tracking: `t${o}` }, metadata });
    } else {
      events.push({
        type: 'ItemAdded',
        data: {
          order_id: id, sku: `sku-${(o * 31 + s * 17) % 6}`, qty: 1 + ((o + s) % 4),
          price: Math.round(100 + ((o * 13 + s * 7) % 5000)) / 100,
        },
        metadata,
      });
    }
  }
  return events;
}

const store = getPostgreSQLEventStore(args.url);
let failed = false;
try {
  // Emmett's own migrations create the schema: emt_messages partitioned by
  // partition, with 'emt:default' partitioned again by is_archived.
  await store.schema.migrate();
  const start = performance.now();
  let next = 1;
  let events = 0;
  let last = 0n;
  // With --concurrency above 1, that many appenders at once, as
  // concurrent requests append: each takes the next order until none is
  // left.
  const worker = async () => {
    while (next <= orders) {
      const o = next++;
      const evs = orderEvents(o);
      const r = await store.appendToStream(`order-${o}`, evs);
      events += evs.length;
      if (r.lastEventGlobalPosition > last) last = r.lastEventGlobalPosition;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, orders) }, worker));
  const seconds = (performance.now() - start) / 1000;
  process.stdout.write(JSON.stringify({ events, last_global_position: last.toString(), seconds }) + '\n');
} catch (err) {
  failed = true;
  console.error(`bench-emmett-write: ${err?.stack ?? err}`);
} finally {
  await store.close();
}
process.exit(failed ? 1 : 0);
