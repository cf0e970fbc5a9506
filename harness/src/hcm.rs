//! What Envoy's HTTP connection manager, router and HTTP/1 codec do around the
//! filter chain: the headers a filter sees, what the upstream receives, and what
//! the client receives.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::fields::{Fields, Kind, SharedValues};
use crate::state::LocalReplyRequest;
use crate::xds::{Bootstrap, HostMetadata, Metadata, Node};
use crate::{Error, Result, Trailers};

/// Client request headers Envoy 1.40 does not pass on with this emulated
/// configuration (measured): hop-by-hop headers (`transfer-encoding` too: the
/// HTTP/1 codec reads the chunks, the router's codec frames the body again),
/// and `x-envoy-*` control headers and `x-forwarded-client-cert` from an
/// untrusted client. (`te` keeps only its `trailers` token: [`sanitized_te`].)
fn removed_from_requests(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "transfer-encoding"
            | "keep-alive"
            | "proxy-connection"
            | "upgrade"
            | "x-forwarded-client-cert"
            | "x-envoy-internal"
            | "x-envoy-force-trace"
            | "x-envoy-ip-tags"
            | "x-envoy-original-url"
            | "x-envoy-retry-on"
            | "x-envoy-retry-grpc-on"
            | "x-envoy-retriable-header-names"
            | "x-envoy-retriable-status-codes"
            | "x-envoy-hedge-on-per-try-timeout"
            | "x-envoy-upstream-alt-stat-name"
            | "x-envoy-upstream-rq-timeout-alt-response"
            | "x-envoy-max-retries"
            | "x-envoy-upstream-rq-timeout-ms"
            | "x-envoy-upstream-rq-per-try-timeout-ms"
            | "x-envoy-expected-rq-timeout-ms"
            | "x-envoy-upstream-stream-duration-ms"
    )
}

/// The router's `x-envoy-expected-rq-timeout-ms`.
const EXPECTED_RQ_TIMEOUT_MS: HeaderName = HeaderName::from_static(EXPECTED_RQ_TIMEOUT_MS_NAME);
/// Its name (also spelled out where names are matched as bytes).
const EXPECTED_RQ_TIMEOUT_MS_NAME: &str = "x-envoy-expected-rq-timeout-ms";

/// Entries reserved in a stream's header maps for what filters add, so that a
/// few additions do not grow the map.
const ROOM_FOR_FILTERS: usize = 4;

/// How many header names an [`HttpCache`] keeps.
const MAX_CACHED_NAMES: usize = 128;

/// What turning header maps into `http` ones keeps between streams: the
/// header names seen, as [`HeaderName`]s, so that a name seen before costs
/// neither a parse nor an allocation (a clone of a cached name shares its
/// bytes), the router's last timeout header value, the last `:path` as a URI,
/// and the last upstream request's and client response's header maps. Keeps
/// the first [`MAX_CACHED_NAMES`] names seen; later ones are parsed each time.
///
/// A stream's maps usually have the names of the stream before, in the same
/// order: a map is then built as a clone of the last one, with the values
/// that differ replaced, which costs less than appending every header again
/// (each append hashes its name and probes the table) and validates only
/// the values that changed.
#[derive(Default)]
pub(crate) struct HttpCache {
    names: Vec<(Box<[u8]>, HeaderName)>,
    /// `x-envoy-expected-rq-timeout-ms`'s value, with the milliseconds it says.
    expected_timeout: Option<(u64, HeaderValue)>,
    /// The last `:path` and the URI it made.
    uri: Option<(Box<[u8]>, http::Uri)>,
    /// The last upstream request's headers, if no name repeated.
    request: Option<HeaderMap>,
    /// The last client response's headers, if no name repeated.
    response: Option<HeaderMap>,
    /// The values of a map being built that differ from the last map's, by
    /// position (kept for its room).
    changed: Vec<(usize, HeaderValue)>,
}

impl std::fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCache")
            .field("names", &self.names.len())
            .finish_non_exhaustive()
    }
}

/// Where the value of a header being turned into an `http` one comes from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The entry at this index of the stream's map, with its value.
    Field(usize, &'a [u8]),
    /// A value the connection manager adds.
    Fixed(&'a HeaderValue),
}

impl Source<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Source::Field(_, value) => value,
            Source::Fixed(value) => value.as_bytes(),
        }
    }

    /// The value as an `http` one in a copy of its own, or the error
    /// [`shared_value`] gives: one allocation, where sharing the map's
    /// copy costs two (the copy, and the count shared by its slices).
    fn copied(self, name: &[u8], direction: &'static str) -> Result<HeaderValue> {
        match self {
            Source::Field(_, value) => {
                HeaderValue::from_bytes(value).map_err(|e| Error::InvalidHeader {
                    name: String::from_utf8_lossy(name).into_owned(),
                    direction,
                    message: e.to_string(),
                })
            }
            Source::Fixed(value) => Ok(value.clone()),
        }
    }

    /// The value as an `http` one, or the error [`shared_value`] gives.
    fn value(
        self,
        values: &mut SharedValues<'_>,
        name: &[u8],
        direction: &'static str,
    ) -> Result<HeaderValue> {
        match self {
            Source::Field(index, _) => shared_value(values.value(index), name, direction),
            Source::Fixed(value) => Ok(value.clone()),
        }
    }
}

/// Which of the [`HttpCache`]'s last maps a map is built from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MapKind {
    UpstreamRequest,
    ClientResponse,
}

impl HttpCache {
    /// `name` as a [`HeaderName`], or the error [`header_name`] gives.
    fn name(&mut self, name: &[u8], direction: &'static str) -> Result<HeaderName> {
        if let Some((_, cached)) = self.names.iter().find(|(n, _)| **n == *name) {
            return Ok(cached.clone());
        }
        let parsed = header_name(name, direction)?;
        if self.names.len() < MAX_CACHED_NAMES {
            self.names.push((name.into(), parsed.clone()));
        }
        Ok(parsed)
    }

    /// `ms` as a header value.
    fn expected_timeout(&mut self, ms: u64) -> HeaderValue {
        match &self.expected_timeout {
            Some((cached, value)) if *cached == ms => value.clone(),
            _ => {
                let value = HeaderValue::from(ms);
                self.expected_timeout = Some((ms, value.clone()));
                value
            }
        }
    }

    /// `path` as the request's URI.
    fn uri(&mut self, path: &[u8]) -> Result<http::Uri> {
        if let Some((cached, uri)) = &self.uri
            && **cached == *path
        {
            return Ok(uri.clone());
        }
        let uri = http::Uri::from_maybe_shared(Bytes::copy_from_slice(path))
            .map_err(|e| Error::InvalidRequest(format!(":path: {e}")))?;
        self.uri = Some((path.into(), uri.clone()));
        Ok(uri)
    }

    fn last_map(&mut self, kind: MapKind) -> &mut Option<HeaderMap> {
        match kind {
            MapKind::UpstreamRequest => &mut self.request,
            MapKind::ClientResponse => &mut self.response,
        }
    }

    /// The map that appending `headers` (lower-case names, about `capacity`
    /// of them) in order to an empty `HeaderMap` makes; the first invalid
    /// name or value, in that order, is an error.
    fn header_map<'a>(
        &mut self,
        kind: MapKind,
        headers: impl Iterator<Item = (&'a [u8], Source<'a>)> + Clone,
        capacity: usize,
        values: &mut SharedValues<'_>,
        direction: &'static str,
    ) -> Result<HeaderMap> {
        if let Some(map) = self.reuse_last(kind, headers.clone(), values, direction)? {
            return Ok(map);
        }
        let mut map = HeaderMap::with_capacity(capacity);
        for (name, source) in headers {
            let key = self.name(name, direction)?;
            map.append(key, source.value(values, name, direction)?);
        }
        // With a repeated name, the map's order is not the order of appends.
        *self.last_map(kind) = (map.len() == map.keys_len()).then(|| map.clone());
        Ok(map)
    }

    /// [`HttpCache::header_map`] as a clone of the last map of `kind`, if
    /// that map has exactly these names in this order; its values that
    /// differ are replaced (in the last map too, for the next stream).
    // Out of line: inlined into its two callers, it cost each more than the
    // call does (instruction counts under callgrind).
    #[inline(never)]
    fn reuse_last<'a>(
        &mut self,
        kind: MapKind,
        mut headers: impl Iterator<Item = (&'a [u8], Source<'a>)>,
        values: &mut SharedValues<'_>,
        direction: &'static str,
    ) -> Result<Option<HeaderMap>> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.clear();
        let Some(last) = self.last_map(kind) else {
            self.changed = changed;
            return Ok(None);
        };
        let mut same = true;
        let mut entries = last.iter().enumerate();
        for (name, source) in headers.by_ref() {
            let Some((i, (last_name, last_value))) = entries.next() else {
                same = false;
                break;
            };
            if last_name.as_str().as_bytes() != name {
                same = false;
                break;
            }
            if last_value.as_bytes() != source.bytes() {
                // Usually one value changes (a request id, the date).
                let value = if changed.is_empty() {
                    source.copied(name, direction)
                } else {
                    source.value(values, name, direction)
                };
                match value {
                    Ok(value) => changed.push((i, value)),
                    Err(e) => {
                        self.changed = changed;
                        return Err(e);
                    }
                }
            }
        }
        if !same || entries.next().is_some() {
            self.changed = changed;
            return Ok(None);
        }
        let mut map = last.clone();
        if !changed.is_empty() {
            let mut pending = changed.drain(..).peekable();
            for ((i, value), last_value) in map.values_mut().enumerate().zip(last.values_mut()) {
                if let Some((_, new)) = pending.next_if(|(at, _)| *at == i) {
                    last_value.clone_from(&new);
                    *value = new;
                }
            }
        }
        self.changed = changed;
        Ok(Some(map))
    }
}

