// The real-time communication document's "WebSocket Client Example", verbatim.
// tests/rtc/run-client.mjs runs it with the document's URL and token filled in.

// JavaScript/TypeScript WebSocket client example
class RealtimeClient {
  constructor(token) {
    this.token = token;
    this.ws = null;
    this.reconnectAttempts = 0;
  }

  connect() {
    // Connect with JWT token in query parameter
    const wsUrl = `ws://localhost:8081/ws?token=${this.token}`;
    this.ws = new WebSocket(wsUrl);

    this.ws.onopen = () => {
      console.log('Connected to real-time service');
      this.reconnectAttempts = 0;
      
      // Subscribe to topics
      this.subscribe(['notifications', 'updates']);
    };

    this.ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      this.handleMessage(message);
    };

    this.ws.onerror = (error) => {
      console.error('WebSocket error:', error);
    };

    this.ws.onclose = () => {
      console.log('Disconnected from real-time service');
      this.handleReconnect();
    };
  }

  subscribe(topics) {
    this.send({
      type: 'Subscribe',
      data: { topics }
    });
  }

  broadcast(topic, payload) {
    this.send({
      type: 'Broadcast',
      data: { topic, payload }
    });
  }

  sendDirectMessage(targetUser, payload) {
    this.send({
      type: 'DirectMessage',
      data: { target_user: targetUser, payload }
    });
  }

  send(message) {
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
    }
  }

  handleMessage(message) {
    switch (message.type) {
      case 'Status':
        console.log('Status:', message.data);
        break;
      case 'Broadcast':
        console.log('Broadcast message:', message.data);
        break;
      case 'DirectMessage':
        console.log('Direct message:', message.data);
        break;
      case 'Error':
        console.error('Error:', message.data);
        break;
      default:
        console.log('Unknown message type:', message);
    }
  }

  handleReconnect() {
    if (this.reconnectAttempts < 5) {
      this.reconnectAttempts++;
      const delay = Math.min(1000 * Math.pow(2, this.reconnectAttempts), 30000);
      console.log(`Reconnecting in ${delay}ms...`);
      setTimeout(() => this.connect(), delay);
    }
  }

  disconnect() {
    if (this.ws) {
      this.ws.close();
    }
  }
}

// Usage
const client = new RealtimeClient('your-jwt-token');
client.connect();
