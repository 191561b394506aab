// Laravel Echo, pusher-js and the pusher server SDK against rustaxum, unchanged.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import {
  APP_ID, BASE, HOST, KEY, PORT, SECRET,
  closeAll, echo, jwt, native, once, pusher, server, signedFetch, sleep, until, within,
} from './helpers.mjs';

afterEach(closeAll);

/** Resolves once the channel is subscribed (at once if it already is: the event that
 *  says so may have fired before anyone listened). */
function subscribed(channel) {
  if (channel.subscription?.subscribed) return Promise.resolve();
  return once((cb) => channel.subscribed(cb), `subscription to ${channel.name}`);
}

test('public channel: Echo listens, the pusher SDK triggers', async () => {
  const e = echo();
  const got = once((cb) => e.channel('general').listen('.announcement', cb), 'announcement');
  await subscribed(e.channel('general'));
  await server().trigger('general', 'announcement', { message: 'hi' });
  assert.deepEqual(await got, { message: 'hi' });
});

test('private channel through /broadcasting/auth with a JWT; another user is refused', async () => {
  const e = echo(jwt('42'));
  const ch = e.private('user.42');
  const got = once((cb) => ch.listen('.OrderShipped', cb), 'OrderShipped');
  await subscribed(ch);
  await server().trigger('private-user.42', 'OrderShipped', { order_id: 9 });
  assert.deepEqual(await got, { order_id: 9 });

  const intruder = echo(jwt('7'));
  const err = await once((cb) => intruder.private('user.42').error(cb), 'subscription error');
  assert.equal(err.status, 403);
});

test('private channel with a locally signed HMAC (apps with their own auth endpoint)', async () => {
  const sign = (socketId, channel, secret) =>
    `${KEY}:${crypto.createHmac('sha256', secret).update(`${socketId}:${channel}`).digest('hex')}`;
  const good = pusher(null, {
    channelAuthorization: { customHandler: ({ socketId, channelName }, cb) => cb(null, { auth: sign(socketId, channelName, SECRET) }) },
  });
  const ch = good.subscribe('private-orders.5');
  await once((cb) => ch.bind('pusher:subscription_succeeded', cb), 'subscription_succeeded');
  const got = once((cb) => ch.bind('updated', cb), 'updated');
  await server().trigger('private-orders.5', 'updated', { ok: true });
  assert.deepEqual(await got, { ok: true });

  const forged = pusher(null, {
    channelAuthorization: { customHandler: ({ socketId, channelName }, cb) => cb(null, { auth: sign(socketId, channelName, 'wrong') }) },
  });
  const bad = forged.subscribe('private-orders.5');
  const err = await once((cb) => bad.bind('pusher:subscription_error', cb), 'subscription_error');
  assert.equal(err.status, 401);
  assert.equal(err.type, 'AuthError');
});

test('a public spelling of a private channel is refused', async () => {
  const p = pusher();
  const ch = p.subscribe('user.42');
  const err = await once((cb) => ch.bind('pusher:subscription_error', cb), 'subscription_error');
  assert.equal(err.status, 403);
});

test('presence: here, joining, leaving give Laravel-shaped users (with id); two tabs are one member', async () => {
  const alice = echo(jwt('1', { user_info: { name: 'Alice' } }));
  const here = await once((cb) => alice.join('chat.1').here(cb), 'here');
  assert.deepEqual(here, [{ id: 1, name: 'Alice' }]);
  const joined = [];
  const left = [];
  alice.join('chat.1').joining((u) => joined.push(u)).leaving((u) => left.push(u));

  const bobTab1 = echo(jwt('2', { user_info: { name: 'Bob' } }));
  const bobHere = await once((cb) => bobTab1.join('chat.1').here(cb), 'bob here');
  assert.deepEqual(bobHere.map((u) => u.name).sort(), ['Alice', 'Bob']);
  await until(() => joined.length === 1, 'joining');
  assert.deepEqual(joined, [{ id: 2, name: 'Bob' }]);

  const bobTab2 = echo(jwt('2', { user_info: { name: 'Bob' } }));
  await once((cb) => bobTab2.join('chat.1').here(cb), 'second tab here');
  await sleep(300);
  assert.equal(joined.length, 1, 'a second tab is not a second member');

  const users = await server().get({ path: '/channels/presence-chat.1/users' });
  assert.deepEqual((await users.json()).users.map((u) => u.id).sort(), ['1', '2']);

  bobTab1.disconnect();
  await sleep(400);
  assert.equal(left.length, 0, 'Bob still has a tab');
  bobTab2.disconnect();
  await until(() => left.length === 1, 'leaving');
  assert.deepEqual(left, [{ id: 2, name: 'Bob' }]);
});

