//! How vnetctl prints: every table, the JSON and YAML forms of each answer,
//! and the text of its errors. Each function returns the exact text a
//! command writes (whole lines, each ending in a newline), so that every
//! format is tested here without a server.
//!
//! `-o yaml` is the file format for `get` (what `apply -f` takes back), the
//! JSON (a YAML document too) for `trace`, `flows`, `stats` and `status`,
//! and the human text for `apply` and `watch`.
use std::fmt::Display;
use std::path::Path;

use serde_json::{json, Map, Value};
use vnet_api::{ApplyOutcome, ClientError, Event, Health, Listed};
use vnet_model::diff::Change;
use vnet_model::objects::ObjectKind;
use vnet_model::reports::{
    CounterReport, FlowInfo, PortState, PortStatus, TraceReport, TrafficCounters,
};
use vnet_model::{Topology, ValidationError};

use crate::cli::Format;
use crate::Result;

#[cfg(test)]
mod tests;

// ---- apply, delete, watch: changes ----

/// What an apply changed, or would change with `dry_run`.
pub fn apply(out: &ApplyOutcome, dry_run: bool, format: Format) -> Result<String> {
    if format == Format::Json {
        return pretty_json(&json!({
            "revision": out.revision,
            "dry_run": out.dry_run,
            "running": out.running,
            "changes": change_texts(&out.changes),
            "warnings": out.warnings,
        }));
    }
    let mut text = change_lines(&out.changes, "");
    text += &if dry_run {
        format!(
            "dry run: {} change(s) against revision {}; nothing applied\n",
            out.changes.len(),
            out.revision
        )
    } else if out.changes.is_empty() {
        format!("no changes: revision {} stays\n", out.revision)
    } else {
        let running = if out.running {
            " (running)"
        } else {
            " (stored; the dataplane does not run it yet)"
        };
        format!("applied: revision {}{running}\n", out.revision)
    };
    Ok(text)
}

/// The server's warnings about an apply, for stderr.
pub fn warnings(warnings: &[String]) -> String {
    warnings.iter().map(|w| format!("warning: {w}\n")).collect()
}

/// What a delete changed.
pub fn deleted(changes: &[Change], revision: u64) -> String {
    change_lines(changes, "") + &format!("deleted: revision {revision}\n")
}

/// One stored revision as `watch` streams it: its changes; with `-o json`
/// also the objects it added or changed (whole) and the paths it removed,
/// on one line, so that each revision is one line for a reader of the
/// stream.
pub fn watch_event(event: &Event, format: Format) -> String {
    let changes = &event.changes;
    if format == Format::Json {
        let line = json!({
            "revision": event.revision,
            "changes": change_texts(changes),
            "changed": event.delta.changed,
            "removed": event.delta.removed,
        });
        return format!("{line}\n");
    }
    format!("revision {}: {} change(s)\n", event.revision, changes.len())
        + &change_lines(changes, "  ")
}

fn change_texts(changes: &[Change]) -> Vec<String> {
    changes.iter().map(Change::to_string).collect()
}

fn change_lines(changes: &[Change], indent: &str) -> String {
    changes.iter().map(|c| format!("{indent}{c}\n")).collect()
}

// ---- get: objects ----

const OBJECT_HEADER: [&str; 4] = ["KIND", "NAME", "ID", "SUMMARY"];

/// The topology (`kind` None) or the objects of one kind.
pub fn listing(listed: &Listed, kind: Option<ObjectKind>, format: Format) -> Result<String> {
    let t = &listed.topology;
    match format {
        Format::Yaml => Ok(t.to_yaml()),
        Format::Json => pretty_json(t),
        Format::Table => {
            let rows: Vec<_> = listed
                .objects
                .iter()
                .map(|(k, name, id)| object_row(t, *k, name, *id))
                .collect();
            let mut text = table(&OBJECT_HEADER, &rows);
            // Intents have no names, so no rows: say they are there.
            if kind.is_none() && (!t.nat.is_empty() || !t.firewall.is_empty()) {
                text += &format!(
                    "{} NAT and {} firewall intent(s): -o yaml shows them\n",
                    t.nat.len(),
                    t.firewall.len()
                );
            }
            text += &format!("revision {}\n", listed.revision);
            Ok(text)
        }
    }
}

