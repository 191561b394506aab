// Shared setup for the Pusher compatibility tests. The Rust harness (tests/it/pusher_js.rs)
// starts rustaxum and passes its address and credentials in the environment.
import crypto from 'node:crypto';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import PusherServer from 'pusher';
import WebSocket from 'ws';

export const HOST = process.env.RX_HOST ?? '127.0.0.1';
export const PORT = Number(process.env.RX_PORT);
export const APP_ID = process.env.RX_APP_ID;
export const KEY = process.env.RX_KEY;
export const SECRET = process.env.RX_SECRET;
const JWT_SECRET = process.env.RX_JWT_SECRET;
export const BASE = `http://${HOST}:${PORT}`;
/** The second app (its own tenant), the app with tight limits, and the first app's
 *  encryption master key. */
export const APP2 = { id: process.env.RX_APP_ID2, key: process.env.RX_KEY2, secret: process.env.RX_SECRET2 };
export const APP3 = { id: process.env.RX_APP_ID3, key: process.env.RX_KEY3, secret: process.env.RX_SECRET3 };
export const APP1 = { id: APP_ID, key: KEY, secret: SECRET };
/** An app with client events off and authorized connections (sign in within 1 s). */
export const APP4 = { id: process.env.RX_APP_ID4, key: process.env.RX_KEY4, secret: process.env.RX_SECRET4 };
export const MASTER_KEY = process.env.RX_MASTER_KEY;
/** An app of at most 3 connections (over the whole cluster). */
export const APP5 = { key: process.env.RX_KEY5 };
/** A second node of the same cluster, when the harness started one. */
export const PORT2 = Number(process.env.RX_PORT2 || 0);

if (!PORT || !KEY) {
  throw new Error('run through `cargo nextest run --test pusher_js` (RX_PORT and RX_KEY are not set)');
}

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT as an application backend would sign it. */
export function jwt(sub, extra = {}) {
  const now = Math.floor(Date.now() / 1000);
  const body = b64({ sub, aud: ['websocket'], iat: now, exp: now + 3600, ...extra });
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const sig = crypto.createHmac('sha256', JWT_SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const opened = [];

function clientOptions(token, extra = {}) {
  return {
    wsHost: HOST,
    wsPort: PORT,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    authEndpoint: `${BASE}/broadcasting/auth`,
    auth: { headers: token ? { Authorization: `Bearer ${token}` } : {} },
    ...extra,
  };
}

/** A pusher-js client. */
export function pusher(token, extra = {}) {
  const p = new Pusher(KEY, clientOptions(token, extra));
  opened.push(() => p.disconnect());
  return p;
}

/** A pusher-js client of `app`, connected to `port`, signing its own channel and user
 *  authorizations with the app secret (as an app's own backend would); presence as
 *  `member` when given. */
export function pusherOf(app, { port = PORT, userData, member, extra = {} } = {}) {
  const sign = (text) => crypto.createHmac('sha256', app.secret).update(text).digest('hex');
  const p = new Pusher(app.key, {
    ...clientOptions(null, { wsPort: port }),
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        const presence = channelName.startsWith('presence-');
        // `member`: the presence member the app's backend signs (Laravel: a number id).
        const channel_data = presence ? JSON.stringify(member ?? { user_id: `u-${socketId}`, user_info: {} }) : undefined;
        const text = presence ? `${socketId}:${channelName}:${channel_data}` : `${socketId}:${channelName}`;
        cb(null, { auth: `${app.key}:${sign(text)}`, channel_data });
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, cb) => {
        const user_data = JSON.stringify(userData);
        cb(null, { auth: `${app.key}:${sign(`${socketId}::user::${user_data}`)}`, user_data });
      },
    },
    ...extra,
  });
  opened.push(() => p.disconnect());
  return p;
}

/** A Laravel Echo client over pusher-js, exactly as an app would configure it. */
export function echo(token, extra = {}) {
  const e = new Echo({ broadcaster: 'pusher', key: KEY, Pusher, ...clientOptions(token, extra) });
  opened.push(() => e.disconnect());
  return e;
}


/** The official server SDK, pointed at rustaxum. */
export function server(secret = SECRET) {
  return new PusherServer({ appId: APP_ID, key: KEY, secret, host: HOST, port: String(PORT), useTLS: false });
}

/** The official server SDK for `app`, at `port` (with `options` such as the encryption key). */
export function serverOf(app, { port = PORT, ...options } = {}) {
  return new PusherServer({ appId: app.id, key: app.key, secret: app.secret, host: HOST, port: String(port), useTLS: false, ...options });
}

