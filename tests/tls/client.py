"""A Python `websockets` client over wss:// trusting the test's CA: prints each message
(one JSON per line) until it has printed `count` or `seconds` passed.

usage: client.py URL CA_FILE COUNT SECONDS
"""
import asyncio
import ssl
import sys

import websockets


async def main(url: str, ca: str, count: int, seconds: float) -> None:
    context = ssl.create_default_context(cafile=ca)
    async with websockets.connect(url, ssl=context) as ws:
        for _ in range(count):
            message = await asyncio.wait_for(ws.recv(), timeout=seconds)
            print(message, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
