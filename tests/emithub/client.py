# The EmitHub document's "Python Client", verbatim. tests/it/emithub.rs runs it with the
# document's base_url and channel_id replaced by the test server's.

import asyncio
import websockets
import json
import logging

class EmitHubClient:
    def __init__(self, base_url: str, channel_id: str):
        self.base_url = base_url.replace('http', 'ws')
        self.channel_id = channel_id
        self.websocket = None
        
    async def connect(self):
        uri = f"{self.base_url}/api/v1/channels/{self.channel_id}/ws"
        
        try:
            self.websocket = await websockets.connect(uri)
            logging.info(f"ğŸŸ¢ Connected to EmitHub: {uri}")
            
            await self.listen_messages()
            
        except Exception as e:
            logging.error(f"âŒ Connection error: {e}")
            
    async def listen_messages(self):
        async for message in self.websocket:
            try:
                data = json.loads(message)
                await self.handle_message(data)
            except json.JSONDecodeError:
                logging.error(f"Error parsing message: {message}")
                
    async def handle_message(self, data):
        status = data.get('status')
        message = data.get('message')
        
        if status == 'broadcast':
            print(f"ğŸ¯ Queue called: {message}")
            # Here you can add specific logic
            # like sending email, updating database, etc.
            
        elif status == 'connected':
            print(f"âœ… Connected to channel: {data.get('channel_id')}")
            
        else:
            print(f"ğŸ“¨ Message: {message}")
            
    async def disconnect(self):
        if self.websocket:
            await self.websocket.close()

# Usage
async def main():
    client = EmitHubClient(
        base_url="http://localhost:8080",
        channel_id="550e8400-e29b-41d4-a716-446655440000"
    )
    
    await client.connect()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
