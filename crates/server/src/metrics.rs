//! Prometheus metrics of the server, served at `/metrics` in the text exposition format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RpcLabels {
    pub(crate) method: String,
    pub(crate) code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabel {
    pub(crate) method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SvidKind {
    pub(crate) kind: &'static str,
}

/// Every metric the server exports. Cloning shares the underlying values.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) rpc_requests: Family<RpcLabels, Counter>,
    pub(crate) rpc_seconds: Family<MethodLabel, Histogram>,
    pub(crate) svids_signed: Family<SvidKind, Counter>,
    pub(crate) entries: Gauge,
    pub(crate) agents: Gauge,
    pub(crate) ca_expires_at: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them in a new registry.
    pub(crate) fn new() -> (Self, Registry) {
        let metrics = Self {
            rpc_requests: Family::default(),
            rpc_seconds: Family::new_with_constructor(|| {
                // 50 µs to ~6.5 s.
                Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
            }),
            svids_signed: Family::default(),
            entries: Gauge::default(),
            agents: Gauge::default(),
            ca_expires_at: Gauge::default(),
        };
        let mut registry = Registry::with_prefix("lanyard_server");
        registry.register(
            "rpc_requests",
            "gRPC requests handled, by method and status code",
            metrics.rpc_requests.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "Time to handle a unary gRPC request",
            metrics.rpc_seconds.clone(),
        );
        registry.register(
            "svids_signed",
            "SVIDs signed by this server's CA, by kind (x509, jwt)",
            metrics.svids_signed.clone(),
        );
        registry.register(
            "entries",
            "Registration entries in the datastore",
            metrics.entries.clone(),
        );
        registry.register(
            "agents",
            "Attested agents in the datastore",
            metrics.agents.clone(),
        );
        registry.register(
            "ca_expires_at_seconds",
            "Unix time at which the active X.509 CA certificate expires",
            metrics.ca_expires_at.clone(),
        );
        (metrics, registry)
    }

    /// Counts one SVID signed; `kind` is `x509` or `jwt`.
    pub(crate) fn signed(&self, kind: &'static str) {
        self.svids_signed.get_or_create(&SvidKind { kind }).inc();
    }

    /// Records one finished RPC.
    pub(crate) fn observe_rpc(&self, method: &str, code: tonic::Code, seconds: f64) {
        self.rpc_requests
            .get_or_create(&RpcLabels {
                method: method.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
        self.rpc_seconds
            .get_or_create(&MethodLabel {
                method: method.to_owned(),
            })
            .observe(seconds);
    }
}
