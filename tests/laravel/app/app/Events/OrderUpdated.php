<?php

namespace App\Events;

use Illuminate\Broadcasting\PrivateChannel;
use Illuminate\Contracts\Broadcasting\ShouldBroadcastNow;

// A private event with its own name and data (broadcastAs, broadcastWith).
class OrderUpdated implements ShouldBroadcastNow
{
    public $userId;

    public function __construct($userId)
    {
        $this->userId = $userId;
    }

    public function broadcastOn()
    {
        return new PrivateChannel('orders.'.$this->userId);
    }

    public function broadcastAs()
    {
        return 'order.updated';
    }

    public function broadcastWith()
    {
        return ['status' => 'packed', 'user' => $this->userId, 'items' => ['café', 'https://shop.test/p/1']];
    }
}
