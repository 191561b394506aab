// Pusher protocol details another Pusher server's test suite expects (issue 27), with the
// published pusher-js and pusher packages. Checked against Pusher's own documentation:
// pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import {
  APP1, APP4, HOST, PORT,
  channelSubscribed, closeAll, collect, once, pusherOf, serverOf, sleep, until, within,
} from './helpers.mjs';

afterEach(closeAll);

const connected = (p) => once((cb) => p.connection.bind('connected', cb), 'connected');
const signedIn = (p) => within(5000, p.user.signinDonePromise, 'signed in');
/** The first pusher:error a pusher-js client reports (`connection.bind('error')`). */
const pusherError = (p) => once((cb) => p.connection.bind('error', (e) => e?.type === 'PusherError' && cb(e.data)), 'pusher:error');

test('the prefix is the kind: ledger, private-ledger and presence-ledger are three channels', async () => {
  // `ledger` is named by no rule: for a Pusher app an unprefixed name is public.
  const names = ['ledger', 'private-ledger', 'presence-ledger'];
  const clients = names.map(() => pusherOf(APP1));
  const channels = clients.map((p, i) => p.subscribe(names[i]));
  await Promise.all(channels.map(channelSubscribed));
  const got = channels.map((c) => collect(c, 'entry'));
  const sdk = serverOf(APP1);
  for (const name of names) await sdk.trigger(name, 'entry', { on: name });
  await until(() => got.every((g) => g.length >= 1), 'each channel its event');
  await sleep(200);
  names.forEach((name, i) => assert.deepEqual(got[i], [{ on: name }], `${name} got only its own event`));

  const res = await sdk.get({ path: '/channels' });
  const listed = Object.keys((await res.json()).channels);
  for (const name of names) assert.ok(listed.includes(name), `${name} in ${listed}`);
});

test('client events on presence channels carry the sender\'s user_id', async () => {
  const a = pusherOf(APP1);
  const b = pusherOf(APP1);
  const [ca, cb] = [a.subscribe('presence-meeting'), b.subscribe('presence-meeting')];
  await Promise.all([channelSubscribed(ca), channelSubscribed(cb)]);
  const got = once((done) => cb.bind('client-wave', (data, metadata) => done({ data, metadata })), 'client-wave');
  ca.trigger('client-wave', { hi: 1 });
  const { data, metadata } = await got;
  assert.deepEqual(data, { hi: 1 });
  assert.equal(metadata.user_id, `u-${a.connection.socket_id}`);
});

test('sendToUser reaches every socket of the signed-in user and nobody else', async () => {
  const tabs = [pusherOf(APP1, { userData: { id: 'u77' } }), pusherOf(APP1, { userData: { id: 'u77' } })];
  const other = pusherOf(APP1, { userData: { id: 'u78' } });
  for (const p of [...tabs, other]) p.signin();
  await Promise.all([...tabs, other].map(signedIn));
  const got = tabs.map(() => []);
  tabs.forEach((p, i) => p.user.bind('greeting', (d) => got[i].push(d)));
  const others = [];
  other.user.bind('greeting', (d) => others.push(d));
  const sdk = serverOf(APP1);
  // pusher-js subscribes to #server-to-user-<id> once signed in; send until both tabs have it.
  await until(async () => {
    if (got.every((g) => g.length > 0)) return true;
    await sdk.sendToUser('u77', 'greeting', { hi: 'u77' });
    await sleep(100);
    return got.every((g) => g.length > 0);
  }, 'both tabs greeted');
  assert.deepEqual(got[0][0], { hi: 'u77' });
  assert.deepEqual(others, []);
});

test('terminate_connections sends pusher:error 4009 before closing', async () => {
  const p = pusherOf(APP1, { userData: { id: 'u88' } });
  p.signin();
  await signedIn(p);
  const error = pusherError(p);
  await serverOf(APP1).terminateUserConnections('u88');
  const data = await error;
  assert.equal(data.code, 4009);
});

test('authorized connections: a socket that does not sign in in time gets 4009; one that does stays', async () => {
  const lazy = pusherOf(APP4);
  const error = pusherError(lazy);
  const eager = pusherOf(APP4, { userData: { id: 'u1' } });
  eager.signin();
  await signedIn(eager);
  const data = await error;
  assert.equal(data.code, 4009);
  assert.match(data.message, /not authorized within timeout/i);
  await sleep(1500);
  assert.equal(eager.connection.state, 'connected');
});

test('an app with client events off refuses them with pusher:error', async () => {
  const a = pusherOf(APP4, { userData: { id: 'u2' } });
  const b = pusherOf(APP4, { userData: { id: 'u3' } });
  for (const p of [a, b]) p.signin();
  await Promise.all([signedIn(a), signedIn(b)]);
  const [ca, cb] = [a.subscribe('private-desk'), b.subscribe('private-desk')];
  await Promise.all([channelSubscribed(ca), channelSubscribed(cb)]);
  const seen = collect(cb, 'client-typing');
  const error = pusherError(a);
  ca.trigger('client-typing', {});
  const data = await error;
  assert.match(data.message, /not enabled/);
  await sleep(200);
  assert.deepEqual(seen, []);
});

test('pusher:cache_miss has no data', async () => {
  const ws = new WebSocket(`ws://${HOST}:${PORT}/app/${APP1.key}?protocol=7`);
  const frames = [];
  ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await once((cb) => ws.once('open', cb), 'open');
  await until(() => frames.length > 0, 'connection_established');
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'cache-empty' } }));
  await until(() => frames.some((f) => f.event === 'pusher:cache_miss'), 'cache_miss');
  ws.close();
  const miss = frames.find((f) => f.event === 'pusher:cache_miss');
  assert.deepEqual(miss, { event: 'pusher:cache_miss', channel: 'cache-empty' });
});

test('ws (which offers permessage-deflate by default) gets large events compressed and may compress its own frames', async () => {
  const ws = new WebSocket(`ws://${HOST}:${PORT}/app/${APP1.key}?protocol=7`);
  const frames = [];
  ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await once((cb) => ws.once('open', cb), 'open');
  assert.match(ws.extensions, /^permessage-deflate/);
  await until(() => frames.length > 0, 'connection_established');
  // ws compresses what it sends from 1 KiB on: this ping arrives compressed.
  ws.send(JSON.stringify({ event: 'pusher:ping', data: { pad: 'p'.repeat(2048) } }));
  await until(() => frames.some((f) => f.event === 'pusher:pong'), 'pong to a compressed ping');
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'deflated' } }));
  await until(() => frames.some((f) => f.event === 'pusher_internal:subscription_succeeded'), 'subscribed');
  const items = Array.from({ length: 40 }, (_, i) => ({ sku: `SKU-${1000 + i}`, qty: 1 + (i % 3), price: 1299 + i * 150 }));
  await serverOf(APP1).trigger('deflated', 'order.shipped', { order: 'ord_1', items });
  await until(() => frames.some((f) => f.event === 'order.shipped'), 'the compressed event');
  ws.close();
  assert.deepEqual(JSON.parse(frames.find((f) => f.event === 'order.shipped').data), { order: 'ord_1', items });
});
