//! The `vnet.v1.Vnet` service: requests are converted into model types,
//! checked, and carried out on the store; dataplane views are asked of the
//! [`Dataplane`], if there is one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use super::documents::{
    kind_from_pb, kind_to_pb, object_from_pb, object_to_pb, topology_from_pb, topology_to_pb,
    DocumentError,
};
use super::pb;
use super::views::change_to_pb;
use super::views::FieldError;
use vnet_model::model::Topology;
use vnet_model::objects::{Object, ObjectKind};
use vnet_model::reports::{Dataplane, FlowPage, TraceError, TraceRequest};
use vnet_model::{visible, ValidationError};
use vnet_store::{Applied, Store, StoreError};

/// How long Apply waits for the dataplane to run a new revision.
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct VnetService {
    store: Arc<dyn Store>,
    dataplane: Option<Arc<dyn Dataplane>>,
    apply_wait: Duration,
}

impl VnetService {
    pub fn new(store: Arc<dyn Store>, dataplane: Option<Arc<dyn Dataplane>>) -> Self {
        VnetService {
            store,
            dataplane,
            apply_wait: APPLY_WAIT,
        }
    }

    fn dataplane(&self) -> Result<Arc<dyn Dataplane>, Status> {
        self.dataplane
            .clone()
            .ok_or_else(|| Status::unavailable("this server runs no dataplane"))
    }

    /// Runs a store call off the async threads (it writes and fsyncs).
    async fn store_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("store task failed: {e}")))?
            .map_err(store_status)
    }

    /// Answers a change once the dataplane runs it (or the wait is over),
    /// waiting on a blocking thread ([`Dataplane::wait_running`]).
    async fn applied(&self, applied: Applied, dry_run: bool) -> pb::ApplyResponse {
        let mut running = false;
        let mut warnings = Vec::new();
        if let (Some(dp), false) = (&self.dataplane, dry_run) {
            let start = Instant::now();
            let (waiting, revision, wait) = (dp.clone(), applied.revision, self.apply_wait);
            running = tokio::task::spawn_blocking(move || waiting.wait_running(revision, wait))
                .await
                .unwrap_or(false);
            let waited = start.elapsed();
            if !running {
                warnings.push(format!(
                    "the dataplane did not run revision {} within {} s; it runs revision {}",
                    applied.revision,
                    self.apply_wait.as_secs(),
                    dp.running_revision()
                ));
            }
            let dp = dp.clone();
            if let Ok(Ok(h)) = tokio::task::spawn_blocking(move || dp.health()).await {
                warnings.extend(h.problems);
            }
            tracing::debug!(
                revision = applied.revision,
                running,
                waited_ms = waited.as_secs_f64() * 1e3,
                health_ms = (start.elapsed() - waited).as_secs_f64() * 1e3,
                "change answered"
            );
        }
        pb::ApplyResponse {
            revision: applied.revision,
            changes: applied.changes.iter().map(change_to_pb).collect(),
            dry_run,
            running,
            warnings,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Dataplane) -> Result<T, String> + Send + 'static,
    ) -> Result<T, Status> {
        let dp = self.dataplane()?;
        tokio::task::spawn_blocking(move || f(dp.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("dataplane task failed: {e}")))?
            .map_err(Status::unavailable)
    }
}

/// The most a status message may hold. gRPC sends it in a trailer, and
/// clients refuse header blocks over 16 KiB (the whole answer then becomes
/// an "h2 protocol error"); percent-encoding may triple its size on the way.
const MESSAGE_BUDGET: usize = 4096;

/// The trailer that carries how many validation errors there are in all,
/// when the message can list only the first ones.
pub const ERROR_COUNT_KEY: &str = "vnet-validation-errors";

/// `text` cut to at most `budget` bytes, at a character boundary, saying so.
fn bounded(text: &str, budget: usize) -> String {
    if text.len() <= budget {
        return text.to_string();
    }
    let mut cut = budget.saturating_sub(40);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} ... ({} more bytes)", &text[..cut], text.len() - cut)
}

/// INVALID_ARGUMENT listing as many errors as fit in [`MESSAGE_BUDGET`],
/// then how many more there are and how to see them all; the total is in
/// the [`ERROR_COUNT_KEY`] trailer for clients that can list them
/// themselves (vnetctl validates the file it sent).
fn invalid_status(errors: &[ValidationError]) -> Status {
    let n = errors.len();
    let mut msg = format!(
        "invalid topology ({n} error{}):",
        if n == 1 { "" } else { "s" }
    );
    // Room for the closing line.
    let budget = MESSAGE_BUDGET - 160;
    let mut shown = 0;
    for e in errors {
        // Path and message each quote names: each is bounded, so that a
        // huge name cannot hide what is wrong with it.
        let line = format!(
            "\n  {}: {}",
            bounded(&e.path, budget / 8),
            bounded(&e.message, budget / 8)
        );
        if msg.len() + line.len() > budget {
            break;
        }
        msg.push_str(&line);
        shown += 1;
    }
    if shown < n {
        msg.push_str(&format!(
            "\n  ... and {} more (`vnetd --check FILE` lists every error of a file)",
            n - shown
        ));
    }
    let mut status = Status::invalid_argument(msg);
    status.metadata_mut().insert(ERROR_COUNT_KEY, n.into());
    status
}

