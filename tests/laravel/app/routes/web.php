<?php

use App\Events\ChatMessage;
use App\Events\OrderShipped;
use App\Events\OrderUpdated;
use Illuminate\Http\Request;
use Illuminate\Support\Facades\Route;

// What an app's controllers do: dispatch events. The test calls these over HTTP.
Route::post('/fire/public', function () {
    broadcast(new OrderShipped(['id' => 1, 'total' => 99.5, 'items' => [['sku' => 'café', 'url' => 'https://shop.test/p/1']]]));
    return 'sent';
});

Route::post('/fire/private/{userId}', function ($userId) {
    broadcast(new OrderUpdated((int) $userId));
    return 'sent';
});

Route::post('/fire/presence/{room}', function (Request $request, $room) {
    broadcast(new ChatMessage($room, $request->input('text', 'hello')))->toOthers();
    return 'sent';
});
