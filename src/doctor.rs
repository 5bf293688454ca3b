//! `ccpool doctor`: checks the Docker engine, the worker image, the credentials and the CLI
//! inside the image, and says what to do about each problem.

use std::collections::HashMap;

use crate::config::ServeArgs;
use crate::docker::DockerRuntime;
use crate::runtime::{ContainerRuntime, ExecSpec, LABEL_INSTANCE, LABEL_MANAGED};
use crate::worker::run_command;

struct Report {
    failed: bool,
}

impl Report {
    fn ok(&self, what: &str, detail: &str) {
        println!("ok    {what}: {detail}");
    }

    fn fail(&mut self, what: &str, detail: &str, fix: &str) {
        self.failed = true;
        println!("FAIL  {what}: {detail}\n      fix: {fix}");
    }

    fn warn(&self, what: &str, detail: &str) {
        println!("warn  {what}: {detail}");
    }
}

pub async fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let mut report = Report { failed: false };
    match args.validate() {
        Ok(()) => report.ok("configuration", "valid"),
        Err(e) => report.fail(
            "configuration",
            &e.to_string(),
            "change the flag, variable or file key it names",
        ),
    }
    match args.runtime.credentials() {
        Ok(c) if c.kind() == "none" => report.fail(
            "credentials",
            "none found",
            "run `claude setup-token` and set CLAUDE_CODE_OAUTH_TOKEN (or ANTHROPIC_API_KEY)",
        ),
        Ok(c) => {
            report.ok("credentials", c.kind());
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            if let Some(warning) = c.expiry_warning(now_ms) {
                report.warn("credentials", &warning);
            }
        }
        Err(e) => report.fail(
            "credentials",
            &e.to_string(),
            "fix or remove --credentials-file",
        ),
    }
    let docker = match DockerRuntime::discover().await {
        Ok((docker, endpoint)) => {
            let version = docker.version().await.unwrap_or_default();
            report.ok("docker", &format!("engine {version} at {endpoint}"));
            Some(docker)
        }
        Err(e) => {
            report.fail(
                "docker",
                &e.to_string(),
                "start the Docker engine, or point DOCKER_HOST at it",
            );
            None
        }
    };
    if let Some(docker) = docker {
        let image = &args.runtime.worker_image;
        match docker.image_exists(image).await {
            Ok(true) => {
                report.ok("worker image", image);
                match cli_version(&docker, args).await {
                    Ok(version) => report.ok("claude CLI in the image", &version),
                    Err(e) => report.fail(
                        "claude CLI in the image",
                        &e,
                        "rebuild the image with images/build.sh",
                    ),
                }
            }
            Ok(false) => report.fail(
                "worker image",
                &format!("{image} is missing"),
                "build it with images/build.sh",
            ),
            Err(e) => report.fail("worker image", &e.to_string(), "check the Docker engine"),
        }
    }
    if report.failed {
        anyhow::bail!("ccpool doctor found problems");
    }
    Ok(())
}

/// Starts a throw-away worker container and asks its CLI for its version.
async fn cli_version(docker: &DockerRuntime, args: &ServeArgs) -> Result<String, String> {
    let settings = args
        .runtime
        .worker_settings(crate::credentials::Credentials::None);
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (
            LABEL_INSTANCE.to_string(),
            format!("{}-doctor", settings.instance_id),
        ),
    ]);
    let spec = settings.sandbox.container_spec(labels);
    let id = docker
        .start_container(&spec)
        .await
        .map_err(|e| e.to_string())?;
    let command = ExecSpec {
        cmd: vec![settings.cli.program.clone(), "--version".into()],
        user: Some(settings.sandbox.user.clone()),
        ..ExecSpec::default()
    };
    let out = run_command(docker, &id, &command, b"").await;
    let _ = docker.remove_container(&id).await;
    let out = out.map_err(|e| e.to_string())?;
    if out.exit_code != 0 {
        return Err(format!("`claude --version` exited with {}", out.exit_code));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
