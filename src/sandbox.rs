//! The sandbox every worker container runs in: hardening defaults, each configurable, turned
//! into a runtime-neutral `ContainerSpec`.

use std::collections::HashMap;

use crate::runtime::{ContainerSpec, LABEL_INSTANCE, LABEL_MANAGED, LABEL_PROFILE, LABEL_WORKER};

/// How worker containers are confined. The defaults are the hardened ones.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxConfig {
    /// The worker image (built by `images/build.sh`).
    pub image: String,
    /// The user the container and the CLI run as: never root.
    pub user: String,
    /// The CLI's home (tmpfs).
    pub home: String,
    /// The CLI's working directory (tmpfs).
    pub workspace: String,
    /// Drop every Linux capability.
    pub cap_drop_all: bool,
    /// Forbid gaining privileges through setuid binaries.
    pub no_new_privileges: bool,
    /// Make the root filesystem read-only; /tmp, home and workspace are tmpfs.
    pub read_only_rootfs: bool,
    /// Size of each tmpfs mount, in MiB.
    pub tmpfs_size_mib: u32,
    /// Run an init process as PID 1.
    pub init: bool,
    pub memory_mib: Option<u32>,
    /// CPU limit in cores (fractions allowed).
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    /// Docker network mode: `bridge` (default), `none`, `host`, or a network name.
    pub network: String,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            image: "ccpool-worker:latest".to_string(),
            user: "1000:1000".to_string(),
            home: "/home/claude".to_string(),
            workspace: "/workspace".to_string(),
            cap_drop_all: true,
            no_new_privileges: true,
            read_only_rootfs: true,
            tmpfs_size_mib: 512,
            init: true,
            memory_mib: Some(1024),
            cpus: Some(1.0),
            pids_limit: Some(256),
            network: "bridge".to_string(),
        }
    }
}

/// Labels that identify a worker container as ccpool's.
pub fn worker_labels(instance: &str, worker: &str, profile: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_WORKER.to_string(), worker.to_string()),
        (LABEL_PROFILE.to_string(), profile.to_string()),
    ])
}

impl SandboxConfig {
    /// The container of one worker. No Docker socket or host path is ever mounted.
    pub fn container_spec(&self, labels: HashMap<String, String>) -> ContainerSpec {
        self.container_spec_in(labels, None)
    }

    /// The container of one worker whose workspace is a named volume (a session's) rather
    /// than a tmpfs.
    pub fn container_spec_in(
        &self,
        labels: HashMap<String, String>,
        workspace_volume: Option<&str>,
    ) -> ContainerSpec {
        let (uid, gid) = self
            .user
            .split_once(':')
            .unwrap_or((&self.user, &self.user));
        let size = format!("size={}m", self.tmpfs_size_mib);
        let owned = format!("rw,nosuid,nodev,{size},uid={uid},gid={gid},mode=0700");
        ContainerSpec {
            name: labels
                .get(LABEL_WORKER)
                .map(|w| format!("ccpool-worker-{w}")),
            image: self.image.clone(),
            cmd: vec!["sleep".into(), "infinity".into()],
            user: Some(self.user.clone()),
            working_dir: Some(self.workspace.clone()),
            env: vec![("HOME".into(), self.home.clone())],
            labels,
            read_only_rootfs: self.read_only_rootfs,
            tmpfs: [
                (
                    "/tmp".to_string(),
                    format!("rw,nosuid,nodev,{size},mode=1777"),
                ),
                (self.home.clone(), owned.clone()),
                (self.workspace.clone(), owned),
            ]
            .into_iter()
            .filter(|(mount, _)| workspace_volume.is_none() || *mount != self.workspace)
            .collect(),
            volumes: workspace_volume
                .map(|v| vec![(v.to_string(), self.workspace.clone())])
                .unwrap_or_default(),
            cap_drop: if self.cap_drop_all {
                vec!["ALL".into()]
            } else {
                Vec::new()
            },
            security_opt: if self.no_new_privileges {
                vec!["no-new-privileges".into()]
            } else {
                Vec::new()
            },
            init: self.init,
            memory_bytes: self.memory_mib.map(|m| i64::from(m) * 1024 * 1024),
            nano_cpus: self.cpus.map(|c| (c * 1e9) as i64),
            cpu_shares: None,
            pids_limit: self.pids_limit,
            network_mode: Some(self.network.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_hardened() {
        let spec = SandboxConfig::default().container_spec(worker_labels("i1", "w1", "p1"));
        assert_eq!(spec.user.as_deref(), Some("1000:1000"));
        assert_eq!(spec.cap_drop, vec!["ALL"]);
        assert_eq!(spec.security_opt, vec!["no-new-privileges"]);
        assert!(spec.read_only_rootfs && spec.init);
        let mounts: Vec<&str> = spec.tmpfs.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(mounts, vec!["/tmp", "/home/claude", "/workspace"]);
        assert!(spec.tmpfs[1].1.contains("uid=1000"));
        assert_eq!(spec.memory_bytes, Some(1024 * 1024 * 1024));
        assert_eq!(spec.nano_cpus, Some(1_000_000_000));
        assert_eq!(spec.pids_limit, Some(256));
        assert_eq!(spec.network_mode.as_deref(), Some("bridge"));
        assert_eq!(
            spec.labels.get("ccpool.managed").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            spec.labels.get("ccpool.instance").map(String::as_str),
            Some("i1")
        );
    }

    #[test]
    fn a_session_workspace_is_a_volume_instead_of_a_tmpfs() {
        let spec = SandboxConfig::default().container_spec_in(HashMap::new(), Some("vol-a"));
        assert_eq!(
            spec.volumes,
            vec![("vol-a".to_string(), "/workspace".to_string())]
        );
        let mounts: Vec<&str> = spec.tmpfs.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(mounts, vec!["/tmp", "/home/claude"]);
    }

    #[test]
    fn every_setting_can_be_relaxed() {
        let cfg = SandboxConfig {
            cap_drop_all: false,
            no_new_privileges: false,
            read_only_rootfs: false,
            init: false,
            memory_mib: None,
            cpus: None,
            pids_limit: None,
            network: "none".into(),
            ..SandboxConfig::default()
        };
        let spec = cfg.container_spec(HashMap::new());
        assert!(spec.cap_drop.is_empty() && spec.security_opt.is_empty());
        assert!(!spec.read_only_rootfs && !spec.init);
        assert_eq!(
            (spec.memory_bytes, spec.nano_cpus, spec.pids_limit),
            (None, None, None)
        );
        assert_eq!(spec.network_mode.as_deref(), Some("none"));
    }
}
