// Presence as Laravel fills it (issue 33): Laravel's channel callbacks return the user's id
// as a number, and Pusher and Reverb hand it back as a number everywhere it appears.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  APP1, channelSubscribed, closeAll, once, pusherOf, rawPusher, serverOf, until,
} from './helpers.mjs';

afterEach(closeAll);

const laravelMember = (id, name) => ({ user_id: id, user_info: { id, name } });

test('a number user_id stays a number: member lists, member_added/removed, client events, the users API', async () => {
  const ann = pusherOf(APP1, { member: laravelMember(1, 'Ann') });
  const chAnn = ann.subscribe('presence-numbers');
  await channelSubscribed(chAnn);
  const added = once((cb) => chAnn.bind('pusher:member_added', cb), 'member_added');
  // Bob on a bare socket, to read the subscription_succeeded frame as sent.
  const bob = await rawPusher();
  const { createHmac } = await import('node:crypto');
  const channel_data = JSON.stringify(laravelMember(2, 'Bob'));
  const auth = `${APP1.key}:${createHmac('sha256', APP1.secret).update(`${bob.socketId}:presence-numbers:${channel_data}`).digest('hex')}`;
  bob.send({ event: 'pusher:subscribe', data: { channel: 'presence-numbers', auth, channel_data } });
  const ok = await bob.next((f) => f.event === 'pusher_internal:subscription_succeeded');
  const { presence } = JSON.parse(ok.data);
  assert.deepEqual(presence.ids, [1, 2], 'ids as Laravel gave them');
  assert.deepEqual(presence.hash['1'], { id: 1, name: 'Ann' });
  assert.equal(presence.count, 2);
  const member = await added;
  assert.equal(member.id, 2, 'member_added carries the number');
  // A whisper on the presence channel carries the sender's user_id (pusher-js: metadata).
  chAnn.trigger('client-typing', { typing: true });
  const whisper = await bob.next((f) => f.event === 'client-typing');
  assert.equal(whisper.user_id, 1, `client event user_id in ${whisper.text}`);
  // The users API.
  const res = await serverOf(APP1).get({ path: '/channels/presence-numbers/users' });
  assert.deepEqual((await res.json()).users, [{ id: 1 }, { id: 2 }]);
  // member_removed, to the other member.
  const removed = bob.next((f) => f.event === 'pusher_internal:member_removed');
  ann.disconnect();
  assert.equal((await removed).text.includes('\\"user_id\\":1'), true, (await removed).text);
});

test('string ids stay strings', async () => {
  const a = pusherOf(APP1, { member: laravelMember('7', 'Seven') });
  const ch = a.subscribe('presence-strings');
  await channelSubscribed(ch);
  const res = await serverOf(APP1).get({ path: '/channels/presence-strings/users' });
  assert.deepEqual((await res.json()).users, [{ id: '7' }]);
  assert.deepEqual(Object.keys(ch.members.members), ['7']);
  assert.equal(ch.members.me.id, '7');
});

test('the users API stops listing a member as soon as its last socket is closed', async () => {
  const sdk = serverOf(APP1);
  const users = async () => (await (await sdk.get({ path: '/channels/presence-leaving/users' })).json()).users;
  const tabs = [pusherOf(APP1, { member: laravelMember(5, 'Eve') }), pusherOf(APP1, { member: laravelMember(5, 'Eve') })];
  const chans = tabs.map((p) => p.subscribe('presence-leaving'));
  await Promise.all(chans.map(channelSubscribed));
  assert.deepEqual(await users(), [{ id: 5 }]);
  // One of two tabs closed: still a member.
  const closed = (p) => once((cb) => p.connection.bind('state_change', (s) => s.current === 'disconnected' && cb()), 'closed');
  let done = closed(tabs[0]);
  tabs[0].disconnect();
  await done;
  assert.deepEqual(await users(), [{ id: 5 }], 'a tab is still open');
  // The last one: gone at once (the server has the close handshake done before it answers).
  done = closed(tabs[1]);
  tabs[1].disconnect();
  await done;
  await until(async () => (await users()).length === 0, 'the member gone', 500);
});

test('an encrypted cache channel replays its last (encrypted) event to the next subscriber', async () => {
  const first = await rawPusher();
  const { createHmac } = await import('node:crypto');
  const subscribe = (client) => {
    const channel = 'private-encrypted-cache-vault';
    const auth = `${APP1.key}:${createHmac('sha256', APP1.secret).update(`${client.socketId}:${channel}`).digest('hex')}`;
    client.send({ event: 'pusher:subscribe', data: { channel, auth } });
  };
  subscribe(first);
  const miss = await first.next((f) => f.event === 'pusher:cache_miss');
  assert.deepEqual(JSON.parse(miss.text), { event: 'pusher:cache_miss', channel: 'private-encrypted-cache-vault' }, 'no data');
  // The SDK encrypts with the master key; the server never sees plaintext.
  const { MASTER_KEY, serverOf: sdkOf } = await import('./helpers.mjs');
  const sdk = sdkOf(APP1, { encryptionMasterKeyBase64: MASTER_KEY });
  await sdk.trigger('private-encrypted-cache-vault', 'sealed', { secret: 'x' });
  const live = await first.next((f) => f.event === 'sealed');
  const late = await rawPusher();
  subscribe(late);
  const replay = await late.next((f) => f.event === 'sealed' || f.event === 'pusher:cache_miss');
  assert.equal(replay.event, 'sealed', 'the last event, not a miss');
  assert.equal(replay.data, live.data, 'the same ciphertext');
  assert.ok(JSON.parse(replay.data).ciphertext, 'still encrypted');
});
