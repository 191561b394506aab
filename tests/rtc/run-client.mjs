// Runs the document's RealtimeClient (realtime-client.js) unchanged against a server:
// - Node 20 has no global WebSocket, so the published `ws` package (tests/pusher) is it;
// - the document's `localhost:8081` and `'your-jwt-token'` are filled in from RX_RTC_PORT
//   and RX_TOKEN, as a user fills them in;
// - every frame the client handles is also printed as `FRAME <json>`, for the test;
// - lines on stdin ask the client to act: {"do":"dm","to":..,"payload":..},
//   {"do":"broadcast","topic":..,"payload":..} or {"do":"exit"}.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import readline from 'node:readline';

const require = createRequire(new URL('../pusher/package.json', import.meta.url));
globalThis.WebSocket = require('ws');

let source = readFileSync(new URL('./realtime-client.js', import.meta.url), 'utf8');
source = source
  .replace('localhost:8081', `127.0.0.1:${process.env.RX_RTC_PORT}`)
  .replace("'your-jwt-token'", JSON.stringify(process.env.RX_TOKEN));
source += `
const shown = client.handleMessage.bind(client);
client.handleMessage = (m) => { process.stdout.write('FRAME ' + JSON.stringify(m) + '\\n'); shown(m); };
globalThis.__client = client;
`;
(0, eval)(source);

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const command = JSON.parse(line);
  if (command.do === 'dm') globalThis.__client.sendDirectMessage(command.to, command.payload);
  if (command.do === 'broadcast') globalThis.__client.broadcast(command.topic, command.payload);
  if (command.do === 'exit') {
    globalThis.__client.reconnectAttempts = 99;
    globalThis.__client.disconnect();
    setTimeout(() => process.exit(0), 50);
  }
});
