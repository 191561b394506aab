<?php

return [
    'defaults' => ['guard' => 'demo'],
    // The `demo` driver is AppServiceProvider's Auth::viaRequest.
    'guards' => ['demo' => ['driver' => 'demo']],
    'providers' => [],
];
