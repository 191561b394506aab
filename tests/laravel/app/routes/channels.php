<?php

use Illuminate\Support\Facades\Broadcast;

// Laravel's channel callbacks: they decide who joins, also when rustaxum signs.
Broadcast::channel('orders.{userId}', function ($user, $userId) {
    return (int) $user->id === (int) $userId;
});

Broadcast::channel('chat.{room}', function ($user, $room) {
    return ['id' => $user->id, 'name' => $user->name];
});
