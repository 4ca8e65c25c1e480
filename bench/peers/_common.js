'use strict';
/*
 * What the Node.js benchmark adapters share (the counterpart of _common.py): the command line,
 * the ready line, and where their npm packages are.
 *
 * Each adapter is started as `node ADAPTER.js HOST PORT [--mode chat|echo]
 * [--certfile PEM --keyfile PEM]` (port 0 picks a free one) and prints `LISTENING HOST:PORT`
 * on stdout once it accepts connections; with --certfile and --keyfile it serves wss:// with
 * the library's own TLS. `chat` delivers every message to every connected user, sender
 * included; `echo` answers the sender only. The open-file limit is raised by whoever starts
 * it (bench/targets.py), since Node has no call for that.
 */
const path = require('node:path');
const { createRequire } = require('node:module');
const { parseArgs } = require('node:util');

const BACKLOG = 1024; // the same listen backlog for every target
const MAX_MESSAGE = 16 * 1024 * 1024; // large enough for the 1 MiB scenario everywhere
const NODE_DIR = path.resolve(__dirname, '..', 'node'); // bench/node: package.json, node_modules

const peerRequire = createRequire(path.join(NODE_DIR, 'package.json'));

/** require() a package from bench/node/node_modules, or null if it cannot be loaded. */
function tryPeer(name) {
  try {
    return peerRequire(name);
  } catch {
    return null;
  }
}

/** require() a package from bench/node/node_modules, or stop with a one-line reason. */
function requirePeer(name) {
  try {
    return peerRequire(name);
  } catch (err) {
    const first = String(err && err.message).split('\n')[0];
    process.stderr.write(`cannot load ${name} from ${NODE_DIR}/node_modules (python3 ` +
      `bench/run.py installs it with npm ci): ${first}\n`);
    process.exit(2);
  }
}

/** The installed version of a package in bench/node/node_modules. */
function peerVersion(name) {
  return requirePeer(`${name}/package.json`).version;
}

function parse(description) {
  const usage = `usage: node ${path.basename(process.argv[1])} HOST PORT [--mode chat|echo] ` +
    `[--certfile PEM --keyfile PEM]\n${description}\n`;
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        mode: { type: 'string', default: 'chat' },
        certfile: { type: 'string' },
        keyfile: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    process.stderr.write(`${usage}error: ${err.message}\n`);
    process.exit(2);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  const port = Number(positionals[1]);
  const problem = positionals.length !== 2 ? 'HOST and PORT are required'
    : !Number.isInteger(port) || port < 0 || port > 65535 ? `bad port: ${positionals[1]}`
      : !['chat', 'echo'].includes(values.mode) ? `bad --mode: ${values.mode}`
        : Boolean(values.certfile) !== Boolean(values.keyfile)
          ? '--certfile and --keyfile go together' : null;
  if (problem) {
    process.stderr.write(`${usage}error: ${problem}\n`);
    process.exit(2);
  }
  return { host: positionals[0], port, mode: values.mode, certfile: values.certfile,
    keyfile: values.keyfile };
}

function announce(host, port) {
  process.stdout.write(`LISTENING ${host}:${port}\n`);
}

/** On SIGINT/SIGTERM (how bench/targets.py stops a target): say `summary()`, then exit 0. */
function onStop(summary) {
  const stop = () => {
    const line = summary();
    if (line) process.stderr.write(`${line}\n`);
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

module.exports = { BACKLOG, MAX_MESSAGE, NODE_DIR, announce, onStop, parse, peerVersion,
  requirePeer, tryPeer };
