//! The Claude Code CLI as a worker process: its launch arguments, its stdin lines and its
//! stdout (stream-json). The only part of ccpool that knows the CLI's wire format.

pub mod launch;
pub mod lines;
pub mod protocol;
pub mod transcript;

pub use launch::{
    CliSettings, cli_argv, cli_env, credential_prelude, kill_cli_command, resume_args,
    with_pid_file,
};
pub use lines::{LineError, ndjson_lines};
pub use protocol::{
    CliEvent, ControlRequest, ControlResult, Initialized, ResultLine, StdinLine, StreamEvent,
};
