//! A client of the API that speaks model types (used by vnetctl and the
//! tests): requests are built from the model, answers converted back, so
//! no caller sees a protobuf type.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

use super::documents::{
    kind_from_pb, kind_to_pb, object_from_pb, object_to_pb, topology_from_pb, topology_to_pb,
};
use super::pb;
use super::pb::vnet_client::VnetClient;
use super::views::change_from_pb;
use vnet_model::diff::Change;
use vnet_model::model::Topology;
use vnet_model::objects::{Object, ObjectKind};
use vnet_model::reports::{CounterReport, FlowInfo, TraceReport, TraceRequest};
use vnet_store::{Delta, Event};

/// Where the server is.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    /// `http://host:port` with its bearer token.
    Tcp {
        url: String,
        token: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach vnetd at {target}: {message}")]
    Connect { target: String, message: String },
    /// The server refused or failed the call; the message is the server's.
    #[error("{}", status_text(.0))]
    Status(#[from] Status),
    #[error("the server sent {0}")]
    Malformed(String),
}

fn status_text(s: &Status) -> String {
    use tonic::Code;
    let what = match s.code() {
        Code::InvalidArgument => "rejected",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::FailedPrecondition => "conflict",
        Code::Unauthenticated => "not authenticated",
        Code::PermissionDenied => "permission denied",
        Code::Unavailable => "unavailable",
        Code::OutOfRange => "out of range",
        _ => "failed",
    };
    // The server escapes what it quotes; a server that does not must not
    // drive the operator's terminal either.
    format!("{what}: {}", vnet_model::visible_lines(s.message()))
}

impl ClientError {
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }

    /// How many validation errors the server found in all, when it says
    /// (its message lists only as many as fit in a gRPC trailer).
    pub fn validation_error_count(&self) -> Option<usize> {
        match self {
            ClientError::Status(s) => s
                .metadata()
                .get(super::server::ERROR_COUNT_KEY)?
                .to_str()
                .ok()?
                .parse()
                .ok(),
            _ => None,
        }
    }
}

/// Adds the bearer token, when there is one, to every call.
#[derive(Clone)]
pub struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            request.metadata_mut().insert("authorization", t.clone());
        }
        Ok(request)
    }
}

pub struct Client {
    inner: VnetClient<InterceptedService<Channel, Token>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub revision: u64,
    pub changes: Vec<Change>,
    pub dry_run: bool,
    pub running: bool,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub revision: u64,
    pub topology: Topology,
    /// (kind, name, id)
    pub objects: Vec<(ObjectKind, String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub stored_revision: u64,
    pub running_revision: u64,
    pub dataplane: bool,
    /// (port, interface, ifindex)
    pub interfaces: Vec<(String, String, u32)>,
    pub problems: Vec<String>,
    /// Every exterior port and its binding.
    pub ports: Vec<vnet_model::reports::PortStatus>,
    /// Whether the store answers (`stored_revision` is 0 when not).
    pub store: vnet_model::reports::StoreHealth,
}

/// A host, as `vnetctl get hosts` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    pub name: String,
    pub tunnel_address: String,
    /// Its registration is live (its lease not expired).
    pub alive: bool,
    /// It registered itself at least once (else only the topology names it).
    pub registered: bool,
    /// The ports (`device/port`) placed on it.
    pub ports: Vec<String>,
}

/// A stream of stored revisions, each as the change it made.
pub struct Watch(tonic::Streaming<pb::WatchEvent>);

impl Watch {
    /// The next revision; `None` when the server ends the stream.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        match self.0.message().await {
            Ok(Some(e)) => Some(event(e)),
            Ok(None) => None,
            Err(s) => Some(Err(s.into())),
        }
    }
}

/// A revision as the store has it: its changes and the objects that make
/// them (the whole topology in the first event of a watch from 0).
fn event(e: pb::WatchEvent) -> Result<Event, ClientError> {
    Ok(Event {
        revision: e.revision,
        changes: e.changes.into_iter().map(change_from_pb).collect(),
        delta: std::sync::Arc::new(Delta {
            changed: topology(e.changed)?,
            removed: e.removed,
        }),
    })
}

