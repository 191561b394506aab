// A real Laravel application (tests/laravel/app: Laravel 8 from Debian's
// php-laravel-framework, its Redis broadcaster over phpredis, its channel callbacks in
// routes/channels.php) served by `php -S`, with two rustaxum nodes started next to its
// .env, and Laravel Echo configured as bootstrap.js does but for its authEndpoint
// (rustaxum's /broadcasting/auth, which forwards to Laravel: BROADCAST_AUTH_FORWARD_URL).
// Driven by tests/it/laravel.rs: RX_PORT_A, RX_PORT_B (the nodes), RX_APP (Laravel's URL),
// RX_KEY (PUSHER_APP_KEY).
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import WebSocket from 'ws';

const [PORT_A, PORT_B] = [Number(process.env.RX_PORT_A), Number(process.env.RX_PORT_B)];
const APP = process.env.RX_APP;
const KEY = process.env.RX_KEY;
const opened = [];
afterEach(() => { while (opened.length) opened.pop()(); });

const within = (ms, p, what) => {
  let t;
  return Promise.race([p.finally(() => clearTimeout(t)), new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); })]);
};
const once = (register, what) => within(5000, new Promise((resolve) => register(resolve)), what);
const subscribed = (ch) => once((cb) => ch.subscribed(cb), `subscribed to ${ch.name}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Echo as resources/js/bootstrap.js writes it, signed in as `token` (Laravel's session
 *  would be a cookie; this app takes a bearer token too). */
function echo(port, token) {
  const e = new Echo({
    broadcaster: 'pusher',
    key: KEY,
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    Pusher,
    authEndpoint: `http://127.0.0.1:${port}/broadcasting/auth`,
    auth: { headers: token ? { Authorization: `Bearer ${token}` } : {} },
  });
  opened.push(() => e.disconnect());
  return e;
}

/** A controller action of the app that dispatches an event (`socketId`: X-Socket-ID, for toOthers). */
async function fire(path, socketId) {
  const res = await fetch(`${APP}${path}`, { method: 'POST', headers: socketId ? { 'X-Socket-ID': socketId } : {} });
  assert.equal(res.status, 200, `${path}: ${await res.text()}`);
}

/** Frames on a bare socket of node `port` subscribed to public `channel`, as the server wrote them. */
async function raw(port, channel) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/app/${KEY}?protocol=7`);
  opened.push(() => ws.close());
  const frames = [];
  ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await once((cb) => ws.once('open', cb), 'open');
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel } }));
  const until = async (pred, what) => {
    const end = Date.now() + 5000;
    while (Date.now() < end) {
      const f = frames.find(pred);
      if (f) return f;
      await sleep(20);
    }
    throw new Error(`timed out: ${what}`);
  };
  await until((f) => f.event === 'pusher_internal:subscription_succeeded', 'raw subscription');
  return until;
}

test('a public event Laravel publishes into Redis reaches Echo on both nodes, its data byte for byte', async () => {
  const [a, b] = [echo(PORT_A), echo(PORT_B)];
  const [ca, cb] = [a.channel('orders'), b.channel('orders')];
  await Promise.all([subscribed(ca), subscribed(cb)]);
  const frame = await raw(PORT_B, 'orders');
  const got = [once((done) => ca.listen('OrderShipped', done), 'A'), once((done) => cb.listen('OrderShipped', done), 'B')];
  await fire('/fire/public');
  for (const e of await Promise.all(got)) {
    assert.deepEqual(e.order, { id: 1, total: 99.5, items: [{ sku: 'café', url: 'https://shop.test/p/1' }] });
    assert.deepEqual(Object.keys(e.order), ['id', 'total', 'items'], 'the order Laravel wrote');
  }
  // What Laravel's json_encode wrote, escapes included.
  const shipped = await frame((f) => f.event === 'App\\Events\\OrderShipped', 'raw event');
  assert.equal(shipped.data, '{"order":{"id":1,"total":99.5,"items":[{"sku":"caf\\u00e9","url":"https:\\/\\/shop.test\\/p\\/1"}]}}');
});

test('private channels: Laravel\'s callback decides through the forwarding mode; broadcastAs and broadcastWith arrive', async () => {
  const ann = echo(PORT_A, 'token-ann');
  const ch = ann.private('orders.1');
  await subscribed(ch);
  const got = once((done) => ch.listen('.order.updated', done), 'order.updated');
  await fire('/fire/private/1');
  // Laravel's Redis broadcaster leaves `socket` in the data (its Pusher broadcaster does
  // not): what Laravel sent arrives unchanged.
  assert.deepEqual(await got, { status: 'packed', user: 1, items: ['café', 'https://shop.test/p/1'], socket: null });
  // Bob is not user 1: Laravel's callback says no, on either node.
  for (const port of [PORT_A, PORT_B]) {
    const bob = echo(port, 'token-bob').private('orders.1');
    const refused = await once((done) => bob.error(done), 'refused');
    assert.equal(refused.status, 403, JSON.stringify(refused));
  }
  // Nobody signed in: refused too.
  const anonymous = echo(PORT_B).private('orders.1');
  assert.equal((await once((done) => anonymous.error(done), 'anonymous refused')).status, 403);
});

test('presence: members from Laravel\'s callback (number ids), toOthers and whispers across nodes', async () => {
  const ann = echo(PORT_A, 'token-ann').join('chat.5');
  const annHere = once((done) => ann.here(done), 'here (Ann)');
  await annHere;
  const joining = once((done) => ann.joining(done), 'Bob joining');
  const bobEcho = echo(PORT_B, 'token-bob');
  const bob = bobEcho.join('chat.5');
  const here = await once((done) => bob.here(done), 'here (Bob)');
  assert.deepEqual(here.sort((x, y) => x.id - y.id), [{ id: 1, name: 'Ann' }, { id: 2, name: 'Bob' }]);
  assert.deepEqual(await joining, { id: 2, name: 'Bob' });
  // toOthers(): Laravel sends Bob's socket id; Bob's socket is skipped, Ann gets it.
  const annGot = once((done) => ann.listen('ChatMessage', done), 'ChatMessage on A');
  let bobGot = 0;
  bob.listen('ChatMessage', () => { bobGot += 1; });
  await fire('/fire/presence/5', bobEcho.socketId());
  assert.equal((await annGot).text, 'hello');
  // A whisper from B to A.
  const typing = once((done) => ann.listenForWhisper('typing', done), 'whisper');
  bob.whisper('typing', { name: 'Bob' });
  assert.deepEqual(await typing, { name: 'Bob' });
  await sleep(300);
  assert.equal(bobGot, 0, 'toOthers skipped the sender');
  const leaving = once((done) => ann.leaving(done), 'Bob leaving');
  bobEcho.disconnect();
  assert.deepEqual(await leaving, { id: 2, name: 'Bob' });
});
