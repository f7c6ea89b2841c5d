//! Conversions of the dataplane views (trace, flows, counters, health) and
//! of changes between protobuf and the plain types of
//! [`vnet_model::reports`] and [`vnet_model::diff`].

use super::pb;
use vnet_model::diff::{Change, ChangeOp};
use vnet_model::model::Protocol;
use vnet_model::reports::*;

/// A field of a request that does not have the form the model needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl TryFrom<pb::TraceRequest> for TraceRequest {
    type Error = FieldError;

    fn try_from(p: pb::TraceRequest) -> Result<TraceRequest, FieldError> {
        let protocol: Protocol = p
            .protocol
            .parse()
            .map_err(|e: vnet_model::model::ValueError| FieldError::new("protocol", e.0))?;
        if ![Protocol::TCP, Protocol::UDP, Protocol::ICMP].contains(&protocol) {
            return Err(FieldError::new(
                "protocol",
                format!("trace builds tcp, udp or icmp packets, not {protocol}"),
            ));
        }
        let ip = |field: &str, v: &str| {
            v.parse().map_err(|_| {
                FieldError::new(field, format!("`{v}` is not an IPv4 address like 10.0.0.1"))
            })
        };
        let port = |field: &str, v: Option<u32>| {
            v.map(|n| {
                u16::try_from(n)
                    .map_err(|_| FieldError::new(field, format!("{n} is out of range 0-65535")))
            })
            .transpose()
        };
        let mac = |field: &str, v: Option<String>| {
            v.map(|m| {
                m.parse()
                    .map_err(|e: vnet_model::model::ValueError| FieldError::new(field, e.0))
            })
            .transpose()
        };
        let (src_port, dst_port) = (port("src_port", p.src_port)?, port("dst_port", p.dst_port)?);
        if protocol == Protocol::ICMP && (src_port.is_some() || dst_port.is_some()) {
            return Err(FieldError::new(
                "src_port",
                "icmp has no ports; leave src_port and dst_port out",
            ));
        }
        Ok(TraceRequest {
            port: p
                .port
                .parse()
                .map_err(|e: vnet_model::model::ValueError| FieldError::new("port", e.0))?,
            protocol,
            src: ip("src", &p.src)?,
            dst: ip("dst", &p.dst)?,
            src_port,
            dst_port,
            src_mac: mac("src_mac", p.src_mac)?,
            dst_mac: mac("dst_mac", p.dst_mac)?,
        })
    }
}

impl From<&TraceRequest> for pb::TraceRequest {
    fn from(t: &TraceRequest) -> pb::TraceRequest {
        pb::TraceRequest {
            port: t.port.to_string(),
            protocol: t.protocol.to_string(),
            src: t.src.to_string(),
            dst: t.dst.to_string(),
            src_port: t.src_port.map(u32::from),
            dst_port: t.dst_port.map(u32::from),
            src_mac: t.src_mac.map(|m| m.to_string()),
            dst_mac: t.dst_mac.map(|m| m.to_string()),
        }
    }
}

impl From<TraceReport> for pb::TraceResponse {
    fn from(t: TraceReport) -> pb::TraceResponse {
        pb::TraceResponse {
            revision: t.revision,
            packet: t.packet,
            steps: t
                .steps
                .into_iter()
                .map(|s| pb::TraceStep {
                    kind: s.kind,
                    detail: s.detail,
                })
                .collect(),
            verdict: t.verdict,
            emitted: t.emitted,
            flow: t.flow,
        }
    }
}

impl From<pb::TraceResponse> for TraceReport {
    fn from(t: pb::TraceResponse) -> TraceReport {
        TraceReport {
            revision: t.revision,
            packet: t.packet,
            steps: t
                .steps
                .into_iter()
                .map(|s| TraceStep {
                    kind: s.kind,
                    detail: s.detail,
                })
                .collect(),
            verdict: t.verdict,
            emitted: t.emitted,
            flow: t.flow,
        }
    }
}

impl From<FlowInfo> for pb::FlowEntry {
    fn from(f: FlowInfo) -> pb::FlowEntry {
        pb::FlowEntry {
            in_port: f.in_port,
            r#match: f.matches,
            actions: f.actions,
            packets: f.packets,
            bytes: f.bytes,
            age_ms: f.age_ms,
            idle_ms: f.idle_ms,
            tags: f.tags,
        }
    }
}

impl From<pb::FlowEntry> for FlowInfo {
    fn from(f: pb::FlowEntry) -> FlowInfo {
        FlowInfo {
            in_port: f.in_port,
            matches: f.r#match,
            actions: f.actions,
            packets: f.packets,
            bytes: f.bytes,
            age_ms: f.age_ms,
            idle_ms: f.idle_ms,
            tags: f.tags,
        }
    }
}

fn counters(list: Vec<(String, u64)>) -> Vec<pb::Counter> {
    list.into_iter()
        .map(|(name, value)| pb::Counter { name, value })
        .collect()
}

