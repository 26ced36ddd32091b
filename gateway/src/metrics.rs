//! The data plane's Prometheus metrics: requests by host class, route class and status class
//! with their latency, upstream connect and response times, TLS handshakes, desktop tunnels,
//! certificates and ACME orders, and build information. They live in the default registry with
//! the control plane's ([`flowcase_admin::metrics`]) and pingora's, all served on `/metrics`.
//!
//! Every label comes from a fixed set decided here (route classes are path prefixes, never
//! paths), so no request can add a series.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::UNIX_EPOCH;

use flowcase_admin::metrics::{counter, counter_vec, gauge, histogram, histogram_vec};
use flowcase_certs::CertResolver;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};

use crate::routing::HostClass;

/// Request latencies: a proxied request takes under a millisecond here, a slow upstream seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

struct Http {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_connect: Histogram,
    upstream_response: Histogram,
    tls: IntCounterVec,
}

static HTTP: LazyLock<Http> = LazyLock::new(|| Http {
    requests: counter_vec(
        "flowcase_http_requests_total",
        "HTTP requests answered, by host class (public, instance, other), route class and status class.",
        &["host_class", "route_class", "status_class"],
    ),
    duration: histogram_vec(
        "flowcase_http_request_duration_seconds",
        "Time from the request's arrival to the end of the answer, by host class and route class.",
        &["host_class", "route_class"],
        LATENCY_BUCKETS,
    ),
    upstream_connect: histogram(
        "flowcase_upstream_connect_duration_seconds",
        "Time to get a connection to an upstream (instance or control plane); reused connections count as zero.",
        LATENCY_BUCKETS,
    ),
    upstream_response: histogram(
        "flowcase_upstream_response_duration_seconds",
        "Time from choosing an upstream to its response header.",
        LATENCY_BUCKETS,
    ),
    tls: counter_vec(
        "flowcase_tls_handshakes_total",
        "TLS handshakes on the HTTPS listener, by result (ok, failed).",
        &["result"],
    ),
});

/// Which part of the product a request was for, from its path prefix.
pub fn route_class(class: &HostClass, path: &str) -> &'static str {
    match class {
        HostClass::Public => {
            let prefixed = |prefix: &str| path.starts_with(prefix);
            if path == "/tunnel" {
                "tunnel"
            } else if prefixed("/api/") {
                "api"
            } else if prefixed("/static/") || prefixed("/assets/") {
                "static"
            } else if prefixed("/.well-known/") {
                "well_known"
            } else if path == "/"
                || path == "/login"
                || path == "/logout"
                || path == "/register"
                || path == "/app-auth"
                || prefixed("/auth/")
            {
                "auth"
            } else {
                "page"
            }
        }
        HostClass::Instance { .. } if path.starts_with("/__flowcase/") => "app_auth",
        HostClass::Instance { .. } => "app",
        HostClass::Other => "none",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        // The client went away before any answer was written.
        _ => "none",
    }
}

/// One answered request.
pub fn request(class: &HostClass, path: &str, status: u16, seconds: f64) {
    let http = &*HTTP;
    let route = route_class(class, path);
    http.requests
        .with_label_values(&[class.label(), route, status_class(status)])
        .inc();
    http.duration
        .with_label_values(&[class.label(), route])
        .observe(seconds);
}

pub fn upstream_connected(seconds: f64) {
    HTTP.upstream_connect.observe(seconds);
}

pub fn upstream_responded(seconds: f64) {
    HTTP.upstream_response.observe(seconds);
}

pub fn tls_handshake(ok: bool) {
    HTTP.tls
        .with_label_values(&[if ok { "ok" } else { "failed" }])
        .inc();
}

/// Desktop tunnel metrics.
struct Tunnels {
    open: IntGauge,
    opened: IntCounter,
    closed: IntCounterVec,
    bytes: IntCounterVec,
    instructions: IntCounterVec,
    handshake: Histogram,
}

static TUNNELS: LazyLock<Tunnels> = LazyLock::new(|| Tunnels {
    open: gauge("flowcase_tunnels_open", "Desktop tunnels open now."),
    opened: counter(
        "flowcase_tunnels_opened_total",
        "Desktop tunnels accepted (token valid, guacd handshake done).",
    ),
    closed: counter_vec(
        "flowcase_tunnels_closed_total",
        "Desktop tunnels closed or refused, by Guacamole status (success, client_unauthorized, session_closed, ...).",
        &["status"],
    ),
    bytes: counter_vec(
        "flowcase_tunnel_bytes_total",
        "Bytes relayed by desktop tunnels, by direction (to_client, to_guacd).",
        &["direction"],
    ),
    instructions: counter_vec(
        "flowcase_tunnel_instructions_total",
        "Guacamole instructions relayed by desktop tunnels, by direction (to_client, to_guacd).",
        &["direction"],
    ),
    handshake: histogram(
        "flowcase_guacd_handshake_seconds",
        "Time from connecting to guacd to its `ready`.",
        LATENCY_BUCKETS,
    ),
});

/// Which way tunnel traffic goes.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    ToClient,
    ToGuacd,
}

/// One direction's traffic counters, looked up once per tunnel rather than per frame.
pub struct TunnelTraffic {
    bytes: IntCounter,
    instructions: IntCounter,
}

impl TunnelTraffic {
    pub fn new(direction: Direction) -> Self {
        let label = match direction {
            Direction::ToClient => "to_client",
            Direction::ToGuacd => "to_guacd",
        };
        Self {
            bytes: TUNNELS.bytes.with_label_values(&[label]),
            instructions: TUNNELS.instructions.with_label_values(&[label]),
        }
    }