/// Settings of the emulated `HttpConnectionManager` and router. The defaults are
/// Envoy's; set them to match the Envoy config a test mirrors.
///
/// # Request targets
///
/// A request's URI is the target its HTTP/1 request line carries, and the
/// connection manager answers as Envoy 1.40 does (measured,
/// `tests/conformance/path-not-absolute*.yaml`), whatever the path
/// normalization settings, before any filter exists (no filter sees the
/// request, none logs it):
/// - origin form (`/x?q=1`): the request's `:path`;
/// - absolute form (`http://host/x`): `:path` `/x`, `:authority` `host` (not
///   the `host` header), `:scheme` `http` or `https`; another scheme is
///   refused like an unreadable target;
/// - asterisk form, built with `uri("*")`: `OPTIONS *` is answered `404`
///   with an empty body (the connection stays open unless the request's
///   body was still coming; a gRPC request gets `200` with `grpc-status`
///   12); with any other method, `400` as below;
/// - authority form (`host:port`) with a method other than `CONNECT`, and
///   an absolute form with another scheme: Envoy's HTTP/1 codec cannot read
///   it: `400`, body `Bad Request`, `connection: close`, never a gRPC reply.
///
/// The `http` crate cannot express a target like `x/y` or `*?q` (its URI
/// parser refuses them), so neither can a test.
///
/// A `CONNECT` with an authority-form target (`host:443`) is not emulated:
/// on a connection manager without `upgrade_configs` Envoy 1.40 shows the
/// filters no `:path`, and its router answers `404` `route_not_found`
/// (`NR`) with `connection: close`, while the harness forwards it with
/// `:path` `/`.
///
/// # `HEAD` requests
///
/// A `HEAD` reaches the upstream without `content-length`, and its response
/// has no body, as Envoy 1.40 frames it (measured,
/// `tests/conformance/head-requests*.yaml`): the filters' response headers
/// callback has `end_of_stream` true and no response body callback runs
/// (`response.size` is `0`); the filters see the upstream's `content-length`
/// if it sent one (an upstream answer with a whole body and no framing
/// header announces its length, as hyper does), never its
/// `transfer-encoding`. A local reply (a filter's, the router's, the
/// connection manager's) keeps the `content-length` and `content-type` of
/// its body but sends no body. A response without `content-length` reaches
/// the client with `transfer-encoding: chunked`, where a `GET` gets
/// `content-length: 0`.
///
/// ```
/// let options = http::Request::builder()
///     .method("OPTIONS")
///     .uri("*")
///     .header("host", "example.test")
///     .body(bytes::Bytes::new())
///     .expect("a valid request");
/// assert_eq!(options.uri().path(), "*");
/// // `chain.send(options, upstream)` answers 404; the upstream sees nothing.
/// let absolute = http::Request::get("https://example.test/x")
///     .body(bytes::Bytes::new())
///     .expect("a valid request");
/// assert_eq!(absolute.uri().path(), "/x");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ConnectionManager {
    generate_request_id: bool,
    server_name: String,
    suppress_envoy_headers: bool,
    route_timeout: Option<Duration>,
    route_cluster: Option<String>,
    cluster_missing: bool,
    route_name: String,
    virtual_host_name: Option<String>,
    buffer_limit: usize,
    addresses: Addresses,
    enable_trailers: bool,
    upstream_enable_trailers: bool,
    metadata: Box<RouteMetadata>,
    normalize_path: bool,
    merge_slashes: bool,
    escaped_slashes: EscapedSlashesAction,
}

/// The connection manager's `path_with_escaped_slashes_action`: what it does
/// with a request whose path (before any `?`) has `%2F`, `%2f`, `%5C` or `%5c`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashesAction {
    /// `KEEP_UNCHANGED` (and `IMPLEMENTATION_SPECIFIC_DEFAULT`, Envoy's
    /// default): the path is left as it is.
    #[default]
    KeepUnchanged,
    /// `REJECT_REQUEST`: answered `400` `path_normalization_failed` before any
    /// filter, and the connection is closed.
    RejectRequest,
    /// `UNESCAPE_AND_REDIRECT`: answered `307` with `location` the path
    /// unescaped and normalized, before any filter (a gRPC request is
    /// answered as [`EscapedSlashesAction::RejectRequest`] would).
    UnescapeAndRedirect,
    /// `UNESCAPE_AND_FORWARD`: the escapes become `/` and `\\`, then the other
    /// normalizations apply.
    UnescapeAndForward,
}

impl EscapedSlashesAction {
    /// The action a `path_with_escaped_slashes_action` value stands for: an
    /// enum name, or its number as protobuf's JSON mapping accepts it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "IMPLEMENTATION_SPECIFIC_DEFAULT" | "KEEP_UNCHANGED" | "0" | "1" => Self::KeepUnchanged,
            "REJECT_REQUEST" | "2" => Self::RejectRequest,
            "UNESCAPE_AND_REDIRECT" | "3" => Self::UnescapeAndRedirect,
            "UNESCAPE_AND_FORWARD" | "4" => Self::UnescapeAndForward,
            _ => return None,
        })
    }
}

/// Envoy's response-code details for a path the connection manager rejects
/// or redirects.
pub(crate) const PATH_NORMALIZATION_FAILED: &str = "path_normalization_failed";
/// Envoy's details when the connection manager answers `OPTIONS *`.
pub(crate) const ABSOLUTE_PATH: &str = "absolute_path";
/// Envoy's details when its HTTP/1 codec cannot read the request target.
pub(crate) const INVALID_URL: &str = "http1.invalid_url";

/// The reply to a request whose `:path` does not start with `/` (see
/// [`ConnectionManager::prepare_path`]); a codec error leaves `fields` empty,
/// as Envoy has no request headers then.
fn not_a_path(fields: &mut Fields) -> Option<LocalReplyRequest> {
    let path = fields.get(b":path")?;
    if path.starts_with(b"/") {
        return None;
    }
    if path == b"*" && fields.get(b":method") == Some(b"OPTIONS") {
        return Some(LocalReplyRequest {
            status: 404,
            details: ABSOLUTE_PATH.to_owned(),
            body: Vec::new(),
            headers: Fields::new(Kind::Plain),
            grpc_status: -1,
        });
    }
    let capacity = fields.len();
    *fields =
        std::mem::replace(fields, Fields::new(Kind::Request)).emptied(Kind::Request, capacity);
    Some(LocalReplyRequest {
        status: 400,
        details: INVALID_URL.to_owned(),
        body: b"Bad Request".to_vec(),
        headers: Fields::new(Kind::Plain),
        grpc_status: -1,
    })
}

/// What the connection manager makes of a request's path before the first
/// filter (Envoy's `maybeNormalizePath`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PathAction {
    /// The request goes on, with this path when it changed.
    Continue(Option<Vec<u8>>),
    /// Answered `400`.
    Reject,
    /// Answered `307` to this path.
    Redirect(Vec<u8>),
}

/// The `metadata` of the listener, the virtual host, the route, its
/// cluster, and the cluster's endpoint and its locality.
#[derive(Clone, Debug, Default)]
struct RouteMetadata {
    listener: Metadata,
    virtual_host: Metadata,
    route: Metadata,
    cluster: Metadata,
    host: HostMetadata,
}

/// The addresses filters read as `source.*`, `destination.*` and `upstream.*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Addresses {
    pub(crate) source: SocketAddr,
    pub(crate) destination: SocketAddr,
    pub(crate) upstream: SocketAddr,
    /// The local end of the router's connection to the upstream.
    pub(crate) upstream_local: SocketAddr,
}

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// Envoy's default `per_connection_buffer_limit_bytes`.
pub(crate) const DEFAULT_BUFFER_LIMIT: usize = 1024 * 1024;

impl Default for ConnectionManager {
    fn default() -> Self {
        Self {
            generate_request_id: true,
            server_name: "envoy".to_owned(),
            suppress_envoy_headers: false,
            route_timeout: Some(Duration::from_secs(15)),
            route_cluster: None,
            cluster_missing: false,
            route_name: String::new(),
            virtual_host_name: None,
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            addresses: Addresses {
                source: loopback(50000),
                destination: loopback(10000),
                upstream: loopback(8080),
                upstream_local: loopback(40000),
            },
            enable_trailers: false,
            upstream_enable_trailers: false,
            metadata: Box::default(),
            normalize_path: false,
            merge_slashes: false,
            escaped_slashes: EscapedSlashesAction::KeepUnchanged,
        }
    }
}

impl ConnectionManager {
    /// `generate_request_id` (default true): add `x-request-id` when absent. The
    /// harness generates it from its seeded random source, so it is reproducible.
    pub fn generate_request_id(mut self, on: bool) -> Self {
        self.generate_request_id = on;
        self
    }

    /// `server_name` (default `envoy`): the `server` header on every response.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// The router's `suppress_envoy_headers` (default false): when false the router
    /// adds `x-envoy-expected-rq-timeout-ms` upstream and
    /// `x-envoy-upstream-service-time` to responses.
    pub fn suppress_envoy_headers(mut self, on: bool) -> Self {
        self.suppress_envoy_headers = on;
        self
    }

