// The Pusher feature set with the published packages: apps as tenants, encrypted
// channels, cache channels, subscription counts, watchlists and per-app limits.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import {
  APP1, APP2, APP3, BASE, HOST, MASTER_KEY, PORT,
  channelSubscribed, closeAll, collect, echo, jwt, once, pusherOf, serverOf, signedFetch, sleep, until, within,
} from './helpers.mjs';

afterEach(closeAll);

test('two apps on the same channel name see only their own events, presence and channel lists', async () => {
  const a = pusherOf(APP1);
  const b = pusherOf(APP2);
  const chA = a.subscribe('orders');
  const chB = b.subscribe('orders');
  await channelSubscribed(chA);
  await channelSubscribed(chB);
  const gotA = collect(chA, 'created');
  const gotB = collect(chB, 'created');
  await serverOf(APP1).trigger('orders', 'created', { app: 1 });
  await serverOf(APP2).trigger('orders', 'created', { app: 2 });
  await until(() => gotA.length === 1 && gotB.length === 1, 'one event each');
  await sleep(200);
  assert.deepEqual(gotA, [{ app: 1 }]);
  assert.deepEqual(gotB, [{ app: 2 }]);

  // Private and presence channels too, and the HTTP API answers per app.
  const pa = a.subscribe('presence-team');
  await channelSubscribed(pa);
  const pb = b.subscribe('presence-team');
  const members = await once((cb) => pb.bind('pusher:subscription_succeeded', cb), 'members of app 2');
  assert.equal(members.count, 1, 'app 2 does not see app 1 members');
  const list1 = await (await serverOf(APP1).get({ path: '/channels' })).json();
  const list2 = await (await serverOf(APP2).get({ path: '/channels' })).json();
  assert.ok('orders' in list1.channels && 'presence-team' in list1.channels, JSON.stringify(list1));
  assert.ok('orders' in list2.channels && 'presence-team' in list2.channels, JSON.stringify(list2));
  b.unsubscribe('orders');
  await until(async () => {
    const info = await (await serverOf(APP2).get({ path: '/channels/orders', params: { info: 'subscription_count' } })).json();
    return info.occupied === false;
  }, 'app 2 orders vacated');
  const still = await (await serverOf(APP1).get({ path: '/channels/orders', params: { info: 'subscription_count' } })).json();
  assert.deepEqual(still, { occupied: true, subscription_count: 1 });
});

test('Echo.encryptedPrivate() decrypts an event the Node SDK encrypted with the master key', async () => {
  // pusher-js's Node build carries the encryption (tweetnacl); in a browser it is
  // `pusher-js/with-encryption`.
  const e = echo(jwt('42'));
  const ch = e.encryptedPrivate('user.42');
  const got = once((cb) => ch.listen('.OrderShipped', cb), 'decrypted OrderShipped');
  await once((cb) => ch.subscribed(cb), 'encrypted subscription');
  const sdk = serverOf(APP1, { encryptionMasterKeyBase64: MASTER_KEY });
  await sdk.trigger('private-encrypted-user.42', 'OrderShipped', { order_id: 7, secret: 'only the client reads this' });
  assert.deepEqual(await got, { order_id: 7, secret: 'only the client reads this' });

  // The auth endpoint hands out the channel's shared secret; another user gets none.
  const res = await fetch(`${BASE}/broadcasting/auth`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${jwt('7')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'socket_id=1.2&channel_name=private-encrypted-user.42',
  });
  assert.equal(res.status, 403);
});

test('cache channels: a late subscriber gets the last event at once, an early one pusher:cache_miss', async () => {
  const early = pusherOf(APP1);
  const ch = early.subscribe('cache-headlines');
  const miss = once((cb) => ch.bind('pusher:cache_miss', cb), 'cache_miss');
  await channelSubscribed(ch);
  await miss;
  await serverOf(APP1).trigger('cache-headlines', 'headline', { text: 'first' });
  await serverOf(APP1).trigger('cache-headlines', 'headline', { text: 'second' });
  await sleep(100);
  const late = pusherOf(APP1);
  const lateCh = late.subscribe('cache-headlines');
  const cached = await once((cb) => lateCh.bind('headline', cb), 'cached headline');
  assert.deepEqual(cached, { text: 'second' });
  // Another app's channel of the same name has nothing cached.
  const other = pusherOf(APP2).subscribe('cache-headlines');
  await once((cb) => other.bind('pusher:cache_miss', cb), 'app 2 cache_miss');
});

test('subscription counts arrive for apps that enable them, and not for others', async () => {
  const a = pusherOf(APP1);
  const chA = a.subscribe('counted');
  const counts = [];
  chA.bind('pusher:subscription_count', (d) => counts.push(d.subscription_count));
  await until(() => counts.includes(1), 'count 1');
  const b = pusherOf(APP1);
  b.subscribe('counted');
  await until(() => counts.at(-1) === 2, 'count 2');
  assert.equal(chA.subscriptionCount, 2, 'pusher-js keeps the count');
  b.disconnect();
  await until(() => counts.at(-1) === 1, 'count back to 1');

  const c = pusherOf(APP2);
  const chC = c.subscribe('counted');
  const none = collect(chC, 'pusher:subscription_count');
  await channelSubscribed(chC);
  pusherOf(APP2).subscribe('counted');
  await sleep(500);
  assert.deepEqual(none, [], 'app 2 did not enable subscription counts');
});

