//! The Claude Code CLI as a worker process: its launch arguments, its stdin lines and its
//! stdout (stream-json). The only part of ccpool that knows the CLI's wire format.

pub mod launch;
pub mod lines;
pub mod mcp;
pub mod protocol;
pub mod transcript;

pub use launch::{
    CliSettings, check_profile, cli_argv, cli_env, credential_prelude, kill_cli_command,
    launch_files, resume_args, with_pid_file,
};
pub use lines::{LineError, ndjson_lines};
pub use mcp::McpRequest;
pub use protocol::{
    CliEvent, ControlRequest, ControlResult, Initialized, ResultLine, StdinLine, StreamEvent,
};
