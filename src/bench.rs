//! Fan-out benchmark (`artisan broadcast bench`): placeholder replaced below.
use crate::cli::client::{ApiClient, CliError};
use crate::cli::BenchArgs;

/// Runs the benchmark against a server.
pub async fn run(_client: &ApiClient, _args: &BenchArgs) -> Result<(), CliError> {
    Err(CliError::Bench("not built yet".into()))
}