    pub fn relayed(&self, bytes: usize, instructions: u64) {
        self.bytes.inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
        self.instructions.inc_by(instructions);
    }
}

/// A tunnel passed its handshake after `handshake_seconds` with guacd; open until the guard
/// returned is dropped.
pub fn tunnel_opened(handshake_seconds: f64) -> OpenTunnel {
    TUNNELS.handshake.observe(handshake_seconds);
    TUNNELS.opened.inc();
    TUNNELS.open.inc();
    OpenTunnel
}

/// Counts one open tunnel in `flowcase_tunnels_open` while it lives.
pub struct OpenTunnel;

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        TUNNELS.open.dec();
    }
}

/// A tunnel ended, or was refused before it opened, with `status`.
pub fn tunnel_closed(status: flowcase_guac::Status) {
    TUNNELS.closed.with_label_values(&[status.name()]).inc();
}

/// Reports certificate expiry per configured name and ACME orders, read from the certificate
/// resolver at scrape time, so there is no copy to keep in step.
struct Certificates {
    resolver: Arc<CertResolver>,
    expiry: prometheus::GaugeVec,
    orders: IntCounterVec,
    renewals: IntCounter,
    /// Scrapes may overlap; each brings the vectors up to date as a whole.
    refreshing: Mutex<()>,
}

impl Collector for Certificates {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.expiry.desc();
        descs.extend(self.orders.desc());
        descs.extend(self.renewals.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self.refreshing.lock();
        // Names leave when their certificate does (an instance host forgotten, a reload).
        self.expiry.reset();
        for status in self.resolver.configured_statuses() {
            let at = status
                .not_after
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            for name in &status.names {
                self.expiry
                    .with_label_values(&[name, status.source])
                    .set(at);
            }
        }
        let counts = self.resolver.acme_orders();
        for (result, total) in [("valid", counts.valid), ("failed", counts.failed)] {
            let counter = self.orders.with_label_values(&[result]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.renewals
            .inc_by(counts.renewed.saturating_sub(self.renewals.get()));
        let mut families = self.expiry.collect();
        families.extend(self.orders.collect());
        families.extend(self.renewals.collect());
        families
    }
}

/// Registers the data plane's metrics (at zero, so dashboards see series before the first
/// event), the certificate collector and `flowcase_build_info`.
pub fn register(resolver: Arc<CertResolver>) {
    flowcase_admin::metrics::register();
    LazyLock::force(&HTTP);
    LazyLock::force(&TUNNELS);
    for result in ["ok", "failed"] {
        let _ = HTTP.tls.get_metric_with_label_values(&[result]);
    }
    for direction in ["to_client", "to_guacd"] {
        let _ = TUNNELS.bytes.get_metric_with_label_values(&[direction]);
        let _ = TUNNELS
            .instructions
            .get_metric_with_label_values(&[direction]);
    }
    for status in [
        flowcase_guac::Status::Success,
        flowcase_guac::Status::ClientUnauthorized,
        flowcase_guac::Status::SessionClosed,
        flowcase_guac::Status::UpstreamError,
    ] {
        let _ = TUNNELS
            .closed
            .get_metric_with_label_values(&[status.name()]);
    }
    let info = flowcase_admin::metrics::gauge_vec(
        "flowcase_build_info",
        "Always 1; the labels say which build runs.",
        &["version"],
    );
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let vectors = (
        prometheus::GaugeVec::new(
            prometheus::Opts::new(
                "flowcase_certificate_expiry_timestamp_seconds",
                "When the certificate served for each configured name expires (Unix time).",
            ),
            &["name", "source"],
        ),
        IntCounterVec::new(
            prometheus::Opts::new(
                "flowcase_acme_orders_total",
                "ACME certificate orders finished, by result (valid, failed).",
            ),
            &["result"],
        ),
        IntCounter::new(
            "flowcase_acme_renewals_total",
            "ACME certificates issued to replace one still being served for the same name \
             (renewals before expiry; also counted in flowcase_acme_orders_total).",
        ),
    );
    if let (Ok(expiry), Ok(orders), Ok(renewals)) = vectors {
        for result in ["valid", "failed"] {
            let _ = orders.get_metric_with_label_values(&[result]);
        }
        let certificates = Certificates {
            resolver,
            expiry,
            orders,
            renewals,
            refreshing: Mutex::new(()),
        };
        if let Err(e) = prometheus::register(Box::new(certificates)) {
            tracing::warn!(error = %e, "cannot register the certificate metrics");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_classes_are_prefixes_not_paths() {
        let public = HostClass::Public;
        assert_eq!(route_class(&public, "/api/v1/users/42"), "api");
        assert_eq!(route_class(&public, "/tunnel"), "tunnel");
        assert_eq!(route_class(&public, "/auth/oidc/x/callback"), "auth");
        assert_eq!(route_class(&public, "/dashboard"), "page");
        let instance = HostClass::Instance { slug: "abc".into() };
        assert_eq!(route_class(&instance, "/__flowcase/auth"), "app_auth");
        assert_eq!(route_class(&instance, "/anything/else"), "app");
        assert_eq!(route_class(&HostClass::Other, "/x"), "none");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(421), "4xx");
        assert_eq!(status_class(502), "5xx");
        assert_eq!(status_class(0), "none");
    }
}
