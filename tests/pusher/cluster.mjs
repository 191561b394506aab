// The Pusher features across two nodes sharing Redis (run by tests/it/pusher_js.rs with
// RX_PORT and RX_PORT2; not part of the single-node suite, whose files end in .test.mjs).
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  APP1, APP2, EXACT_PAYLOADS, MASTER_KEY, PORT, PORT2,
  channelSubscribed, closeAll, collect, echo, jwt, once, pusherOf, rawPusher, serverOf, sleep, until,
} from './helpers.mjs';

afterEach(closeAll);

if (!PORT2) throw new Error('RX_PORT2 is not set: run through `cargo nextest run --test pusher_js`');

test('two apps stay apart across nodes', async () => {
  const a = pusherOf(APP1, { port: PORT }).subscribe('orders');
  const b = pusherOf(APP2, { port: PORT2 }).subscribe('orders');
  await channelSubscribed(a);
  await channelSubscribed(b);
  const gotA = collect(a, 'created');
  const gotB = collect(b, 'created');
  await serverOf(APP1, { port: PORT2 }).trigger('orders', 'created', { app: 1 });
  await serverOf(APP2, { port: PORT }).trigger('orders', 'created', { app: 2 });
  await until(() => gotA.length === 1 && gotB.length === 1, 'one event each');
  await sleep(300);
  assert.deepEqual([gotA, gotB], [[{ app: 1 }], [{ app: 2 }]]);
});

test('an encrypted event triggered on one node is decrypted by Echo on the other', async () => {
  const e = echo(jwt('42'), { wsPort: PORT });
  const ch = e.encryptedPrivate('user.42');
  const got = once((cb) => ch.listen('.Secret', cb), 'decrypted event');
  await once((cb) => ch.subscribed(cb), 'encrypted subscription');
  await serverOf(APP1, { port: PORT2, encryptionMasterKeyBase64: MASTER_KEY }).trigger('private-encrypted-user.42', 'Secret', { n: 42 });
  assert.deepEqual(await got, { n: 42 });
});

test('a cache channel event published on one node is what a late subscriber on the other gets', async () => {
  const first = pusherOf(APP1, { port: PORT2 }).subscribe('cache-cluster');
  await once((cb) => first.bind('pusher:cache_miss', cb), 'cache_miss on B');
  await serverOf(APP1, { port: PORT }).trigger('cache-cluster', 'state', { v: 3 });
  await sleep(200);
  const late = pusherOf(APP1, { port: PORT2 }).subscribe('cache-cluster');
  assert.deepEqual(await once((cb) => late.bind('state', cb), 'cached on B'), { v: 3 });
});

test('subscription counts add up over the nodes', async () => {
  const onA = pusherOf(APP1, { port: PORT }).subscribe('counted');
  const countsA = [];
  onA.bind('pusher:subscription_count', (d) => countsA.push(d.subscription_count));
  await until(() => countsA.includes(1), 'count 1 on A');
  const bClient = pusherOf(APP1, { port: PORT2 });
  const onB = bClient.subscribe('counted');
  const countsB = [];
  onB.bind('pusher:subscription_count', (d) => countsB.push(d.subscription_count));
  await until(() => countsA.at(-1) === 2 && countsB.at(-1) === 2, 'count 2 on both nodes');
  bClient.disconnect();
  await until(() => countsA.at(-1) === 1, 'count 1 again on A');
});

test('a watcher on one node sees a user on the other come online and go offline', async () => {
  // Bob is online on node B before Alice signs in on node A: she is told at once.
  const bobOnB = pusherOf(APP1, { port: PORT2, userData: { id: 'bob-c' } });
  bobOnB.signin();
  await until(() => bobOnB.user.user_data?.id === 'bob-c', 'bob signed in on B');
  const alice = pusherOf(APP1, { port: PORT, userData: { id: 'alice-c', watchlist: ['bob-c', 'carol-c'] } });
  const online = [];
  const offline = [];
  alice.user.watchlist.bind('online', (e) => online.push(...e.user_ids));
  alice.user.watchlist.bind('offline', (e) => offline.push(...e.user_ids));
  alice.signin();
  await until(() => online.includes('bob-c'), 'bob already online (on the other node)');

  // Bob opens a second tab on node A, then closes the one on B: still online.
  const bobOnA = pusherOf(APP1, { port: PORT, userData: { id: 'bob-c' } });
  bobOnA.signin();
  await until(() => bobOnA.user.user_data?.id === 'bob-c', 'bob signed in on A');
  bobOnB.disconnect();
  await sleep(500);
  assert.deepEqual(offline, [], 'bob still has a connection on node A');
  bobOnA.disconnect();
  await until(() => offline.includes('bob-c'), 'bob offline');

  // Carol comes online on node B while Alice watches from node A.
  const carol = pusherOf(APP1, { port: PORT2, userData: { id: 'carol-c' } });
  carol.signin();
  await until(() => online.includes('carol-c'), 'carol online');
  carol.disconnect();
  await until(() => offline.includes('carol-c'), 'carol offline');
  assert.deepEqual(online.filter((u) => u === 'bob-c'), ['bob-c'], 'one online for bob');
});

