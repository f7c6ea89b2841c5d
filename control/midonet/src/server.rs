//! The HTTP server: axum on a tokio runtime of its own thread, one handler
//! for every path under `/midonet-api` (paths with and without a trailing
//! slash alike: a redirect would break midonetclient), optional token
//! authentication, media-type negotiation, and the answer's form.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use vnet_store::{Revisioned, Store, StoreError};

use crate::error::{ApiError, ApiResult};
use crate::host::HostInfo;
use crate::input::Body;
use crate::media::{negotiate, Negotiated};
use crate::routes::{self, Outcome};
use crate::view::{Reply, View};

/// Where the API lives, as on a MidoNet API server.
pub const PREFIX: &str = "/midonet-api";
/// The largest request body read (a rule or a port is well under 4 KiB).
const MAX_BODY: usize = 1 << 20;
/// How long a write waits for the dataplane to run its revision, as gRPC
/// Apply does.
const APPLY_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("--midonet-api {0}: serving beyond loopback needs --midonet-api-token-file (the API can change every network of this host)")]
    NeedsToken(SocketAddr),
    #[error("--midonet-api {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("--midonet-api-token-file {path}: {message}")]
    Token { path: String, message: String },
    #[error("starting the MidoNet API thread: {0}")]
    Thread(std::io::Error),
}

/// Binds the listener (before vnetd changes the host, so a taken port
/// stops it early). An address beyond loopback needs a token.
pub fn bind(addr: SocketAddr, has_token: bool) -> Result<std::net::TcpListener, ServerError> {
    if !addr.ip().is_loopback() && !has_token {
        return Err(ServerError::NeedsToken(addr));
    }
    let l = std::net::TcpListener::bind(addr).map_err(|error| ServerError::Bind { addr, error })?;
    l.set_nonblocking(true)
        .map_err(|error| ServerError::Bind { addr, error })?;
    Ok(l)
}

/// The token of `--midonet-api-token-file`: its content without the final
/// newline, at least 16 printable characters (as `--token-file`).
pub fn read_token(path: &Path) -> Result<String, ServerError> {
    let err = |message: String| ServerError::Token {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err(
            "the token must be at least 16 printable ASCII characters, without spaces".into(),
        ));
    }
    Ok(token.to_string())
}

pub struct Ctx {
    pub store: Arc<dyn Store>,
    /// The revision the dataplane runs, when there is one.
    pub running: Option<Arc<AtomicU64>>,
    pub token: Option<String>,
    pub host: HostInfo,
}