    /// The route's `timeout` (default 15 s; `None` disables it).
    pub fn route_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.route_timeout = timeout;
        self
    }

    /// The route's timeout, if it has one: an upstream slower than this is
    /// answered `504` by the router.
    pub(crate) fn route_timeout_value(&self) -> Option<Duration> {
        self.route_timeout
    }

    /// The route's `name`, seen by filters as `xds.route_name` (default empty,
    /// as Envoy's for a route without one).
    pub fn route_name(mut self, name: impl Into<String>) -> Self {
        self.route_name = name.into();
        self
    }

    pub(crate) fn route_name_value(&self) -> &str {
        &self.route_name
    }

    /// The name of the route's virtual host, seen by filters as
    /// `xds.virtual_host_name` (default none: the property is not found).
    pub fn virtual_host_name(mut self, name: impl Into<String>) -> Self {
        self.virtual_host_name = Some(name.into());
        self
    }

    pub(crate) fn virtual_host_name_value(&self) -> Option<&str> {
        self.virtual_host_name.as_deref()
    }

    /// The route's `metadata`, seen by filters as `xds.route_metadata` (default
    /// none). Filters read it while the stream has a route, not once the
    /// router found none.
    pub fn route_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata.route = metadata;
        self
    }

    /// The virtual host's `metadata` (`xds.virtual_host_metadata`, default
    /// none), read once a virtual host has a name (see
    /// [`ConnectionManager::virtual_host_name`]).
    pub fn virtual_host_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata.virtual_host = metadata;
        self
    }

    /// The `metadata` of the route's cluster (`xds.cluster_metadata`, default
    /// none), read while the route has a cluster (see
    /// [`ConnectionManager::route_cluster`]).
    pub fn cluster_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata.cluster = metadata;
        self
    }

    /// The listener's `metadata` (`xds.listener_metadata`, default none).
    pub fn listener_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata.listener = metadata;
        self
    }

    /// The `metadata` of the route's cluster's endpoint (its
    /// `load_assignment.endpoints[0].lb_endpoints[0].metadata`), which
    /// filters read as `xds.upstream_host_metadata` once the router picked
    /// the host (default: a host without metadata, which Envoy cannot
    /// serialize and whose fields are not found, as the endpoint of a
    /// `STATIC` cluster whose bootstrap gives none; that of a `STRICT_DNS` or
    /// `LOGICAL_DNS` cluster has empty metadata, `Metadata::new()`).
    ///
    /// ```
    /// use serde_json::json;
    /// use weir_harness::{ConnectionManager, Metadata};
    ///
    /// # fn main() -> Result<(), weir_harness::Error> {
    /// let host = Metadata::new().filter(
    ///     "istio",
    ///     json!({"workload": "reviews-v2", "labels": {"app": "reviews", "version": "v2"}}),
    /// )?;
    /// let hcm = ConnectionManager::default().upstream_host_metadata(host);
    /// # Ok(())
    /// # }
    /// ```
    pub fn upstream_host_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata.host.endpoint = Some(metadata);
        self
    }

    /// The `metadata` of the locality of the route's cluster's endpoint (its
    /// `load_assignment.endpoints[0].metadata`), which filters read as
    /// `xds.upstream_host_locality_metadata` once the router picked the host
    /// (default: none, as [`ConnectionManager::upstream_host_metadata`]).
    ///
    /// ```
    /// use serde_json::json;
    /// use weir_harness::{ConnectionManager, Metadata};
    ///
    /// # fn main() -> Result<(), weir_harness::Error> {
    /// let locality = Metadata::new().filter("envoy.lb", json!({"region": "us-east1"}))?;
    /// let hcm = ConnectionManager::default().upstream_host_locality_metadata(locality);
    /// # Ok(())
    /// # }
    /// ```
    pub fn upstream_host_locality_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata.host.locality = Some(metadata);
        self
    }

    /// The locality of the route's cluster's endpoint (its
    /// `load_assignment.endpoints[0].locality`: `region`, `zone`,
    /// `sub_zone`), which filters read as `upstream.locality` once the router
    /// picked the host, as Envoy 1.40 answers it (the message serialized, or
    /// one field's text); default: an empty locality, as an endpoint whose
    /// bootstrap gives none.
    ///
    /// ```
    /// use weir_harness::ConnectionManager;
    ///
    /// let hcm = ConnectionManager::default().upstream_locality("us-east1", "us-east1-b", "");
    /// ```
    pub fn upstream_locality(
        mut self,
        region: impl Into<String>,
        zone: impl Into<String>,
        sub_zone: impl Into<String>,
    ) -> Self {
        self.metadata.host.place = crate::xds::Locality::new(region, zone, sub_zone);
        self
    }

    /// What the chain's filters read of the bootstrap: `node` and this
    /// connection manager's metadata.
    pub(crate) fn bootstrap(&self, node: Node) -> Bootstrap {
        let m = &*self.metadata;
        Bootstrap {
            node,
            listener: m.listener.clone(),
            virtual_host: m.virtual_host.clone(),
            route: m.route.clone(),
            cluster: m.cluster.clone(),
            host: m.host.clone(),
        }
    }

    /// The listener's `per_connection_buffer_limit_bytes` (default 1 MiB): a
    /// filter that buffers a body past it gets Envoy's `413` (request) or `500`
    /// (response) local reply.
    pub fn buffer_limit(mut self, bytes: usize) -> Self {
        self.buffer_limit = bytes;
        self
    }

    /// The body buffer limit in bytes.
    pub(crate) fn buffer_limit_bytes(&self) -> usize {
        self.buffer_limit
    }

    /// The route's cluster, seen by filters as `xds.cluster_name` (default none).
    pub fn route_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.route_cluster = Some(cluster.into());
        self
    }

    /// The route's cluster as the stream info knows it: none when the
    /// bootstrap does not define it.
    pub(crate) fn route_cluster_name(&self) -> Option<&str> {
        self.route_cluster
            .as_deref()
            .filter(|_| !self.cluster_missing)
    }

    /// Whether the route's cluster is one the bootstrap does not define
    /// (default false). Envoy accepts such a route only in a route config with
    /// `validate_clusters: false`, and answers it at request time: when the
    /// request headers reach the router, it replies `503` with details
    /// `cluster_not_found` and response flag `NC` (Envoy's gRPC conversion
    /// turns it into a trailers-only `UNAVAILABLE` for a gRPC request), and
    /// nothing goes upstream. Filters see the reply in their response
    /// callbacks as any local reply; `xds.cluster_name`,
    /// `xds.cluster_metadata` and `upstream.num_endpoints` are not found in
    /// any phase of the stream (Envoy's stream info has no cluster), while
    /// `xds.route_name` and `xds.route_metadata` are.
    pub fn route_cluster_missing(mut self, missing: bool) -> Self {
        self.cluster_missing = missing;
        self
    }

    /// Whether the router answers the route `cluster_not_found`.
    pub(crate) fn route_cluster_is_missing(&self) -> bool {
        self.cluster_missing
    }

    /// The downstream client's address, seen by filters as `source.address` and
    /// `source.port` (default `127.0.0.1:50000`).
    pub fn source_address(mut self, address: SocketAddr) -> Self {
        self.addresses.source = address;
        self
    }

    /// The local address the client connected to, seen as `destination.address`
    /// and `destination.port` (default `127.0.0.1:10000`).
    pub fn destination_address(mut self, address: SocketAddr) -> Self {
        self.addresses.destination = address;
        self
    }

    /// The upstream host the router sends requests to, seen in the response
    /// phase of requests that reached it as `upstream.address` and
    /// `upstream.port` (default `127.0.0.1:8080`).
    pub fn upstream_address(mut self, address: SocketAddr) -> Self {
        self.addresses.upstream = address;
        self
    }

    /// The local address of the router's connection to the upstream, seen
    /// by filters as `upstream.local_address` once the request went upstream
    /// (default `127.0.0.1:40000`; a real one has an ephemeral port).
    pub fn upstream_local_address(mut self, address: SocketAddr) -> Self {
        self.addresses.upstream_local = address;
        self
    }

    pub(crate) fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// The connection manager's `http_protocol_options.enable_trailers`
    /// (default false): whether Envoy's HTTP/1 codec reads the client's
    /// request trailers and sends response trailers to the client. Off, both
    /// are dropped (filters never see the client's).
    pub fn enable_trailers(mut self, on: bool) -> Self {
        self.enable_trailers = on;
        self
    }

    /// The route cluster's `http_protocol_options.enable_trailers` (default
    /// false): whether the upstream HTTP/1 connection carries request trailers
    /// to the upstream and reads its response trailers. Off, both are dropped
    /// (filters never see the upstream's).
    pub fn upstream_enable_trailers(mut self, on: bool) -> Self {
        self.upstream_enable_trailers = on;
        self
    }

    /// `normalize_path` (default false): before the first filter, the path
    /// (not the query) is normalized as Envoy 1.40 does (RFC 3986 dot-segment
    /// removal by Chromium's URL canonicalizer): `.` and `..` segments (also
    /// spelled `%2e`, and with `;` parameters when spelled with plain dots)
    /// are removed, `\\` becomes `/`, escaped unreserved characters are
    /// decoded, characters a path cannot hold are percent-encoded. A path
    /// with `%00` is answered `400` `path_normalization_failed`.
    pub fn normalize_path(mut self, on: bool) -> Self {
        self.normalize_path = on;
        self
    }

    /// `merge_slashes` (default false): before the first filter, and after
    /// [`normalize_path`](Self::normalize_path), repeated slashes in the
    /// path (not the query) become one.
    pub fn merge_slashes(mut self, on: bool) -> Self {
        self.merge_slashes = on;
        self
    }

    /// `path_with_escaped_slashes_action` (default
    /// [`EscapedSlashesAction::KeepUnchanged`]).
    pub fn path_with_escaped_slashes_action(mut self, action: EscapedSlashesAction) -> Self {
        self.escaped_slashes = action;
        self
    }

    /// Envoy's `maybeNormalizePath` on `path` (`:path` with its query):
    /// escaped slashes first, then `normalize_path`, then `merge_slashes`.
    pub(crate) fn path_action(&self, path: &[u8]) -> PathAction {
        let mut changed: Option<Vec<u8>> = None;
        let mut redirect = false;
        if self.escaped_slashes != EscapedSlashesAction::KeepUnchanged
            && let Some(unescaped) = unescape_slashes(path)
        {
            match self.escaped_slashes {
                EscapedSlashesAction::RejectRequest => return PathAction::Reject,
                EscapedSlashesAction::UnescapeAndRedirect => redirect = true,
                _ => {}
            }
            changed = Some(unescaped);
        }
        if self.normalize_path {
            match canonical_path(changed.as_deref().unwrap_or(path)) {
                Some(normalized) => changed = Some(normalized),
                None => return PathAction::Reject,
            }
        }
        if self.merge_slashes
            && let Some(merged) = merge_slashes(changed.as_deref().unwrap_or(path))
        {
            changed = Some(merged);
        }
        let changed = changed.filter(|c| c != path);
        if redirect {
            PathAction::Redirect(changed.unwrap_or_else(|| path.to_vec()))
        } else {
            PathAction::Continue(changed)
        }
    }

    /// What the connection manager does to the request headers' `:path`
    /// before the first filter: normalizes it in place, or returns the local
    /// reply that answers the request instead (no filter sees it).
    ///
    /// Before normalizing (whatever its settings), a request whose target is
    /// not a path, as Envoy 1.40 answers it (measured,
    /// `tests/conformance/path-not-absolute*.yaml`): `OPTIONS *` gets `404`
    /// with an empty body (details `absolute_path`); any other target that
    /// does not start with `/` (`GET *`, `host:port`, `ftp://host/x`) is an
    /// HTTP/1 codec error
    /// before there are request headers: `400` with the body `Bad Request`
    /// (details `http1.invalid_url`), never a gRPC reply. An absolute-form
    /// target (`http://host/x`) is the path `/x` of that host.
    pub(crate) fn prepare_path(&self, fields: &mut Fields) -> Option<LocalReplyRequest> {
        if let Some(reply) = not_a_path(fields) {
            return Some(reply);
        }
        if !self.normalize_path
            && !self.merge_slashes
            && self.escaped_slashes == EscapedSlashesAction::KeepUnchanged
        {
            return None;
        }
        let path = fields.get(b":path")?;
        let reply = |status: u32, headers: Fields| LocalReplyRequest {
            status,
            details: PATH_NORMALIZATION_FAILED.to_owned(),
            body: Vec::new(),
            headers,
            grpc_status: -1,
        };
        match self.path_action(path) {
            PathAction::Continue(None) => None,
            PathAction::Continue(Some(normalized)) => {
                fields.set_in_place(b":path", &normalized);
                None
            }
            PathAction::Reject => Some(reply(400, Fields::new(Kind::Plain))),
            // gRPC clients do not follow redirects: Envoy rejects instead.
            PathAction::Redirect(_) if is_grpc_request(fields) => {
                Some(reply(400, Fields::new(Kind::Plain)))
            }
            PathAction::Redirect(location) => {
                let mut headers = Fields::new(Kind::Plain);
                headers.add_new(b"location", &location);
                Some(reply(307, headers))
            }
        }
    }

    /// Whether the client side carries trailers.
    pub(crate) fn downstream_trailers(&self) -> bool {
        self.enable_trailers
    }

    /// Whether the upstream side carries trailers.
    pub(crate) fn upstream_trailers(&self) -> bool {
        self.upstream_enable_trailers
    }

    /// The request headers as Envoy hands them to the first filter: pseudo-headers
    /// first, `host` turned into `:authority`, then the client's headers, then what
    /// the connection manager adds.
    pub(crate) fn request_fields(
        &self,
        request: &http::Request<Bytes>,
        random: impl FnOnce() -> [u8; 16],
        recycled: Fields,
    ) -> Result<Fields> {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().as_bytes())
            .or_else(|| {
                request
                    .headers()
                    .get(http::header::HOST)
                    .map(HeaderValue::as_bytes)
            })
            .ok_or_else(|| {
                Error::InvalidRequest(
                    "no host: give the request a Host header or an absolute URI".to_owned(),
                )
            })?;
        let uri = request.uri();
        // An authority-form target (`host:port`, for CONNECT) is what the
        // codec reads as the path of any other method, as it reads the whole
        // of an absolute-form target whose scheme is neither `http` nor
        // `https`: not a path at all ([`ConnectionManager::prepare_path`]
        // answers them).
        let whole;
        let path = match (uri.scheme_str(), uri.path_and_query()) {
            (Some(scheme), _) if !matches!(scheme, "http" | "https") => {
                whole = uri.to_string();
                whole.as_str()
            }
            (_, Some(path)) => path.as_str(),
            (None, None) if request.method() != http::Method::CONNECT => {
                uri.authority().map_or("/", http::uri::Authority::as_str)
            }
            _ => "/",
        };
        // An absolute-form target gives the request its scheme.
        let scheme = uri.scheme_str().unwrap_or("http");
        // The pseudo-headers, the client's, up to two more and room for what
        // filters usually add.
        let mut fields = recycled.emptied(
            Kind::Request,
            request.headers().len() + 6 + ROOM_FOR_FILTERS,
        );
        fields.add_new(b":authority", authority);
        fields.add_new(b":path", path.as_bytes());
        fields.add_new(b":method", request.method().as_str().as_bytes());
        fields.add_new(b":scheme", scheme.as_bytes());
        let (mut has_proto, mut has_id, mut te_seen) = (false, false, false);
        for (name, value) in request.headers() {
            if name == http::header::TE {
                if !std::mem::replace(&mut te_seen, true) && sanitized_te(request.headers()) {
                    fields.add_new(b"te", b"trailers");
                }
                continue;
            }
            let name = name.as_str();
            if name != "host" && !removed_from_requests(name) {
                has_proto |= name == "x-forwarded-proto";
                has_id |= name == "x-request-id";
                fields.add_lowercase(name.as_bytes(), value.as_bytes());
            }
        }
        if !has_proto {
            fields.add_new(b"x-forwarded-proto", b"http");
        }
        if self.generate_request_id && !has_id {
            fields.add_new(b"x-request-id", &uuid_v4(random()));
        }
        Ok(fields)
    }

    /// The request as an HTTP/1 upstream receives it after the router.
    /// `body_follows`: the headers did not end the stream (a body, even an
    /// empty chunked one, follows them: the codec frames it as chunked
    /// without a `content-length`).
    /// `trailers` are the trailers that left the filters, if the stream had
    /// any: the body is then chunked even when empty, and the upstream
    /// receives them if the cluster carries trailers and the request is not
    /// framed by `content-length`.
    pub(crate) fn upstream_request<'a>(
        &self,
        fields: &'a Fields,
        body: Bytes,
        body_follows: bool,
        trailers: Option<&Fields>,
        cache: &mut HttpCache,
    ) -> Result<http::Request<Bytes>> {
        // The first entry of each name the router reads, in one pass.
        let (mut method, mut path, mut authority) = (None, None, None);
        let (mut length, mut encoding, mut timeout_set) = (None, None, None);
        for (i, (name, value)) in fields.iter().enumerate() {
            let slot = match name {
                b":method" => &mut method,
                b":path" => &mut path,
                b":authority" => &mut authority,
                b"content-length" => &mut length,
                b"transfer-encoding" => &mut encoding,
                b"x-envoy-expected-rq-timeout-ms" => &mut timeout_set,
                _ => continue,
            };
            slot.get_or_insert((i, value));
        }
        let pseudo = |found: Option<(usize, &'a [u8])>, name: &str| {
            found.ok_or_else(|| {
                Error::InvalidRequest(format!("the filters removed the {name} pseudo-header"))
            })
        };
        let method = http::Method::from_bytes(pseudo(method, ":method")?.1)
            .map_err(|e| Error::InvalidRequest(format!(":method: {e}")))?;
        let uri = cache.uri(pseudo(path, ":path")?.1)?;
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let has_body = body_follows || !request.body().is_empty() || trailers.is_some();
        let (authority_at, authority) = pseudo(authority, ":authority")?;
        // What the router adds: `transfer-encoding: chunked` to a body that
        // has no `content-length`, its timeout, and `content-length: 0` to a
        // bodiless request whose method normally has a body ([`frame_request`]).
        // `insert` replaces a header a filter set in place; absent, it appends.
        let has_length = length.is_some();
        let has_encoding = encoding.is_some();
        let add_chunked = has_body && !has_length;
        let timeout = match (self.suppress_envoy_headers, self.route_timeout) {
            (false, Some(timeout)) => Some(cache.expected_timeout(timeout.as_millis() as u64)),
            _ => None,
        };
        let replaces =
            (add_chunked && has_encoding) || (timeout.is_some() && timeout_set.is_some());
        let chunked = HeaderValue::from_static("chunked");
        let zero = HeaderValue::from_static("0");
        let appended = if replaces {
            [None, None, None]
        } else {
            [
                add_chunked.then_some((&b"transfer-encoding"[..], Source::Fixed(&chunked))),
                timeout
                    .as_ref()
                    .map(|t| (EXPECTED_RQ_TIMEOUT_MS_NAME.as_bytes(), Source::Fixed(t))),
                (frames_empty_body(request.method(), request.body())
                    && !has_length
                    && !has_encoding
                    && !add_chunked)
                    .then_some((&b"content-length"[..], Source::Fixed(&zero))),
            ]
        };
        let headers = std::iter::once((&b"host"[..], Source::Field(authority_at, authority)))
            .chain(non_pseudo(fields))
            .chain(appended.into_iter().flatten());
        *request.headers_mut() = cache.header_map(
            MapKind::UpstreamRequest,
            headers,
            fields.len() + 2,
            &mut fields.shared_values(),
            "request",
        )?;
        if replaces {
            let headers = request.headers_mut();
            if add_chunked {
                headers.insert(http::header::TRANSFER_ENCODING, chunked);
            }
            if let Some(timeout) = timeout {
                headers.insert(EXPECTED_RQ_TIMEOUT_MS, timeout);
            }
            frame_request(&mut request);
        }
        if let Some(trailers) = trailers
            && self.upstream_enable_trailers
            && trailers.len() > 0
            && !request.headers().contains_key(http::header::CONTENT_LENGTH)
        {
            let trailers = Trailers::from_fields(trailers, "request trailers")?;
            request.extensions_mut().insert(trailers);
        }
        Ok(request)
    }

    /// The upstream's response as the filters see it: `:status` first, HTTP/1
    /// framing made explicit (chunked when it has [`Trailers`]), plus the
    /// router's additions.
    /// `recycled` is a map whose room is reused.
    ///
    /// `head`: the client's request was a `HEAD`. Envoy's HTTP/1 codec then
    /// reads no body: the filters see the upstream's `content-length` if it
    /// sent one, never its `transfer-encoding`, and no framing is added
    /// (measured in Envoy 1.40, `tests/conformance/head-requests.yaml`).
    pub(crate) fn response_fields(
        &self,
        response: &http::Response<Bytes>,
        recycled: Fields,
        head: bool,
    ) -> Fields {
        // `:status`, the upstream's headers, up to two more, room for what
        // filters usually add and `server` and `date`.
        let mut fields = recycled.emptied(
            Kind::Response,
            response.headers().len() + 3 + ROOM_FOR_FILTERS + 2,
        );
        fields.add_new(b":status", response.status().as_str().as_bytes());
        for (name, value) in response.headers() {
            if head && name == http::header::TRANSFER_ENCODING {
                continue;
            }
            fields.add_lowercase(name.as_str().as_bytes(), value.as_bytes());
        }
        // No body follows the headers of a response to HEAD: no framing.
        if !head {
            let status = response.status().as_u16();
            if response.extensions().get::<Trailers>().is_some() && needs_framing(&fields, status) {
                fields.add_new(b"transfer-encoding", b"chunked");
            }
            frame(&mut fields, status, response.body().len());
        }
        if !self.suppress_envoy_headers {
            // The harness's upstream answers in zero virtual time.
            fields.add_lowercase(b"x-envoy-upstream-service-time", b"0");
        }
        fields
    }

    /// What the connection manager sets on every response it sends after
    /// the encoder filters: `date` unless the response has one (an
    /// upstream's is kept), then `server`.
    pub(crate) fn stamp(&self, fields: &mut Fields, date: &str) {
        if fields.get(b"date").is_none() {
            fields.add_new(b"date", date.as_bytes());
        }
        fields.set_lowercase(b"server", self.server_name.as_bytes());
    }

    /// The response a local reply produces before the encoder filters (a
    /// filter's `proxy_send_local_response`, or one of Envoy's own: a failed
    /// VM, a body past the buffer limit, no route, an upstream that failed):
    /// its headers and body, as Envoy's `prepareLocalReply` makes them.
    ///
    /// To a plain request: `:status`, the reply's headers, then
    /// `content-length` and `content-type: text/plain` when it has a body.
    /// To a gRPC request (`grpc`: see [`is_grpc_request`]) a trailers-only
    /// gRPC response with no body: `:status: 200`, the reply's headers,
    /// `content-type: application/grpc` (replacing the reply's own where it
    /// stands), `grpc-status` unless the reply's headers have one that is
    /// not empty ([`local_reply_grpc_status`]), `grpc-message` with the body
    /// percent-encoded ([`percent_encode`]) when there is a body, and no
    /// `content-length`.
    ///
    /// To a `HEAD` request (`head`) the headers are those of the reply with
    /// its body (its `content-length` and `content-type` stay), but no body
    /// follows them, so no filter's response body callback runs and
    /// `response.size` is `0` (measured in Envoy 1.40,
    /// `tests/conformance/head-requests.yaml`).
    pub(crate) fn local_reply(
        reply: &LocalReplyRequest,
        grpc: bool,
        head: bool,
    ) -> (Fields, Vec<u8>) {
        let mut fields = Fields::new(Kind::Response);
        if grpc {
            fields.add_new(b":status", b"200");
        } else {
            fields.add(b":status", reply.status.to_string().as_bytes());
        }
        for (name, value) in reply.headers.iter() {
            fields.add(name, value);
        }
        if grpc {
            fields.set_in_place(b"content-type", b"application/grpc");
            if fields.get(b"grpc-status").is_none_or(<[u8]>::is_empty) {
                let status = local_reply_grpc_status(reply).to_string();
                fields.set_in_place(b"grpc-status", status.as_bytes());
            }
            if !reply.body.is_empty() {
                fields.set_in_place(b"grpc-message", percent_encode(&reply.body).as_bytes());
            }
            fields.remove(b"content-length");
            return (fields, Vec::new());
        }
        // Envoy gives a local reply a `content-length` only with a body (the
        // codec frames an empty one on the wire).
        if !reply.body.is_empty() {
            frame(&mut fields, reply.status as u16, reply.body.len());
        }
        if !reply.body.is_empty() && fields.get(b"content-type").is_none() {
            fields.add(b"content-type", b"text/plain");
        }
        let body = if head { Vec::new() } else { reply.body.clone() };
        (fields, body)
    }

    /// The response as the client receives it: after the encoder filters,
    /// the connection manager sets `date` (unless the response has one) and
    /// `server` and removes `transfer-encoding` from `fields`, and the
    /// HTTP/1 codec frames the response on the wire. `trailers` are those that
    /// left the filters, if the stream had any: the body is then chunked even
    /// when empty, and the client receives them if the connection manager
    /// carries trailers and the response is not framed by `content-length`.
    ///
    /// To a `HEAD` request (`head`) the codec sends no body and no trailers,
    /// and frames a response that has neither header as chunked, as if a
    /// body followed (measured in Envoy 1.40,
    /// `tests/conformance/head-requests.yaml`).
    pub(crate) fn client_response(
        &self,
        fields: &mut Fields,
        body: Bytes,
        date: &str,
        trailers: Option<&Fields>,
        head: bool,
        cache: &mut HttpCache,
    ) -> Result<http::Response<Bytes>> {
        let (body, trailers) = if head {
            (Bytes::new(), None)
        } else {
            (body, trailers)
        };
        self.stamp(fields, date);
        // After the encoder filters, the connection manager removes the
        // hop-by-hop `transfer-encoding` from the response's map.
        fields.remove(b"transfer-encoding");
        let status = fields
            .get(b":status")
            .and_then(parse_u16)
            .and_then(|s| http::StatusCode::from_u16(s).ok())
            .ok_or_else(|| Error::InvalidHeader {
                name: ":status".to_owned(),
                direction: "response",
                message: "missing or not a valid status code".to_owned(),
            })?;
        // Envoy's HTTP/1 codec frames a response that has neither header, on
        // the wire (the map keeps neither): chunked when there is a body,
        // `content-length: 0` when the headers end it.
        let (zero, chunked_value) = (
            HeaderValue::from_static("0"),
            HeaderValue::from_static("chunked"),
        );
        let framing = needs_framing(fields, status.as_u16()).then(|| {
            if body.is_empty() && trailers.is_none() && !head {
                (&b"content-length"[..], Source::Fixed(&zero))
            } else {
                (&b"transfer-encoding"[..], Source::Fixed(&chunked_value))
            }
        });
        let chunked = fields.get(b"content-length").is_none();
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = cache.header_map(
            MapKind::ClientResponse,
            non_pseudo(fields).chain(framing),
            fields.len() + 1,
            &mut fields.shared_values(),
            "response",
        )?;
        if let Some(trailers) = trailers
            && chunked
            && self.enable_trailers
            && trailers.len() > 0
        {
            let trailers = Trailers::from_fields(trailers, "response trailers")?;
            response.extensions_mut().insert(trailers);
        }
        Ok(response)
    }
}

