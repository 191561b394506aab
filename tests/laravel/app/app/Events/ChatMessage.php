<?php

namespace App\Events;

use Illuminate\Broadcasting\InteractsWithSockets;
use Illuminate\Broadcasting\PresenceChannel;
use Illuminate\Contracts\Broadcasting\ShouldBroadcastNow;

// A presence-channel event sent with toOthers() (the sender's socket from X-Socket-ID).
class ChatMessage implements ShouldBroadcastNow
{
    use InteractsWithSockets;

    public $room;
    public $text;

    public function __construct($room, $text)
    {
        $this->room = $room;
        $this->text = $text;
    }

    public function broadcastOn()
    {
        return new PresenceChannel('chat.'.$this->room);
    }
}
