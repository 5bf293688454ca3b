//! The Docker Engine implementation of `ContainerRuntime`, over bollard. Knows the Docker API;
//! knows nothing of the CLI, the pool or the HTTP APIs.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StatsOptions,
    WaitContainerOptions,
};
use futures::StreamExt;

use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ExecOutput, ExecProcess, ExecSpec, RuntimeError,
};

/// A Docker engine reached through its API socket.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
}

impl DockerRuntime {
    /// Connects to the engine named by `DOCKER_HOST`, else the default local socket, and
    /// agrees on an API version both sides speak.
    pub async fn connect() -> Result<Self, RuntimeError> {
        let docker =
            Docker::connect_with_defaults().map_err(|e| RuntimeError::Connect(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Connect(e.to_string()))?;
        Ok(DockerRuntime { docker })
    }

    /// Finds the engine: `DOCKER_HOST`, else the default socket, else the rootless and the
    /// Docker Desktop sockets. Returns the runtime and the endpoint it uses.
    pub async fn discover() -> Result<(Self, String), RuntimeError> {
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            if !host.is_empty() {
                return Ok((Self::connect().await?, host));
            }
        }
        let home = std::env::var("HOME").unwrap_or_default();
        let mut candidates = vec!["/var/run/docker.sock".to_string()];
        if let Ok(runtime_dir) = std::env::var("XDG_RUNTIME_DIR") {
            candidates.push(format!("{runtime_dir}/docker.sock"));
        }
        candidates.push(format!("/run/user/{}/docker.sock", current_uid()));
        candidates.push(format!("{home}/.docker/run/docker.sock"));
        candidates.push(format!("{home}/.docker/desktop/docker.sock"));
        let mut tried = Vec::new();
        for path in candidates {
            if !std::path::Path::new(&path).exists() {
                continue;
            }
            let attempt = async {
                let docker = Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| RuntimeError::Connect(e.to_string()))?;
                let docker = docker
                    .negotiate_version()
                    .await
                    .map_err(|e| RuntimeError::Connect(e.to_string()))?;
                Ok::<_, RuntimeError>(DockerRuntime { docker })
            };
            match attempt.await {
                Ok(runtime) => return Ok((runtime, format!("unix://{path}"))),
                Err(e) => tried.push(format!("{path}: {e}")),
            }
        }
        Err(RuntimeError::Connect(if tried.is_empty() {
            "no Docker socket found (DOCKER_HOST unset; /var/run/docker.sock, the rootless and the Docker Desktop sockets absent)".into()
        } else {
            tried.join("; ")
        }))
    }

    /// The bollard client, for the few callers that need more than the trait.
    pub fn client(&self) -> &Docker {
        &self.docker
    }
}

/// A Docker network as ccpool needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    /// No route out of the network (`--internal`).
    pub internal: bool,
    /// Containers on the network can talk to each other.
    pub inter_container: bool,
    /// Its subnets, as `a.b.c.d/n`.
    pub subnets: Vec<String>,
    /// The host's address on the network (the bridge's gateway), where a relay on the host
    /// listens for workers.
    pub gateway: Option<std::net::IpAddr>,
}