test('watchlist: a signed-in user sees the users they watch come online and go offline', async () => {
  const bobEarly = pusherOf(APP1, { userData: { id: 'bob' } });
  bobEarly.signin();
  await within(5000, new Promise((r) => bobEarly.user.signinDonePromise.then(r)), 'bob signed in');

  const alice = pusherOf(APP1, { userData: { id: 'alice', watchlist: ['bob', 'carol'] } });
  const online = [];
  const offline = [];
  alice.user.watchlist.bind('online', (e) => online.push(...e.user_ids));
  alice.user.watchlist.bind('offline', (e) => offline.push(...e.user_ids));
  alice.signin();
  await until(() => online.includes('bob'), 'bob already online');

  const carol = pusherOf(APP1, { userData: { id: 'carol' } });
  carol.signin();
  await until(() => online.includes('carol'), 'carol online');
  carol.disconnect();
  await until(() => offline.includes('carol'), 'carol offline');
  bobEarly.disconnect();
  await until(() => offline.includes('bob'), 'bob offline');

  // A user of another app with the same id is someone else.
  const otherCarol = pusherOf(APP2, { userData: { id: 'carol' } });
  otherCarol.signin();
  await sleep(400);
  assert.deepEqual(online.filter((u) => u === 'carol'), ['carol'], 'app 2 carol is not app 1 carol');
});

test('per-app limits: presence members, member size, event name, channels per event, API rate', async () => {
  const members = [];
  for (let i = 0; i < 2; i++) {
    const p = pusherOf(APP3);
    const ch = p.subscribe('presence-small');
    await channelSubscribed(ch);
    members.push(p);
  }
  const third = pusherOf(APP3).subscribe('presence-small');
  const full = await once((cb) => third.bind('pusher:subscription_error', cb), 'presence full');
  assert.equal(full.status, 4100);
  assert.equal(full.type, 'LimitReached');

  const big = pusherOf(APP3, {
    extra: {
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, cb) => {
          const channel_data = JSON.stringify({ user_id: 'big', user_info: { bio: 'x'.repeat(200) } });
          const sig = crypto.createHmac('sha256', APP3.secret).update(`${socketId}:${channelName}:${channel_data}`).digest('hex');
          cb(null, { auth: `${APP3.key}:${sig}`, channel_data });
        },
      },
    },
  }).subscribe('presence-other');
  const tooBig = await once((cb) => big.bind('pusher:subscription_error', cb), 'member too large');
  assert.equal(tooBig.status, 4301);

  const auth = { key: APP3.key, secret: APP3.secret };
  const longName = await signedFetch('POST', `/apps/${APP3.id}/events`, { ...auth, body: { name: 'n'.repeat(21), channel: 'x', data: '{}' } });
  assert.equal(longName.status, 400);
  const tooMany = await signedFetch('POST', `/apps/${APP3.id}/events`, { ...auth, body: { name: 'n', channels: ['a', 'b', 'c'], data: '{}' } });
  assert.equal(tooMany.status, 400);
  const statuses = [];
  for (let i = 0; i < 8; i++) {
    statuses.push((await signedFetch('POST', `/apps/${APP3.id}/events`, { ...auth, body: { name: 'n', channel: 'x', data: '{}' } })).status);
  }
  assert.ok(statuses.includes(429), statuses.join(','));
  // The other apps are not limited by app 3's rate.
  assert.equal((await signedFetch('POST', `/apps/${APP1.id}/events`, { body: { name: 'n', channel: 'x', data: '{}' } })).status, 200);
});

test('client events are refused on encrypted channels', async () => {
  const ws = new WebSocket(`ws://${HOST}:${PORT}/app/${APP1.key}?protocol=7`);
  const inbox = [];
  ws.on('message', (m) => inbox.push(JSON.parse(m.toString())));
  await until(() => inbox.length === 1, 'established');
  const socketId = JSON.parse(inbox[0].data).socket_id;
  const res = await fetch(`${BASE}/broadcasting/auth`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${jwt('5')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: `socket_id=${socketId}&channel_name=private-encrypted-user.5`,
  });
  const body = await res.json();
  assert.equal(typeof body.shared_secret, 'string');
  assert.equal(Buffer.from(body.shared_secret, 'base64').length, 32);
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'private-encrypted-user.5', auth: body.auth } }));
  await until(() => inbox.some((m) => m.event === 'pusher_internal:subscription_succeeded'), 'subscribed');
  ws.send(JSON.stringify({ event: 'client-typing', channel: 'private-encrypted-user.5', data: {} }));
  await until(() => inbox.some((m) => m.event === 'pusher:error'), 'refusal');
  const err = inbox.find((m) => m.event === 'pusher:error');
  assert.match(err.data.message, /encrypted/);
  ws.close();
});