impl Ctx {
    async fn read(&self) -> ApiResult<Revisioned> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.current())
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("store task: {e}"),
                )
            })?
            .map_err(ApiError::from)
    }

    /// Runs one write as a store transaction, then waits (a while) for the
    /// dataplane to run it.
    async fn write(&self, method: Method, segs: Vec<String>, body: Body) -> ApiResult<Outcome> {
        let store = self.store.clone();
        let host = self.host.clone();
        let (outcome, revision) = tokio::task::spawn_blocking(move || {
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            let mut outcome = None;
            let mut failed = None;
            let applied = store.transact(None, &mut |t| {
                match routes::write(t, &method, &segs, &body, &host) {
                    Ok(o) => {
                        outcome = Some(o);
                        Ok(())
                    }
                    Err(e) => {
                        failed = Some(e);
                        // Aborts the transaction; the real error is `failed`.
                        Err(StoreError::NotFound {
                            path: String::new(),
                        })
                    }
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            let applied = applied?;
            let outcome = outcome.ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the store finished the transaction without running its change",
                )
            })?;
            Ok((outcome, applied.revision))
        })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("store task: {e}"),
            )
        })??;
        if let Some(running) = &self.running {
            let deadline = Instant::now() + APPLY_WAIT;
            while running.load(Ordering::Acquire) < revision && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if running.load(Ordering::Acquire) < revision {
                tracing::warn!(
                    revision,
                    "MidoNet API: the dataplane did not run revision {revision} within 5 s"
                );
            }
        }
        Ok(outcome)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /login`: Basic credentials whose password is the token get it back
/// as MidoNet's session cookie (the user name is not checked: vnet has no
/// users). Without a token configured any credentials pass.
fn login(ctx: &Ctx, headers: &HeaderMap) -> ApiResult<Response> {
    let token = match &ctx.token {
        None => "vnet-no-authentication".to_string(),
        Some(token) => {
            let password = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.split_once(':').map(|(_, p)| p.to_string()));
            match password {
                Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => token.clone(),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "log in with HTTP Basic authentication whose password is the token of \
                         --midonet-api-token-file",
                    ))
                }
            }
        }
    };
    let mut r = StatusCode::OK.into_response();
    let cookie = format!("sessionId={token}; Path=/; Expires=Fri, 31 Dec 9999 23:59:59 GMT");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

fn authorized(ctx: &Ctx, headers: &HeaderMap) -> bool {
    let Some(token) = &ctx.token else {
        return true;
    };
    headers
        .get("x-auth-token")
        .map(|v| constant_time_eq(v.as_bytes(), token.as_bytes()))
        .unwrap_or(false)
}

fn error_response(e: &ApiError, neg: Option<&Negotiated>) -> Response {
    let media = match neg {
        Some(n) if n.legacy() => "application/vnd.com.midokura.midolman.mgmt.Error+json",
        _ => "application/vnd.org.midonet.Error-v1+json",
    };
    let mut r = (e.status, e.body().to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    r
}

fn reply_response(reply: Reply, neg: &Negotiated, base: &str) -> Response {
    let has_body = reply.body.is_some();
    let mut r = match reply.body {
        Some(b) => (reply.status, b.to_string()).into_response(),
        None => reply.status.into_response(),
    };
    if has_body || reply.status == StatusCode::CREATED {
        if let Ok(v) = HeaderValue::from_str(&neg.content_type(reply.media)) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
    }
    if let Some(loc) = reply.location {
        if let Ok(v) = HeaderValue::from_str(&format!("{base}{loc}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
    }
    r
}

async fn handle(State(ctx): State<Arc<Ctx>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let Some(rest) = path
        .strip_prefix(PREFIX)
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return error_response(
            &ApiError::not_found(format!(
                "{} is not under {PREFIX}: the MidoNet API is http://HOST:PORT{PREFIX}",
                path.escape_debug()
            )),
            None,
        );
    };
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let headers = &parts.headers;
    let text = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    let neg = match negotiate(text(header::ACCEPT), text(header::CONTENT_TYPE)) {
        Ok(n) => n,
        Err(m) => return error_response(&ApiError::new(StatusCode::NOT_ACCEPTABLE, m), None),
    };
    if segs.len() == 1 && segs[0] == "login" {
        return match login(&ctx, headers) {
            Ok(r) => r,
            Err(e) => error_response(&e, Some(&neg)),
        };
    }
    if !authorized(&ctx, headers) {
        return error_response(
            &ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this API needs a token: send X-Auth-Token (POST /midonet-api/login hands it out)",
            ),
            Some(&neg),
        );
    }
    // Absolute URIs on the address the client used.
    let authority = text(header::HOST).unwrap_or("localhost").to_string();
    let base = format!("http://{authority}{PREFIX}");
    let result = async {
        let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {MAX_BODY} bytes"),
            )
        })?;
        let segs_ref: Vec<&str> = segs.iter().map(String::as_str).collect();
        match parts.method {
            Method::GET | Method::HEAD => {
                let cur = ctx.read().await?;
                let v = View::new(&cur.topology, &base, &ctx.host, neg.legacy());
                routes::read(&v, &segs_ref)
            }
            Method::POST | Method::PUT | Method::DELETE => {
                let body = Body::parse(&bytes)?;
                match ctx.write(parts.method.clone(), segs.clone(), body).await? {
                    Outcome::Created(media, path) => Ok(Reply::created(media, path)),
                    Outcome::Done if parts.method == Method::POST => Ok(Reply {
                        status: StatusCode::NO_CONTENT,
                        ..Reply::no_content()
                    }),
                    Outcome::Done => Ok(Reply::no_content()),
                }
            }
            ref m => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{m} is not a method of the MidoNet API"),
            )),
        }
    }
    .await;
    match result {
        Ok(reply) => reply_response(reply, &neg, &base),
        Err(e) => {
            tracing::debug!(
                status = e.status.as_u16(),
                path,
                "MidoNet API: {}",
                e.message
            );
            error_response(&e, Some(&neg))
        }
    }
}

/// The router: every path goes to [`handle`].
pub fn app(ctx: Arc<Ctx>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(ctx)
}

/// A running server; [`Server::stop`] ends it.
pub struct Server {
    addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves on `listener` (from [`bind`]) on a thread of its own.
    pub fn start(listener: std::net::TcpListener, ctx: Ctx) -> Result<Server, ServerError> {
        let addr = listener.local_addr().map_err(ServerError::Thread)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServerError::Thread)?;
        let (shutdown, mut stop) = tokio::sync::watch::channel(false);
        let ctx = Arc::new(ctx);
        let thread = std::thread::Builder::new()
            .name("vnetd-midonet".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("MidoNet API: {e}");
                            return;
                        }
                    };
                    let mut stop2 = stop.clone();
                    let served = axum::serve(crate::conn::Bounded::new(listener), app(ctx))
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        });
                    // Connections a client keeps open get 2 s to finish,
                    // then go with the runtime: they cannot hold vnetd up.
                    tokio::select! {
                        served = served => if let Err(e) = served {
                            tracing::error!("MidoNet API stopped: {e}");
                        },
                        _ = async move {
                            let _ = stop2.wait_for(|s| *s).await;
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        } => {}
                    }
                });
            })
            .map_err(ServerError::Thread)?;
        Ok(Server {
            addr,
            shutdown,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
