'use strict';
/*
 * Benchmark adapter: uWebSockets.js (C++ HTTP/WebSocket server with a Node.js binding), from
 * the npm package `uwebsockets`, which republishes uWebSockets.js's binaries (bench/node).
 *
 * Chat is its own pub/sub: every user subscribes to one topic when it opens, and each message
 * is published to that topic with the app's `publish` (the app's, not the socket's: a socket's
 * publish skips the sender, and the chat includes it). Echo sends back to the sender.
 * Messages keep their type. uWS skips a receiver whose send buffer is over `maxBackpressure`
 * (64 KiB by default), which would lose messages: here the limit is 1 GiB per connection and
 * `closeOnBackpressureLimit` is off, so nothing is dropped or closed for being slow; the
 * `dropped` handler counts anything dropped all the same, and says so on stop.
 * Compression off (uWS.DISABLED), messages up to 16 MiB, idle timeout off, no automatic pings.
 * wss:// is its SSLApp with the shared certificate files.
 * Its listen backlog is uSockets' own: the binding has no option for it (see
 * docs/performance.md).
 */
const { MAX_MESSAGE, announce, onStop, parse, peerVersion, requirePeer } = require('./_common');

const args = parse('uWebSockets.js chat or echo server for bench/run.py');
const uWS = requirePeer('uwebsockets');

const TOPIC = 'chat';
const MAX_BACKPRESSURE = 1024 * 1024 * 1024; // bytes queued per user before uWS would drop

let dropped = 0;
let sendDropped = 0; // echo: send() answered DROPPED (2)

const app = args.certfile
  ? uWS.SSLApp({ cert_file_name: args.certfile, key_file_name: args.keyfile })
  : uWS.App();

const chat = {
  open: (ws) => { ws.subscribe(TOPIC); },
  message: (ws, message, isBinary) => { app.publish(TOPIC, message, isBinary, false); },
};
const echo = {
  message: (ws, message, isBinary) => {
    if (ws.send(message, isBinary, false) === 2) sendDropped += 1;
  },
};

app.ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: MAX_MESSAGE,
  idleTimeout: 0,
  sendPingsAutomatically: false,
  maxBackpressure: MAX_BACKPRESSURE,
  closeOnBackpressureLimit: false,
  dropped: () => {
    if (dropped === 0) process.stderr.write('uws: a message was DROPPED (back-pressure limit)\n');
    dropped += 1;
  },
  ...(args.mode === 'chat' ? chat : echo),
});

app.listen(args.host, args.port, (listenSocket) => {
  if (!listenSocket) {
    process.stderr.write(`uws: cannot listen on ${args.host}:${args.port}` +
      `${args.certfile ? ' (or the certificate did not load)' : ''}\n`);
    process.exit(1);
  }
  process.stderr.write(`uwebsockets ${peerVersion('uwebsockets')} on Node.js ` +
    `${process.versions.node}, mode ${args.mode}${args.certfile ? ', wss://' : ''}\n`);
  announce(args.host, uWS.us_socket_local_port(listenSocket));
});
onStop(() => (dropped || sendDropped
  ? `uws: DROPPED ${dropped} messages (${sendDropped} echo sends refused)` : ''));
