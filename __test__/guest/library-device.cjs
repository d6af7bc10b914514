#!/usr/bin/env node
// A daemon command for guest tests that starts a device through the library API (dist/index.js)
// rather than the CLI, so options the CLI does not have, such as several request queues, can be
// exercised. Arguments: --queues=N --thread-pool-size=N, then the harness's --socket-path= and
// --shared-dir=. Exits with the device's exit code; logs go to stderr.
'use strict';
const path = require('node:path');
const { startDevice } = require(path.join(__dirname, '..', '..', 'dist', 'index.js'));

const args = Object.fromEntries(
  process.argv.slice(2).map((arg) => {
    const match = /^--([a-z-]+)=(.*)$/.exec(arg);
    if (!match) throw new Error(`unexpected argument ${arg}`);
    return [match[1], match[2]];
  }),
);

startDevice({
  sharedDir: args['shared-dir'],
  socketPath: args['socket-path'],
  maxRequestQueues: Number(args.queues ?? 1),
  threadPoolSize: Number(args['thread-pool-size'] ?? 0),
}).then(
  (device) => {
    device.on('log', (record) => process.stderr.write(`${record.level} ${record.message}\n`));
    device.exited.then((status) => process.exit(status.code ?? 1));
  },
  (err) => {
    process.stderr.write(`cannot start device: ${err.message}\n`);
    process.exit(1);
  },
);