/** A native-protocol WebSocket client. Resolves once the first message arrived. */
export function native(path) {
  const ws = new WebSocket(`ws://${HOST}:${PORT}${path}`);
  const inbox = [];
  const waiters = [];
  ws.on('message', (m) => {
    const msg = JSON.parse(m.toString());
    const w = waiters.findIndex((x) => x.match(msg));
    if (w >= 0) waiters.splice(w, 1)[0].resolve(msg);
    else inbox.push(msg);
  });
  opened.push(() => ws.close());
  const next = (match = () => true, ms = 5000) => {
    const i = inbox.findIndex(match);
    if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0]);
    return within(ms, new Promise((resolve) => waiters.push({ match, resolve })), 'native message');
  };
  return new Promise((resolve, reject) => {
    ws.once('error', reject);
    ws.once('open', async () => resolve({ ws, next, first: await next() }));
  });
}

/** Rejects if `promise` does not settle within `ms`. */
export function within(ms, promise, what = 'event') {
  let t;
  return Promise.race([
    promise.finally(() => clearTimeout(t)),
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** Resolves with the first value `register(cb)` calls `cb` with. */
export function once(register, what) {
  return within(5000, new Promise((resolve) => register(resolve)), what);
}

/** Resolves when `check()` is true (polling), or rejects after `ms`. */
export async function until(check, what, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(25);
  }
  throw new Error(`timed out waiting for ${what}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Disconnects every client the test opened. */
export function closeAll() {
  while (opened.length) opened.pop()();
}

/** A signed REST request made by hand (for cases the SDK will not produce). */
export async function signedFetch(method, path, { body, timestamp, secret = SECRET, key = KEY, params = {} } = {}) {
  const bodyText = body === undefined ? '' : JSON.stringify(body);
  const query = {
    auth_key: key,
    auth_timestamp: String(timestamp ?? Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
    ...params,
  };
  if (bodyText) query.body_md5 = crypto.createHash('md5').update(bodyText).digest('hex');
  const sorted = Object.keys(query).sort().map((k) => `${k}=${query[k]}`).join('&');
  const signature = crypto.createHmac('sha256', secret).update(`${method}\n${path}\n${sorted}`).digest('hex');
  const url = `${BASE}${path}?${sorted}&auth_signature=${signature}`;
  const res = await fetch(url, { method, body: bodyText || undefined, headers: { 'content-type': 'application/json' } });
  return { status: res.status, body: await res.json().catch(() => null) };
}

/** Resolves once a pusher-js channel is subscribed (at once if it already is). */
export function channelSubscribed(channel) {
  if (channel.subscribed) return Promise.resolve();
  return once((cb) => channel.bind('pusher:subscription_succeeded', cb), `subscription to ${channel.name}`);
}

/** The data of every `name` event a pusher-js channel gets from now on. */
export function collect(channel, name) {
  const got = [];
  channel.bind(name, (d) => got.push(d));
  return got;
}

/** A Pusher-protocol client on a bare WebSocket, to see frames as the server wrote them
 *  (pusher-js parses `data` before an app sees it). `next(match)` resolves with the first
 *  frame `match` accepts, parsed, with its text in `.text`. */
export function rawPusher({ key = KEY, port = PORT } = {}) {
  const ws = new WebSocket(`ws://${HOST}:${port}/app/${key}?protocol=7&client=raw&version=1`);
  const inbox = [];
  const waiters = [];
  ws.on('message', (m) => {
    const text = m.toString();
    const frame = { ...JSON.parse(text), text };
    const w = waiters.findIndex((x) => x.match(frame));
    if (w >= 0) waiters.splice(w, 1)[0].resolve(frame);
    else inbox.push(frame);
  });
  opened.push(() => ws.close());
  const next = (match = () => true, ms = 5000) => {
    const i = inbox.findIndex(match);
    if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0]);
    return within(ms, new Promise((resolve) => waiters.push({ match, resolve })), 'a Pusher frame');
  };
  const send = (frame) => ws.send(JSON.stringify(frame));
  /** Subscribes to a public channel (with `extra` data such as `since`); resolves once it is. */
  const subscribe = async (channel, extra = {}) => {
    send({ event: 'pusher:subscribe', data: { channel, ...extra } });
    await next((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === channel);
  };
  return new Promise((resolve, reject) => {
    ws.once('error', reject);
    ws.once('open', async () => {
      const established = await next((f) => f.event === 'pusher:connection_established');
      resolve({ ws, next, send, subscribe, socketId: JSON.parse(established.data).socket_id });
    });
  });
}

/** Payloads as Laravel and other Pusher publishers write them: key order that is not
 *  sorted, json_encode's escapes (`\u00e9`, `\/`), a number spelled `99.50`, pretty
 *  printing, a JSON string, plain text, whitespace around JSON. */
export const EXACT_PAYLOADS = [
  '{"order":{"id":1,"total":99.5,"items":[{"sku":"caf\\u00e9","url":"https:\\/\\/shop.test\\/p\\/1"}],"created_at":"2026-12-05"},"socket":null}',
  '{"zeta":1,"alpha":2,"mid":{"b":true,"a":null},"price":99.50,"big":12345678901234567890}',
  '{\n    "pretty": true,\n    "list": [\n        1,\n        2\n    ]\n}',
  '"shipped"',
  'plain text, not JSON',
  ' {"padded":1}\n',
];
