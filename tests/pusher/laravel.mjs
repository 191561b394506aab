// A Laravel app's two halves, configured from its .env exactly as Laravel does it
// (resources/js/echo.js or bootstrap.js through Vite's import.meta.env, and
// config/broadcasting.php for the server SDK), against rustaxum started next to that .env.
// Driven by tests/it/laravel.rs: RX_ENV_FILE (the .env), RX_BROADCASTER (pusher or reverb)
// and, with two servers, RX_PORT2 (the second server, where Bob's Echo connects).
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import PusherServer from 'pusher';

/** A .env read as phpdotenv and Vite read it: quotes stripped, ${VAR} expanded. */
function readEnv(path) {
  const env = {};
  for (const line of fs.readFileSync(path, 'utf8').split('\n')) {
    const m = line.match(/^([A-Z0-9_]+)=(.*)$/);
    if (!m) continue;
    let value = m[2].trim().replace(/^"(.*)"$/, '$1');
    value = value.replace(/\$\{([A-Z0-9_]+)\}/g, (_, name) => env[name] ?? '');
    env[m[1]] = value;
  }
  return env;
}

const env = readEnv(process.env.RX_ENV_FILE);
const broadcaster = process.env.RX_BROADCASTER;
const prefix = broadcaster === 'reverb' ? 'REVERB' : 'PUSHER';
const opened = [];
afterEach(() => { while (opened.length) opened.pop()(); });

// --- docs/laravel.md, "The browser side" (import.meta.env is the .env's VITE_* values) ---
function echoFromEnv(importMetaEnv, user) {
  const secret = env[`${prefix}_APP_SECRET`]; // what Laravel's /broadcasting/auth signs with
  const options = broadcaster === 'reverb'
    ? {
      broadcaster: 'reverb',
      key: importMetaEnv.VITE_REVERB_APP_KEY,
      wsHost: importMetaEnv.VITE_REVERB_HOST,
      wsPort: importMetaEnv.VITE_REVERB_PORT ?? 80,
      wssPort: importMetaEnv.VITE_REVERB_PORT ?? 443,
      forceTLS: (importMetaEnv.VITE_REVERB_SCHEME ?? 'https') === 'https',
      enabledTransports: ['ws', 'wss'],
    }
    : {
      broadcaster: 'pusher',
      key: importMetaEnv.VITE_PUSHER_APP_KEY,
      cluster: importMetaEnv.VITE_PUSHER_APP_CLUSTER ?? 'mt1',
      wsHost: importMetaEnv.VITE_PUSHER_HOST ? importMetaEnv.VITE_PUSHER_HOST : `ws-${importMetaEnv.VITE_PUSHER_APP_CLUSTER}.pusher.com`,
      wsPort: importMetaEnv.VITE_PUSHER_PORT ?? 80,
      wssPort: importMetaEnv.VITE_PUSHER_PORT ?? 443,
      forceTLS: (importMetaEnv.VITE_PUSHER_SCHEME ?? 'https') === 'https',
      enabledTransports: ['ws', 'wss'],
    };
  const echo = new Echo({
    ...options,
    Pusher,
    disableStats: true,
    // Laravel's /broadcasting/auth, as Illuminate's PusherBroadcaster signs it.
    authorizer: (channel) => ({
      authorize: (socketId, callback) => {
        const presence = channel.name.startsWith('presence-');
        const channel_data = presence ? JSON.stringify({ user_id: user.id, user_info: user }) : undefined;
        const text = presence ? `${socketId}:${channel.name}:${channel_data}` : `${socketId}:${channel.name}`;
        const sig = crypto.createHmac('sha256', secret).update(text).digest('hex');
        callback(null, { auth: `${options.key}:${sig}`, channel_data });
      },
    }),
  });
  opened.push(() => echo.disconnect());
  return echo;
}

// --- docs/laravel.md, "The server side" (config/broadcasting.php's connection) ---
function sdkFromEnv() {
  return new PusherServer({
    appId: env[`${prefix}_APP_ID`],
    key: env[`${prefix}_APP_KEY`],
    secret: env[`${prefix}_APP_SECRET`],
    host: env[`${prefix}_HOST`],
    port: env[`${prefix}_PORT`],
    useTLS: (env[`${prefix}_SCHEME`] ?? 'https') === 'https',
  });
}

const within = (ms, p, what) => {
  let t;
  return Promise.race([p.finally(() => clearTimeout(t)), new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); })]);
};
const once = (register, what) => within(5000, new Promise((resolve) => register(resolve)), what);
const subscribed = (ch) => once((cb) => ch.subscribed(cb), `subscribed to ${ch.name}`);

test(`${broadcaster}: public, private and presence channels, and a whisper, from this .env`, async () => {
  const ann = { id: 1, name: 'Ann' };
  const bob = { id: 2, name: 'Bob' };
  const a = echoFromEnv(env, ann);
  // With two servers (REVERB_SCALING_ENABLED=true), Bob's browser lands on the other one.
  const port2 = process.env.RX_PORT2;
  const b = echoFromEnv(port2 ? { ...env, VITE_REVERB_PORT: port2, VITE_PUSHER_PORT: port2 } : env, bob);
  const sdk = sdkFromEnv();

  // Public: new Channel('orders') and an event class App\Events\OrderShipped.
  const pub = a.channel('orders');
  const gotPublic = once((cb) => pub.listen('OrderShipped', cb), 'public event');
  await subscribed(pub);
  await sdk.trigger('orders', 'App\\Events\\OrderShipped', { order: { id: 1 } });
  assert.deepEqual(await gotPublic, { order: { id: 1 } });

  // Private: new PrivateChannel('orders.1'), signed as Laravel signs it.
  const priv = a.private('orders.1');
  const gotPrivate = once((cb) => priv.listen('OrderShipped', cb), 'private event');
  await subscribed(priv);
  await sdk.trigger('private-orders.1', 'App\\Events\\OrderShipped', { order: { id: 2 } });
  assert.deepEqual(await gotPrivate, { order: { id: 2 } });

  // A whisper from Bob reaches Ann on the private channel.
  const bobPriv = b.private('orders.1');
  await subscribed(bobPriv);
  const whisper = once((cb) => priv.listenForWhisper('typing', cb), 'whisper');
  bobPriv.whisper('typing', { name: 'Bob' });
  assert.deepEqual(await whisper, { name: 'Bob' });

  // Presence: here() gives Laravel-shaped users, joining() the next one.
  const here = await once((cb) => a.join('chat.1').here(cb), 'here');
  assert.deepEqual(here, [ann]);
  const joining = once((cb) => a.join('chat.1').joining(cb), 'joining');
  await once((cb) => b.join('chat.1').here(cb), 'bob here');
  assert.deepEqual(await joining, bob);
  const gotPresence = once((cb) => a.join('chat.1').listen('MessagePosted', cb), 'presence event');
  await sdk.trigger('presence-chat.1', 'App\\Events\\MessagePosted', { text: 'hi' });
  assert.deepEqual(await gotPresence, { text: 'hi' });
});
