// The EmitHub document's "Admin Panel (Channel Management)" example, verbatim.
// tests/it/emithub.rs runs it with Node (fetch is built in) against the test server.

// Functions to manage channels from admin panel

class EmitHubAdmin {
  constructor(baseUrl) {
    this.baseUrl = baseUrl;
  }

  async createChannel(channelData) {
    const response = await fetch(`${this.baseUrl}/api/v1/channels`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(channelData)
    });
    
    return await response.json();
  }

  async listChannels() {
    const response = await fetch(`${this.baseUrl}/api/v1/channels`);
    return await response.json();
  }

  async startChannel(channelId) {
    const response = await fetch(
      `${this.baseUrl}/api/v1/channels/${channelId}/start`,
      { method: 'PUT' }
    );
    return await response.json();
  }

  async pauseChannel(channelId) {
    const response = await fetch(
      `${this.baseUrl}/api/v1/channels/${channelId}/pause`,
      { method: 'PUT' }
    );
    return await response.json();
  }

  async stopChannel(channelId) {
    const response = await fetch(
      `${this.baseUrl}/api/v1/channels/${channelId}/stop`,
      { method: 'PUT' }
    );
    return await response.json();
  }

  async broadcastMessage(channelId, content, messageType = 'Broadcast') {
    const response = await fetch(
      `${this.baseUrl}/api/v1/channels/${channelId}/broadcast`,
      {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ content, message_type: messageType })
      }
    );
    return await response.json();
  }
}

// Example usage in admin panel
const admin = new EmitHubAdmin('http://localhost:8080');

// Create channel for medical queue
const channel = await admin.createChannel({
  name: 'Cardiologist Office',
  description: 'Channel for cardiology queue',
  settings: {
    max_connections: 100,
    allow_client_messages: false,
    persist_messages: true,
    rate_limit_per_minute: 30
  }
});

// Activate the channel
await admin.startChannel(channel.id);

// Send queue number
await admin.broadcastMessage(channel.id, 'A015');