test('data triggered on one node reaches a Pusher client on the other byte for byte, live and replayed', async () => {
  const raw = await rawPusher({ port: PORT2 });
  await raw.subscribe('kept-cluster');
  const sdk = serverOf(APP1, { port: PORT });
  await sdk.trigger('kept-cluster', 'start', '{}');
  const { position } = await raw.next((f) => f.event === 'start');
  for (const [i, payload] of EXACT_PAYLOADS.entries()) {
    await sdk.trigger('kept-cluster', `exact-${i}`, payload);
    assert.equal((await raw.next((f) => f.event === `exact-${i}`)).data, payload, `payload ${i} across nodes`);
  }
  const late = await rawPusher({ port: PORT2 });
  late.send({ event: 'pusher:subscribe', data: { channel: 'kept-cluster', since: position } });
  for (const [i, payload] of EXACT_PAYLOADS.entries()) {
    assert.equal((await late.next((f) => f.event === `exact-${i}`)).data, payload, `payload ${i} replayed from Redis`);
  }
});

test('presence across nodes: number ids stay numbers, and a member leaves the users API when its last socket closes', async () => {
  const member = { user_id: 9, user_info: { id: 9, name: 'Nine' } };
  const onB = pusherOf(APP1, { port: PORT2, member });
  await channelSubscribed(onB.subscribe('presence-cluster-users'));
  const users = async () => (await (await serverOf(APP1, { port: PORT }).get({ path: '/channels/presence-cluster-users/users' })).json()).users;
  assert.deepEqual(await users(), [{ id: 9 }]);
  const watcher = pusherOf(APP1, { port: PORT });
  const ch = watcher.subscribe('presence-cluster-users');
  await channelSubscribed(ch);
  assert.equal(ch.members.get('9')?.info?.id, 9);
  const left = once((cb) => ch.bind('pusher:member_removed', cb), 'member_removed on A');
  onB.disconnect();
  assert.equal((await left).id, 9);
  await until(async () => !(await users()).some((u) => u.id === 9), 'gone from the users API', 500);
});

test('an app\'s max_connections holds across nodes at once, refused with 4004 so pusher-js does not retry', async () => {
  const { APP5, HOST } = await import('./helpers.mjs');
  const { default: WebSocket } = await import('ws');
  // Nine sockets at once, alternating nodes, for an app of at most 3.
  const attempts = Array.from({ length: 9 }, (_, i) => new Promise((resolve) => {
    const ws = new WebSocket(`ws://${HOST}:${i % 2 ? PORT2 : PORT}/app/${APP5.key}?protocol=7`);
    const frames = [];
    ws.on('message', (m) => {
      frames.push(JSON.parse(m.toString()));
      if (frames[0].event === 'pusher:connection_established') resolve({ ws, ok: true });
    });
    ws.on('close', (code) => resolve({ ws, ok: false, code, error: frames.find((f) => f.event === 'pusher:error')?.data }));
  }));
  const results = await Promise.all(attempts);
  const admitted = results.filter((r) => r.ok);
  const refused = results.filter((r) => !r.ok);
  assert.equal(admitted.length, 3, 'exactly max_connections admitted over both nodes');
  for (const r of refused) {
    assert.equal(r.code, 4004, 'Pusher\'s over-quota close code (4000-4099: pusher-js does not reconnect)');
    assert.equal(r.error?.code, 4004);
  }
  // A place given back is a place another node can take.
  const closedOne = new Promise((resolve) => admitted[0].ws.once('close', resolve));
  admitted[0].ws.close();
  await closedOne;
  await until(() => new Promise((resolve) => {
    const ws = new WebSocket(`ws://${HOST}:${PORT2}/app/${APP5.key}?protocol=7`);
    ws.once('message', (m) => {
      const ok = JSON.parse(m.toString()).event === 'pusher:connection_established';
      if (!ok) ws.close();
      else admitted.push({ ws });
      resolve(ok);
    });
    ws.once('error', () => resolve(false));
  }), 'a freed place taken on the other node', 3000);
  for (const r of admitted) r.ws.close();
});
