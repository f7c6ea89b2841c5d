//! Where the API listens: a Unix socket only root can use (always), and a
//! TCP address (only when configured, and then only with a bearer token).

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tonic::{Request, Status};

use super::pb::vnet_server::VnetServer;
use super::server::VnetService;
use super::FILE_DESCRIPTOR_SET;
use vnet_model::reports::Dataplane;
use vnet_store::Store;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub socket: PathBuf,
    /// TCP address; needs `token_file`.
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API socket {path}: {what}: {error}")]
    Socket {
        path: PathBuf,
        what: &'static str,
        #[source]
        error: std::io::Error,
    },
    #[error("API socket {0} is in use by a running vnetd (stop it, or choose another --socket)")]
    InUse(PathBuf),
    #[error(
        "--socket {0} exists and is not a socket; refusing to replace it (choose another path)"
    )]
    NotASocket(PathBuf),
    #[error("--listen {0} needs --token-file: TCP clients must present a bearer token")]
    NoToken(SocketAddr),
    #[error("token file {path}: {message}")]
    Token { path: PathBuf, message: String },
    #[error("API on {addr}: {error}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        error: std::io::Error,
    },
    #[error("API server: {0}")]
    Serve(String),
}

/// Sockets bound and ready: bound before the server runs, so that whoever
/// starts vnetd can use the API as soon as vnetd says it runs.
pub struct Listeners {
    unix: std::os::unix::net::UnixListener,
    socket: PathBuf,
    tcp: Option<(std::net::TcpListener, SocketAddr, String)>,
}

impl Listeners {
    pub fn bind(cfg: &ApiConfig) -> Result<Listeners, ApiError> {
        let tcp = match cfg.listen {
            None => None,
            Some(addr) => {
                let path = cfg.token_file.as_ref().ok_or(ApiError::NoToken(addr))?;
                let token = read_token(path)?;
                let l = std::net::TcpListener::bind(addr)
                    .map_err(|error| ApiError::Tcp { addr, error })?;
                l.set_nonblocking(true)
                    .map_err(|error| ApiError::Tcp { addr, error })?;
                Some((l, addr, token))
            }
        };
        let unix = bind_unix(&cfg.socket)?;
        Ok(Listeners {
            unix,
            socket: cfg.socket.clone(),
            tcp,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn read_token(path: &Path) -> Result<String, ApiError> {
    let err = |message: String| ApiError::Token {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim().to_string();
    if token.len() < 16 {
        return Err(err(
            "the token must be at least 16 characters (use e.g. `openssl rand -hex 32`)".into(),
        ));
    }
    if !token.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(err(
            "the token must be printable ASCII without spaces".into()
        ));
    }
    Ok(token)
}

/// Binds the socket with mode 0600: bound under a temporary name, given its
/// mode, then renamed into place, so that it is never reachable with a
/// looser mode.
fn bind_unix(path: &Path) -> Result<std::os::unix::net::UnixListener, ApiError> {
    let err = |what: &'static str| {
        let path = path.to_path_buf();
        move |error| ApiError::Socket { path, what, error }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err("creating its directory"))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only a socket may be replaced: anything else at the path (a file,
        // a directory, a symlink) is someone's data, named by mistake.
        if !meta.file_type().is_socket() {
            return Err(ApiError::NotASocket(path.to_path_buf()));
        }
        // A socket nobody answers on is left over from a vnetd that died.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ApiError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err("removing a stale socket"))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(err("binding"))?;
    let done = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("setting its mode to 0600")(e));
    }
    listener
        .set_nonblocking(true)
        .map_err(err("setting it non-blocking"))?;
    Ok(listener)
}

/// Checks `authorization: Bearer <token>` in constant time.
#[derive(Clone)]
struct BearerAuth(Arc<String>);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let want = self.0.as_bytes();
        let same = given.len() == want.len()
            && given
                .bytes()
                .zip(want.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "a valid bearer token is required (authorization: Bearer <token>)",
            ))
        }
    }
}

/// Serves the API on `listeners` until `shutdown` turns true. Must run
/// inside a tokio runtime.
pub async fn serve(
    listeners: Listeners,
    store: Arc<dyn Store>,
    dataplane: Option<Arc<dyn Dataplane>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let latency = super::latency::request_latency()
        .map_err(|e| ApiError::Serve(format!("the latency histogram: {e}")))?;
    serve_timed(listeners, store, dataplane, latency, shutdown).await
}

/// [`serve`], observing each call's duration in `latency` (made by
/// [`crate::request_latency`], registered with vnetd's metrics).
pub async fn serve_timed(
    listeners: Listeners,
    store: Arc<dyn Store>,
    dataplane: Option<Arc<dyn Dataplane>>,
    latency: prometheus::HistogramVec,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let service = VnetService::new(store, dataplane);
    let vnet = |service: VnetService| super::latency::Timed {
        inner: VnetServer::new(service),
        latency: latency.clone(),
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<VnetServer<VnetService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ApiError::Serve(format!("reflection: {e}")))
    };
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let unix = tokio::net::UnixListener::from_std(listeners.unix.try_clone().map_err(|error| {
        ApiError::Socket {
            path: listeners.socket.clone(),
            what: "cloning",
            error,
        }
    })?)
    .map_err(|error| ApiError::Socket {
        path: listeners.socket.clone(),
        what: "registering with the runtime",
        error,
    })?;
    let unix_server = Server::builder()
        .add_service(health.clone())
        .add_service(reflection()?)
        .add_service(vnet(service.clone()))
        .serve_with_incoming_shutdown(UnixListenerStream::new(unix), stopped(shutdown.clone()));

    let tcp_server = match &listeners.tcp {
        None => None,
        Some((l, addr, token)) => {
            let addr = *addr;
            let l = l
                .try_clone()
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(|error| ApiError::Tcp { addr, error })?;
            tracing::info!(%addr, "API listening on TCP (bearer token required)");
            Some(
                Server::builder()
                    .layer(tonic::service::InterceptorLayer::new(BearerAuth(Arc::new(
                        token.clone(),
                    ))))
                    .add_service(health)
                    .add_service(reflection()?)
                    .add_service(vnet(service))
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(l),
                        stopped(shutdown.clone()),
                    ),
            )
        }
    };
    let tcp = async {
        match tcp_server {
            Some(s) => s.await,
            None => Ok(()),
        }
    };
    let serving = async {
        let (u, t) = tokio::join!(unix_server, tcp);
        u.and(t).map_err(|e| ApiError::Serve(e.to_string()))
    };
    // Shutdown is graceful for calls in flight, but a client that keeps
    // its connection open (a watch) must not keep vnetd from stopping.
    let deadline = async {
        stopped(shutdown).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = serving => r,
        () = deadline => Ok(()),
    }
}

/// How long open connections may delay a shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
