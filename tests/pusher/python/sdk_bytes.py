"""The official Pusher server SDK for Python (`pusher` on PyPI) publishing through
rustaxum's Pusher HTTP API, and a bare WebSocket reading what Pusher clients get: `data`
must arrive byte for byte (issue 33).

    sdk_bytes.py HOST PORT APP_ID KEY SECRET

Prints `ok <n>` per payload that arrived unchanged and exits 0, or says what differed
and exits 1.
"""
import asyncio
import json
import sys

import pusher
from websockets.asyncio.client import connect

# What Laravel's json_encode and other publishers write: key order, escapes, 99.50,
# pretty printing, a JSON string, plain text, whitespace around JSON, non-ASCII as is.
PAYLOADS = [
    '{"order":{"id":1,"total":99.5,"items":[{"sku":"caf\\u00e9","url":"https:\\/\\/shop.test\\/p\\/1"}]},"socket":null}',
    '{"zeta":1,"alpha":2,"price":99.50,"big":12345678901234567890}',
    '{\n    "pretty": true\n}',
    '"shipped"',
    "plain text, not JSON",
    ' {"padded":1}\n',
    '{"name":"Zoë","emoji":"\U0001f680"}',
]


async def main(host, port, app_id, key, secret):
    sdk = pusher.Pusher(app_id=app_id, key=key, secret=secret, host=host, port=int(port), ssl=False)
    async with connect(f"ws://{host}:{port}/app/{key}?protocol=7&client=py") as ws:
        json.loads(await ws.recv())  # pusher:connection_established
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "orders"}}))
        while json.loads(await ws.recv())["event"] != "pusher_internal:subscription_succeeded":
            pass
        failed = False
        for i, payload in enumerate(PAYLOADS):
            sdk.trigger("orders", f"py-{i}", payload)
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if frame["event"] == f"py-{i}":
                    break
            if frame["data"] == payload:
                print(f"ok {i}", flush=True)
            else:
                print(f"payload {i} differs: sent {payload!r}, got {frame['data']!r}", flush=True)
                failed = True
        batch = [{"channel": "orders", "name": f"py-batch-{i}", "data": p} for i, p in enumerate(PAYLOADS[:3])]
        sdk.trigger_batch(batch)
        for i, payload in enumerate(PAYLOADS[:3]):
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if frame["event"] == f"py-batch-{i}":
                    break
            if frame["data"] != payload:
                print(f"batch payload {i} differs: sent {payload!r}, got {frame['data']!r}", flush=True)
                failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
