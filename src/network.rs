//! The workers' network and where the relay listens on it. By default ccpool creates an
//! `internal` bridge network (no route out) with traffic between containers turned off, and
//! the relay listens on the host's address on that network: the one place a worker can
//! reach. ccpool's own API refuses connections that come from the workers' subnets.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::docker::{DockerRuntime, NetworkInfo};
use crate::runtime::{LABEL_INSTANCE, LABEL_MANAGED, RuntimeError};

/// The `--network` value that asks ccpool to create the workers' internal network.
pub const INTERNAL: &str = "internal";

/// Where workers live and how they reach the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerNetwork {
    /// The network mode of worker containers.
    pub mode: String,
    /// ccpool created this network and removes it at shutdown.
    pub created: bool,
    /// Where the relay listens.
    pub relay_listen: SocketAddr,
    /// The relay's URL as a worker sees it, once the listen port is known; `None`: built
    /// from the listen address.
    pub relay_url: Option<String>,
    /// Connections from these subnets (the workers') are refused by ccpool's API.
    pub worker_subnets: Vec<Subnet>,
    /// What a worker can reach, said in one line for the log and `/status`.
    pub summary: String,
}

/// The name of the network ccpool creates for an instance.
pub fn internal_name(instance: &str) -> String {
    format!("ccpool-{instance}")
}

/// Settles the workers' network: creates the internal one when asked (or reuses it when an
/// earlier run left it), or inspects the named one, and picks the relay's address.
pub async fn prepare(
    docker: &DockerRuntime,
    mode: &str,
    instance: &str,
    relay_listen: Option<SocketAddr>,
    relay_url: Option<String>,
) -> Result<WorkerNetwork, RuntimeError> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    match mode {
        "host" => Ok(WorkerNetwork {
            mode: mode.to_string(),
            created: false,
            relay_listen: relay_listen.unwrap_or(loopback),
            relay_url,
            worker_subnets: Vec::new(),
            summary: "UNSAFE: workers share the host's network: they reach everything the host reaches, ccpool's API and every loopback service included".into(),
        }),
        "none" => Ok(WorkerNetwork {
            mode: mode.to_string(),
            created: false,
            relay_listen: relay_listen.unwrap_or(loopback),
            relay_url,
            worker_subnets: Vec::new(),
            summary: "workers have no network at all (not even the relay: requests will fail)".into(),
        }),
        _ => {
            let info = if mode == INTERNAL {
                let name = internal_name(instance);
                match docker.inspect_network(&name).await? {
                    // An earlier run of this instance left it: reuse it.
                    Some(info) if info.internal && !info.inter_container => info,
                    Some(_) => {
                        return Err(RuntimeError::Network(format!(
                            "a network {name} exists but is not internal with inter-container traffic off: remove it"
                        )));
                    }
                    None => {
                        let labels = HashMap::from([
                            (LABEL_MANAGED.to_string(), "true".to_string()),
                            (LABEL_INSTANCE.to_string(), instance.to_string()),
                        ]);
                        docker.create_internal_network(&name, &labels).await?
                    }
                }
            } else {
                docker.inspect_network(mode).await?.ok_or_else(|| {
                    RuntimeError::Network(format!("the workers' network {mode} does not exist"))
                })?
            };
            let listen = match (relay_listen, info.gateway) {
                (Some(listen), _) => listen,
                (None, Some(gateway)) => SocketAddr::new(gateway, 0),
                (None, None) => {
                    return Err(RuntimeError::Network(format!(
                        "network {} has no gateway address for the relay: set --relay-listen and --relay-url",
                        info.name
                    )));
                }
            };
            Ok(WorkerNetwork {
                mode: info.name.clone(),
                created: mode == INTERNAL,
                relay_listen: listen,
                relay_url,
                worker_subnets: info.subnets.iter().filter_map(|s| Subnet::parse(s)).collect(),
                summary: summary(&info),
            })
        }
    }
}

fn summary(info: &NetworkInfo) -> String {
    let out = if info.internal {
        "no route out"
    } else {
        "UNSAFE: a route out to any address"
    };
    let peers = if info.inter_container {
        "other containers on it reachable"
    } else {
        "other containers unreachable"
    };
    format!(
        "workers on network {}: {out}; {peers}; the host reachable at its address on the network (the relay, and any host service listening on all addresses)",
        info.name
    )
}

/// Removes the network ccpool created, after its workers are gone.
pub async fn remove(docker: &DockerRuntime, network: &WorkerNetwork) {
    if network.created {
        if let Err(e) = docker.remove_network(&network.mode).await {
            tracing::warn!(cause = %e, "removing the workers' network");
        }
    }
}

/// An IPv4 or IPv6 subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    addr: IpAddr,
    prefix: u8,
}

impl Subnet {
    /// `a.b.c.d/n` or an IPv6 equivalent.
    pub fn parse(text: &str) -> Option<Subnet> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Subnet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_contain_their_addresses_only() {
        let s = Subnet::parse("172.18.0.0/16").unwrap();
        assert!(s.contains("172.18.3.4".parse().unwrap()));
        assert!(s.contains("::ffff:172.18.0.9".parse().unwrap()));
        assert!(!s.contains("172.19.0.1".parse().unwrap()));
        assert!(!s.contains("127.0.0.1".parse().unwrap()));
        assert!(
            Subnet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Subnet::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert_eq!(Subnet::parse("10.0.0.0/33"), None);
        assert_eq!(Subnet::parse("nonsense"), None);
    }
}