/// Envoy sanitizes the client's `te` header: it keeps `te: trailers` if any of
/// its values is `trailers`, and removes it otherwise (measured in Envoy 1.40).
fn sanitized_te(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::TE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii() == b"trailers")
}

/// Envoy's `Grpc::Common::isGrpcRequestHeaders`: a request is a gRPC request
/// when its `content-type` is exactly `application/grpc` or starts with
/// `application/grpc+` (`application/grpc-web` and a value with parameters
/// are not). Envoy decides it on the client's headers as they arrive, before
/// any filter: a filter that changes `content-type` changes nothing here
/// (measured in Envoy 1.40).
pub(crate) fn is_grpc_request(fields: &Fields) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    fields.get(b"content-type").is_some_and(|value| {
        value
            .strip_prefix(GRPC)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"+"))
    })
}

/// An upstream's response to a `HEAD` request as Envoy's codec reads it:
/// the headers only, whatever body, pieces or trailers the upstream's
/// answer was given.
/// A body given whole, with neither framing header, is announced by its
/// `content-length`, as an HTTP/1 server (hyper) answers `HEAD`.
pub(crate) fn without_body(response: &mut http::Response<Bytes>) {
    let chunks = response.extensions_mut().remove::<crate::BodyChunks>();
    let trailers = response.extensions_mut().remove::<Trailers>();
    let body = std::mem::take(response.body_mut());
    let headers = response.headers_mut();
    if !body.is_empty()
        && chunks.is_none()
        && trailers.is_none()
        && !headers.contains_key(http::header::CONTENT_LENGTH)
        && !headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
}

