// What the writer scripts share: their arguments, the gate the tests
// coordinate a fault with, and the report they end with. The writing
// itself goes through each store's own package, in its own script.

import { createInterface } from 'node:readline';

// parseArgs reads --name value pairs over the defaults; every value the
// defaults hold as a number must parse as one.
export const parseArgs = (defaults) => {
  const args = { ...defaults };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in defaults) || i + 1 >= argv.length) {
      fail(`unknown or incomplete argument ${argv[i]}; known: ${Object.keys(defaults).map((k) => '--' + k).join(' ')}`);
    }
    const value = argv[i + 1];
    if (typeof defaults[key] === 'number') {
      const n = Number(value);
      if (!Number.isFinite(n) || n < 0) fail(`--${key} must be a non-negative number, not ${value}`);
      args[key] = n;
    } else {
      args[key] = value;
    }
  }
  if (!args.url) fail('--url is required');
  if (args.writers < 1 || args.messages < 1) fail('--writers and --messages must be at least 1');
  return args;
};

export const fail = (msg) => {
  process.stderr.write(`error: ${msg}\n`);
  process.exit(1);
};

// Gate lets a test fault the system while every writer is known to be
// mid-run: once each writer has written markAt messages the script prints
// "writing"; a writer that reaches holdAt waits there until a line arrives
// on stdin. So between "writing" and the test's line, writes are still to
// come from every writer, however fast or slow the machine. holdAt 0 (the
// default) holds nothing and stdin is never read.
export class Gate {
  constructor(writers, markAt, holdAt) {
    this.unmarked = writers;
    this.marked = new Set();
    this.held = new Set();
    this.markAt = markAt;
    this.holdAt = holdAt;
    this.released = holdAt > 0 ? new Promise((resolve) => {
      const rl = createInterface({ input: process.stdin });
      rl.once('line', () => { rl.close(); resolve(); });
      // A test that dies closes our stdin: write the rest rather than hang.
      rl.once('close', resolve);
    }) : Promise.resolve();
  }

  // after is called by writer w once it has written n messages in all
  // (batches make n jump, hence the thresholds are crossed, not met).
  async after(w, n) {
    if (n >= this.markAt && !this.marked.has(w)) {
      this.marked.add(w);
      if (--this.unmarked === 0) process.stdout.write('writing\n');
    }
    if (this.holdAt > 0 && n >= this.holdAt && !this.held.has(w)) {
      this.held.add(w);
      await this.released;
    }
  }
}

// report prints the one JSON line the tests parse: what was written, by
// kind, so they can compare it with the store's rows.
export const report = (fields) => {
  process.stdout.write(JSON.stringify(fields) + '\n');
};