impl DockerRuntime {
    /// The network `name`, or `None` if there is none.
    pub async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>, RuntimeError> {
        match self.docker.inspect_network(name, None).await {
            Ok(n) => {
                let configs = n.ipam.and_then(|i| i.config).unwrap_or_default();
                let options = n.options.unwrap_or_default();
                Ok(Some(NetworkInfo {
                    name: n.name.unwrap_or_else(|| name.to_string()),
                    internal: n.internal == Some(true),
                    inter_container: options.get(ICC_OPTION).is_none_or(|v| v != "false"),
                    subnets: configs.iter().filter_map(|c| c.subnet.clone()).collect(),
                    gateway: configs
                        .iter()
                        .filter_map(|c| c.gateway.as_deref()?.parse().ok())
                        .next(),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(RuntimeError::Network(format!(
                "inspecting network {name}: {e}"
            ))),
        }
    }

    /// Creates an internal bridge network (no route out) on which containers cannot reach
    /// each other, only the host's address on it.
    pub async fn create_internal_network(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<NetworkInfo, RuntimeError> {
        let request = bollard::models::NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".to_string()),
            internal: Some(true),
            labels: Some(labels.clone()),
            options: Some(HashMap::from([(
                ICC_OPTION.to_string(),
                "false".to_string(),
            )])),
            ..Default::default()
        };
        self.docker
            .create_network(request)
            .await
            .map_err(|e| RuntimeError::Network(format!("creating network {name}: {e}")))?;
        self.inspect_network(name).await?.ok_or_else(|| {
            RuntimeError::Network(format!("network {name} vanished after its creation"))
        })
    }

    /// Removes a network; removing one that is gone succeeds.
    pub async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(RuntimeError::Network(format!(
                "removing network {name}: {e}"
            ))),
        }
    }
}

/// The bridge driver's switch for traffic between containers of one network.
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// The current user's id, for the rootless socket path (`/run/user/<uid>`).
fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn pairs(env: &[(String, String)]) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn start_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let binds: Vec<String> = spec
            .volumes
            .iter()
            .map(|(name, path)| format!("{name}:{path}"))
            .collect();
        let host_config = HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            readonly_rootfs: Some(spec.read_only_rootfs),
            tmpfs: Some(spec.tmpfs.iter().cloned().collect::<HashMap<_, _>>()),
            cap_drop: Some(spec.cap_drop.clone()),
            security_opt: Some(spec.security_opt.clone()),
            init: Some(spec.init),
            memory: spec.memory_bytes,
            nano_cpus: spec.nano_cpus,
            cpu_shares: spec.cpu_shares,
            pids_limit: spec.pids_limit,
            network_mode: spec.network_mode.clone(),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            env: Some(pairs(&spec.env)),
            labels: Some(spec.labels.clone()),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: spec.name.clone(),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| RuntimeError::CreateContainer(e.to_string()))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            // Do not leave a created-but-never-started container behind.
            let _ = self.remove_container(&created.id).await;
            return Err(RuntimeError::StartContainer {
                id: created.id,
                cause: e.to_string(),
            });
        }
        Ok(created.id)
    }

    async fn exec(&self, container_id: &str, spec: &ExecSpec) -> Result<ExecProcess, RuntimeError> {
        let options = CreateExecOptions {
            cmd: Some(spec.cmd.clone()),
            env: Some(pairs(&spec.env)),
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(container_id, options)
            .await
            .map_err(|e| match e {
                e if is_not_found(&e) => RuntimeError::NotFound(container_id.to_string()),
                e => RuntimeError::CreateExec {
                    id: container_id.to_string(),
                    cause: e.to_string(),
                },
            })?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(64 * 1024),
                }),
            )
            .await
            .map_err(|e| RuntimeError::StartExec {
                id: created.id.clone(),
                cause: e.to_string(),
            })?;
        match started {
            StartExecResults::Attached { output, input } => Ok(ExecProcess {
                id: created.id,
                stdin: input,
                output: output
                    .filter_map(|frame| async move {
                        match frame {
                            Ok(LogOutput::StdOut { message }) => {
                                Some(Ok(ExecOutput::Stdout(message)))
                            }
                            Ok(LogOutput::StdErr { message }) => {
                                Some(Ok(ExecOutput::Stderr(message)))
                            }
                            Ok(LogOutput::Console { message }) => {
                                Some(Ok(ExecOutput::Stdout(message)))
                            }
                            Ok(LogOutput::StdIn { .. }) => None,
                            Err(e) => Some(Err(RuntimeError::ExecOutput(e.to_string()))),
                        }
                    })
                    .boxed(),
            }),
            StartExecResults::Detached => Err(RuntimeError::StartExec {
                id: created.id,
                cause: "the engine detached an attached exec".into(),
            }),
        }
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError> {
        let inspect =
            self.docker
                .inspect_exec(exec_id)
                .await
                .map_err(|e| RuntimeError::InspectExec {
                    id: exec_id.to_string(),
                    cause: e.to_string(),
                })?;
        Ok(if inspect.running == Some(true) {
            None
        } else {
            Some(inspect.exit_code.unwrap_or(-1))
        })
    }

    async fn set_cpu_shares(&self, container_id: &str, shares: i64) -> Result<(), RuntimeError> {
        let update = bollard::models::ContainerUpdateBody {
            cpu_shares: Some(shares),
            ..Default::default()
        };
        self.docker
            .update_container(container_id, update)
            .await
            .map_err(|e| RuntimeError::UpdateContainer {
                id: container_id.to_string(),
                cause: e.to_string(),
            })
    }

    fn cpu_time_samples(
        &self,
        container_id: &str,
    ) -> futures::stream::BoxStream<'static, Result<Duration, RuntimeError>> {
        let id = container_id.to_string();
        let options = StatsOptions {
            stream: true,
            one_shot: false,
        };
        self.docker
            .stats(container_id, Some(options))
            .map(move |sample| {
                let sample = sample.map_err(|e| RuntimeError::ContainerStats {
                    id: id.clone(),
                    cause: e.to_string(),
                })?;
                let nanos = sample
                    .cpu_stats
                    .and_then(|c| c.cpu_usage)
                    .and_then(|u| u.total_usage)
                    .unwrap_or_default();
                Ok(Duration::from_nanos(nanos))
            })
            .boxed()
    }

    async fn remove_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self
            .docker
            .remove_container(container_id, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // 409: a removal of this container is already in progress; wait until it is done,
            // so that "removed" means gone.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                let options = WaitContainerOptions {
                    condition: "removed".to_string(),
                };
                let mut wait = self.docker.wait_container(container_id, Some(options));
                match tokio::time::timeout(Duration::from_secs(60), wait.next()).await {
                    Ok(Some(Err(e)))
                        if !is_not_found(&e)
                            && !matches!(
                                e,
                                bollard::errors::Error::DockerContainerWaitError { .. }
                            ) =>
                    {
                        Err(RuntimeError::RemoveContainer {
                            id: container_id.to_string(),
                            cause: e.to_string(),
                        })
                    }
                    Ok(_) => Ok(()),
                    Err(_) => Err(RuntimeError::RemoveContainer {
                        id: container_id.to_string(),
                        cause: "removal still in progress after 60s".into(),
                    }),
                }
            }
            Err(e) => Err(RuntimeError::RemoveContainer {
                id: container_id.to_string(),
                cause: e.to_string(),
            }),
        }
    }

    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| RuntimeError::ListContainers(e.to_string()))?;
        Ok(list
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
                running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
            })
            .collect())
    }

    async fn create_volume(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let request = bollard::models::VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|e| RuntimeError::CreateVolume {
                name: name.to_string(),
                cause: e.to_string(),
            })
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let options = bollard::query_parameters::RemoveVolumeOptions { force: true };
        match self.docker.remove_volume(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(RuntimeError::RemoveVolume {
                name: name.to_string(),
                cause: e.to_string(),
            }),
        }
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )]);
        let options = bollard::query_parameters::ListVolumesOptions {
            filters: Some(filters),
        };
        let list = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| RuntimeError::ListVolumes(e.to_string()))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| RuntimeError::Connect(e.to_string()))?;
        Ok(v.version.unwrap_or_default())
    }

    async fn image_exists(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(RuntimeError::Connect(e.to_string())),
        }
    }
}
