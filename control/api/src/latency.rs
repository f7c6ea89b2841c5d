//! How long the API's calls take, by method, as a Prometheus histogram
//! (`vnet_api_request_duration_seconds`, served by vnetd's `--metrics`).
//! A tower wrapper around the gRPC service times each call from request to
//! response (for Watch: until the stream is set up).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec};
use tonic::codegen::http;
use tonic::server::NamedService;

/// The methods of `vnet.v1.Vnet`: the only label values (a client chooses
/// the path it sends; an unknown one is counted as `other`, so it cannot
/// grow the label set).
const METHODS: &[&str] = &[
    "Apply",
    "Create",
    "Update",
    "Delete",
    "Get",
    "List",
    "Watch",
    "Trace",
    "ListFlows",
    "Counters",
    "Health",
];

/// The histogram vnetd registers with its metrics (whose registry adds
/// the `vnet_` prefix) and the API observes.
pub fn request_latency() -> prometheus::Result<HistogramVec> {
    HistogramVec::new(
        HistogramOpts::new(
            "api_request_duration_seconds",
            "Time from an API request to its response, by gRPC method (Watch: until \
             the stream is set up; Apply: until the dataplane runs the revision).",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        &["method"],
    )
}

/// `inner`, with each call's duration observed in `latency`.
#[derive(Clone)]
pub struct Timed<S> {
    pub inner: S,
    pub latency: HistogramVec,
}

impl<S: NamedService> NamedService for Timed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Timed<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let name = request.uri().path().rsplit('/').next().unwrap_or_default();
        let method = METHODS
            .iter()
            .find(|m| **m == name)
            .copied()
            .unwrap_or("other");
        let start = Instant::now();
        let call = self.inner.call(request);
        let histogram = self.latency.with_label_values(&[method]);
        Box::pin(async move {
            let response = call.await;
            histogram.observe(start.elapsed().as_secs_f64());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Service, ServiceExt};

    #[tokio::test]
    async fn calls_are_timed_by_method_and_unknown_paths_share_one_label() {
        let latency = request_latency().unwrap();
        let echo = tower::service_fn(|r: http::Request<()>| async move {
            Ok::<_, Infallible>(r.uri().path().to_string())
        });
        let mut timed = Timed {
            inner: echo,
            latency: latency.clone(),
        };
        for path in [
            "/vnet.v1.Vnet/Apply",
            "/vnet.v1.Vnet/Apply",
            "/x/../Evil%1b",
            "/y/z",
        ] {
            let request = http::Request::builder().uri(path).body(()).unwrap();
            let answer = timed.ready().await.unwrap().call(request).await.unwrap();
            assert_eq!(answer, path);
        }
        assert_eq!(latency.with_label_values(&["Apply"]).get_sample_count(), 2);
        assert_eq!(latency.with_label_values(&["other"]).get_sample_count(), 2);
        let families = {
            let r = prometheus::Registry::new();
            r.register(Box::new(latency.clone())).unwrap();
            r.gather()
        };
        let labels: Vec<String> = families[0]
            .get_metric()
            .iter()
            .map(|m| m.get_label()[0].value().to_string())
            .collect();
        assert_eq!(labels, ["Apply", "other"]);
    }
}