/// Whether the client's request is a `HEAD` (read on the client's request,
/// before any filter, as Envoy's codec reads its request line): its response
/// then has no body.
pub(crate) fn is_head_request(fields: &Fields) -> bool {
    fields.get(b":method") == Some(b"HEAD")
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`: the gRPC status an HTTP status
/// stands for.
pub(crate) fn http_to_grpc_status(status: u32) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// The gRPC status of a local reply to a gRPC request: its `grpc_status`
/// when that is a known one (0 to 16), else the one its HTTP status stands
/// for (Envoy takes -1, and any other value, for none: measured in 1.40).
pub(crate) fn local_reply_grpc_status(reply: &LocalReplyRequest) -> u32 {
    match u32::try_from(reply.grpc_status) {
        Ok(status @ 0..=16) => status,
        _ => http_to_grpc_status(reply.status),
    }
}

/// Envoy's `PercentEncoding::encode` with `%` reserved, as it writes a local
/// reply's body into `grpc-message`: bytes below a space, from `~` up
/// (non-ASCII included) and `%` become `%XX` in upper-case hex.
pub(crate) fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if !(b' '..b'~').contains(&b) || b == b'%' {
            // Writing to a `String` cannot fail.
            let _ = write!(out, "%{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// Envoy's HTTP/1 codec sends `content-length: 0` on a bodiless request
/// unless its method is one whose requests have no body.
pub(crate) fn frame_request(request: &mut http::Request<Bytes>) {
    let headers = request.headers();
    if frames_empty_body(request.method(), request.body())
        && !headers.contains_key(http::header::CONTENT_LENGTH)
        && !headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(0));
    }
}

/// Whether a request with `method` and `body` gets `content-length: 0` when
/// it has neither `content-length` nor `transfer-encoding`: a bodiless
/// request whose method is not one of those Envoy's codec sends without a
/// body (`GET`, `HEAD`, `DELETE`, `TRACE`, `CONNECT`), so `POST` and
/// `OPTIONS` get it, and an extension method such as `PURGE` (measured in
/// Envoy 1.40, `tests/conformance/path-not-absolute.yaml`).
fn frames_empty_body(method: &http::Method, body: &Bytes) -> bool {
    !matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::DELETE
            | http::Method::TRACE
            | http::Method::CONNECT
    ) && body.is_empty()
}

/// The entries of `fields` that are not pseudo-headers, as headers to turn
/// into `http` ones.
fn non_pseudo(fields: &Fields) -> impl Iterator<Item = (&[u8], Source<'_>)> + Clone {
    fields
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| !name.starts_with(b":"))
        .map(|(i, (name, value))| (name, Source::Field(i, value)))
}

/// HTTP/1 framing: a response with a body-bearing status and no `content-length`
/// or `transfer-encoding` gets `content-length`, as hyper and Envoy's codec send.
fn frame(fields: &mut Fields, status: u16, body_len: usize) {
    if needs_framing(fields, status) {
        let mut digits = [0; 20];
        fields.add_new(b"content-length", decimal(body_len as u64, &mut digits));
    }
}

/// `s` as a `u16`, as `str::parse::<u16>` reads it: an optional `+`, then
/// decimal digits only, no overflow.
pub(crate) fn parse_u16(s: &[u8]) -> Option<u16> {
    let digits = s.strip_prefix(b"+").unwrap_or(s);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u16, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u16::from(b - b'0'))
    })
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// A response whose status may carry a body and that has neither
/// `content-length` nor `transfer-encoding`.
fn needs_framing(fields: &Fields, status: u16) -> bool {
    let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
    !bodiless
        && fields.get(b"content-length").is_none()
        && fields.get(b"transfer-encoding").is_none()
}

fn header_name(name: &[u8], direction: &'static str) -> Result<HeaderName> {
    HeaderName::from_bytes(name).map_err(|e| Error::InvalidHeader {
        name: String::from_utf8_lossy(name).into_owned(),
        direction,
        message: e.to_string(),
    })
}

fn shared_value(value: Bytes, name: &[u8], direction: &'static str) -> Result<HeaderValue> {
    HeaderValue::from_maybe_shared(value).map_err(|e| Error::InvalidHeader {
        name: String::from_utf8_lossy(name).into_owned(),
        direction,
        message: e.to_string(),
    })
}

fn uuid_v4(mut b: [u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    // Where each byte's two digits go (the dashes stay).
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    for (byte, at) in b.iter().zip(AT) {
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0x0f)];
    }
    out
}

/// The path of `:path` and its query (from the first `?` on, if any).
fn split_query(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().position(|&b| b == b'?') {
        Some(at) => path.split_at(at),
        None => (path, &[]),
    }
}

/// `%2F`, `%2f`, `%5C` and `%5c` of the path (not the query) turned into `/`
/// and `\`, or `None` when it has none (Envoy's `unescapeSlashes`).
fn unescape_slashes(path: &[u8]) -> Option<Vec<u8>> {
    let (part, query) = split_query(path);
    let escaped = |at: usize| match part.get(at..at + 3) {
        Some([b'%', b'2', b'F' | b'f']) => Some(b'/'),
        Some([b'%', b'5', b'C' | b'c']) => Some(b'\\'),
        _ => None,
    };
    if !(0..part.len()).any(|at| escaped(at).is_some()) {
        return None;
    }
    let mut out = Vec::with_capacity(path.len());
    let mut at = 0;
    while at < part.len() {
        if let Some(slash) = escaped(at) {
            out.push(slash);
            at += 3;
        } else {
            out.push(part[at]);
            at += 1;
        }
    }
    out.extend_from_slice(query);
    Some(out)
}

/// `merge_slashes` on the path (not the query), or `None` when it has no
/// `//`: the non-empty segments joined by `/`, with the path's leading and
/// trailing slash kept (Envoy's `mergeSlashes`).
fn merge_slashes(path: &[u8]) -> Option<Vec<u8>> {
    let (part, query) = split_query(path);
    if !part.windows(2).any(|w| w == b"//") {
        return None;
    }
    let mut out = Vec::with_capacity(path.len());
    if part.first() == Some(&b'/') {
        out.push(b'/');
    }
    let mut first = true;
    for segment in part.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        if !std::mem::replace(&mut first, false) {
            out.push(b'/');
        }
        out.extend_from_slice(segment);
    }
    if part.last() == Some(&b'/') {
        out.push(b'/');
    }
    out.extend_from_slice(query);
    Some(out)
}

/// How the path canonicalizer treats a byte, plain or percent-encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PathByte {
    /// Copied as it is; kept encoded when encoded.
    Pass,
    /// Unreserved (`A-Z a-z 0-9 - _ ~`): decoded when encoded.
    Unreserved,
    /// Percent-encoded when plain; kept encoded when encoded.
    Escape,
}

fn path_byte(b: u8) -> PathByte {
    match b {
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => PathByte::Unreserved,
        0..=0x20
        | b'"'
        | b'#'
        | b'%'
        | b'<'
        | b'>'
        | b'?'
        | b'\\'
        | b'^'
        | b'`'
        | b'{'
        | b'|'
        | b'}'
        | 0x7f..=0xff => PathByte::Escape,
        _ => PathByte::Pass,
    }
}

/// The value of the escape `%XY` at `at` of `bytes`, if it is one.
fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    match bytes.get(at..at + 3) {
        Some([b'%', hi, lo]) => {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(*hi)? * 16 + digit(*lo)?) as u8)
        }
        _ => None,
    }
}

/// The length of the dot at `at`: 1 for `.`, 3 for `%2e` or `%2E`, else 0.
fn dot_at(bytes: &[u8], at: usize) -> usize {
    match bytes.get(at..) {
        Some([b'.', ..]) => 1,
        Some([b'%', b'2', b'e' | b'E', ..]) => 3,
        _ => 0,
    }
}

/// What follows a dot that starts a segment.
enum AfterDot {
    /// Not a dot segment: the dot is copied.
    Name,
    /// `.`: skipped, with this many bytes after the dot.
    Current(usize),
    /// `..`: the output backs up one segment, and this many bytes after the
    /// first dot are skipped.
    Up(usize),
}

fn after_dot(bytes: &[u8], at: usize) -> AfterDot {
    let slash = |i: usize| matches!(bytes.get(i), Some(b'/' | b'\\'));
    if at == bytes.len() {
        return AfterDot::Current(0);
    }
    if slash(at) {
        return AfterDot::Current(1);
    }
    let second = dot_at(bytes, at);
    if second > 0 {
        if at + second == bytes.len() {
            return AfterDot::Up(second);
        }
        if slash(at + second) {
            return AfterDot::Up(second + 1);
        }
    }
    AfterDot::Name
}

