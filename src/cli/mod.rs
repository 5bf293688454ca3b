//! The Claude Code CLI as a worker process: its launch arguments, its stdin lines and its
//! stdout (stream-json). The only part of ccpool that knows the CLI's wire format.

pub mod launch;
pub mod lines;
pub mod protocol;
pub mod transcript;

pub use launch::{CliSettings, cli_argv, cli_env, resume_args};
pub use lines::{LineError, ndjson_lines};
pub use protocol::{CliEvent, ControlRequest, ControlResult, ResultLine, StdinLine, StreamEvent};
