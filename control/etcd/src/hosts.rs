//! Hosts' registrations: `hosts/live/<name>` under the host's lease (alive
//! while its vnetd keeps the lease alive), `hosts/known/<name>` without one
//! (so that a dead host is still listed).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use vnet_store::{RegisteredHost, StoreError};

use crate::txn::prefix_end;
use crate::Shared;

/// Lease TTLs accepted, in seconds: below 2 a keep-alive every TTL/3 is
/// too tight to survive a slow round trip; above an hour a dead host goes
/// unnoticed for too long.
pub const MIN_TTL: i64 = 2;
pub const MAX_TTL: i64 = 3600;

/// The value of both keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HostValue {
    tunnel_address: String,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub tunnel_address: Ipv4Addr,
    pub ttl: i64,
    /// The lease now held (a new one after an expiry).
    pub lease: Arc<AtomicI64>,
}

/// Grants a lease and creates the host's live key under it, unless a live
/// vnetd holds it; waits up to one TTL (and a second) for a dead holder's
/// lease to run out.
pub async fn register(
    shared: Arc<Shared>,
    name: String,
    tunnel_address: Ipv4Addr,
    ttl: i64,
) -> Result<Registration, StoreError> {
    let what = format!("registering host {name}");
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(shared.error(
            &what,
            format!(
                "a lease TTL of {ttl} s is out of range: give {MIN_TTL} to {MAX_TTL} \
                 (a host is seen dead that long after it dies)"
            ),
        ));
    }
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !valid {
        return Err(shared.error(
            &what,
            "a host name is 1 to 64 letters, digits, '-', '_' or '.' (as in the topology's hosts:)",
        ));
    }
    // Within the store's deadline for one call (crate::OP_TIMEOUT * 3).
    let deadline = Instant::now() + Duration::from_secs((ttl as u64 + 1).min(20));
    loop {
        let lease = create(&shared, &name, tunnel_address, ttl).await?;
        if let Some(lease) = lease {
            tracing::info!(host = %name, %tunnel_address, lease, ttl, store = %shared.name, "registered this host");
            return Ok(Registration {
                name,
                tunnel_address,
                ttl,
                lease: Arc::new(AtomicI64::new(lease)),
            });
        }
        if Instant::now() >= deadline {
            return Err(shared.error(
                &format!("registering host {name}"),
                format!(
                    "another vnetd is registered as host {name} and keeps its lease alive; \
                     stop it, or give this vnetd another --host (a vnetd that died frees \
                     the name when its lease runs out)"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One attempt: the lease id if the live key was created, `None` if a live
/// registration of that name exists.
async fn create(
    shared: &Shared,
    name: &str,
    tunnel_address: Ipv4Addr,
    ttl: i64,
) -> Result<Option<i64>, StoreError> {
    let what = format!("registering host {name}");
    let mut client = shared.client.clone();
    let lease = client
        .lease_grant(ttl, None)
        .await
        .map_err(|e| shared.error(&what, e))?
        .id();
    let value = serde_json::to_vec(&HostValue {
        tunnel_address: tunnel_address.to_string(),
    })
    .map_err(|e| shared.error(&what, e))?;
    let live = shared.keys.live_host(name);
    let txn = Txn::new()
        .when([Compare::create_revision(live.clone(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(
                live,
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::put(shared.keys.known_host(name), value, None),
        ]);
    let resp = client.txn(txn).await.map_err(|e| shared.error(&what, e))?;
    if resp.succeeded() {
        Ok(Some(lease))
    } else {
        let _ = client.lease_revoke(lease).await;
        Ok(None)
    }
}

/// Keeps the lease alive every TTL/3; registers again (a new lease) when
/// the lease expired anyway, e.g. etcd was unreachable longer than the TTL.
/// Runs until aborted.
pub async fn keep_alive(shared: Arc<Shared>, reg: Registration) {
    let period = Duration::from_millis((reg.ttl as u64 * 1000) / 3);
    loop {
        let lease = reg.lease.load(Ordering::Relaxed);
        let mut client = shared.client.clone();
        let alive = async {
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
            loop {
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(r) if r.ttl() > 0 => shared.answered(),
                    // TTL 0: etcd no longer has the lease.
                    _ => return Ok::<(), etcd_client::Error>(()),
                }
                tokio::time::sleep(period).await;
            }
        };
        match alive.await {
            Ok(()) => tracing::warn!(
                host = %reg.name,
                lease,
                "this host's etcd lease expired (etcd unreachable longer than its TTL?); registering again"
            ),
            Err(e) => {
                shared.unreachable(&format!("keeping this host's lease alive: {e}"));
                tracing::warn!(host = %reg.name, error = %e, "keeping this host's etcd lease alive; retrying");
                tokio::time::sleep(period).await;
                // The lease may still be alive: keep it if so.
                let ttl = client.lease_time_to_live(lease, None).await;
                if matches!(&ttl, Ok(r) if r.ttl() > 0) {
                    continue;
                }
                if ttl.is_err() {
                    continue;
                }
            }
        }
        match create(&shared, &reg.name, reg.tunnel_address, reg.ttl).await {
            Ok(Some(new)) => {
                reg.lease.store(new, Ordering::Relaxed);
                tracing::info!(host = %reg.name, lease = new, "registered this host again");
            }
            Ok(None) => tracing::error!(
                host = %reg.name,
                "another vnetd registered as this host while this one's lease was expired; \
                 two vnetds use the same --host"
            ),
            Err(e) => {
                tracing::warn!(host = %reg.name, error = %e, "registering this host again; retrying")
            }
        }
        tokio::time::sleep(period).await;
    }
}

pub async fn revoke(shared: Arc<Shared>, lease: i64) -> Result<(), etcd_client::Error> {
    shared.client.clone().lease_revoke(lease).await.map(drop)
}

/// The known hosts with whether each has a live registration.
pub async fn list(shared: Arc<Shared>) -> Result<Vec<RegisteredHost>, StoreError> {
    let range = |p: String| {
        let end = prefix_end(&p);
        TxnOp::get(p, Some(GetOptions::new().with_range(end)))
    };
    let known_prefix = shared.keys.known_hosts();
    let live_prefix = shared.keys.live_hosts();
    let txn = Txn::new().and_then([range(known_prefix.clone()), range(live_prefix.clone())]);
    let resp = shared
        .client
        .clone()
        .txn(txn)
        .await
        .map_err(|e| shared.error("listing the hosts", e))?;
    let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(g) => Some(g),
        _ => None,
    });
    let (Some(known), Some(live)) = (gets.next(), gets.next()) else {
        return Err(shared.corrupt("etcd answered a read of two ranges with fewer".into()));
    };
    let decode =
        |prefix: &str, kv: &etcd_client::KeyValue| -> Result<(String, String), StoreError> {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let v: HostValue = serde_json::from_slice(kv.value())
                .map_err(|e| shared.corrupt(format!("{key}: not a host registration: {e}")))?;
            Ok((
                key.strip_prefix(prefix).unwrap_or(&key).to_string(),
                v.tunnel_address,
            ))
        };
    let mut hosts: BTreeMap<String, RegisteredHost> = BTreeMap::new();
    for kv in known.kvs() {
        let (name, tunnel_address) = decode(&known_prefix, kv)?;
        hosts.insert(
            name.clone(),
            RegisteredHost {
                name,
                tunnel_address,
                alive: false,
            },
        );
    }
    for kv in live.kvs() {
        let (name, tunnel_address) = decode(&live_prefix, kv)?;
        hosts.insert(
            name.clone(),
            RegisteredHost {
                name,
                tunnel_address,
                alive: true,
            },
        );
    }
    Ok(hosts.into_values().collect())
}