pub(crate) fn store_status(e: StoreError) -> Status {
    use tonic::Code;
    let code = match &e {
        StoreError::Invalid(errors) => return invalid_status(errors),
        StoreError::NotFound { .. } => Code::NotFound,
        StoreError::AlreadyExists { .. } => Code::AlreadyExists,
        StoreError::Conflict { .. } => Code::FailedPrecondition,
        StoreError::Compacted { .. } | StoreError::FutureRevision { .. } => Code::OutOfRange,
        StoreError::Locked { .. } => Code::Unavailable,
        StoreError::Corrupt { .. } | StoreError::Io { .. } => Code::Internal,
        StoreError::RevisionsExhausted { .. } => Code::ResourceExhausted,
    };
    Status::new(code, bounded(&e.to_string(), MESSAGE_BUDGET))
}

fn field_status(e: FieldError) -> Status {
    // The path holds names as the request sent them.
    Status::invalid_argument(bounded(&visible(&e.to_string()), MESSAGE_BUDGET))
}

fn document_status(e: DocumentError) -> Status {
    Status::invalid_argument(bounded(&visible(&e.to_string()), MESSAGE_BUDGET))
}

fn topology(p: Option<pb::Document>) -> Result<Topology, Status> {
    topology_from_pb("topology", p).map_err(document_status)
}

fn object(p: pb::ObjectRequest) -> Result<(String, Object), Status> {
    object_from_pb("object", p.object).map_err(document_status)
}

fn kind(kind: i32) -> Result<Option<ObjectKind>, Status> {
    kind_from_pb(kind).map_err(document_status)
}

