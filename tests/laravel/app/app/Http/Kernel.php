<?php

namespace App\Http;

use Illuminate\Foundation\Http\Kernel as HttpKernel;

// No session or CSRF middleware: the users of this test app sign in with a bearer token
// or a plain cookie (see AppServiceProvider).
class Kernel extends HttpKernel
{
    protected $middleware = [];

    protected $middlewareGroups = ['web' => []];

    protected $routeMiddleware = [];
}
