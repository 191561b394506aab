"""A real third-party client (Python `websockets`, which offers permessage-deflate by
default and compresses what it sends) against rustaxum's native protocol.

    client.py ws://127.0.0.1:PORT/ws/news EVENT

Prints `extensions: <the server's Sec-WebSocket-Extensions answer>`, sends a `ping`
action (compressed by the client), prints `pong: <data>` and `ready`, then prints the
data of the first EVENT as `event: <json>` and exits.
"""
import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main(url, event):
    async with connect(url, max_size=2**20) as ws:
        print("extensions:", ws.response.headers.get("Sec-WebSocket-Extensions"), flush=True)
        print("client extensions:", [type(e).__name__ for e in ws.protocol.extensions], flush=True)
        await ws.send(json.dumps({"action": "ping", "data": {"note": "compressed by the client " * 20}}))
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("event") == "pong":
                print("pong:", json.dumps(frame["data"]), flush=True)
                break
        print("ready", flush=True)
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("event") == event:
                print("event:", json.dumps(frame["data"]), flush=True)
                return


asyncio.run(main(sys.argv[1], sys.argv[2]))