#[tonic::async_trait]
impl pb::vnet_server::Vnet for VnetService {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let start = Instant::now();
        let r = request.into_inner();
        let t = topology(r.topology)?;
        let parsed = start.elapsed();
        let expected = r.expected_revision;
        if r.dry_run {
            let planned = self.store_call(move |s| s.plan(&t)).await?;
            return Ok(Response::new(self.applied(planned, true).await));
        }
        let applied = self.store_call(move |s| s.apply(t, expected)).await?;
        tracing::debug!(
            revision = applied.revision,
            parsed_ms = parsed.as_secs_f64() * 1e3,
            stored_ms = (start.elapsed() - parsed).as_secs_f64() * 1e3,
            "apply stored"
        );
        Ok(Response::new(self.applied(applied, false).await))
    }

    async fn create(
        &self,
        request: Request<pb::ObjectRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let (name, o) = object(request.into_inner())?;
        let applied = self.store_call(move |s| s.create(&name, o)).await?;
        Ok(Response::new(self.applied(applied, false).await))
    }

    async fn update(
        &self,
        request: Request<pb::ObjectRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let (name, o) = object(request.into_inner())?;
        let applied = self.store_call(move |s| s.update(&name, o)).await?;
        Ok(Response::new(self.applied(applied, false).await))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let r = request.into_inner();
        let k = kind(r.kind)?.ok_or_else(|| Status::invalid_argument("kind: is required"))?;
        let applied = self.store_call(move |s| s.delete(k, &r.name)).await?;
        Ok(Response::new(self.applied(applied, false).await))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let r = request.into_inner();
        let k = kind(r.kind)?.ok_or_else(|| Status::invalid_argument("kind: is required"))?;
        // Reads wait while a change is being written: off the async threads.
        let (current, ids) = self
            .store_call(|s| Ok((s.current()?, s.object_ids()?)))
            .await?;
        let path = k.path(&r.name);
        let object = current.topology.object(k, &r.name).ok_or_else(|| {
            Status::not_found(bounded(
                &format!("{} does not exist", visible(&path)),
                MESSAGE_BUDGET,
            ))
        })?;
        let document = object_to_pb(&r.name, object);
        Ok(Response::new(pb::GetResponse {
            revision: current.revision,
            info: Some(pb::ObjectInfo {
                kind: kind_to_pb(Some(k)).into(),
                name: r.name,
                id: ids.get(&path).copied().unwrap_or(0),
            }),
            object: Some(document),
        }))
    }

    async fn get_hosts(
        &self,
        _request: Request<pb::GetHostsRequest>,
    ) -> Result<Response<pb::GetHostsResponse>, Status> {
        let (current, registered) = self
            .store_call(|s| Ok((s.current()?, s.registered_hosts()?)))
            .await?;
        Ok(Response::new(pb::GetHostsResponse {
            revision: current.revision,
            hosts: crate::views::hosts(&current.topology, registered),
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let k = kind(request.into_inner().kind)?;
        let (current, ids) = self
            .store_call(|s| Ok((s.current()?, s.object_ids()?)))
            .await?;
        let topology = match k {
            Some(k) => current.topology.only(k),
            None => current.topology,
        };
        let mut objects = Vec::new();
        for kind in ObjectKind::ALL {
            for name in topology.names(kind) {
                objects.push(pb::ObjectInfo {
                    kind: kind_to_pb(Some(kind)).into(),
                    name: name.to_string(),
                    id: ids.get(&kind.path(name)).copied().unwrap_or(0),
                });
            }
        }
        Ok(Response::new(pb::ListResponse {
            revision: current.revision,
            topology: Some(topology_to_pb(&topology)),
            objects,
        }))
    }

    type WatchStream = super::watch::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let from = request.into_inner().from_revision;
        let stream = super::watch::watch(self.store.clone(), from)?;
        Ok(Response::new(stream))
    }

    async fn trace(
        &self,
        request: Request<pb::TraceRequest>,
    ) -> Result<Response<pb::TraceResponse>, Status> {
        let req = TraceRequest::try_from(request.into_inner()).map_err(field_status)?;
        let dp = self.dataplane()?;
        let report = tokio::task::spawn_blocking(move || dp.trace(req))
            .await
            .map_err(|e| Status::internal(format!("dataplane task failed: {e}")))?
            .map_err(|e| match e {
                TraceError::Invalid(m) => Status::invalid_argument(m),
                TraceError::Unavailable(m) => Status::unavailable(m),
            })?;
        Ok(Response::new(report.into()))
    }

    async fn list_flows(
        &self,
        request: Request<pb::ListFlowsRequest>,
    ) -> Result<Response<pb::ListFlowsResponse>, Status> {
        let r = request.into_inner();
        let page = FlowPage {
            after: (!r.page_token.is_empty()).then_some(r.page_token),
            limit: r.limit as usize,
        };
        let dp = self.dataplane()?;
        let revision = dp.running_revision();
        let listed = self.blocking(move |dp| dp.flows(page)).await?;
        Ok(Response::new(pb::ListFlowsResponse {
            revision,
            flows: listed.flows.into_iter().map(Into::into).collect(),
            next_page_token: listed.next.unwrap_or_default(),
            total: listed.total,
        }))
    }

    async fn counters(
        &self,
        _: Request<pb::CountersRequest>,
    ) -> Result<Response<pb::CountersResponse>, Status> {
        let report = self.blocking(|dp| dp.counters()).await?;
        Ok(Response::new(report.into()))
    }

    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        // Never waits for a store known to be down: status is what an
        // operator asks for during an outage.
        let mut store = self.store.health();
        let mut stored = 0;
        if store.reachable {
            match self.store_call(|s| s.current()).await {
                Ok(c) => stored = c.revision,
                Err(e) => {
                    // As the failed read left it (an outage counted).
                    store = self.store.health();
                    store.reachable = false;
                    store.error.get_or_insert_with(|| e.message().to_string());
                }
            }
        }
        let mut out = pb::HealthResponse {
            stored_revision: stored,
            store: store.store,
            store_reachable: store.reachable,
            store_down_seconds: store.down_for_secs,
            store_outages: store.outages,
            store_error: store.error.unwrap_or_default(),
            ..Default::default()
        };
        if self.dataplane.is_some() {
            let h = self.blocking(|dp| dp.health()).await?;
            out.dataplane = true;
            out.running_revision = h.running_revision;
            out.interfaces = h
                .interfaces
                .into_iter()
                .map(|(port, interface, ifindex)| pb::BoundInterface {
                    port,
                    interface,
                    ifindex,
                })
                .collect();
            out.problems = h.problems;
            out.ports = h.ports.into_iter().map(port_status_to_pb).collect();
        }
        Ok(Response::new(out))
    }
}

fn port_status_to_pb(p: vnet_model::reports::PortStatus) -> pb::PortStatus {
    use vnet_model::reports::PortState;
    let state = p.state.name().to_string();
    let (ifindex, error) = match p.state {
        PortState::Bound { ifindex } => (ifindex, String::new()),
        PortState::Waiting => (0, String::new()),
        PortState::Failed(why) => (0, why),
    };
    pb::PortStatus {
        port: p.port,
        interface: p.interface,
        state,
        ifindex,
        error,
    }
}