/// `.` and `..` segments written with plain dots lose their `;` parameters
/// (`/a/..;x/b` is `/a/../b`), as Envoy 1.40 does before canonicalizing.
fn strip_dot_segment_parameters(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let is_dot_with_parameters =
        |segment: &[u8]| segment.starts_with(b".;") || segment.starts_with(b"..;");
    if !path.split(|&b| b == b'/').any(is_dot_with_parameters) {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = Vec::with_capacity(path.len());
    for (i, segment) in path.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        match segment.iter().position(|&b| b == b';') {
            Some(at) if is_dot_with_parameters(segment) => out.extend_from_slice(&segment[..at]),
            _ => out.extend_from_slice(segment),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `normalize_path` on `:path` (the query is kept as it is), or `None` when
/// Envoy rejects the path (it has `%00`). Envoy canonicalizes the path with
/// Chromium's URL library: this follows the behaviour measured against
/// Envoy 1.40 (see `tests/conformance/path-normalization*.yaml`).
fn canonical_path(path: &[u8]) -> Option<Vec<u8>> {
    let (part, query) = split_query(path);
    let part = strip_dot_segment_parameters(part);
    let input: &[u8] = &part;
    let mut out: Vec<u8> = Vec::with_capacity(path.len() + 8);
    if !matches!(input.first(), Some(b'/' | b'\\')) {
        out.push(b'/');
    }
    // Where the output has a `%` that did not start an escape in the input:
    // decoding a later escape must not make a new escape of it (`%%300` would
    // become `%00`), so such a `%` is then written `%25`.
    let mut stray_percent: Option<usize> = None;
    let mut at = 0;
    while at < input.len() {
        let b = input[at];
        let dot = dot_at(input, at);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                match after_dot(input, at + dot) {
                    AfterDot::Name => {
                        out.push(b'.');
                        at += dot;
                    }
                    AfterDot::Current(skip) => at += dot + skip,
                    AfterDot::Up(skip) => {
                        back_up_one_segment(&mut out);
                        if stray_percent.is_some_and(|p| p >= out.len()) {
                            stray_percent = None;
                        }
                        at += dot + skip;
                    }
                }
            } else {
                out.push(b'.');
                at += dot;
            }
            continue;
        }
        match b {
            0 => return None,
            b'\\' => {
                out.push(b'/');
                at += 1;
            }
            b'%' => match escape_at(input, at) {
                Some(0) => return None,
                Some(value) if path_byte(value) == PathByte::Unreserved => {
                    out.push(value);
                    at += 3;
                    if let Some(p) = stray_percent
                        && p + 3 >= out.len()
                    {
                        guard_stray_percent(input, at, p, &mut out);
                    }
                }
                Some(_) => {
                    out.extend_from_slice(&input[at..at + 3]);
                    at += 3;
                }
                None => {
                    stray_percent = Some(out.len());
                    out.push(b'%');
                    at += 1;
                }
            },
            _ if path_byte(b) == PathByte::Escape => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
                at += 1;
            }
            _ => {
                out.push(b);
                at += 1;
            }
        }
    }
    out.extend_from_slice(query);
    Some(out)
}

/// The output ends with `/`: drops the segment before it (never the first
/// slash), keeping a trailing `/`.
fn back_up_one_segment(out: &mut Vec<u8>) {
    let Some(last) = out.len().checked_sub(1) else {
        return;
    };
    if last == 0 {
        return;
    }
    let keep = out[..last]
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(1, |i| i + 1);
    out.truncate(keep);
}