fn topology(t: Option<pb::Document>) -> Result<Topology, ClientError> {
    topology_from_pb("topology", t)
        .map_err(|e| ClientError::Malformed(format!("a topology it cannot be read back: {e}")))
}

fn outcome(r: pb::ApplyResponse) -> ApplyOutcome {
    ApplyOutcome {
        revision: r.revision,
        changes: r.changes.into_iter().map(change_from_pb).collect(),
        dry_run: r.dry_run,
        running: r.running,
        warnings: r.warnings,
    }
}

impl Client {
    pub async fn connect(target: &Target) -> Result<Client, ClientError> {
        let (channel, token) = match target {
            Target::Unix(path) => {
                let path = path.clone();
                let shown = path.display().to_string();
                // The URI is required by the API but unused: the connector
                // always opens the socket.
                let channel = Endpoint::from_static("http://vnetd.sock")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(&path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
                    .map_err(|e| ClientError::Connect {
                        target: shown.clone(),
                        message: source_text(&e),
                    })?;
                (channel, None)
            }
            Target::Tcp { url, token } => {
                let connect = |message: String| ClientError::Connect {
                    target: url.clone(),
                    message,
                };
                let channel = Endpoint::from_shared(url.clone())
                    .map_err(|e| connect(e.to_string()))?
                    .connect()
                    .await
                    .map_err(|e| connect(source_text(&e)))?;
                let value = format!("Bearer {token}")
                    .parse()
                    .map_err(|_| connect("the token is not printable ASCII".into()))?;
                (channel, Some(value))
            }
        };
        Ok(Client {
            inner: VnetClient::with_interceptor(channel, Token(token)),
        })
    }

    pub async fn apply(
        &mut self,
        topology: &Topology,
        dry_run: bool,
        expected_revision: Option<u64>,
    ) -> Result<ApplyOutcome, ClientError> {
        let r = self
            .inner
            .apply(pb::ApplyRequest {
                topology: Some(topology_to_pb(topology)),
                dry_run,
                expected_revision,
            })
            .await?;
        Ok(outcome(r.into_inner()))
    }

    pub async fn create(
        &mut self,
        name: &str,
        object: &Object,
    ) -> Result<ApplyOutcome, ClientError> {
        let r = self
            .inner
            .create(pb::ObjectRequest {
                object: Some(object_to_pb(name, object.clone())),
            })
            .await?;
        Ok(outcome(r.into_inner()))
    }

    pub async fn update(
        &mut self,
        name: &str,
        object: &Object,
    ) -> Result<ApplyOutcome, ClientError> {
        let r = self
            .inner
            .update(pb::ObjectRequest {
                object: Some(object_to_pb(name, object.clone())),
            })
            .await?;
        Ok(outcome(r.into_inner()))
    }

    pub async fn delete(
        &mut self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<ApplyOutcome, ClientError> {
        let r = self
            .inner
            .delete(pb::DeleteRequest {
                kind: kind_to_pb(Some(kind)).into(),
                name: name.into(),
            })
            .await?;
        Ok(outcome(r.into_inner()))
    }

    /// One object: (revision, id, object).
    pub async fn get(
        &mut self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<(u64, u64, Object), ClientError> {
        let r = self
            .inner
            .get(pb::GetRequest {
                kind: kind_to_pb(Some(kind)).into(),
                name: name.into(),
            })
            .await?
            .into_inner();
        let (_, object) = object_from_pb("object", r.object)
            .map_err(|e| ClientError::Malformed(e.to_string()))?;
        Ok((r.revision, r.info.map(|i| i.id).unwrap_or(0), object))
    }

    /// The whole topology (`kind` None) or the objects of one kind.
    pub async fn list(&mut self, kind: Option<ObjectKind>) -> Result<Listed, ClientError> {
        let r = self
            .inner
            .list(pb::ListRequest {
                kind: kind_to_pb(kind).into(),
            })
            .await?
            .into_inner();
        let mut objects = Vec::new();
        for o in r.objects {
            if let Ok(Some(k)) = kind_from_pb(o.kind) {
                objects.push((k, o.name, o.id));
            }
        }
        Ok(Listed {
            revision: r.revision,
            topology: topology(r.topology)?,
            objects,
        })
    }

    /// The hosts, by name: (revision, hosts).
    pub async fn hosts(&mut self) -> Result<(u64, Vec<HostStatus>), ClientError> {
        let r = self
            .inner
            .get_hosts(pb::GetHostsRequest {})
            .await?
            .into_inner();
        let hosts = r
            .hosts
            .into_iter()
            .map(|h| HostStatus {
                name: h.name,
                tunnel_address: h.tunnel_address,
                alive: h.alive,
                registered: h.registered,
                ports: h.ports,
            })
            .collect();
        Ok((r.revision, hosts))
    }

    pub async fn watch(&mut self, from_revision: u64) -> Result<Watch, ClientError> {
        let stream = self
            .inner
            .watch(pb::WatchRequest { from_revision })
            .await?
            .into_inner();
        Ok(Watch(stream))
    }

    pub async fn trace(&mut self, request: &TraceRequest) -> Result<TraceReport, ClientError> {
        let r = self.inner.trace(pb::TraceRequest::from(request)).await?;
        Ok(r.into_inner().into())
    }

    /// Every installed flow, page by page, sorted by ingress port and match
    /// (the revision is the one the last page was read under).
    pub async fn flows(&mut self) -> Result<(u64, Vec<FlowInfo>), ClientError> {
        self.flows_paged(0).await
    }

    /// [`Client::flows`], asking for `page_size` flows per request (0: as
    /// many as the server sends at once).
    pub async fn flows_paged(
        &mut self,
        page_size: u32,
    ) -> Result<(u64, Vec<FlowInfo>), ClientError> {
        let mut flows: Vec<FlowInfo> = Vec::new();
        let mut token = String::new();
        loop {
            let r = self
                .inner
                .list_flows(pb::ListFlowsRequest {
                    limit: page_size,
                    page_token: token,
                })
                .await?
                .into_inner();
            flows.extend(r.flows.into_iter().map(FlowInfo::from));
            if r.next_page_token.is_empty() {
                flows.sort_by(|a, b| (&a.in_port, &a.matches).cmp(&(&b.in_port, &b.matches)));
                return Ok((r.revision, flows));
            }
            token = r.next_page_token;
        }
    }

    pub async fn counters(&mut self) -> Result<CounterReport, ClientError> {
        let r = self.inner.counters(pb::CountersRequest {}).await?;
        Ok(r.into_inner().into())
    }

    pub async fn health(&mut self) -> Result<Health, ClientError> {
        let r = self.inner.health(pb::HealthRequest {}).await?.into_inner();
        Ok(Health {
            stored_revision: r.stored_revision,
            running_revision: r.running_revision,
            dataplane: r.dataplane,
            interfaces: r
                .interfaces
                .into_iter()
                .map(|i| (i.port, i.interface, i.ifindex))
                .collect(),
            problems: r.problems,
            ports: r.ports.into_iter().map(port_status_from_pb).collect(),
            store: vnet_model::reports::StoreHealth {
                store: r.store,
                reachable: r.store_reachable,
                down_for_secs: r.store_down_seconds,
                outages: r.store_outages,
                error: (!r.store_error.is_empty()).then_some(r.store_error),
            },
        })
    }
}

fn port_status_from_pb(p: pb::PortStatus) -> vnet_model::reports::PortStatus {
    use vnet_model::reports::PortState;
    let state = match p.state.as_str() {
        "bound" => PortState::Bound { ifindex: p.ifindex },
        "waiting" => PortState::Waiting,
        // A state this client does not know is shown as a failure, with
        // what the server said.
        "failed" => PortState::Failed(p.error),
        other => PortState::Failed(format!("{other}: {}", p.error)),
    };
    vnet_model::reports::PortStatus {
        port: p.port,
        interface: p.interface,
        state,
    }
}

/// The innermost cause: tonic's own message ("transport error") hides it.
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
