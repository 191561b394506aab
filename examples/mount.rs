//! Mount rustaxum in your own axum application: your routes and the broadcasting routes
//! (`/ws`, `/api/broadcast`, `/app/{key}`, `/dashboard`, ...) on one listener.
//!
//! ```sh
//! cargo run --example mount            # http://127.0.0.1:4000
//! curl localhost:4000/hello
//! curl -X POST localhost:4000/api/broadcast -H 'content-type: application/json' \
//!   -d '{"channel":"general","event":"hi","data":{}}'
//! ```
//!
//! Configuration comes from the environment as for the server (`BROADCAST_*`, `.env`);
//! Ctrl-C closes every socket with 1001 and exits.

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = rustaxum::Config::from_env()?;
    // `facade()`: `broadcast()` and `Event::dispatch()` in your handlers use this app.
    let app = rustaxum::Rustaxum::builder(config).facade().build()?;
    let router = Router::new()
        .route("/hello", get(|| async { "hello from my app\n" }))
        .merge(app.router()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    app.serve([(listener, router)], rustaxum::server::shutdown_signal())
        .await?;
    Ok(())
}
