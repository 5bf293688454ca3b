//! The container runtime seam: what the worker layer needs from a container engine, as a
//! trait with serde-free specs. `docker::DockerRuntime` implements it for real; unit tests of
//! the pool implement it with in-process fakes.

use std::collections::HashMap;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::io::AsyncWrite;

/// Every container ccpool starts carries this label with the value `true`.
pub const LABEL_MANAGED: &str = "ccpool.managed";
/// The id of the ccpool instance that started the container.
pub const LABEL_INSTANCE: &str = "ccpool.instance";
/// The worker's id.
pub const LABEL_WORKER: &str = "ccpool.worker";
/// The launch profile's fingerprint.
pub const LABEL_PROFILE: &str = "ccpool.profile";
/// The session a container or volume belongs to.
pub const LABEL_SESSION: &str = "ccpool.session";

/// A container to create and start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSpec {
    pub name: Option<String>,
    pub image: String,
    pub cmd: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub env: Vec<(String, String)>,
    pub labels: HashMap<String, String>,
    pub read_only_rootfs: bool,
    /// Mount point → tmpfs options (`size=…,uid=…`).
    pub tmpfs: Vec<(String, String)>,
    /// Named volume → mount point.
    pub volumes: Vec<(String, String)>,
    /// Capabilities to drop (`ALL`).
    pub cap_drop: Vec<String>,
    /// `no-new-privileges` and similar.
    pub security_opt: Vec<String>,
    /// Run an init process as PID 1 that reaps zombies and forwards signals.
    pub init: bool,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    /// Relative CPU weight against other containers (Docker's default is 1024).
    pub cpu_shares: Option<i64>,
    pub pids_limit: Option<i64>,
    pub network_mode: Option<String>,
}

/// A process to run inside a running container.
#[derive(Clone, Default, PartialEq)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    /// Holds secrets (credentials): never log it.
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
}

/// Shows the environment's names only: its values may be secrets.
impl std::fmt::Debug for ExecSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<String> = self.env.iter().map(|(k, _)| format!("{k}=***")).collect();
        f.debug_struct("ExecSpec")
            .field("cmd", &self.cmd)
            .field("env", &env)
            .field("user", &self.user)
            .field("working_dir", &self.working_dir)
            .finish()
    }
}

/// A chunk of an exec's output; stdout and stderr stay apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A started exec: its id, its stdin, and its output until it exits.
pub struct ExecProcess {
    pub id: String,
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    pub output: BoxStream<'static, Result<ExecOutput, RuntimeError>>,
}

/// A container as listed by label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
}

/// A container engine operation failed. Says which operation; never carries secrets.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("connecting to the container engine: {0}")]
    Connect(String),
    #[error("creating a container: {0}")]
    CreateContainer(String),
    #[error("starting container {id}: {cause}")]
    StartContainer { id: String, cause: String },
    #[error("removing container {id}: {cause}")]
    RemoveContainer { id: String, cause: String },
    #[error("updating container {id}: {cause}")]
    UpdateContainer { id: String, cause: String },
    #[error("reading the CPU time of container {id}: {cause}")]
    ContainerStats { id: String, cause: String },
    #[error("listing containers: {0}")]
    ListContainers(String),
    #[error("creating an exec in container {id}: {cause}")]
    CreateExec { id: String, cause: String },
    #[error("starting exec {id}: {cause}")]
    StartExec { id: String, cause: String },
    #[error("inspecting exec {id}: {cause}")]
    InspectExec { id: String, cause: String },
    #[error("reading exec output: {0}")]
    ExecOutput(String),
    #[error("container {0} not found")]
    NotFound(String),
    #[error("creating volume {name}: {cause}")]
    CreateVolume { name: String, cause: String },
    #[error("removing volume {name}: {cause}")]
    RemoveVolume { name: String, cause: String },
    #[error("listing volumes: {0}")]
    ListVolumes(String),
    #[error("{0}")]
    Network(String),
}

/// What ccpool needs from a container engine.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Creates and starts a container; returns its id.
    async fn start_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    /// Starts a process in a running container with stdin, stdout and stderr attached
    /// (no TTY, so stdout and stderr stay apart).
    async fn exec(&self, container_id: &str, spec: &ExecSpec) -> Result<ExecProcess, RuntimeError>;

    /// The exit code of an exec, or `None` while it runs.
    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError>;

    /// Kills and removes a container (and its anonymous volumes). Removing a container
    /// that is already gone succeeds.
    async fn remove_container(&self, container_id: &str) -> Result<(), RuntimeError>;

    /// Changes a running container's relative CPU weight.
    async fn set_cpu_shares(&self, container_id: &str, shares: i64) -> Result<(), RuntimeError>;

    /// The container's total CPU time so far, as the engine samples it: its first sample at
    /// once, then about one a second. An engine that does not sample gives an empty stream.
    fn cpu_time_samples(
        &self,
        container_id: &str,
    ) -> BoxStream<'static, Result<std::time::Duration, RuntimeError>>;

    /// Containers (running or not) that carry every one of `labels`.
    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerInfo>, RuntimeError>;

    /// The engine's version; also tells that it is reachable.
    async fn version(&self) -> Result<String, RuntimeError>;

    /// Whether an image is present locally.
    async fn image_exists(&self, image: &str) -> Result<bool, RuntimeError>;

    /// Creates a named volume with labels (creating one that exists succeeds).
    async fn create_volume(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError>;

    /// Removes a named volume; removing one that is gone succeeds.
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError>;

    /// Names of the volumes that carry every one of `labels`.
    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, RuntimeError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_spec_never_prints_its_environment_values() {
        let spec = ExecSpec {
            cmd: vec!["claude".into()],
            env: vec![("ANTHROPIC_API_KEY".into(), "sk-ant-secret".into())],
            ..ExecSpec::default()
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("ANTHROPIC_API_KEY"), "{shown}");
        assert!(!shown.contains("sk-ant-secret"), "{shown}");
    }
}
