//! Follows `topo/head` with an etcd watch and publishes each new vnet
//! revision to the store's subscribers, re-listing on compaction.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};

use crate::txn::read_head;
use crate::Shared;

/// The longest wait between attempts while etcd is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until the store's runtime stops. `from` is the etcd revision the
/// head was last read at.
pub async fn follow_head(shared: Arc<Shared>, mut from: i64) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match watch_from(&shared, from).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(store = %shared.name, error = %e, "watching the topology in etcd; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        // Re-list: whatever was missed is in the head now, and the next
        // watch starts after this read (never at the old start again).
        match read_head(shared.clone()).await {
            Ok((head, at)) => {
                shared.published(head.revision);
                from = at;
            }
            Err(e) => {
                tracing::warn!(store = %shared.name, error = %e, "reading the topology head; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Watches the head from `from + 1`; returns when the watch ends (compacted,
/// canceled) so that the caller re-lists.
async fn watch_from(shared: &Shared, from: i64) -> Result<(), String> {
    let mut client = shared.client.watch_client();
    let options = WatchOptions::new()
        .with_start_revision(from + 1)
        .with_progress_notify();
    let mut stream = client
        .watch(shared.keys.head(), Some(options))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(resp) = stream.message().await.map_err(|e| e.to_string())? {
        if resp.compact_revision() > 0 {
            tracing::info!(
                store = %shared.name,
                requested = from + 1,
                compacted = resp.compact_revision(),
                "etcd compacted the revisions this watch needed; re-listing"
            );
            return Ok(());
        }
        if resp.canceled() {
            return Err(format!("etcd canceled the watch: {}", resp.cancel_reason()));
        }
        for event in resp.events() {
            if event.event_type() != EventType::Put {
                continue;
            }
            let Some(kv) = event.kv() else { continue };
            match serde_json::from_slice::<crate::layout::Head>(kv.value()) {
                Ok(head) => shared.published(head.revision),
                Err(e) => {
                    tracing::warn!(store = %shared.name, error = %e, "a topology head that cannot be read")
                }
            }
        }
    }
    Err("etcd closed the watch stream".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::EtcdServer;

    /// A watch from a revision etcd compacted ends (so that the caller
    /// re-lists) rather than waiting forever or retrying that revision.
    #[test]
    fn a_watch_from_a_compacted_revision_returns_for_a_relist() {
        let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("cannot start etcd: {e}"));
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut client =
                etcd_client::Client::connect([format!("http://{}", etcd.client)], None)
                    .await
                    .unwrap();
            for i in 0..5 {
                client.put("/vnet/x", format!("{i}"), None).await.unwrap();
            }
            let at = client
                .get("/vnet/x", None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision();
            client.compact(at, None).await.unwrap();
            let (notify, _) = tokio::sync::watch::channel(0);
            let shared = Shared {
                client,
                keys: crate::layout::Keys::new("/vnet/"),
                name: etcd.url(),
                notify,
                reachability: Default::default(),
            };
            let ended = tokio::time::timeout(Duration::from_secs(5), watch_from(&shared, 1)).await;
            assert_eq!(ended, Ok(Ok(())));
        });
    }
}
