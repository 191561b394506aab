// pusher-js with forceTLS and the pusher SDK with useTLS against rustaxum serving TLS;
// Node trusts the test's CA through NODE_EXTRA_CA_CERTS. Driven by tests/it/tls.rs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

const port = Number(process.env.RX_PORT);

test('pusher-js over wss (forceTLS) gets an event the SDK triggered over https', async () => {
  const client = new Pusher('tls-key', {
    wsHost: '127.0.0.1', wsPort: port, wssPort: port, forceTLS: true,
    enabledTransports: ['ws', 'wss'], cluster: 'mt1', disableStats: true,
  });
  try {
    const channel = client.subscribe('secure-news');
    await new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', resolve);
      setTimeout(() => reject(new Error('not subscribed')), 5000);
    });
    assert.equal(client.connection.socket_id.includes('.'), true);
    const got = new Promise((resolve) => channel.bind('headline', resolve));
    const sdk = new PusherServer({ appId: 'tls', key: 'tls-key', secret: 'tls-secret-0123456789', host: '127.0.0.1', port: String(port), useTLS: true });
    await sdk.trigger('secure-news', 'headline', { over: 'tls' });
    assert.deepEqual(await got, { over: 'tls' });
  } finally {
    client.disconnect();
  }
});