test('whisper reaches the others, not the sender', async () => {
  const a = echo(jwt('1', { user_info: { name: 'A' } }));
  const b = echo(jwt('2', { user_info: { name: 'B' } }));
  await once((cb) => a.join('room.7').here(cb), 'a here');
  await once((cb) => b.join('room.7').here(cb), 'b here');
  const heardByA = [];
  a.join('room.7').listenForWhisper('typing', (d) => heardByA.push(d));
  const got = once((cb) => b.join('room.7').listenForWhisper('typing', cb), 'whisper');
  a.join('room.7').whisper('typing', { name: 'A' });
  assert.deepEqual(await got, { name: 'A' });
  await sleep(200);
  assert.equal(heardByA.length, 0);
});

test('client events over the rate limit get error 4301 and are not delivered', async () => {
  const a = echo(jwt('1'));
  const b = echo(jwt('1'));
  const chA = a.private('user.1');
  const chB = b.private('user.1');
  await subscribed(chA);
  await subscribed(chB);
  const received = [];
  chB.listenForWhisper('n', (d) => received.push(d.i));
  const errors = [];
  a.connector.pusher.connection.bind('error', (e) => errors.push(e));
  // 30 at once against a budget of 10 per second: however slowly a loaded server works
  // through them (one token back per 100 ms), some are refused.
  for (let i = 0; i < 30; i++) chA.whisper('n', { i });
  await until(() => received.length + errors.length >= 30, 'whispers and errors', 5000);
  assert.ok(errors.length >= 1, `errors: ${errors.length}`);
  assert.ok(received.length >= 10, `received: ${received.length}`);
  assert.equal(errors[0].data.code, 4301);
  assert.deepEqual(received, [...Array(received.length).keys()]);
});