fn counters_back(list: Vec<pb::Counter>) -> Vec<(String, u64)> {
    list.into_iter().map(|c| (c.name, c.value)).collect()
}

impl From<CounterReport> for pb::CountersResponse {
    fn from(c: CounterReport) -> pb::CountersResponse {
        pb::CountersResponse {
            revision: c.revision,
            reasons: counters(c.reasons),
            totals: counters(c.totals),
            ports: c
                .ports
                .into_iter()
                .map(|(port, interface, t)| pb::PortCounters {
                    port,
                    interface,
                    userspace_rx: t.userspace_rx,
                    userspace_bytes: t.userspace_bytes,
                    kernel_packets: t.kernel_packets,
                    kernel_bytes: t.kernel_bytes,
                    flows: t.flows,
                    upcall_budget: t.upcall_budget,
                })
                .collect(),
            devices: c
                .devices
                .into_iter()
                .map(|(device, t)| pb::DeviceCounters {
                    device,
                    userspace_rx: t.userspace_rx,
                    userspace_bytes: t.userspace_bytes,
                    kernel_packets: t.kernel_packets,
                    kernel_bytes: t.kernel_bytes,
                    flows: t.flows,
                    upcall_budget: t.upcall_budget,
                })
                .collect(),
        }
    }
}

impl From<pb::CountersResponse> for CounterReport {
    fn from(c: pb::CountersResponse) -> CounterReport {
        CounterReport {
            revision: c.revision,
            reasons: counters_back(c.reasons),
            totals: counters_back(c.totals),
            ports: c
                .ports
                .into_iter()
                .map(|p| {
                    (
                        p.port,
                        p.interface,
                        TrafficCounters {
                            userspace_rx: p.userspace_rx,
                            userspace_bytes: p.userspace_bytes,
                            kernel_packets: p.kernel_packets,
                            kernel_bytes: p.kernel_bytes,
                            flows: p.flows,
                            upcall_budget: p.upcall_budget,
                        },
                    )
                })
                .collect(),
            devices: c
                .devices
                .into_iter()
                .map(|d| {
                    (
                        d.device,
                        TrafficCounters {
                            userspace_rx: d.userspace_rx,
                            userspace_bytes: d.userspace_bytes,
                            kernel_packets: d.kernel_packets,
                            kernel_bytes: d.kernel_bytes,
                            flows: d.flows,
                            upcall_budget: d.upcall_budget,
                        },
                    )
                })
                .collect(),
        }
    }
}

pub(crate) fn change_to_pb(c: &Change) -> pb::Change {
    let op = match c.op {
        ChangeOp::Added => pb::ChangeOp::Added,
        ChangeOp::Removed => pb::ChangeOp::Removed,
        ChangeOp::Changed => pb::ChangeOp::Changed,
    };
    pb::Change {
        op: op.into(),
        path: c.path.clone(),
    }
}

pub(crate) fn change_from_pb(c: pb::Change) -> Change {
    let op = match pb::ChangeOp::try_from(c.op) {
        Ok(pb::ChangeOp::Added) => ChangeOp::Added,
        Ok(pb::ChangeOp::Removed) => ChangeOp::Removed,
        _ => ChangeOp::Changed,
    };
    Change { op, path: c.path }
}

/// The hosts view: the topology's `hosts:` and the store's registrations,
/// by name, with the ports placed on each.
pub fn hosts(
    topology: &vnet_model::Topology,
    registered: Vec<vnet_store::RegisteredHost>,
) -> Vec<pb::HostInfo> {
    use std::collections::BTreeMap;
    let mut hosts: BTreeMap<String, pb::HostInfo> = topology
        .hosts
        .iter()
        .map(|(name, h)| {
            let info = pb::HostInfo {
                name: name.clone(),
                tunnel_address: h.tunnel_address.to_string(),
                ..Default::default()
            };
            (name.clone(), info)
        })
        .collect();
    for r in registered {
        let h = hosts.entry(r.name.clone()).or_insert_with(|| pb::HostInfo {
            name: r.name.clone(),
            ..Default::default()
        });
        h.tunnel_address = r.tunnel_address;
        h.alive = r.alive;
        h.registered = true;
    }
    let bridge_ports = topology.bridges.iter().flat_map(|(d, b)| {
        b.ports
            .iter()
            .map(move |(p, port)| (d, p, port.host.as_ref()))
    });
    let router_ports = topology.routers.iter().flat_map(|(d, r)| {
        r.ports
            .iter()
            .map(move |(p, port)| (d, p, port.host.as_ref()))
    });
    for (device, port, host) in bridge_ports.chain(router_ports) {
        if let Some(h) = host.and_then(|h| hosts.get_mut(h)) {
            h.ports.push(format!("{device}/{port}"));
        }
    }
    hosts.into_values().collect()
}