/// `vnetctl get hosts`: NAME, TUNNEL ADDRESS, ALIVE, PORTS.
pub fn hosts(revision: u64, hosts: &[vnet_api::HostStatus], format: Format) -> Result<String> {
    let rows: Vec<Value> = hosts
        .iter()
        .map(|h| {
            json!({
                "name": h.name,
                "tunnel_address": h.tunnel_address,
                "alive": h.alive,
                "registered": h.registered,
                "ports": h.ports,
            })
        })
        .collect();
    let doc = json!({"revision": revision, "hosts": rows});
    match format {
        // JSON is YAML too: one printer for both.
        Format::Json | Format::Yaml => pretty_json(&doc),
        Format::Table => {
            let rows: Vec<Vec<String>> = hosts
                .iter()
                .map(|h| {
                    vec![
                        h.name.clone(),
                        h.tunnel_address.clone(),
                        if h.alive { "alive" } else { "dead" }.to_string(),
                        if h.ports.is_empty() {
                            "-".to_string()
                        } else {
                            h.ports.join(",")
                        },
                    ]
                })
                .collect();
            let mut text = table(&["NAME", "TUNNEL ADDRESS", "ALIVE", "PORTS"], &rows);
            if hosts.is_empty() {
                text += "no hosts: none declared under hosts:, none registered (vnetd --store etcd://... --host NAME)\n";
            }
            text += &format!("revision {revision}\n");
            Ok(text)
        }
    }
}

/// One object; `topology` holds it alone.
pub fn object(
    kind: ObjectKind,
    name: &str,
    id: u64,
    revision: u64,
    topology: &Topology,
    format: Format,
) -> Result<String> {
    match format {
        Format::Yaml => Ok(fragment_yaml(topology)),
        Format::Json => pretty_json(topology),
        Format::Table => Ok(
            table(&OBJECT_HEADER, &[object_row(topology, kind, name, id)])
                + &format!("revision {revision}\n"),
        ),
    }
}

fn object_row(t: &Topology, kind: ObjectKind, name: &str, id: u64) -> Vec<String> {
    vec![
        kind.to_string(),
        name.to_string(),
        id.to_string(),
        summary(t, kind, name),
    ]
}