test('HTTP API: triggerBatch, channels, channel info, users', async () => {
  const e = echo(jwt('3', { user_info: { name: 'C' } }));
  await once((cb) => e.join('lobby.1').here(cb), 'here');
  const pub = echo();
  const a = once((cb) => pub.channel('general').listen('.one', cb), 'one');
  const b = once((cb) => pub.channel('general').listen('.two', cb), 'two');
  await subscribed(pub.channel('general'));
  await server().triggerBatch([
    { channel: 'general', name: 'one', data: { n: 1 } },
    { channel: 'general', name: 'two', data: { n: 2 } },
  ]);
  assert.deepEqual([await a, await b], [{ n: 1 }, { n: 2 }]);

  const s = server();
  const all = await (await s.get({ path: '/channels' })).json();
  assert.ok('general' in all.channels && 'presence-lobby.1' in all.channels, JSON.stringify(all));
  const presence = await (await s.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
  assert.deepEqual(presence.channels, { 'presence-lobby.1': { user_count: 1 } });
  const probe = echo();
  await subscribed(probe.channel('probe'));
  const info = await (await s.get({ path: '/channels/probe', params: { info: 'subscription_count' } })).json();
  assert.deepEqual(info, { occupied: true, subscription_count: 1 });
  const users = await (await s.get({ path: '/channels/presence-lobby.1/users' })).json();
  assert.deepEqual(users, { users: [{ id: '3' }] });
  const empty = await (await s.get({ path: '/channels/nobody-here' })).json();
  assert.equal(empty.occupied, false);
});

test('HTTP API: terminateUserConnections closes the signed-in user\'s sockets', async () => {
  const p = pusher(jwt('99'), { userAuthentication: { endpoint: `${BASE}/broadcasting/user-auth`, headers: { Authorization: `Bearer ${jwt('99')}` } } });
  p.signin();
  await once((cb) => p.connection.bind('connected', cb), 'connected');
  await until(() => p.user.user_data?.id === '99', 'signin_success');
  await within(5000, p.user.signinDonePromise, 'signin done');
  const closed = once((cb) => p.connection.bind('state_change', (s) => s.current !== 'connected' && cb(s)), 'disconnect');
  await server().terminateUserConnections('99');
  await closed;
});

test('HTTP API: bad signature, stale timestamp, unknown app, limits', async () => {
  await assert.rejects(server('not-the-secret').trigger('general', 'x', {}), (e) => e.status === 401);
  const stale = await signedFetch('POST', `/apps/${APP_ID}/events`, {
    body: { name: 'x', channel: 'general', data: '{}' },
    timestamp: Math.floor(Date.now() / 1000) - 3600,
  });
  assert.equal(stale.status, 401);
  assert.match(stale.body.message, /auth_timestamp/);
  const fresh = await signedFetch('POST', `/apps/${APP_ID}/events`, { body: { name: 'x', channel: 'general', data: '{}' } });
  assert.equal(fresh.status, 200);
  const unknown = await signedFetch('POST', '/apps/does-not-exist/events', { body: { name: 'x', channel: 'general', data: '{}' } });
  assert.equal(unknown.status, 404);
  const big = await signedFetch('POST', `/apps/${APP_ID}/events`, { body: { name: 'x', channel: 'general', data: 'x'.repeat(11000) } });
  assert.equal(big.status, 413);
  const tooMany = await signedFetch('POST', `/apps/${APP_ID}/batch_events`, {
    body: { batch: Array.from({ length: 11 }, () => ({ name: 'x', channel: 'general', data: '{}' })) },
  });
  assert.equal(tooMany.status, 400);
  const userCount = await signedFetch('GET', `/apps/${APP_ID}/channels`, { params: { info: 'user_count' } });
  assert.equal(userCount.status, 400);
});

test('unknown app key gets error 4001 and close code 4001', async () => {
  const ws = new WebSocket(`ws://${HOST}:${PORT}/app/no-such-key?protocol=7`);
  const msg = await once((cb) => ws.once('message', (m) => cb(JSON.parse(m.toString()))), 'pusher:error');
  assert.equal(msg.event, 'pusher:error');
  assert.equal(msg.data.code, 4001);
  const code = await once((cb) => ws.once('close', cb), 'close');
  assert.equal(code, 4001);
});

test('missing protocol version gets 4008', async () => {
  const ws = new WebSocket(`ws://${HOST}:${PORT}/app/${KEY}`);
  const code = await once((cb) => ws.once('close', cb), 'close');
  assert.equal(code, 4008);
});

test('pusher:ping is answered with pusher:pong', async () => {
  const ws = new WebSocket(`ws://${HOST}:${PORT}/app/${KEY}?protocol=7`);
  const established = await once((cb) => ws.once('message', (m) => cb(JSON.parse(m.toString()))), 'established');
  assert.equal(established.event, 'pusher:connection_established');
  const data = JSON.parse(established.data);
  assert.match(data.socket_id, /^\d+\.\d+$/);
  assert.ok(data.activity_timeout > 0);
  ws.send(JSON.stringify({ event: 'pusher:ping', data: {} }));
  const pong = await once((cb) => ws.once('message', (m) => cb(JSON.parse(m.toString()))), 'pong');
  assert.equal(pong.event, 'pusher:pong');
  ws.close();
});

test('cross-protocol: native publish reaches Echo; Pusher SDK trigger reaches a native client', async () => {
  const e = echo();
  const ch = e.channel('announcements');
  const got = once((cb) => ch.listen('.from.native', cb), 'from.native');
  await subscribed(ch);
  const res = await fetch(`${BASE}/api/broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ channel: 'announcements', event: 'from.native', data: { n: 1 } }),
  });
  assert.equal(res.status, 200);
  assert.deepEqual(await got, { n: 1 });

  const nat = await native('/ws/announcements');
  assert.equal(nat.first.event, 'subscription_succeeded');
  await server().trigger('announcements', 'from.pusher', { n: 2 });
  const msg = await nat.next((m) => m.event === 'from.pusher');
  assert.equal(msg.channel, 'announcements');
  assert.deepEqual(msg.data, { n: 2 });

  // A private channel too: Pusher's private-user.42 is the native user.42.
  const priv = await native(`/ws/user.42?auth_token=${jwt('42')}`);
  await server().trigger('private-user.42', 'secret', { s: 1 });
  const p = await priv.next((m) => m.event === 'secret');
  assert.equal(p.channel, 'user.42');
});
