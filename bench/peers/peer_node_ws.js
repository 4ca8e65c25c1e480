'use strict';
/*
 * Benchmark adapter: `ws` on Node.js, the most used WebSocket server library for Node.
 *
 * Chat is its own broadcast as its README describes it: a loop over `wss.clients`, sending to
 * every client whose readyState is OPEN (the sender included); echo sends back to the sender.
 * Messages keep their type (text stays text). permessage-deflate is off (also ws's default),
 * messages may be up to 16 MiB, keepalive pings are never sent (ws sends none by itself).
 * The HTTP(S) server is made here so that it listens with the common backlog of 1,024 (ws's
 * own would use Node's 511); wss:// is Node's `https` server with the shared certificate.
 * ws masks and unmasks with `bufferutil` (native) when it can load it: bench/node installs it.
 */
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const { BACKLOG, MAX_MESSAGE, announce, onStop, parse, peerVersion, requirePeer, tryPeer } =
  require('./_common');

const args = parse('ws (Node.js) chat or echo server for bench/run.py');
const { WebSocketServer, WebSocket } = requirePeer('ws');

const server = args.certfile
  ? https.createServer({ cert: fs.readFileSync(args.certfile), key: fs.readFileSync(args.keyfile) })
  : http.createServer();
const wss = new WebSocketServer({
  server,
  perMessageDeflate: false,
  maxPayload: MAX_MESSAGE,
  clientTracking: true, // wss.clients: the set the chat loops over
});

let errors = 0; // protocol errors on a connection (ws closes it); counted, never fatal

function chat(data, isBinary) {
  for (const client of wss.clients) {
    if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
  }
}

wss.on('connection', (ws) => {
  ws.on('error', () => { errors += 1; });
  if (args.mode === 'chat') {
    ws.on('message', chat);
  } else {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  }
});

server.on('error', (err) => {
  process.stderr.write(`ws: server error: ${err.message}\n`);
  process.exit(1);
});
server.listen({ host: args.host, port: args.port, backlog: BACKLOG }, () => {
  const native = tryPeer('bufferutil');
  const bufferutil = !native ? 'absent' : native === tryPeer('bufferutil/fallback') ? 'JS' : 'native';
  process.stderr.write(`ws ${peerVersion('ws')} on Node.js ${process.versions.node} ` +
    `(bufferutil: ${bufferutil}), mode ${args.mode}${args.certfile ? ', wss://' : ''}\n`);
  announce(args.host, server.address().port);
});
onStop(() => (errors ? `ws: ${errors} connection errors` : ''));