/// The object's section of a file, without the `version:` line.
fn fragment_yaml(t: &Topology) -> String {
    t.to_yaml()
        .lines()
        .filter(|l| !l.starts_with("version:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// One line about an object for tables.
fn summary(t: &Topology, kind: ObjectKind, name: &str) -> String {
    match kind {
        ObjectKind::Bridge => t.bridges.get(name).map(|b| {
            let down = b.ports.values().filter(|p| !p.up).count();
            let mut s = format!("{} ports", b.ports.len());
            if down > 0 {
                s.push_str(&format!(" ({down} down)"));
            }
            if !b.dhcp.is_empty() {
                s.push_str(&format!(", DHCP on {} subnet(s)", b.dhcp.len()));
            }
            s
        }),
        ObjectKind::Router => t
            .routers
            .get(name)
            .map(|r| format!("{} ports, {} routes", r.ports.len(), r.routes.len())),
        ObjectKind::Chain => t.chains.get(name).map(|c| format!("{} rules", c.len())),
        ObjectKind::IpGroup => t
            .ip_groups
            .get(name)
            .map(|g| format!("{} addresses", g.len())),
        ObjectKind::PortGroup => t
            .port_groups
            .get(name)
            .map(|g| format!("{} ports", g.ports.len())),
    }
    .unwrap_or_default()
}

// ---- trace ----

/// A simulated packet's steps, verdict and flow.
pub fn trace(r: &TraceReport, format: Format) -> Result<String> {
    if format != Format::Table {
        let steps: Vec<_> = r
            .steps
            .iter()
            .map(|s| json!({"kind": s.kind, "detail": s.detail}))
            .collect();
        return pretty_json(&json!({
            "revision": r.revision,
            "packet": r.packet,
            "steps": steps,
            "verdict": r.verdict,
            "emitted": r.emitted,
            "flow": r.flow,
        }));
    }
    let mut text = format!("packet: {}\n", r.packet);
    for (i, s) in r.steps.iter().enumerate() {
        text += &format!("{:>3}. {:<16} {}\n", i + 1, s.kind, s.detail);
    }
    text += &format!("verdict: {}\n", r.verdict);
    if !r.emitted.is_empty() {
        text += &format!("sent to: {}\n", r.emitted.join(", "));
    }
    text += &match &r.flow {
        Some(f) => format!("flow: {f}\n"),
        None => "flow: none (not installed for this packet)\n".to_string(),
    };
    text += &format!("(simulated on revision {}; nothing changed)\n", r.revision);
    Ok(text)
}

// ---- flows, stats, status ----

/// The installed flows, as of `revision`.
pub fn flows(revision: u64, flows: &[FlowInfo], format: Format) -> Result<String> {
    if format != Format::Table {
        let list: Vec<_> = flows
            .iter()
            .map(|f| {
                json!({
                    "in_port": f.in_port, "match": f.matches, "actions": f.actions,
                    "packets": f.packets, "bytes": f.bytes, "age_ms": f.age_ms,
                    "idle_ms": f.idle_ms, "tags": f.tags,
                })
            })
            .collect();
        return pretty_json(&list);
    }
    let rows: Vec<_> = flows
        .iter()
        .map(|f| {
            vec![
                f.in_port.clone(),
                f.matches.clone(),
                f.actions.clone(),
                f.packets.to_string(),
                f.bytes.to_string(),
                format!("{}s", f.idle_ms / 1000),
            ]
        })
        .collect();
    Ok(table(
        &["IN", "MATCH", "ACTIONS", "PACKETS", "BYTES", "IDLE"],
        &rows,
    ) + &format!("{} flow(s), revision {revision}\n", flows.len()))
}

/// The columns of [`TrafficCounters`] in the stats tables.
const TRAFFIC_HEADER: [&str; 5] = [
    "USERSPACE_RX",
    "KERNEL_PKTS",
    "KERNEL_BYTES",
    "FLOWS",
    "OVER_BUDGET",
];

/// Counters by port, by device, and by reason (those that counted).
pub fn stats(c: &CounterReport, format: Format) -> Result<String> {
    if format != Format::Table {
        let ports: Vec<_> = c
            .ports
            .iter()
            .map(|(p, i, t)| with_traffic(json!({"port": p, "interface": i}), t))
            .collect();
        let devices: Vec<_> = c
            .devices
            .iter()
            .map(|(d, t)| with_traffic(json!({"device": d}), t))
            .collect();
        return pretty_json(&json!({
            "revision": c.revision, "reasons": counter_map(&c.reasons),
            "totals": counter_map(&c.totals), "ports": ports, "devices": devices,
        }));
    }
    let ports: Vec<_> = c
        .ports
        .iter()
        .map(|(p, i, t)| [vec![p.clone(), i.clone()], traffic_cells(t)].concat())
        .collect();
    let devices: Vec<_> = c
        .devices
        .iter()
        .map(|(d, t)| [vec![d.clone()], traffic_cells(t)].concat())
        .collect();
    let counters: Vec<_> = c
        .totals
        .iter()
        .chain(c.reasons.iter().filter(|(_, v)| *v > 0))
        .map(|(n, v)| vec![n.clone(), v.to_string()])
        .collect();
    let port_header = [&["PORT", "INTERFACE"][..], &TRAFFIC_HEADER].concat();
    let device_header = [&["DEVICE"][..], &TRAFFIC_HEADER].concat();
    Ok([
        table(&port_header, &ports),
        table(&device_header, &devices),
        table(&["COUNTER", "VALUE"], &counters),
    ]
    .join("\n"))
}

/// `v`, an object naming a port or a device, with `t`'s counters added.
fn with_traffic(mut v: Value, t: &TrafficCounters) -> Value {
    v["userspace_rx"] = t.userspace_rx.into();
    v["userspace_bytes"] = t.userspace_bytes.into();
    v["kernel_packets"] = t.kernel_packets.into();
    v["kernel_bytes"] = t.kernel_bytes.into();
    v["flows"] = t.flows.into();
    v["upcall_budget"] = t.upcall_budget.into();
    v
}

fn traffic_cells(t: &TrafficCounters) -> Vec<String> {
    vec![
        t.userspace_rx.to_string(),
        t.kernel_packets.to_string(),
        t.kernel_bytes.to_string(),
        t.flows.to_string(),
        t.upcall_budget.to_string(),
    ]
}

fn counter_map(counters: &[(String, u64)]) -> Map<String, Value> {
    counters
        .iter()
        .map(|(n, v)| (n.clone(), (*v).into()))
        .collect()
}

/// Revisions, each port's binding and the dataplane's problems.
pub fn status(h: &Health, format: Format) -> Result<String> {
    if format != Format::Table {
        let ifs: Vec<_> = h
            .interfaces
            .iter()
            .map(|(p, i, n)| json!({"port": p, "interface": i, "ifindex": n}))
            .collect();
        let ports: Vec<_> = h.ports.iter().map(port_status_json).collect();
        return pretty_json(&json!({
            "stored_revision": h.stored_revision,
            "running_revision": h.running_revision,
            "dataplane": h.dataplane,
            "interfaces": ifs,
            "ports": ports,
            "problems": h.problems,
            "store": {
                "store": h.store.store,
                "reachable": h.store.reachable,
                "down_seconds": h.store.down_for_secs,
                "outages": h.store.outages,
                "error": h.store.error,
            },
        }));
    }
    let s = &h.store;
    let mut text = if s.reachable {
        let outages = match s.outages {
            0 => String::new(),
            n => format!(" (answering; {n} outages since start)"),
        };
        format!(
            "store:            {}{outages}\nstored revision:  {}\n",
            s.store, h.stored_revision
        )
    } else {
        format!(
            "store:            {} UNREACHABLE for {} s ({} outages since start): {}\n\
             stored revision:  unknown; forwarding goes on with the running one and \
             catches up when the store answers\n",
            s.store,
            s.down_for_secs,
            s.outages,
            s.error.as_deref().unwrap_or("no answer")
        )
    };
    if h.dataplane {
        text += &format!("running revision: {}\n", h.running_revision);
        let rows: Vec<_> = h.ports.iter().map(port_status_row).collect();
        text += &table(&["PORT", "INTERFACE", "STATE", "IFINDEX", "WHY"], &rows);
        for p in &h.problems {
            text += &format!("problem: {p}\n");
        }
    } else {
        text += "no dataplane behind this API\n";
    }
    Ok(text)
}

fn port_status_json(p: &PortStatus) -> Value {
    let mut v = json!({
        "port": p.port,
        "interface": p.interface,
        "state": p.state.name(),
    });
    match &p.state {
        PortState::Bound { ifindex } => v["ifindex"] = (*ifindex).into(),
        PortState::Failed(why) => v["error"] = why.clone().into(),
        PortState::Waiting => {}
    }
    v
}

fn port_status_row(p: &PortStatus) -> Vec<String> {
    let (ifindex, why) = match &p.state {
        PortState::Bound { ifindex } => (ifindex.to_string(), String::new()),
        PortState::Waiting => ("-".into(), "waiting for the interface".into()),
        PortState::Failed(why) => ("-".into(), why.clone()),
    };
    vec![
        p.port.clone(),
        p.interface.clone(),
        p.state.name().into(),
        ifindex,
        why,
    ]
}

// ---- building blocks ----

/// Columns as wide as their widest cell, two spaces apart, no trailing
/// blanks.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", text.join("  ").trim_end())
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text += &line(row.iter().map(String::as_str).collect());
    }
    text
}

fn pretty_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| format!("cannot print JSON: {e}"))
}

// ---- errors (main prints them after `vnetctl: `) ----

/// A failed call; one that found no server says how to name vnetd's.
pub fn client_error(e: ClientError) -> String {
    match &e {
        ClientError::Connect { .. } => {
            format!("{e}\n  (is vnetd running? pass its socket with --socket PATH; the socket is root's only)")
        }
        _ => e.to_string(),
    }
}

/// A failed call that would have changed the topology: one the server
/// rejected says that nothing changed.
pub fn change_error(e: ClientError) -> String {
    match e.code() {
        Some(tonic::Code::InvalidArgument) => format!("nothing changed: {}", client_error(e)),
        _ => client_error(e),
    }
}

/// A rejected change with all of its validation errors, of which the
/// server could list only the first.
pub fn every_validation_error(errors: &[ValidationError]) -> String {
    let list: String = errors.iter().map(|e| format!("\n  {e}")).collect();
    format!(
        "nothing changed: rejected: invalid topology ({} errors; the server \
         listed the first ones, all are checked here):{list}",
        errors.len()
    )
}

/// An error about a file, prefixed with its path.
pub fn in_file(file: &Path, error: impl Display) -> String {
    format!("{}: {error}", file.display())
}
