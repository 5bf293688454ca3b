//! Shared set-up of the integration tests: the mock upstream and real-Docker helpers.
#![allow(dead_code)]

pub mod api;
pub mod docker;
pub mod mock_upstream;

/// Sends the library's tracing output to the test's captured output (`RUST_LOG` filters it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
