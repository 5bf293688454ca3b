//! How a CLI process is started: its argv and environment for a launch profile.

use std::time::Duration;

use crate::cli::mcp;
use crate::domain::{InvalidRequest, LaunchProfile};
use crate::gateway::TokenKind;

/// Settings of every CLI process, whatever its profile.
#[derive(Clone, Debug)]
pub struct CliSettings {
    /// The CLI executable inside the worker image.
    pub program: String,
    /// `ANTHROPIC_BASE_URL` for the CLI when there is no relay (unit tests on the fake
    /// runtime only); with a relay, the relay's URL is used.
    pub base_url: Option<String>,
    /// The model a CLI starts with when its profile names none (`--model`); `None` is the
    /// CLI's own default. Requests for other models get workers launched with those.
    pub model: Option<String>,
    /// Upstream retries the CLI makes before reporting an error (`CLAUDE_CODE_MAX_RETRIES`).
    pub max_retries: u32,
    /// How long an upstream byte stream may stay silent before the CLI gives up on it
    /// (`CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS`).
    pub stream_idle_timeout: Duration,
}

impl Default for CliSettings {
    fn default() -> Self {
        CliSettings {
            program: "claude".to_string(),
            base_url: None,
            model: None,
            max_retries: 0,
            stream_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Where the CLI's PID is written inside the container, so it can be killed on its own.
const CLI_PID_FILE: &str = "/tmp/ccpool-cli.pid";

/// `argv` run through a shell that first writes its PID to the pid file (the `exec` keeps the
/// PID), so that `kill_cli_command` can kill the CLI without killing the container.
pub fn with_pid_file(prelude: &str, argv: Vec<String>) -> Vec<String> {
    let mut cmd = vec![
        "bash".to_string(),
        "-c".to_string(),
        format!("{prelude}echo $$ > {CLI_PID_FILE} && exec \"$@\""),
        "ccpool-cli".to_string(),
    ];
    cmd.extend(argv);
    cmd
}

/// The command that kills the CLI started `with_pid_file`.
pub fn kill_cli_command() -> Vec<String> {
    vec![
        "bash".to_string(),
        "-c".to_string(),
        format!("kill -KILL \"$(cat {CLI_PID_FILE})\""),
    ]
}

/// A system prompt longer than this goes to the CLI as a file (`--system-prompt-file`): the
/// kernel refuses a single argv string over 128 KiB (MAX_ARG_STRLEN).
pub const SYSTEM_PROMPT_ARGV_MAX: usize = 64 * 1024;
/// Where such a prompt is written inside the worker.
pub const SYSTEM_PROMPT_FILE: &str = "/tmp/ccpool-system-prompt.txt";
/// The longest JSON schema accepted: it can only go through argv.
pub const JSON_SCHEMA_MAX: usize = 64 * 1024;

/// Checks what the CLI would refuse at launch, so the client gets a 400 at once rather than
/// a worker that fails to start: a JSON schema must be a JSON object, a valid draft-07
/// schema (as the CLI's own validator reads it) and fit in argv.
pub fn check_profile(profile: &LaunchProfile) -> Result<(), InvalidRequest> {
    profile.check()?;
    let Some(schema) = &profile.json_schema else {
        return Ok(());
    };
    if schema.len() > JSON_SCHEMA_MAX {
        return Err(InvalidRequest(format!(
            "the JSON schema has {} bytes; at most {JSON_SCHEMA_MAX} are accepted",
            schema.len()
        )));
    }
    let value: serde_json::Value = serde_json::from_str(schema)
        .map_err(|e| InvalidRequest(format!("the JSON schema is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(InvalidRequest(
            "the JSON schema must be a JSON object".into(),
        ));
    }
    jsonschema::draft7::new(&value)
        .map_err(|e| InvalidRequest(format!("the JSON schema is not a valid JSON Schema: {e}")))?;
    Ok(())
}

/// Files a CLI for `profile` needs before it starts: (path, content).
pub fn launch_files(profile: &LaunchProfile) -> Vec<(&'static str, &str)> {
    match &profile.system_prompt {
        Some(prompt) if prompt.len() > SYSTEM_PROMPT_ARGV_MAX => {
            vec![(SYSTEM_PROMPT_FILE, prompt.as_str())]
        }
        _ => Vec::new(),
    }
}

/// The argv of a long-lived CLI process serving `profile` over stream-json.
pub fn cli_argv(settings: &CliSettings, profile: &LaunchProfile) -> Vec<String> {
    let mut argv: Vec<String> = [
        settings.program.as_str(),
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--no-session-persistence",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if profile.builtin_tools {
        // Safe only because the container is the boundary; the CLI refuses this as root.
        argv.push("--dangerously-skip-permissions".to_string());
    } else {
        argv.push("--tools".to_string());
        argv.push(String::new());
    }
    // Every process hosts the in-band server of the client's tools. With no client tools its
    // list is empty, and the upstream request is the same as without it (measured).
    argv.push("--mcp-config".to_string());
    argv.push(mcp::mcp_config());
    argv.push("--allowedTools".to_string());
    argv.push(mcp::allowed_tools());
    if let Some(model) = profile.model.as_ref().or(settings.model.as_ref()) {
        argv.push("--model".to_string());
        argv.push(model.clone());
    }
    // Without a client prompt, an empty one: the CLI then sends only its billing header and
    // identity line, not its agent prompt (kept only for the built-in tools it describes).
    match &profile.system_prompt {
        Some(prompt) if prompt.len() > SYSTEM_PROMPT_ARGV_MAX => {
            argv.push("--system-prompt-file".to_string());
            argv.push(SYSTEM_PROMPT_FILE.to_string());
        }
        Some(prompt) => {
            argv.push("--system-prompt".to_string());
            argv.push(prompt.clone());
        }
        None if !profile.builtin_tools => {
            argv.push("--system-prompt".to_string());
            argv.push(String::new());
        }
        None => {}
    }
    if let Some(effort) = &profile.effort {
        argv.push("--effort".to_string());
        argv.push(effort.clone());
    }
    if let Some(schema) = &profile.json_schema {
        argv.push("--json-schema".to_string());
        argv.push(schema.clone());
    }
    argv
}

/// The flags that make a CLI resume the conversation of `session` from its transcript.
pub fn resume_args(session: &str) -> [String; 2] {
    ["--resume".to_string(), session.to_string()]
}

/// The environment variable through which the CLI takes a credential of this kind.
pub fn credential_var(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::OAuth => "CLAUDE_CODE_OAUTH_TOKEN",
        TokenKind::ApiKey => "ANTHROPIC_API_KEY",
    }
}

/// The start of the CLI's `bash -c` script that reads the worker's token from the first
/// line of stdin into the CLI's credential variable, so that no exec configuration holds it.
pub fn credential_prelude(kind: TokenKind) -> String {
    let var = credential_var(kind);
    format!("IFS= read -r {var} && export {var} && ")
}

/// The environment of a CLI process: upstream (the relay), retry and quiet settings. It holds
/// no credential: the worker token goes in through stdin (`credential_prelude`).
pub fn cli_env(
    settings: &CliSettings,
    profile: &LaunchProfile,
    relay_url: Option<&str>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "CLAUDE_CODE_MAX_RETRIES".into(),
            settings.max_retries.to_string(),
        ),
        (
            "CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS".into(),
            settings.stream_idle_timeout.as_millis().to_string(),
        ),
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
            "1".into(),
        ),
        ("DISABLE_TELEMETRY".into(), "1".into()),
        ("DISABLE_AUTOUPDATER".into(), "1".into()),
        // Fidelity (README, "What the model sees"): the environment, model and date notes go
        // in a system message after the user's turn instead of into it; the model asked for
        // is the model used (no remapping of older ids); a cut upstream stream is not
        // retried as a second, non-streaming request.
        (
            "CLAUDE_CODE_FORCE_MID_CONVERSATION_SYSTEM".into(),
            "1".into(),
        ),
        ("CLAUDE_CODE_DISABLE_LEGACY_MODEL_REMAP".into(), "1".into()),
        (
            "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK".into(),
            "1".into(),
        ),
    ];
    if let Some(url) = relay_url.or(settings.base_url.as_deref()) {
        env.push(("ANTHROPIC_BASE_URL".into(), url.to_string()));
    }
    if let Some(limit) = profile.max_output_tokens {
        env.push(("CLAUDE_CODE_MAX_OUTPUT_TOKENS".into(), limit.to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_turns_tools_off_and_streams_partial_messages() {
        let argv = cli_argv(&CliSettings::default(), &LaunchProfile::default());
        let joined = argv.join(" ");
        assert!(joined.starts_with("claude -p --input-format stream-json --output-format stream-json --verbose --include-partial-messages"));
        let tools = argv.iter().position(|a| a == "--tools").expect("--tools");
        assert_eq!(argv[tools + 1], "");
        assert!(!argv.iter().any(|a| a == "--dangerously-skip-permissions"));
        let prompt = argv.iter().position(|a| a == "--system-prompt");
        assert_eq!(
            argv[prompt.expect("--system-prompt") + 1],
            "",
            "no agent prompt"
        );
        let env = cli_env(&CliSettings::default(), &LaunchProfile::default(), None);
        for name in [
            "CLAUDE_CODE_FORCE_MID_CONVERSATION_SYSTEM",
            "CLAUDE_CODE_DISABLE_LEGACY_MODEL_REMAP",
            "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK",
        ] {
            assert!(env.iter().any(|(k, v)| k == name && v == "1"), "{name}");
        }
    }

    #[test]
    fn the_profile_model_wins_over_the_default_and_tools_keep_the_agent_prompt() {
        let settings = CliSettings {
            model: Some("claude-sonnet-4-5".into()),
            ..CliSettings::default()
        };
        let profile = LaunchProfile {
            model: Some("claude-haiku-4-5".into()),
            builtin_tools: true,
            ..LaunchProfile::default()
        };
        let argv = cli_argv(&settings, &profile);
        let model = argv.iter().position(|a| a == "--model").expect("--model");
        assert_eq!(argv[model + 1], "claude-haiku-4-5");
        assert_eq!(argv.iter().filter(|a| *a == "--model").count(), 1);
        assert!(!argv.iter().any(|a| a == "--system-prompt"));
        let argv = cli_argv(&CliSettings::default(), &LaunchProfile::default());
        let after = |flag: &str| argv[argv.iter().position(|a| a == flag).expect(flag) + 1].clone();
        assert!(after("--mcp-config").contains(r#""type":"sdk""#));
        assert_eq!(after("--allowedTools"), "mcp__client__*");
    }

    #[test]
    fn a_long_system_prompt_goes_through_a_file() {
        let profile = LaunchProfile {
            system_prompt: Some("p".repeat(200 * 1024)),
            ..LaunchProfile::default()
        };
        let argv = cli_argv(&CliSettings::default(), &profile);
        let at = argv
            .iter()
            .position(|a| a == "--system-prompt-file")
            .unwrap();
        assert_eq!(argv[at + 1], SYSTEM_PROMPT_FILE);
        assert!(argv.iter().all(|a| a.len() < SYSTEM_PROMPT_ARGV_MAX));
        let files = launch_files(&profile);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].1.len(), 200 * 1024);
        assert!(launch_files(&LaunchProfile::default()).is_empty());
    }

    #[test]
    fn schemas_the_cli_would_refuse_are_refused_first() {
        let with = |schema: &str| LaunchProfile {
            json_schema: Some(schema.into()),
            ..LaunchProfile::default()
        };
        // The CLI's own verdicts (2.1.327): each of these makes it exit at launch.
        for bad in [
            r#"{"type":"foo"}"#,
            "notjson",
            r#"{"type":"object","properties":{"a":5}}"#,
            r#"{"type":"object","required":"a"}"#,
            "[1]",
        ] {
            assert!(check_profile(&with(bad)).is_err(), "{bad}");
        }
        for good in [
            r#"{"type":"object"}"#,
            r#"{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}"#,
        ] {
            assert!(check_profile(&with(good)).is_ok(), "{good}");
        }
        let huge = format!(r#"{{"description":"{}"}}"#, "d".repeat(JSON_SCHEMA_MAX));
        assert!(check_profile(&with(&huge)).is_err());
    }

    #[test]
    fn profile_fields_become_flags_and_env() {
        let profile = LaunchProfile {
            model: None,
            system_prompt: Some("Be brief.".into()),
            builtin_tools: true,
            json_schema: Some("{\"type\":\"object\"}".into()),
            max_output_tokens: Some(64),
            effort: Some("high".into()),
        };
        let argv = cli_argv(&CliSettings::default(), &profile);
        let after = |flag: &str| argv[argv.iter().position(|a| a == flag).expect(flag) + 1].clone();
        assert_eq!(after("--system-prompt"), "Be brief.");
        assert_eq!(after("--json-schema"), "{\"type\":\"object\"}");
        assert_eq!(after("--effort"), "high");
        assert!(argv.iter().any(|a| a == "--dangerously-skip-permissions"));
        assert!(!argv.iter().any(|a| a == "--tools"));

        let settings = CliSettings {
            base_url: Some("http://127.0.0.1:9".into()),
            model: Some("claude-sonnet-4-5".into()),
            ..CliSettings::default()
        };
        let argv = cli_argv(&settings, &profile);
        assert_eq!(
            argv[argv.iter().position(|a| a == "--model").unwrap() + 1],
            "claude-sonnet-4-5"
        );
        let env = cli_env(&settings, &profile, None);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CLAUDE_CODE_MAX_OUTPUT_TOKENS"), Some("64"));
        assert_eq!(get("ANTHROPIC_BASE_URL"), Some("http://127.0.0.1:9"));
        assert_eq!(get("CLAUDE_CODE_MAX_RETRIES"), Some("0"));
        let env = cli_env(&settings, &profile, Some("http://172.18.0.1:4000"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ANTHROPIC_BASE_URL"), Some("http://172.18.0.1:4000"));
        assert!(
            !env.iter().any(
                |(n, _)| n.contains("TOKEN") && n != "CLAUDE_CODE_MAX_OUTPUT_TOKENS"
                    || n.contains("API_KEY")
            ),
            "no credential in the environment: {env:?}"
        );
        assert_eq!(
            credential_prelude(TokenKind::OAuth),
            "IFS= read -r CLAUDE_CODE_OAUTH_TOKEN && export CLAUDE_CODE_OAUTH_TOKEN && "
        );
        assert!(credential_prelude(TokenKind::ApiKey).contains("ANTHROPIC_API_KEY"));
    }
}
