<?php

namespace App\Providers;

use Illuminate\Auth\GenericUser;
use Illuminate\Support\Facades\Auth;
use Illuminate\Support\Facades\Route;
use Illuminate\Support\ServiceProvider;

class AppServiceProvider extends ServiceProvider
{
    /** The users of this test app, by sign-in token. */
    public const USERS = [
        'token-ann' => ['id' => 1, 'name' => 'Ann'],
        'token-bob' => ['id' => 2, 'name' => 'Bob'],
        'token-cid' => ['id' => 3, 'name' => 'Cid'],
    ];

    public function boot()
    {
        // Signed in by `Authorization: Bearer <token>` or a `demo_token` cookie (what a
        // session cookie is to a real app: the forwarding mode passes both on).
        Auth::viaRequest('demo', function ($request) {
            $token = $request->bearerToken() ?? $request->cookie('demo_token');
            $user = self::USERS[$token] ?? null;
            return $user ? new GenericUser($user) : null;
        });

        Route::middleware('web')->group(base_path('routes/web.php'));
    }
}
