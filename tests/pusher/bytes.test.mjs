// `data` is opaque on the Pusher path: the string a Pusher HTTP API client sends reaches
// Pusher clients byte for byte (issue 33), as Pusher, Reverb and Soketi pass it. Frames are
// read on a bare WebSocket, so nothing between the server and the assertion parses them.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  APP1, EXACT_PAYLOADS, channelSubscribed, closeAll, collect, native, pusherOf, rawPusher, serverOf, until,
} from './helpers.mjs';

afterEach(closeAll);

test('trigger: every payload reaches Pusher clients byte for byte, and JSON ones native clients as that JSON', async () => {
  const raw = await rawPusher();
  await raw.subscribe('orders');
  const nat = await native('/ws?channel=orders');
  const sdk = serverOf(APP1);
  for (const [i, payload] of EXACT_PAYLOADS.entries()) {
    // The SDK sends a string as it is (JSON.stringify only for objects).
    await sdk.trigger('orders', `exact-${i}`, payload);
    const frame = await raw.next((f) => f.event === `exact-${i}`);
    assert.equal(frame.data, payload, `payload ${i} as the SDK sent it`);
    const n = await nat.next((m) => m.event === `exact-${i}`);
    let json;
    try { json = JSON.parse(payload); } catch { json = payload; }
    assert.deepEqual(n.data, json, `payload ${i} for native clients`);
  }
  // Key order survives to the app (Object.entries, v-for): pusher-js parses the bytes.
  const first = EXACT_PAYLOADS[1];
  const echoLike = pusherOf(APP1).subscribe('orders');
  await channelSubscribed(echoLike);
  const got = collect(echoLike, 'ordered');
  await sdk.trigger('orders', 'ordered', first);
  await until(() => got.length === 1, 'the ordered event');
  assert.deepEqual(Object.keys(got[0]), ['zeta', 'alpha', 'mid', 'price', 'big']);
  assert.deepEqual(Object.keys(got[0].mid), ['b', 'a']);
});

test('triggerBatch: each event\'s data is passed through as sent', async () => {
  const raw = await rawPusher();
  await raw.subscribe('orders');
  const sdk = serverOf(APP1);
  await sdk.triggerBatch(EXACT_PAYLOADS.map((data, i) => ({ channel: 'orders', name: `batch-${i}`, data })));
  for (const [i, payload] of EXACT_PAYLOADS.entries()) {
    const frame = await raw.next((f) => f.event === `batch-${i}`);
    assert.equal(frame.data, payload, `batch payload ${i}`);
  }
});

test('a whisper is passed on as the client wrote it', async () => {
  const [a, b] = [await rawPusher(), await rawPusher()];
  // A presence channel signed as the app's backend would (helpers' pusherOf signs the same way).
  const sign = async (client, channel) => {
    const { createHmac } = await import('node:crypto');
    const channel_data = JSON.stringify({ user_id: `u-${client.socketId}`, user_info: {} });
    const auth = `${APP1.key}:${createHmac('sha256', APP1.secret).update(`${client.socketId}:${channel}:${channel_data}`).digest('hex')}`;
    client.send({ event: 'pusher:subscribe', data: { channel, auth, channel_data } });
    await client.next((f) => f.event === 'pusher_internal:subscription_succeeded');
  };
  await sign(a, 'presence-bytes');
  await sign(b, 'presence-bytes');
  // Written by hand: the data object's keys unsorted and an escape the server must keep.
  a.ws.send('{"event":"client-typing","channel":"presence-bytes","data":{"z":1,"a":"caf\\u00e9","n":1.50}}');
  const frame = await b.next((f) => f.event === 'client-typing');
  assert.equal(frame.data, '{"z":1,"a":"caf\\u00e9","n":1.50}');
});

test('the size limit applies to the bytes received', async () => {
  const sdk = serverOf(APP1);
  // PUSHER_MAX_EVENT_SIZE is 10 KiB: a string of exactly that passes, one byte more does not.
  const fits = JSON.stringify({ pad: 'x'.repeat(10 * 1024 - 10) });
  assert.equal(fits.length, 10 * 1024);
  await sdk.trigger('orders', 'fits', fits);
  await assert.rejects(sdk.trigger('orders', 'too-big', fits + ' '), (e) => e.status === 413);
});

test('history replays give back the same bytes', async () => {
  // kept-* keeps history (tests/it/pusher_js.rs).
  const live = await rawPusher();
  await live.subscribe('kept-exact');
  const sdk = serverOf(APP1);
  await sdk.trigger('kept-exact', 'start', '{}');
  const { position } = await live.next((f) => f.event === 'start');
  assert.ok(position, 'a kept channel carries positions');
  for (const [i, payload] of EXACT_PAYLOADS.entries()) await sdk.trigger('kept-exact', `kept-${i}`, payload);
  for (const [i] of EXACT_PAYLOADS.entries()) await live.next((f) => f.event === `kept-${i}`);
  const late = await rawPusher();
  late.send({ event: 'pusher:subscribe', data: { channel: 'kept-exact', since: position } });
  for (const [i, payload] of EXACT_PAYLOADS.entries()) {
    const frame = await late.next((f) => f.event === `kept-${i}`);
    assert.equal(frame.data, payload, `replayed payload ${i}`);
  }
  const marker = await late.next((f) => f.event === 'rustaxum:recovered');
  assert.equal(JSON.parse(marker.data).recovered, true);
});

test('encrypted channels take only ciphertext; names with control characters are refused (issue 34)', async () => {
  const { MASTER_KEY, signedFetch, APP_ID } = await import('./helpers.mjs');
  // A request with plaintext (the Node SDK refuses to send one; others do not): refused, not relayed.
  const plain = await signedFetch('POST', `/apps/${APP_ID}/events`, { body: { name: 'sealed', channel: 'private-encrypted-vault', data: '{"secret":"x"}' } });
  assert.equal(plain.status, 400);
  assert.equal(plain.body.error, 'not_encrypted');
  await serverOf(APP1, { encryptionMasterKeyBase64: MASTER_KEY }).trigger('private-encrypted-vault', 'sealed', { secret: 'x' });
  const native = await fetch(`http://127.0.0.1:${process.env.RX_PORT}/api/broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ channel: 'private-encrypted-vault', event: 'plain', data: { secret: 'x' } }),
  });
  assert.equal(native.status, 400);
  // ESC and OSC sequences in an event name would act in a terminal (artisan, logs).
  for (const name of ['evil\u001b]0;pwned\u0007', 'line\nbreak', 'tab\there']) {
    const res = await signedFetch('POST', `/apps/${APP_ID}/events`, { body: { name, channel: 'orders', data: '{}' } });
    assert.equal(res.status, 400, JSON.stringify(name));
    const nat = await fetch(`http://127.0.0.1:${process.env.RX_PORT}/api/broadcast`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel: 'orders', event: name, data: {} }),
    });
    assert.equal(nat.status, 422, JSON.stringify(name));
  }
});