/// After a decoded character landed within two bytes of the stray `%` at
/// `percent` of `out`: if the `%` and what follows it now read as an escape
/// (with the next input byte when only one follows), the `%` is written
/// `%25` so the output cannot be decoded into something else.
fn guard_stray_percent(input: &[u8], next: usize, percent: usize, out: &mut Vec<u8>) {
    let len = out.len();
    let Some(&decoded) = out.last() else {
        return;
    };
    let borrow_next = percent + 2 == len;
    if borrow_next {
        match input.get(next) {
            Some(&b) if b < 0x80 => out.push(b),
            _ => return,
        }
    }
    if escape_at(out, percent).is_some() {
        let after_percent = out[percent + 1];
        out.truncate(percent + 1);
        out.extend_from_slice(b"25");
        if !borrow_next {
            out.push(after_percent);
        }
        out.push(decoded);
    } else if borrow_next {
        out.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path the filters see with these settings, or how it is answered.
    fn normalized(manager: &ConnectionManager, path: &str) -> String {
        match manager.path_action(path.as_bytes()) {
            PathAction::Continue(None) => path.to_owned(),
            PathAction::Continue(Some(p)) => String::from_utf8_lossy(&p).into_owned(),
            PathAction::Reject => "reject".to_owned(),
            PathAction::Redirect(p) => format!("redirect {}", String::from_utf8_lossy(&p)),
        }
    }

    fn auth_settings() -> ConnectionManager {
        ConnectionManager::default()
            .normalize_path(true)
            .merge_slashes(true)
            .path_with_escaped_slashes_action(EscapedSlashesAction::RejectRequest)
    }

    #[test]
    fn paths_are_left_alone_by_default() {
        let plain = ConnectionManager::default();
        for path in ["/a/../b", "//a//b", "/a%2Fb", "/a\\b", "/a%00b", "/a/..;/b"] {
            assert_eq!(normalized(&plain, path), path);
        }
    }

    #[test]
    fn normalize_path_removes_dot_segments_as_envoy_does() {
        // Measured against Envoy 1.40 (tests/conformance/path-normalization*.yaml).
        let m = auth_settings();
        for (path, expected) in [
            ("/a/../b", "/b"),
            ("/healthz/../admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/../a", "/a"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/.", "/"),
            ("/..", "/"),
            ("/a/b/../../../c", "/c"),
            ("/a/%2e%2E/b", "/b"),
            ("/a%2e%2e/b", "/a../b"),
            ("/a%2e/b", "/a./b"),
            ("/a/.../b/..c/.d", "/a/.../b/..c/.d"),
            ("/a\\b", "/a/b"),
            ("/a\\..\\b", "/b"),
            ("/%61%7e%2D", "/a~-"),
            ("/%41%5A%5f%30%39%2e%7E", "/AZ_09.~"),
            ("/a%3Fb%20c%25d%41%3a%40%7C", "/a%3Fb%20c%25dA%3a%40%7C"),
            ("/a\"b{c}d|e^f", "/a%22b%7Bc%7Dd%7Ce%5Ef"),
            ("/a%zzb%4", "/a%zzb%4"),
            ("/a%2", "/a%2"),
            ("/a%2541", "/a%2541"),
            ("/a%%300b", "/a%2500b"),
            ("/a%01b%1F%7f", "/a%01b%1F%7f"),
            ("/%C3%A9", "/%C3%A9"),
            // Dot segments with parameters.
            ("/a/..;/b", "/b"),
            ("/a/..;x=y/b", "/b"),
            ("/a/.;x/b", "/a/b"),
            ("/a/b/..;", "/a/"),
            ("/a/b/..;/..;/c", "/c"),
            ("/a/...;/b", "/a/...;/b"),
            ("/a/x..;/b", "/a/x..;/b"),
            ("/a;x/b", "/a;x/b"),
            ("/a/%2e%2e;/b", "/a/..;/b"),
            ("/a/..%3b/b", "/a/..%3b/b"),
            // The query is never touched.
            ("/a/./b?x=/../y//z&%2F", "/a/b?x=/../y//z&%2F"),
            ("/a/../b?", "/b?"),
            ("/a?b=%2F&c=%5C", "/a?b=%2F&c=%5C"),
            // Merged after the dot segments are gone.
            ("//a//b", "/a/b"),
            ("/a//", "/a/"),
            ("/a//../b", "/a/b"),
            ("/a//./b", "/a/b"),
            // Rejected.
            ("/a%00b", "reject"),
            ("/a%2Fb", "reject"),
            ("/a%2fb", "reject"),
            ("/a%5Cb", "reject"),
            ("/a%5cb", "reject"),
            ("/a/..%2Fb", "reject"),
        ] {
            assert_eq!(normalized(&m, path), expected, "{path}");
        }
    }

    #[test]
    fn each_setting_alone() {
        let merge = ConnectionManager::default().merge_slashes(true);
        for (path, expected) in [
            ("//a//b", "/a/b"),
            ("/a//../b", "/a/../b"),
            ("/a//b?x=//y", "/a/b?x=//y"),
            ("/a/../b", "/a/../b"),
            ("/a%00b", "/a%00b"),
        ] {
            assert_eq!(normalized(&merge, path), expected, "merge {path}");
        }
        let normalize = ConnectionManager::default().normalize_path(true);
        for (path, expected) in [
            ("//a//b", "//a//b"),
            ("/a//../b", "/a/b"),
            ("/a%2F/../b", "/b"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%00b", "reject"),
        ] {
            assert_eq!(normalized(&normalize, path), expected, "normalize {path}");
        }
        let unescape = ConnectionManager::default()
            .path_with_escaped_slashes_action(EscapedSlashesAction::UnescapeAndForward);
        for (path, expected) in [
            ("/a%2Fb", "/a/b"),
            ("/a%5Cb", "/a\\b"),
            ("/a%2F%2Fb", "/a//b"),
            ("/a/..%2Fb", "/a/../b"),
            ("/a?x=%2F", "/a?x=%2F"),
        ] {
            assert_eq!(normalized(&unescape, path), expected, "unescape {path}");
        }
        let reject = ConnectionManager::default()
            .path_with_escaped_slashes_action(EscapedSlashesAction::RejectRequest);
        assert_eq!(normalized(&reject, "/a%2fb"), "reject");
        assert_eq!(normalized(&reject, "/a/../b?x=%2F"), "/a/../b?x=%2F");
    }

    #[test]
    fn unescape_and_redirect_answers_with_the_normalized_path() {
        let m = ConnectionManager::default()
            .normalize_path(true)
            .merge_slashes(true)
            .path_with_escaped_slashes_action(EscapedSlashesAction::UnescapeAndRedirect);
        for (path, expected) in [
            ("/a%2Fb", "redirect /a/b"),
            ("/a%5Cb", "redirect /a/b"),
            ("/a/..%2Fb", "redirect /b"),
            ("/a%2F%2Fb", "redirect /a/b"),
            ("/a%2Fb?q=1", "redirect /a/b?q=1"),
            ("/a/../b", "/b"),
            ("/a%00%2Fb", "reject"),
        ] {
            assert_eq!(normalized(&m, path), expected, "{path}");
        }
    }

    #[test]
    fn prepare_path_rewrites_path_in_place_or_answers() {
        let m = auth_settings();
        let mut fields = Fields::new(Kind::Request);
        fields.add_new(b":authority", b"h");
        fields.add_new(b":path", b"/healthz/../admin");
        fields.add_new(b":method", b"GET");
        assert_eq!(m.prepare_path(&mut fields), None);
        let order: Vec<&[u8]> = fields.iter().map(|(k, _)| k).collect();
        assert_eq!(order, [&b":authority"[..], b":path", b":method"]);
        assert_eq!(fields.get(b":path"), Some(&b"/admin"[..]));

        fields.set_in_place(b":path", b"/a%2Fb");
        let reply = m.prepare_path(&mut fields).expect("rejected");
        assert_eq!(
            (reply.status, reply.details.as_str()),
            (400, PATH_NORMALIZATION_FAILED)
        );
        assert!(reply.body.is_empty());

        let redirect = ConnectionManager::default()
            .path_with_escaped_slashes_action(EscapedSlashesAction::UnescapeAndRedirect);
        let reply = redirect.prepare_path(&mut fields).expect("redirected");
        assert_eq!(reply.status, 307);
        assert_eq!(reply.headers.get(b"location"), Some(&b"/a/b"[..]));
        // gRPC clients do not follow redirects.
        fields.add_new(b"content-type", b"application/grpc");
        let reply = redirect.prepare_path(&mut fields).expect("rejected");
        assert_eq!(reply.status, 400);
    }

    /// The request fields of a request with `method` and `target`, then what
    /// the connection manager answers before the filters, if anything.
    fn early(
        m: &ConnectionManager,
        method: &str,
        target: &str,
    ) -> (Fields, Option<LocalReplyRequest>) {
        let req = http::Request::builder()
            .method(method)
            .uri(target)
            .header("host", "h")
            .header("content-type", "application/grpc")
            .body(Bytes::new())
            .expect("request");
        let mut fields = m
            .request_fields(&req, || [0; 16], Fields::default())
            .expect("fields");
        let reply = m.prepare_path(&mut fields);
        (fields, reply)
    }

    #[test]
    fn a_target_that_is_not_a_path_is_answered_before_normalizing() {
        for m in [ConnectionManager::default(), auth_settings()] {
            // OPTIONS *: 404, no body; the request keeps its headers (a gRPC
            // client gets a gRPC reply).
            let (fields, reply) = early(&m, "OPTIONS", "*");
            let reply = reply.expect("answered");
            assert_eq!((reply.status, reply.details.as_str()), (404, ABSOLUTE_PATH));
            assert!(reply.body.is_empty());
            assert!(is_grpc_request(&fields));
            // Any other method with `*`, an authority form, another scheme:
            // the codec's 400, without request headers.
            for (method, target) in [
                ("GET", "*"),
                ("POST", "*"),
                ("GET", "h:80"),
                ("OPTIONS", "h:80"),
                ("GET", "ftp://h/x"),
            ] {
                let (fields, reply) = early(&m, method, target);
                let reply = reply.expect("answered");
                assert_eq!(
                    (reply.status, reply.details.as_str(), &reply.body[..]),
                    (400, INVALID_URL, &b"Bad Request"[..]),
                    "{method} {target}"
                );
                assert_eq!(fields.len(), 0, "{method} {target}");
            }
            // An absolute form is its path, host and scheme.
            let (fields, reply) = early(&m, "GET", "https://other/x?q=1");
            assert!(reply.is_none());
            assert_eq!(fields.get(b":path"), Some(&b"/x?q=1"[..]));
            assert_eq!(fields.get(b":authority"), Some(&b"other"[..]));
            assert_eq!(fields.get(b":scheme"), Some(&b"https"[..]));
            let (fields, reply) = early(&m, "OPTIONS", "http://other");
            assert!(reply.is_none());
            assert_eq!(fields.get(b":path"), Some(&b"/"[..]));
            assert_eq!(fields.get(b":scheme"), Some(&b"http"[..]));
        }
    }

    #[test]
    fn a_bodiless_request_is_framed_unless_its_method_has_no_body() {
        for (method, framed) in [
            ("GET", false),
            ("HEAD", false),
            ("DELETE", false),
            ("TRACE", false),
            ("POST", true),
            ("PUT", true),
            ("PATCH", true),
            ("OPTIONS", true),
            ("PURGE", true),
        ] {
            let method = http::Method::from_bytes(method.as_bytes()).expect("method");
            assert_eq!(
                frames_empty_body(&method, &Bytes::new()),
                framed,
                "{method}"
            );
            assert!(
                !frames_empty_body(&method, &Bytes::from_static(b"x")),
                "{method}"
            );
        }
    }

    #[test]
    fn escaped_slashes_action_names() {
        for (name, action) in [
            (
                "IMPLEMENTATION_SPECIFIC_DEFAULT",
                EscapedSlashesAction::KeepUnchanged,
            ),
            ("KEEP_UNCHANGED", EscapedSlashesAction::KeepUnchanged),
            ("REJECT_REQUEST", EscapedSlashesAction::RejectRequest),
            ("3", EscapedSlashesAction::UnescapeAndRedirect),
            (
                "UNESCAPE_AND_FORWARD",
                EscapedSlashesAction::UnescapeAndForward,
            ),
        ] {
            assert_eq!(
                EscapedSlashesAction::from_name(name),
                Some(action),
                "{name}"
            );
        }
        assert_eq!(EscapedSlashesAction::from_name("reject_request"), None);
    }

    #[test]
    fn filters_see_envoy_style_request_headers() {
        let req = http::Request::get("/p?q=1")
            .header("Host", "example.com")
            .header("X-Custom", "A")
            .body(Bytes::new())
            .expect("request");
        let hcm = ConnectionManager::default().generate_request_id(false);
        let fields = hcm
            .request_fields(&req, || [0; 16], Fields::default())
            .expect("fields");
        let names: Vec<_> = fields
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                ":authority",
                ":path",
                ":method",
                ":scheme",
                "x-custom",
                "x-forwarded-proto"
            ]
        );
        assert_eq!(fields.get(b":path"), Some(&b"/p?q=1"[..]));
    }

    #[test]
    fn a_chunked_request_reaches_the_filters_without_its_framing() {
        let req = http::Request::post("/")
            .header("host", "a.test")
            .header("transfer-encoding", "chunked")
            .body(Bytes::from_static(b"abc"))
            .expect("request");
        let hcm = ConnectionManager::default().generate_request_id(false);
        let fields = hcm
            .request_fields(&req, || [0; 16], Fields::default())
            .expect("fields");
        assert_eq!(fields.get(b"transfer-encoding"), None);
        // The router frames the body again.
        let upstream = hcm
            .upstream_request(
                &fields,
                Bytes::from_static(b"abc"),
                true,
                None,
                &mut HttpCache::default(),
            )
            .expect("request");
        assert_eq!(upstream.headers()["transfer-encoding"], "chunked");
        // An empty chunked body is chunked too.
        let upstream = hcm
            .upstream_request(&fields, Bytes::new(), true, None, &mut HttpCache::default())
            .expect("request");
        assert_eq!(upstream.headers()["transfer-encoding"], "chunked");
        let upstream = hcm
            .upstream_request(
                &fields,
                Bytes::new(),
                false,
                None,
                &mut HttpCache::default(),
            )
            .expect("request");
        assert_eq!(upstream.headers()["content-length"], "0");
    }

    fn names(fields: &Fields) -> Vec<String> {
        fields
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect()
    }

    #[test]
    fn the_response_map_keeps_no_wire_framing() {
        let hcm = ConnectionManager::default();
        let mut cache = HttpCache::default();
        // An upstream's chunked response with its own date.
        let mut fields = Fields::new(Kind::Response);
        fields.add(b":status", b"200");
        fields.add(b"date", b"Thu, 01 Jan 2026 00:00:00 GMT");
        fields.add(b"transfer-encoding", b"chunked");
        let response = hcm
            .client_response(
                &mut fields,
                Bytes::from_static(b"hi"),
                "later",
                None,
                false,
                &mut cache,
            )
            .expect("response");
        assert_eq!(response.headers()["transfer-encoding"], "chunked");
        assert_eq!(response.headers()["date"], "Thu, 01 Jan 2026 00:00:00 GMT");
        assert_eq!(
            names(&fields),
            [
                ":status=200",
                "date=Thu, 01 Jan 2026 00:00:00 GMT",
                "server=envoy"
            ]
        );
        // A local reply without a body: `content-length: 0` on the wire only.
        let reply = LocalReplyRequest {
            status: 404,
            details: String::new(),
            body: Vec::new(),
            headers: Fields::new(Kind::Plain),
            grpc_status: -1,
        };
        let (mut fields, body) = ConnectionManager::local_reply(&reply, false, false);
        assert!(body.is_empty());
        assert_eq!(names(&fields), [":status=404"]);
        let response = hcm
            .client_response(&mut fields, Bytes::new(), "now", None, false, &mut cache)
            .expect("response");
        assert_eq!(response.headers()["content-length"], "0");
        assert_eq!(names(&fields), [":status=404", "date=now", "server=envoy"]);
        // With a body, the reply declares its length.
        let reply = LocalReplyRequest {
            body: b"tea".to_vec(),
            ..reply
        };
        assert_eq!(
            names(&ConnectionManager::local_reply(&reply, false, false).0),
            [":status=404", "content-length=3", "content-type=text/plain"]
        );
    }

    fn reply(
        status: u32,
        grpc_status: i32,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> LocalReplyRequest {
        let mut fields = Fields::new(Kind::Plain);
        for (name, value) in headers {
            fields.add(name.as_bytes(), value.as_bytes());
        }
        LocalReplyRequest {
            status,
            details: "d".to_owned(),
            body: body.to_vec(),
            headers: fields,
            grpc_status,
        }
    }

    #[test]
    fn grpc_requests_are_told_by_their_content_type() {
        let request = |content_type: Option<&[u8]>| {
            let mut fields = Fields::new(Kind::Request);
            fields.add(b":path", b"/pkg.Svc/Call");
            if let Some(value) = content_type {
                fields.add(b"content-type", value);
            }
            is_grpc_request(&fields)
        };
        assert!(request(Some(b"application/grpc")));
        assert!(request(Some(b"application/grpc+proto")));
        assert!(request(Some(b"application/grpc+")));
        assert!(!request(Some(b"application/grpc-web")));
        assert!(!request(Some(b"application/grpc; charset=utf-8")));
        assert!(!request(Some(b"Application/GRPC")));
        assert!(!request(Some(b"application/grp")));
        assert!(!request(Some(b"")));
        assert!(!request(None));
    }

    #[test]
    fn http_statuses_map_to_envoys_grpc_statuses() {
        let cases = [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (502, 14),
            (503, 14),
            (504, 14),
            (200, 2),
            (413, 2),
            (500, 2),
            (418, 2),
            (0, 2),
        ];
        for (http, grpc) in cases {
            assert_eq!(http_to_grpc_status(http), grpc, "{http}");
        }
    }

    #[test]
    fn a_known_grpc_status_wins_over_the_http_one() {
        assert_eq!(local_reply_grpc_status(&reply(403, -1, b"", &[])), 7);
        assert_eq!(local_reply_grpc_status(&reply(403, 0, b"", &[])), 0);
        assert_eq!(local_reply_grpc_status(&reply(403, 16, b"", &[])), 16);
        // Envoy 1.40 takes anything else for none.
        assert_eq!(local_reply_grpc_status(&reply(503, 17, b"", &[])), 14);
        assert_eq!(local_reply_grpc_status(&reply(503, 99, b"", &[])), 14);
        assert_eq!(local_reply_grpc_status(&reply(503, -5, b"", &[])), 14);
        assert_eq!(local_reply_grpc_status(&reply(503, i32::MIN, b"", &[])), 14);
    }

    #[test]
    fn grpc_messages_are_percent_encoded_as_envoys() {
        assert_eq!(percent_encode(b"plain text {}`!"), "plain text {}`!");
        assert_eq!(percent_encode(b"100% ~"), "100%25 %7E");
        assert_eq!(percent_encode(b"a\tb\r\n\x7f"), "a%09b%0D%0A%7F");
        assert_eq!(percent_encode("café".as_bytes()), "caf%C3%A9");
        assert_eq!(percent_encode(b""), "");
    }

    #[test]
    fn a_local_reply_to_a_grpc_request_is_trailers_only() {
        // Grpc status from the HTTP status; no body, no grpc-message.
        let (fields, body) = ConnectionManager::local_reply(&reply(403, -1, b"", &[]), true, false);
        assert!(body.is_empty());
        assert_eq!(
            names(&fields),
            [
                ":status=200",
                "content-type=application/grpc",
                "grpc-status=7"
            ]
        );
        // The body becomes grpc-message; the reply's headers come first.
        let (fields, body) = ConnectionManager::local_reply(
            &reply(401, 5, b"go 100%", &[("x-a", "1"), ("x-b", "2")]),
            true,
            false,
        );
        assert!(body.is_empty());
        assert_eq!(
            names(&fields),
            [
                ":status=200",
                "x-a=1",
                "x-b=2",
                "content-type=application/grpc",
                "grpc-status=5",
                "grpc-message=go 100%25"
            ]
        );
        // The reply's own content-type and grpc-message are replaced where
        // they stand, its grpc-status kept, its content-length removed.
        let headers = [
            ("grpc-status", "9"),
            ("grpc-message", "theirs"),
            ("content-type", "text/html"),
            ("content-length", "5"),
        ];
        let (fields, _) =
            ConnectionManager::local_reply(&reply(500, 3, b"mine", &headers), true, false);
        assert_eq!(
            names(&fields),
            [
                ":status=200",
                "grpc-status=9",
                "grpc-message=mine",
                "content-type=application/grpc"
            ]
        );
        // An empty grpc-status is replaced.
        let (fields, _) = ConnectionManager::local_reply(
            &reply(404, -1, b"", &[("grpc-status", "")]),
            true,
            false,
        );
        assert_eq!(
            names(&fields),
            [
                ":status=200",
                "grpc-status=12",
                "content-type=application/grpc"
            ]
        );
        // The same reply to a plain request.
        let (fields, body) =
            ConnectionManager::local_reply(&reply(401, 5, b"go", &[]), false, false);
        assert_eq!(body, b"go");
        assert_eq!(
            names(&fields),
            [":status=401", "content-length=2", "content-type=text/plain"]
        );
    }

    #[test]
    fn status_codes_parse_as_str_parse_does() {
        for s in [
            "200", "+200", "0200", "", "+", "-1", "65535", "65536", " 200", "200 ", "2x0", "++2",
            "\u{e9}",
        ] {
            assert_eq!(parse_u16(s.as_bytes()), s.parse::<u16>().ok(), "{s:?}");
        }
        assert_eq!(parse_u16(b"\xff"), None);
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 1234, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = uuid_v4([0xff; 16]);
        assert_eq!(&id[14..15], b"4");
        let bytes: Vec<u8> = (0..16).collect();
        let id = uuid_v4(bytes.try_into().expect("16 bytes"));
        assert_eq!(&id, b"00010203-0405-4607-8809-0a0b0c0d0e0f");
    }

    #[test]
    fn upstream_gets_host_and_router_headers() {
        let mut fields = Fields::new(Kind::Request);
        fields.add(b":authority", b"a.test");
        fields.add(b":path", b"/x");
        fields.add(b":method", b"GET");
        fields.add(b"x-a", b"1");
        let req = ConnectionManager::default()
            .upstream_request(
                &fields,
                Bytes::new(),
                false,
                None,
                &mut HttpCache::default(),
            )
            .expect("request");
        assert_eq!(req.headers()["host"], "a.test");
        assert_eq!(req.headers()["x-envoy-expected-rq-timeout-ms"], "15000");
        assert_eq!(req.uri(), "/x");
    }

    /// Builds the upstream request for `pairs` (after the pseudo-headers)
    /// with `cache`, and the same without a cache.
    fn both_ways(
        hcm: &ConnectionManager,
        method: &str,
        body: &'static [u8],
        pairs: &[(&str, &[u8])],
        cache: &mut HttpCache,
    ) -> (Result<http::Request<Bytes>>, Result<http::Request<Bytes>>) {
        let mut fields = Fields::new(Kind::Request);
        fields.add(b":authority", b"a.test");
        fields.add(b":path", b"/x?y=1");
        fields.add(b":method", method.as_bytes());
        for (name, value) in pairs {
            fields.add(name.as_bytes(), value);
        }
        let body = Bytes::from_static(body);
        (
            hcm.upstream_request(&fields, body.clone(), false, None, cache),
            hcm.upstream_request(&fields, body, false, None, &mut HttpCache::default()),
        )
    }

    fn entries(request: &http::Request<Bytes>) -> Vec<(String, Vec<u8>)> {
        request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn maps_built_from_the_last_one_equal_maps_built_afresh() {
        let hcm = ConnectionManager::default();
        let mut cache = HttpCache::default();
        // Method, body, headers after the pseudo-headers.
        type Case<'a> = (&'a str, &'a [u8], &'a [(&'a str, &'a [u8])]);
        let cases: &[Case<'_>] = &[
            ("GET", b"", &[("x-a", b"1"), ("x-b", b"2")]),
            // Same names, values changed.
            ("GET", b"", &[("x-a", b"3"), ("x-b", b"2")]),
            ("GET", b"", &[("x-a", b"3"), ("x-b", b"4")]),
            // A name more, a name less, another order.
            ("GET", b"", &[("x-a", b"3"), ("x-b", b"4"), ("x-c", b"5")]),
            ("GET", b"", &[("x-a", b"3")]),
            ("GET", b"", &[("x-b", b"4"), ("x-a", b"3")]),
            // A repeated name: its values are grouped, so the map is not
            // kept as a model.
            ("GET", b"", &[("x-a", b"1"), ("x-b", b"2"), ("x-a", b"3")]),
            ("GET", b"", &[("x-a", b"1"), ("x-b", b"2"), ("x-a", b"3")]),
            // What the router adds: chunked framing, `content-length: 0`,
            // and the headers a filter set that it replaces in place.
            ("POST", b"body", &[("x-a", b"1")]),
            ("POST", b"", &[("x-a", b"1")]),
            ("POST", b"", &[("x-a", b"1")]),
            (
                "POST",
                b"body",
                &[("transfer-encoding", b"gzip"), ("x-a", b"1")],
            ),
            (
                "GET",
                b"",
                &[("x-envoy-expected-rq-timeout-ms", b"1"), ("x-a", b"1")],
            ),
            (
                "GET",
                b"",
                &[("x-envoy-expected-rq-timeout-ms", b"1"), ("x-a", b"1")],
            ),
            ("PUT", b"", &[("content-length", b"0")]),
            ("GET", b"", &[("host", b"other"), ("x-a", b"1")]),
            ("GET", b"", &[("x-a", b"1"), ("x-b", b"2")]),
        ];
        for (method, body, pairs) in cases {
            let (cached, fresh) = both_ways(&hcm, method, body, pairs, &mut cache);
            let (cached, fresh) = (cached.expect("cached"), fresh.expect("fresh"));
            assert_eq!(entries(&cached), entries(&fresh), "{method} {pairs:?}");
            assert_eq!(cached.uri(), fresh.uri());
            assert_eq!(cached.method(), fresh.method());
        }
    }

    #[test]
    fn a_changed_value_is_validated_again() {
        let hcm = ConnectionManager::default();
        let mut cache = HttpCache::default();
        let (ok, _) = both_ways(&hcm, "GET", b"", &[("x-a", b"1")], &mut cache);
        ok.expect("valid");
        let (cached, fresh) = both_ways(&hcm, "GET", b"", &[("x-a", b"1\n2")], &mut cache);
        let (cached, fresh) = (cached.expect_err("cached"), fresh.expect_err("fresh"));
        assert_eq!(cached.to_string(), fresh.to_string());
        assert!(cached.to_string().contains("x-a"), "{cached}");
        // The failed map left the model as it was.
        let (cached, _) = both_ways(&hcm, "GET", b"", &[("x-a", b"1")], &mut cache);
        assert_eq!(cached.expect("valid").headers()["x-a"], "1");
        // Also when a valid changed value came before the invalid one.
        let pairs: &[(&str, &[u8])] = &[("x-a", b"1"), ("x-b", b"2")];
        both_ways(&hcm, "GET", b"", pairs, &mut cache)
            .0
            .expect("valid");
        let pairs: &[(&str, &[u8])] = &[("x-a", b"3"), ("x-b", b"\n")];
        both_ways(&hcm, "GET", b"", pairs, &mut cache)
            .0
            .expect_err("invalid");
        let (cached, fresh) = both_ways(
            &hcm,
            "GET",
            b"",
            &[("x-a", b"1"), ("x-b", b"2")],
            &mut cache,
        );
        assert_eq!(
            entries(&cached.expect("cached")),
            entries(&fresh.expect("fresh"))
        );
        // And when a name differs after a changed value.
        let pairs: &[(&str, &[u8])] = &[("x-a", b"4"), ("x-c", b"2")];
        both_ways(&hcm, "GET", b"", pairs, &mut cache)
            .0
            .expect("valid");
        let (cached, fresh) = both_ways(
            &hcm,
            "GET",
            b"",
            &[("x-a", b"1"), ("x-b", b"2")],
            &mut cache,
        );
        assert_eq!(
            entries(&cached.expect("cached")),
            entries(&fresh.expect("fresh"))
        );
        // Values of another length.
        for value in [&b"1"[..], b"12345", b"", b"1"] {
            let (cached, fresh) = both_ways(
                &hcm,
                "GET",
                b"",
                &[("x-a", value), ("x-b", b"2")],
                &mut cache,
            );
            assert_eq!(
                entries(&cached.expect("cached")),
                entries(&fresh.expect("fresh"))
            );
        }
    }

    #[test]
    fn client_responses_built_from_the_last_one_equal_fresh_ones() {
        let hcm = ConnectionManager::default();
        let mut cache = HttpCache::default();
        for (status, server, extra) in [
            ("200", "a", "1"),
            ("200", "a", "2"),
            ("404", "b", "2"),
            ("200", "b", "3"),
        ] {
            let mut fields = Fields::new(Kind::Response);
            fields.add(b":status", status.as_bytes());
            fields.add(b"x-extra", extra.as_bytes());
            let hcm = hcm.clone().server_name(server);
            let build = |cache: &mut HttpCache| {
                hcm.client_response(
                    &mut fields.clone(),
                    Bytes::from_static(b"hi"),
                    "Thu, 01 Jan 1970 00:00:00 GMT",
                    None,
                    false,
                    cache,
                )
                .expect("response")
            };
            let (cached, fresh) = (build(&mut cache), build(&mut HttpCache::default()));
            assert_eq!(cached.status(), fresh.status());
            assert_eq!(cached.headers(), fresh.headers());
            assert_eq!(
                cached.headers().keys().collect::<Vec<_>>(),
                fresh.headers().keys().collect::<Vec<_>>()
            );
            assert_eq!(cached.headers()["server"], server);
            assert_eq!(cached.headers()["x-extra"], extra);
        }
    }
}
