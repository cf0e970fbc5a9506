//! One walk over a whole Envoy bootstrap that classifies every field it meets,
//! by path, so that the loaders ([`EnvoyConfig`] and [`NetworkConfig`]) never
//! silently ignore one.
//!
//! Each field is one of:
//! - **read**: the loader uses it (emulated);
//! - **inert**: it cannot change anything a filter, an upstream or a client
//!   observes in the harness (the reason is written next to it in the tables);
//! - **refused** ([`Error::EnvoyConfig`] naming the field's full path and what
//!   Envoy would do): ordinary requests or connections would be answered
//!   differently;
//! - **warned** (accepted, listed in the loader's `warnings` and logged with
//!   `tracing::warn!`): only edge cases differ, e.g. timeouts the harness does
//!   not model.
//!
//! A field the tables do not list is **refused**: the loader cannot know what
//! Envoy does with it, so it cannot promise that ordinary requests are answered
//! the same. One line in a table classifies a new field. `@type` keys the
//! tables do not list are inert: they name the message type of the mapping they
//! are in, whose fields are classified one by one (the filters' and the HTTP
//! connection manager's `@type` is checked, as Envoy picks an extension by it).
//! A `null` or an empty list is the field's default, as in protobuf's JSON
//! mapping, and is skipped.
//!
//! Paths are dot-separated; a segment is a map key, a list index, `*` (any key
//! or index), a list element's `name` (`[...]` quotes a segment that contains
//! dots), or `$upstream`: the cluster the emulated route (or `tcp_proxy`)
//! sends streams to.
//! Tables are searched in order and the first entry that matches decides: an
//! entry whose path matches the field's exactly gives its class, one whose path
//! goes deeper makes the field a message (or list) whose own fields are then
//! classified. [`Class::Within`] classifies a message's fields with other
//! tables, relative to it, so that the tables for, say, a wasm plugin's config
//! serve both loaders.
//!
//! [`EnvoyConfig`]: crate::EnvoyConfig
//! [`NetworkConfig`]: crate::NetworkConfig

use std::borrow::Cow;

use serde_yaml_ng::Value;

use crate::{Error, Result};

/// What a field that is not inert does when its value is not one the harness
/// behaves like.
#[derive(Debug, Clone, Copy)]
enum Severity {
    Warn,
    Refuse,
}

/// How the loaders treat a field (see the module docs).
#[derive(Debug, Clone, Copy)]
enum Class {
    /// Emulated. A message's fields are classified in turn.
    Read,
    /// Emulated as a whole (e.g. a map of arbitrary keys the loader reads).
    ReadAll,
    /// Cannot change what a filter, an upstream or a client observes.
    Inert(&'static str),
    /// Accepted: only edge cases differ. Says what Envoy does.
    Warn(&'static str),
    /// Refused: ordinary requests would be answered differently. Says what
    /// Envoy does.
    Refuse(&'static str),
    /// Inert with one of these values (the harness behaves as Envoy does
    /// with them), otherwise warned or refused.
    Only(&'static [&'static str], Severity, &'static str),
    /// A message whose fields these tables classify, relative to it.
    Within(&'static [Table]),
}

/// Paths and their classes, first match wins.
type Table = &'static [(&'static str, Class)];

use Class::{Inert, Only, Read, ReadAll, Refuse, Warn, Within};
use Severity::{Refuse as Refused, Warn as Warned};

const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const HTTP_WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const NETWORK_WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm";
const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const TCP_PROXY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const HTTP_OPTIONS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

const TYPE_MISMATCH: &str = "Envoy picks the extension by this type, not by the filter's name; \
                             the harness emulates the one the name says";
const RUNTIME: &str =
    "runtime values can change Envoy's behaviour; the harness behaves as Envoy's defaults";
const SOCKET: &str = "socket and accept tuning: nothing a filter, an upstream or a client observes";
const STATS: &str = "names and exports statistics only";
const ACCESS_LOG: &str = "access logging (Envoy's own, not the filters' on_log)";
const TLS_ONLY: &str = "applies to TLS connections only, which the harness does not have";
const TIMEOUT: &str = "a timeout the harness does not model";
const HEADER_MUTATION: &str = "Envoy adds or removes these headers on every request or response \
                               it routes here; the harness does not";
const PER_FILTER: &str = "per-route filter configuration (Envoy can disable or reconfigure a \
                          filter for the route); the harness runs every filter as configured";
const RETRIES: &str = "Envoy retries (or hedges) failed upstream requests; the harness sends \
                       each request upstream once";
const MIRROR: &str = "Envoy also sends copies of requests to another cluster; the harness does not";
const UPGRADES: &str = "Envoy proxies upgrade requests (e.g. websocket); the harness strips the \
                        upgrade header as for any request";
const FIRST_ROUTE: &str = "the harness routes every request to the first route, so that route \
                           must match every request (match: { prefix: \"/\" }); Envoy matches \
                           this condition";
const OTHER_CLUSTERS: &str = "callouts and gRPC calls are answered by the test's handlers \
                              (ChainBuilder::cluster, grpc_service), whatever the cluster's \
                              protocol";

/// The bootstrap's top level, shared by both loaders (after theirs).
const BOOTSTRAP: Table = &[
    (
        "static_resources.listeners.*",
        Warn("not emulated: the harness runs the first listener only"),
    ),
    ("static_resources.clusters.*", Within(&[CLUSTER])),
    (
        "static_resources.secrets",
        Inert("TLS material, used only by transport sockets, which are refused or warned"),
    ),
    ("node", ReadAll),
    ("node_context_params", Inert("xDS resource naming")),
    (
        "admin",
        Inert("the admin interface is not on the data path"),
    ),
    (
        "dynamic_resources",
        Refuse(
            "Envoy loads listeners, clusters or routes from xDS; the harness reads static_resources only",
        ),
    ),
    (
        "cluster_manager.upstream_bind_config",
        Warn(
            "upstream connections' source address: filters read the harness's upstream.local_address",
        ),
    ),
    (
        "cluster_manager.*",
        Inert(
            "zone-aware balancing, outlier event log, load reports: nothing observed with one endpoint",
        ),
    ),
    ("hds_config", Inert("health discovery service")),
    ("flags_path", Inert("hot-restart and drain flags")),
    ("stats_sinks", Inert(STATS)),
    ("stats_config", Inert(STATS)),
    ("stats_flush_interval", Inert(STATS)),
    ("stats_flush_on_admin", Inert(STATS)),
    ("deferred_stat_options", Inert(STATS)),
    ("stats_server_version_override", Inert(STATS)),
    ("enable_dispatcher_stats", Inert(STATS)),
    ("watchdog", Inert("kills a stuck Envoy")),
    ("watchdogs", Inert("kills a stuck Envoy")),
    (
        "tracing",
        Inert("the tracer used by a connection manager's `tracing`, which is refused"),
    ),
    (
        "layered_runtime.layers.*.name",
        Inert("names a runtime layer"),
    ),
    (
        "layered_runtime.layers.*.admin_layer",
        Inert("runtime values set through the admin interface"),
    ),
    ("layered_runtime.layers.*.static_layer", Warn(RUNTIME)),
    ("layered_runtime.layers.*.disk_layer", Warn(RUNTIME)),
    ("layered_runtime.layers.*.rtds_layer", Warn(RUNTIME)),
    (
        "overload_manager",
        Warn("Envoy sheds or slows requests under resource pressure; the harness does not"),
    ),
    (
        "header_prefix",
        Refuse("Envoy renames the x-envoy-* headers it adds and reads; the harness uses x-envoy-"),
    ),
    (
        "bootstrap_extensions",
        Refuse(
            "bootstrap extensions (e.g. a wasm service sharing data and queues with the filters) are not emulated",
        ),
    ),
    (
        "use_tcp_for_dns_lookups",
        Inert("DNS resolution of cluster addresses"),
    ),
    (
        "dns_resolution_config",
        Inert("DNS resolution of cluster addresses"),
    ),
    (
        "typed_dns_resolver_config",
        Inert("DNS resolution of cluster addresses"),
    ),
    ("fatal_actions", Inert("what Envoy does when it crashes")),
    (
        "config_sources",
        Inert("xDS sources, used by nothing the static config refers to"),
    ),
    (
        "default_config_source",
        Inert("xDS sources, used by nothing the static config refers to"),
    ),
    ("default_socket_interface", Inert(SOCKET)),
    ("certificate_provider_instances", Inert(TLS_ONLY)),
    ("inline_headers", Inert("header map performance")),
    (
        "perf_tracing_file_path",
        Inert("Envoy's own performance traces"),
    ),
    (
        "default_regex_engine",
        Inert("Envoy's regex engine, for matchers the harness refuses"),
    ),
    ("xds_delegate_extension", Inert("xDS")),
    ("xds_config_tracker_extension", Inert("xDS")),
    (
        "listener_manager",
        Inert("Envoy's listener manager implementation"),
    ),
    (
        "application_log_config",
        Inert("the format of Envoy's own log"),
    ),
    (
        "grpc_async_client_manager_config",
        Inert("gRPC client cache lifetime"),
    ),
    (
        "memory_allocator_manager",
        Inert("Envoy's memory allocator"),
    ),
];

/// The HTTP loader's top level.
const HTTP_BOOTSTRAP: Table = &[
    (
        "static_resources.listeners.0",
        Within(&[HTTP_LISTENER, LISTENER]),
    ),
    (
        "static_resources.clusters.$upstream",
        Within(&[HTTP_UPSTREAM, CLUSTER]),
    ),
];

/// The network loader's top level.
const NETWORK_BOOTSTRAP: Table = &[
    (
        "static_resources.listeners.0",
        Within(&[NETWORK_LISTENER, LISTENER]),
    ),
    (
        "static_resources.clusters.$upstream",
        Within(&[NETWORK_UPSTREAM, CLUSTER]),
    ),
];

/// `tcp_proxy`'s cluster, for the network loader (before `CLUSTER`).
const NETWORK_UPSTREAM: Table = &[
    ("load_assignment.endpoints.0.locality", ReadAll),
    ("metadata", ReadAll),
    (
        "load_assignment.endpoints.0.lb_endpoints.0.metadata",
        ReadAll,
    ),
    ("load_assignment.endpoints.0.metadata", ReadAll),
];

/// A listener, for both loaders (after theirs).
const LISTENER: Table = &[
    (
        "name",
        Inert("names the listener for stats and admin; no attribute carries it"),
    ),
    (
        "address",
        Inert(
            "where Envoy listens; the harness is handed requests (its destination.address is ConnectionManager::destination_address)",
        ),
    ),
    (
        "additional_addresses",
        Inert("more addresses to listen on, as `address`"),
    ),
    ("stat_prefix", Inert(STATS)),
    ("metadata", ReadAll),
    (
        "traffic_direction",
        Only(
            &["UNSPECIFIED"],
            Warned,
            "filters read xds.listener_direction 0 (UNSPECIFIED) in the harness",
        ),
    ),
    (
        "filter_chains.0.name",
        Only(
            &[""],
            Warned,
            "filters read an empty xds.filter_chain_name in the harness",
        ),
    ),
    (
        "filter_chains.0.filter_chain_match",
        Refuse(
            "Envoy serves only the connections this matches; the harness runs the first chain for every connection",
        ),
    ),
    (
        "filter_chains.0.transport_socket",
        Refuse(
            "clients speak TLS to Envoy: x-forwarded-proto, :scheme and the connection's TLS attributes differ from the harness's plaintext clients",
        ),
    ),
    (
        "filter_chains.0.transport_socket_connect_timeout",
        Inert(TLS_ONLY),
    ),
    (
        "filter_chains.0.metadata",
        Inert("no attribute carries a filter chain's metadata"),
    ),
    (
        "filter_chains.*",
        Refuse(
            "Envoy picks one of several filter chains for each connection; the harness runs the first",
        ),
    ),
    (
        "listener_filters.[envoy.filters.listener.tls_inspector]",
        Inert(
            "only inspects TLS client hellos for filter chain matching, which the harness does not need (one chain, no match)",
        ),
    ),
    (
        "listener_filters.[envoy.filters.listener.http_inspector]",
        Inert(
            "only detects the protocol for filter chain matching, which the harness does not need (one chain, no match)",
        ),
    ),
    (
        "listener_filters.*",
        Refuse(
            "a listener filter (e.g. proxy_protocol, original_dst) changes a connection's addresses or chain before the filters see it; the harness runs none",
        ),
    ),
    (
        "listener_filters_timeout",
        Inert("listener filters that only inspect"),
    ),
    (
        "continue_on_listener_filters_timeout",
        Inert("listener filters that only inspect"),
    ),
    (
        "use_original_dst",
        Only(
            &["false"],
            Warned,
            "Envoy hands connections redirected to this listener to the listener of their original destination; the harness serves them here",
        ),
    ),
    (
        "default_filter_chain",
        Refuse(
            "Envoy serves connections no filter chain matches with another chain; the harness runs the first chain",
        ),
    ),
    (
        "filter_chain_matcher",
        Refuse(
            "Envoy picks the filter chain by connection properties; the harness runs the first chain",
        ),
    ),
    ("access_log", Inert(ACCESS_LOG)),
    ("socket_options", Inert(SOCKET)),
    ("freebind", Inert(SOCKET)),
    ("transparent", Inert(SOCKET)),
    ("tcp_fast_open_queue_length", Inert(SOCKET)),
    ("tcp_backlog_size", Inert(SOCKET)),
    ("enable_reuse_port", Inert(SOCKET)),
    ("reuse_port", Inert(SOCKET)),
    ("bind_to_port", Inert(SOCKET)),
    ("enable_mptcp", Inert(SOCKET)),
    ("connection_balance_config", Inert(SOCKET)),
    ("max_connections_to_accept_per_socket_event", Inert(SOCKET)),
    ("ignore_global_conn_limit", Inert(SOCKET)),
    (
        "bypass_overload_manager",
        Inert("overload actions, which are warned"),
    ),
    ("drain_type", Inert("draining on shutdown or hot restart")),
];

/// The HTTP loader's listener: one chain, the HTTP connection manager.
const HTTP_LISTENER: Table = &[
    ("per_connection_buffer_limit_bytes", Read),
    (
        "filter_chains.0.filters.[envoy.filters.network.http_connection_manager]",
        Within(&[HCM_FILTER]),
    ),
    (
        "filter_chains.0.filters.*",
        Refuse(
            "a network filter the harness does not emulate: it runs the HTTP connection manager alone",
        ),
    ),
];

/// The network loader's listener: wasm network filters, then `tcp_proxy`.
const NETWORK_LISTENER: Table = &[
    (
        "per_connection_buffer_limit_bytes",
        Refuse("read-buffer watermarks of network filters are not emulated"),
    ),
    (
        "filter_chains.0.filters.[envoy.filters.network.wasm]",
        Within(&[NETWORK_WASM_FILTER]),
    ),
    (
        "filter_chains.0.filters.[envoy.filters.network.tcp_proxy]",
        Within(&[TCP_PROXY_FILTER]),
    ),
    (
        "filter_chains.0.filters.*",
        Refuse(
            "a network filter the harness does not emulate: it runs wasm filters, then tcp_proxy",
        ),
    ),
];

const HCM_FILTER: Table = &[("name", Read), ("typed_config", Within(&[HCM]))];

/// `envoy.filters.network.http_connection_manager`'s `typed_config`.
const HCM: Table = &[
    ("@type", Only(&[HCM_TYPE], Refused, TYPE_MISMATCH)),
    ("generate_request_id", Read),
    ("server_name", Read),
    ("http_protocol_options.enable_trailers", Read),
    ("route_config", Within(&[ROUTE_CONFIG])),
    (
        "http_filters.[envoy.filters.http.wasm]",
        Within(&[HTTP_WASM_FILTER, HTTP_FILTER]),
    ),
    (
        "http_filters.[envoy.filters.http.router]",
        Within(&[ROUTER_FILTER, HTTP_FILTER]),
    ),
    (
        "http_filters.*",
        Refuse("an HTTP filter the harness does not emulate: it runs wasm filters and the router"),
    ),
    ("stat_prefix", Inert(STATS)),
    (
        "codec_type",
        Only(
            &["AUTO", "HTTP1"],
            Refused,
            "clients speak HTTP/2 or HTTP/3 to Envoy: headers and bodies are framed differently from the harness's HTTP/1 clients",
        ),
    ),
    (
        "server_header_transformation",
        Only(
            &["OVERWRITE"],
            Refused,
            "Envoy keeps the upstream's server header; the harness overwrites it with server_name",
        ),
    ),
    (
        "http_protocol_options.*",
        Warn("an HTTP/1 codec option the harness does not model (it is handed parsed requests)"),
    ),
    (
        "http2_protocol_options",
        Inert("applies to HTTP/2 clients; the harness's speak HTTP/1"),
    ),
    (
        "http3_protocol_options",
        Inert("applies to HTTP/3 clients; the harness's speak HTTP/1"),
    ),
    (
        "common_http_protocol_options.*",
        Warn("a connection or stream limit or timeout the harness does not model"),
    ),
    (
        "rds",
        Refuse("Envoy loads the routes from RDS; the harness reads route_config"),
    ),
    (
        "scoped_routes",
        Refuse("Envoy picks a route table per request; the harness reads route_config"),
    ),
    (
        "add_user_agent",
        Only(
            &["false"],
            Refused,
            "Envoy adds user-agent and x-envoy-downstream-service-* headers to requests",
        ),
    ),
    (
        "tracing",
        Refuse(
            "Envoy traces requests: it adds trace headers upstream and may rewrite x-request-id",
        ),
    ),
    (
        "http1_safe_max_connection_duration",
        Inert("applies with max_connection_duration, which is warned"),
    ),
    (
        "max_request_headers_kb",
        Warn("Envoy answers 431 to requests with larger headers; the harness has no such limit"),
    ),
    ("stream_idle_timeout", Warn(TIMEOUT)),
    ("stream_flush_timeout", Warn(TIMEOUT)),
    ("request_timeout", Warn(TIMEOUT)),
    ("request_headers_timeout", Warn(TIMEOUT)),
    ("drain_timeout", Inert("draining connections on shutdown")),
    (
        "drain_timeout_jitter",
        Inert("draining connections on shutdown"),
    ),
    (
        "delayed_close_timeout",
        Inert("how long a closing connection waits for the client"),
    ),
    ("access_log", Inert(ACCESS_LOG)),
    ("access_log_flush_interval", Inert(ACCESS_LOG)),
    ("flush_access_log_on_new_request", Inert(ACCESS_LOG)),
    ("access_log_options", Inert(ACCESS_LOG)),
    (
        "use_remote_address",
        Only(
            &["false"],
            Refused,
            "Envoy appends the client's address to x-forwarded-for and treats external clients differently",
        ),
    ),
    (
        "xff_num_trusted_hops",
        Only(
            &["0"],
            Warned,
            "Envoy takes the client's address from further into x-forwarded-for, when a request has one",
        ),
    ),
    (
        "original_ip_detection_extensions",
        Refuse("Envoy takes the client's address from request headers and may reject requests"),
    ),
    (
        "early_header_mutation_extensions",
        Refuse("Envoy changes request headers before the filters see them"),
    ),
    (
        "internal_address_config",
        Warn(
            "Envoy trusts x-envoy-* headers from these addresses; the harness strips them from every client",
        ),
    ),
    (
        "skip_xff_append",
        Inert("x-forwarded-for is appended only with use_remote_address, which is refused"),
    ),
    (
        "via",
        Only(
            &[""],
            Refused,
            "Envoy adds a via header to requests and responses",
        ),
    ),
    (
        "preserve_external_request_id",
        Inert("applies to external requests, which need use_remote_address (refused)"),
    ),
    (
        "always_set_request_id_in_response",
        Only(
            &["false"],
            Refused,
            "Envoy adds x-request-id to every response",
        ),
    ),
    (
        "forward_client_cert_details",
        Only(
            &["SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET"],
            Warned,
            "Envoy forwards a client's x-forwarded-client-cert; the harness strips it",
        ),
    ),
    ("set_current_client_cert_details", Inert(TLS_ONLY)),
    (
        "forward_client_cert_matcher",
        Warn("Envoy may forward a client's x-forwarded-client-cert; the harness strips it"),
    ),
    (
        "proxy_100_continue",
        Only(
            &["false"],
            Warned,
            "Envoy forwards expect: 100-continue upstream and the upstream's 100 response to the client",
        ),
    ),
    (
        "represent_ipv4_remote_address_as_ipv4_mapped_ipv6",
        Inert("applies with use_remote_address, which is refused"),
    ),
    ("upgrade_configs", Warn(UPGRADES)),
    ("normalize_path", Read),
    ("merge_slashes", Read),
    ("path_with_escaped_slashes_action", Read),
    (
        "request_id_extension",
        Refuse("Envoy generates and reads request ids with this extension"),
    ),
    (
        "local_reply_config",
        Refuse("Envoy rewrites local replies (status, body, headers)"),
    ),
    (
        "strip_matching_host_port",
        Only(&["false"], Refused, "Envoy strips the port from :authority"),
    ),
    (
        "strip_any_host_port",
        Only(&["false"], Refused, "Envoy strips the port from :authority"),
    ),
    (
        "strip_trailing_host_dot",
        Only(
            &["false"],
            Warned,
            "Envoy strips a trailing dot from :authority, when a request has one",
        ),
    ),
    (
        "stream_error_on_invalid_http_message",
        Inert(
            "how Envoy ends connections with invalid HTTP, which the harness's parsed requests cannot carry",
        ),
    ),
    (
        "path_normalization_options",
        Inert("not implemented by Envoy"),
    ),
    (
        "proxy_status_config",
        Warn("Envoy adds a proxy-status header to responses for errors it detects"),
    ),
    (
        "typed_header_validation_config",
        Refuse("Envoy validates and normalizes requests with this extension"),
    ),
    (
        "append_x_forwarded_port",
        Only(
            &["false"],
            Refused,
            "Envoy adds x-forwarded-port to requests",
        ),
    ),
    (
        "append_local_overload",
        Inert("applies under overload actions, which are warned"),
    ),
    (
        "add_proxy_protocol_connection_state",
        Inert("filter state for PROXY protocol upstreams"),
    ),
    (
        "forward_proto_config",
        Inert(
            "applies to connections with a PROXY protocol header, which the harness's clients do not send",
        ),
    ),
    (
        "scheme_header_transformation",
        Refuse("Envoy rewrites :scheme"),
    ),
];

/// A `http_filters` entry, for both filters the harness runs.
const HTTP_FILTER: Table = &[
    ("name", Read),
    (
        "is_optional",
        Inert("lets Envoy skip filters it does not know; it knows these"),
    ),
    (
        "disabled",
        Only(
            &["false"],
            Refused,
            "Envoy runs a disabled filter only on routes that enable it; the harness runs it on every request",
        ),
    ),
];

const HTTP_WASM_FILTER: Table = &[
    (
        "typed_config.@type",
        Only(&[HTTP_WASM_TYPE], Refused, TYPE_MISMATCH),
    ),
    ("typed_config.config", Within(&[HTTP_PLUGIN, PLUGIN])),
];

/// What only an HTTP wasm filter's plugin config has.
const HTTP_PLUGIN: Table = &[("allow_on_headers_stop_iteration", ReadAll)];

/// A wasm filter's `config` (a `PluginConfig`), for both loaders.
const PLUGIN: Table = &[
    ("name", Read),
    ("root_id", Read),
    ("configuration.@type", Read),
    ("configuration.value", Read),
    ("fail_open", Read),
    ("failure_policy", Read),
    ("reload_config.backoff.base_interval", Read),
    (
        "reload_config.backoff.max_interval",
        Warn("caps the reload backoff, which the harness keeps at base_interval (jittered)"),
    ),
    ("vm_config.vm_id", Read),
    (
        "vm_config.runtime",
        Inert("the harness's wasmtime runs the module as Envoy's V8 does"),
    ),
    ("vm_config.code.local.filename", Read),
    ("vm_config.configuration.@type", Read),
    ("vm_config.configuration.value", Read),
    (
        "vm_config.allow_precompiled",
        Inert("how the runtime compiles the module"),
    ),
    (
        "vm_config.nack_on_code_cache_miss",
        Inert("remote code fetching, which is refused"),
    ),
    ("vm_config.environment_variables.key_values", ReadAll),
    (
        "vm_config.environment_variables.host_env_keys",
        Warn(
            "Envoy passes these variables of its own environment to the VM; the harness passes none",
        ),
    ),
    (
        "capability_restriction_config",
        Refuse("Envoy denies the module the ABI functions this does not allow"),
    ),
];

const NETWORK_WASM_FILTER: Table = &[
    ("name", Read),
    (
        "typed_config.@type",
        Only(&[NETWORK_WASM_TYPE], Refused, TYPE_MISMATCH),
    ),
    ("typed_config.config", Within(&[NETWORK_PLUGIN, PLUGIN])),
];

/// What a network wasm filter's plugin config may carry besides `PLUGIN`.
const NETWORK_PLUGIN: Table = &[(
    "allow_on_headers_stop_iteration",
    Inert("network filters have no headers"),
)];

const TCP_PROXY_FILTER: Table = &[
    ("name", Read),
    (
        "typed_config.@type",
        Only(&[TCP_PROXY_TYPE], Refused, TYPE_MISMATCH),
    ),
    ("typed_config.cluster", Read),
    ("typed_config.stat_prefix", Inert(STATS)),
    ("typed_config.access_log", Inert(ACCESS_LOG)),
    ("typed_config.access_log_options", Inert(ACCESS_LOG)),
    ("typed_config.idle_timeout", Warn(TIMEOUT)),
    (
        "typed_config.max_downstream_connection_duration",
        Warn(TIMEOUT),
    ),
    (
        "typed_config.max_connect_attempts",
        Warn("Envoy retries failed upstream connections; the harness connects once"),
    ),
    (
        "typed_config.backoff_options",
        Warn("Envoy retries failed upstream connections; the harness connects once"),
    ),
    (
        "typed_config.hash_policy",
        Inert("load balancing over one endpoint"),
    ),
    (
        "typed_config.metadata_match",
        Inert("subset load balancing, which is refused"),
    ),
    (
        "typed_config.weighted_clusters",
        Refuse(
            "Envoy picks one of several clusters for each connection; the harness uses `cluster`",
        ),
    ),
    (
        "typed_config.tunneling_config",
        Refuse("Envoy tunnels the connection over HTTP (CONNECT or POST)"),
    ),
    (
        "typed_config.on_demand",
        Refuse("Envoy discovers the cluster on demand"),
    ),
];

/// `envoy.filters.http.router`.
const ROUTER_FILTER: Table = &[
    (
        "typed_config.@type",
        Only(&[ROUTER_TYPE], Refused, TYPE_MISMATCH),
    ),
    ("typed_config.suppress_envoy_headers", Read),
    ("typed_config.dynamic_stats", Inert(STATS)),
    (
        "typed_config.suppress_grpc_request_failure_code_stats",
        Inert(STATS),
    ),
    (
        "typed_config.start_child_span",
        Inert("tracing, which is refused"),
    ),
    ("typed_config.upstream_log", Inert(ACCESS_LOG)),
    ("typed_config.upstream_log_options", Inert(ACCESS_LOG)),
    (
        "typed_config.strict_check_headers",
        Warn("Envoy answers 400 to requests with invalid values in these x-envoy-* headers"),
    ),
    (
        "typed_config.respect_expected_rq_timeout",
        Warn("Envoy takes the timeout from a trusted x-envoy-expected-rq-timeout-ms"),
    ),
    (
        "typed_config.reject_connect_request_early_data",
        Inert("CONNECT requests with early data"),
    ),
    (
        "typed_config.upstream_http_filters",
        Refuse("Envoy runs HTTP filters on the upstream request; the harness runs none"),
    ),
];

/// The connection manager's `route_config`.
const ROUTE_CONFIG: Table = &[
    ("validate_clusters", Read),
    ("virtual_hosts.0", Within(&[VIRTUAL_HOST])),
    (
        "virtual_hosts.*",
        Refuse(
            "Envoy picks the virtual host by the request's host; the harness sends every request to the first",
        ),
    ),
    (
        "name",
        Inert("names the route table for RDS; no attribute carries it"),
    ),
    (
        "metadata",
        Inert("no attribute carries the route table's metadata"),
    ),
    ("request_headers_to_add", Refuse(HEADER_MUTATION)),
    ("request_headers_to_remove", Refuse(HEADER_MUTATION)),
    ("response_headers_to_add", Refuse(HEADER_MUTATION)),
    ("response_headers_to_remove", Refuse(HEADER_MUTATION)),
    (
        "internal_only_headers",
        Refuse("Envoy removes these headers from requests it does not consider internal"),
    ),
    (
        "most_specific_header_mutations_wins",
        Inert("orders header mutations, which are refused"),
    ),
    (
        "max_direct_response_body_size_bytes",
        Inert("limits direct responses, which are refused"),
    ),
    (
        "ignore_port_in_host_matching",
        Inert("the virtual host matches every host"),
    ),
    (
        "ignore_path_parameters_in_path_matching",
        Inert("the route matches every path"),
    ),
    (
        "cluster_specifier_plugins",
        Refuse("Envoy picks clusters with these plugins"),
    ),
    ("request_mirror_policies", Warn(MIRROR)),
    ("typed_per_filter_config", Refuse(PER_FILTER)),
    ("vhds", Refuse("Envoy loads virtual hosts from VHDS")),
];

/// The first virtual host, the one the harness emulates.
const VIRTUAL_HOST: Table = &[
    ("name", Read),
    ("domains", ReadAll),
    ("routes.0", Within(&[ROUTE])),
    (
        "routes.*",
        Inert("never reached: the first route matches every request"),
    ),
    ("metadata", ReadAll),
    (
        "require_tls",
        Only(
            &["NONE"],
            Refused,
            "Envoy redirects or refuses plaintext requests",
        ),
    ),
    ("virtual_clusters", Inert(STATS)),
    (
        "rate_limits",
        Inert("used by the rate limit filter, which is refused"),
    ),
    ("cors", Inert("used by the CORS filter, which is refused")),
    ("request_headers_to_add", Refuse(HEADER_MUTATION)),
    ("request_headers_to_remove", Refuse(HEADER_MUTATION)),
    ("response_headers_to_add", Refuse(HEADER_MUTATION)),
    ("response_headers_to_remove", Refuse(HEADER_MUTATION)),
    ("typed_per_filter_config", Refuse(PER_FILTER)),
    (
        "include_request_attempt_count",
        Only(
            &["false"],
            Refused,
            "Envoy adds x-envoy-attempt-count to requests",
        ),
    ),
    (
        "include_attempt_count_in_response",
        Only(
            &["false"],
            Refused,
            "Envoy adds x-envoy-attempt-count to responses",
        ),
    ),
    (
        "include_is_timeout_retry_header",
        Inert("marks retries, which are warned"),
    ),
    ("retry_policy", Warn(RETRIES)),
    ("retry_policy_typed_config", Warn(RETRIES)),
    ("hedge_policy", Warn(RETRIES)),
    (
        "per_request_buffer_limit_bytes",
        Refuse("Envoy buffers request bodies up to this limit instead of the listener's"),
    ),
    (
        "request_body_buffer_limit",
        Refuse("Envoy buffers request bodies up to this limit instead of the listener's"),
    ),
    ("request_mirror_policies", Warn(MIRROR)),
    (
        "matcher",
        Refuse("Envoy picks routes with a matcher tree; the harness uses the first route"),
    ),
];

/// The first route of the first virtual host, the one the harness emulates.
const ROUTE: Table = &[
    ("name", Read),
    ("match.prefix", Only(&["/", ""], Refused, FIRST_ROUTE)),
    ("match.case_sensitive", Inert("the prefix / has no letters")),
    ("match.*", Refuse(FIRST_ROUTE)),
    ("route", Within(&[ROUTE_ACTION])),
    (
        "redirect",
        Refuse("Envoy answers with a redirect; the harness sends requests upstream"),
    ),
    (
        "direct_response",
        Refuse("Envoy answers directly; the harness sends requests upstream"),
    ),
    (
        "filter_action",
        Refuse("Envoy hands the request to a filter; the harness sends requests upstream"),
    ),
    (
        "non_forwarding_action",
        Refuse("Envoy does not forward the request; the harness sends requests upstream"),
    ),
    ("metadata", ReadAll),
    ("decorator", Inert("names trace spans; tracing is refused")),
    ("tracing", Inert("tracing, which is refused")),
    ("stat_prefix", Inert(STATS)),
    ("typed_per_filter_config", Refuse(PER_FILTER)),
    ("request_headers_to_add", Refuse(HEADER_MUTATION)),
    ("request_headers_to_remove", Refuse(HEADER_MUTATION)),
    ("response_headers_to_add", Refuse(HEADER_MUTATION)),
    ("response_headers_to_remove", Refuse(HEADER_MUTATION)),
    (
        "per_request_buffer_limit_bytes",
        Refuse("Envoy buffers request bodies up to this limit instead of the listener's"),
    ),
    (
        "request_body_buffer_limit",
        Refuse("Envoy buffers request bodies up to this limit instead of the listener's"),
    ),
];

/// The first route's `route` (a `RouteAction`).
const ROUTE_ACTION: Table = &[
    ("cluster", Read),
    ("timeout", Read),
    (
        "cluster_not_found_response_code",
        Only(
            &["SERVICE_UNAVAILABLE"],
            Refused,
            "Envoy answers a route to an undefined cluster with this code; the harness answers 503",
        ),
    ),
    (
        "weighted_clusters",
        Refuse(
            "Envoy picks one of several clusters for each request; the harness emulates a route to one `cluster`",
        ),
    ),
    (
        "cluster_header",
        Refuse(
            "Envoy picks the cluster from a request header; the harness emulates a route to one `cluster`",
        ),
    ),
    (
        "cluster_specifier_plugin",
        Refuse(
            "Envoy picks the cluster with a plugin; the harness emulates a route to one `cluster`",
        ),
    ),
    (
        "inline_cluster_specifier_plugin",
        Refuse(
            "Envoy picks the cluster with a plugin; the harness emulates a route to one `cluster`",
        ),
    ),
    (
        "prefix_rewrite",
        Refuse("Envoy rewrites the path it sends upstream; the harness sends it unchanged"),
    ),
    (
        "regex_rewrite",
        Refuse("Envoy rewrites the path it sends upstream; the harness sends it unchanged"),
    ),
    (
        "path_rewrite_policy",
        Refuse("Envoy rewrites the path it sends upstream; the harness sends it unchanged"),
    ),
    (
        "host_rewrite_literal",
        Refuse("Envoy rewrites the host it sends upstream; the harness sends it unchanged"),
    ),
    (
        "auto_host_rewrite",
        Refuse("Envoy rewrites the host it sends upstream; the harness sends it unchanged"),
    ),
    (
        "host_rewrite_header",
        Refuse("Envoy rewrites the host it sends upstream; the harness sends it unchanged"),
    ),
    (
        "host_rewrite_path_regex",
        Refuse("Envoy rewrites the host it sends upstream; the harness sends it unchanged"),
    ),
    (
        "append_x_forwarded_host",
        Inert("applies with a host rewrite, which is refused"),
    ),
    ("idle_timeout", Warn(TIMEOUT)),
    ("flush_timeout", Warn(TIMEOUT)),
    (
        "max_stream_duration",
        Warn("a stream duration limit (or one from grpc-timeout) the harness does not model"),
    ),
    (
        "max_grpc_timeout",
        Warn("Envoy takes the timeout of gRPC requests from grpc-timeout"),
    ),
    (
        "grpc_timeout_offset",
        Warn("Envoy takes the timeout of gRPC requests from grpc-timeout"),
    ),
    ("retry_policy", Warn(RETRIES)),
    ("retry_policy_typed_config", Warn(RETRIES)),
    ("hedge_policy", Warn(RETRIES)),
    ("request_mirror_policies", Warn(MIRROR)),
    ("upgrade_configs", Warn(UPGRADES)),
    (
        "internal_redirect_policy",
        Warn("Envoy follows the upstream's redirects itself"),
    ),
    (
        "internal_redirect_action",
        Warn("Envoy follows the upstream's redirects itself"),
    ),
    (
        "max_internal_redirects",
        Warn("Envoy follows the upstream's redirects itself"),
    ),
    ("early_data_policy", Inert("TLS early data")),
    (
        "metadata_match",
        Inert("subset load balancing, which is refused"),
    ),
    ("priority", Inert("connection pool priority")),
    (
        "rate_limits",
        Inert("used by the rate limit filter, which is refused"),
    ),
    (
        "include_vh_rate_limits",
        Inert("used by the rate limit filter, which is refused"),
    ),
    ("hash_policy", Inert("load balancing over one endpoint")),
    ("cors", Inert("used by the CORS filter, which is refused")),
];

/// The emulated route's cluster, for the HTTP loader (before `CLUSTER`): the
/// harness's upstream speaks HTTP/1.
const HTTP_UPSTREAM: Table = &[
    ("load_assignment.endpoints.0.locality", ReadAll),
    ("metadata", ReadAll),
    (
        "load_assignment.endpoints.0.lb_endpoints.0.metadata",
        ReadAll,
    ),
    ("load_assignment.endpoints.0.metadata", ReadAll),
    (
        "typed_extension_protocol_options.[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].@type",
        Only(&[HTTP_OPTIONS_TYPE], Refused, TYPE_MISMATCH),
    ),
    (
        "typed_extension_protocol_options.[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].explicit_http_config.http_protocol_options.enable_trailers",
        Read,
    ),
    (
        "typed_extension_protocol_options.[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].explicit_http_config.http_protocol_options.*",
        Warn("an HTTP/1 codec option the harness's upstream does not model"),
    ),
    (
        "typed_extension_protocol_options.[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].explicit_http_config.*",
        Refuse(
            "Envoy speaks HTTP/2 or HTTP/3 to the upstream: requests are framed differently from the harness's HTTP/1",
        ),
    ),
    (
        "typed_extension_protocol_options.[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].use_downstream_protocol_config",
        Inert("the harness's clients speak HTTP/1, so Envoy does upstream too"),
    ),
    (
        "typed_extension_protocol_options.[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].auto_config",
        Refuse("Envoy negotiates the upstream's protocol; the harness's upstream speaks HTTP/1"),
    ),
    (
        "typed_extension_protocol_options.[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].common_http_protocol_options",
        Warn("a connection or stream limit or timeout the harness does not model"),
    ),
    (
        "typed_extension_protocol_options.[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].upstream_http_protocol_options",
        Inert(TLS_ONLY),
    ),
    (
        "typed_extension_protocol_options.[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].http_filters",
        Refuse("Envoy runs HTTP filters on the upstream request; the harness runs none"),
    ),
    (
        "typed_extension_protocol_options.[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].header_validation_config",
        Refuse("Envoy validates upstream headers with this extension"),
    ),
    ("http_protocol_options.enable_trailers", Read),
    (
        "http_protocol_options.*",
        Warn("an HTTP/1 codec option the harness's upstream does not model"),
    ),
    (
        "http2_protocol_options",
        Refuse(
            "Envoy speaks HTTP/2 to the upstream: requests are framed differently from the harness's HTTP/1",
        ),
    ),
    (
        "common_http_protocol_options",
        Warn("a connection or stream limit or timeout the harness does not model"),
    ),
    (
        "protocol_selection",
        Only(
            &["USE_CONFIGURED_PROTOCOL", "USE_DOWNSTREAM_PROTOCOL"],
            Refused,
            "an upstream protocol the harness does not model",
        ),
    ),
];

/// A static cluster, for both loaders (after theirs). The harness sends the
/// emulated route's (or `tcp_proxy`'s) streams to the test's upstream and
/// callouts to the test's handlers, so how Envoy finds and balances over
/// endpoints is inert for a cluster of one endpoint.
const CLUSTER: Table = &[
    ("name", Read),
    (
        "metadata",
        Inert("no attribute carries the metadata of a cluster no stream goes to"),
    ),
    (
        "type",
        Only(
            &["STATIC", "STRICT_DNS", "LOGICAL_DNS"],
            Refused,
            "Envoy takes this cluster's endpoints from EDS or the original destination, which the harness does not",
        ),
    ),
    (
        "cluster_type",
        Refuse(
            "a custom cluster type (e.g. dynamic forward proxy, aggregate) picks upstreams per request",
        ),
    ),
    (
        "eds_cluster_config",
        Refuse("Envoy takes this cluster's endpoints from EDS"),
    ),
    ("alt_stat_name", Inert(STATS)),
    (
        "connect_timeout",
        Inert("the harness's upstreams accept at once, or refuse"),
    ),
    ("lb_policy", Inert("load balancing over one endpoint")),
    (
        "load_balancing_policy",
        Inert("load balancing over one endpoint"),
    ),
    (
        "common_lb_config",
        Inert("load balancing over one endpoint"),
    ),
    (
        "round_robin_lb_config",
        Inert("load balancing over one endpoint"),
    ),
    (
        "least_request_lb_config",
        Inert("load balancing over one endpoint"),
    ),
    (
        "ring_hash_lb_config",
        Inert("load balancing over one endpoint"),
    ),
    (
        "maglev_lb_config",
        Inert("load balancing over one endpoint"),
    ),
    (
        "original_dst_lb_config",
        Inert("load balancing over one endpoint"),
    ),
    (
        "lb_subset_config",
        Refuse("Envoy picks endpoints by their metadata and may find none"),
    ),
    (
        "load_assignment.cluster_name",
        Inert("names the assignment"),
    ),
    (
        "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address",
        Inert("the harness sends to the test's upstream (ConnectionManager::upstream_address)"),
    ),
    (
        "load_assignment.endpoints.0.lb_endpoints.0.endpoint.hostname",
        Inert("used by auto_host_rewrite, which is refused"),
    ),
    (
        "load_assignment.endpoints.0.lb_endpoints.0.endpoint.health_check_config",
        Inert("active health checks, which are warned"),
    ),
    (
        "load_assignment.endpoints.0.lb_endpoints.0.endpoint.additional_addresses",
        Inert("more addresses of the endpoint, as `address`"),
    ),
    (
        "load_assignment.endpoints.0.lb_endpoints.0.metadata",
        Inert("no attribute carries the metadata of an endpoint no stream goes to"),
    ),
    (
        "load_assignment.endpoints.0.lb_endpoints.0.health_status",
        Only(
            &["UNKNOWN", "HEALTHY"],
            Refused,
            "Envoy does not send requests to an endpoint in this state",
        ),
    ),
    (
        "load_assignment.endpoints.0.lb_endpoints.0.load_balancing_weight",
        Inert("load balancing over one endpoint"),
    ),
    (
        "load_assignment.endpoints.0.lb_endpoints.*",
        Warn(
            "a second endpoint: Envoy balances requests over them, the harness sends every request to one upstream",
        ),
    ),
    (
        "load_assignment.endpoints.0.locality",
        Inert("no attribute carries the locality of an endpoint no stream goes to"),
    ),
    (
        "load_assignment.endpoints.0.metadata",
        Inert("no attribute carries the metadata of a locality no stream goes to"),
    ),
    (
        "load_assignment.endpoints.0.load_balancing_weight",
        Inert("load balancing over one locality"),
    ),
    (
        "load_assignment.endpoints.0.priority",
        Inert("load balancing over one locality"),
    ),
    (
        "load_assignment.endpoints.0.proximity",
        Inert("load balancing over one locality"),
    ),
    (
        "load_assignment.endpoints.*",
        Warn(
            "a second locality: Envoy balances requests over its endpoints, the harness sends every request to one upstream",
        ),
    ),
    (
        "load_assignment.policy",
        Warn("overprovisioning and drop_overloads: Envoy may drop requests under this policy"),
    ),
    ("typed_extension_protocol_options", Inert(OTHER_CLUSTERS)),
    ("http_protocol_options", Inert(OTHER_CLUSTERS)),
    ("http2_protocol_options", Inert(OTHER_CLUSTERS)),
    ("common_http_protocol_options", Inert(OTHER_CLUSTERS)),
    ("upstream_http_protocol_options", Inert(TLS_ONLY)),
    ("protocol_selection", Inert(OTHER_CLUSTERS)),
    (
        "per_connection_buffer_limit_bytes",
        Warn("upstream connection read-buffer watermarks the harness does not model"),
    ),
    (
        "circuit_breakers",
        Warn("Envoy answers 503 past these limits; the harness has none"),
    ),
    (
        "outlier_detection",
        Warn("Envoy ejects failing endpoints; the harness keeps its one upstream"),
    ),
    (
        "health_checks",
        Warn(
            "Envoy stops sending to an endpoint that fails its health checks; the harness does not check",
        ),
    ),
    (
        "max_requests_per_connection",
        Inert("upstream connection reuse"),
    ),
    ("upstream_connection_options", Inert(SOCKET)),
    (
        "upstream_bind_config",
        Warn(
            "upstream connections' source address: filters read the harness's upstream.local_address",
        ),
    ),
    (
        "transport_socket",
        Warn(
            "TLS to the upstream: the harness's upstream speaks plaintext and filters read no upstream TLS attributes",
        ),
    ),
    (
        "transport_socket_matches",
        Warn(
            "TLS to the upstream: the harness's upstream speaks plaintext and filters read no upstream TLS attributes",
        ),
    ),
    (
        "filters",
        Refuse("Envoy runs network filters on upstream connections; the harness runs none"),
    ),
    (
        "dns_lookup_family",
        Inert("DNS resolution of endpoint addresses"),
    ),
    (
        "dns_refresh_rate",
        Inert("DNS resolution of endpoint addresses"),
    ),
    (
        "dns_failure_refresh_rate",
        Inert("DNS resolution of endpoint addresses"),
    ),
    ("dns_jitter", Inert("DNS resolution of endpoint addresses")),
    (
        "respect_dns_ttl",
        Inert("DNS resolution of endpoint addresses"),
    ),
    (
        "dns_resolvers",
        Inert("DNS resolution of endpoint addresses"),
    ),
    (
        "use_tcp_for_dns_lookups",
        Inert("DNS resolution of endpoint addresses"),
    ),
    (
        "dns_resolution_config",
        Inert("DNS resolution of endpoint addresses"),
    ),
    (
        "typed_dns_resolver_config",
        Inert("DNS resolution of endpoint addresses"),
    ),
    ("wait_for_warm_on_init", Inert("start-up order")),
    (
        "cleanup_interval",
        Inert("host cleanup for original destination clusters"),
    ),
    (
        "close_connections_on_host_health_failure",
        Inert("health checks, which are warned"),
    ),
    (
        "ignore_health_on_host_removal",
        Inert("health checks, which are warned"),
    ),
    ("track_timeout_budgets", Inert(STATS)),
    ("track_cluster_stats", Inert(STATS)),
    ("preconnect_policy", Inert("upstream connection pooling")),
    (
        "connection_pool_per_downstream_connection",
        Inert("upstream connection pooling"),
    ),
];

/// One step of a field's path, for matching.
struct Segment<'v> {
    /// The map key, or the list index.
    key: Cow<'v, str>,
    /// A list element's `name`.
    name: Option<&'v str>,
}

/// What a table says about a field.
enum Decision {
    Class(Class),
    /// A message or list whose fields the tables classify.
    Descend,
    Unknown,
}

/// A pattern's segments: split at dots outside `[...]`.
fn segments(pattern: &str) -> impl Iterator<Item = &str> {
    let mut rest = pattern;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (segment, tail) = match rest.strip_prefix('[') {
            Some(quoted) => {
                let end = quoted.find(']').unwrap_or(quoted.len());
                (&quoted[..end], quoted.get(end + 1..).unwrap_or_default())
            }
            None => rest.split_at(rest.find('.').unwrap_or(rest.len())),
        };
        rest = tail.strip_prefix('.').unwrap_or(tail);
        Some(segment)
    })
}

/// A scalar's text, as the tables spell values.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A map key as a path segment.
fn key_text(key: &Value) -> Cow<'_, str> {
    match key {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(scalar(other).unwrap_or_else(|| format!("{other:?}"))),
    }
}

/// The walk's state: where it is and what it found.
struct Walk<'a> {
    upstream: Option<&'a str>,
    /// The current field's path, as shown to the user.
    path: String,
    warnings: Vec<String>,
    refusals: Vec<String>,
}

impl Walk<'_> {
    fn matches(&self, pattern: &str, segment: &Segment<'_>) -> bool {
        match pattern {
            "*" => true,
            "$upstream" => self.upstream.is_some() && segment.name == self.upstream,
            _ => segment.key == pattern || segment.name == Some(pattern),
        }
    }

    fn decide(&self, relative: &[Segment<'_>], tables: &[Table]) -> Decision {
        'entries: for (pattern, class) in tables.iter().flat_map(|t| t.iter()) {
            let mut parts = segments(pattern);
            for segment in relative {
                match parts.next() {
                    Some(part) if self.matches(part, segment) => {}
                    _ => continue 'entries,
                }
            }
            return match parts.next() {
                None => Decision::Class(*class),
                Some(_) => Decision::Descend,
            };
        }
        Decision::Unknown
    }

    fn children<'v>(&mut self, node: &'v Value, relative: &mut Vec<Segment<'v>>, tables: &[Table]) {
        let at = self.path.len();
        match node {
            Value::Mapping(map) => {
                for (key, value) in map {
                    let key = key_text(key);
                    let plain = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '-'));
                    match (plain, self.path.is_empty()) {
                        (true, true) => self.path.push_str(&key),
                        (true, false) => {
                            self.path.push('.');
                            self.path.push_str(&key);
                        }
                        (false, _) => self.path.push_str(&format!("[{key:?}]")),
                    }
                    relative.push(Segment { key, name: None });
                    self.visit(value, relative, tables);
                    relative.pop();
                    self.path.truncate(at);
                }
            }
            Value::Sequence(list) => {
                for (i, value) in list.iter().enumerate() {
                    self.path.push_str(&format!("[{i}]"));
                    relative.push(Segment {
                        key: Cow::Owned(i.to_string()),
                        name: value.get("name").and_then(Value::as_str),
                    });
                    self.visit(value, relative, tables);
                    relative.pop();
                    self.path.truncate(at);
                }
            }
            _ => {}
        }
    }

    fn visit<'v>(&mut self, node: &'v Value, relative: &mut Vec<Segment<'v>>, tables: &[Table]) {
        // Protobuf's JSON mapping: null and an empty list are the default.
        if node.is_null() || node.as_sequence().is_some_and(Vec::is_empty) {
            return;
        }
        let container = node.is_mapping() || node.is_sequence();
        match self.decide(relative, tables) {
            Decision::Class(Read) if container => self.children(node, relative, tables),
            Decision::Class(Read | ReadAll) => {}
            Decision::Class(Inert(why)) => {
                tracing::trace!(field = %self.path, why, "inert bootstrap field");
            }
            Decision::Class(Warn(why)) => self.warnings.push(format!("{}: {why}", self.path)),
            Decision::Class(Refuse(why)) => self.refusals.push(format!("{}: {why}", self.path)),
            Decision::Class(Only(values, severity, why)) => {
                let value = scalar(node);
                if value.as_deref().is_some_and(|v| values.contains(&v)) {
                    return;
                }
                let shown = value.map_or_else(|| "set".to_owned(), |v| format!("{v:?}"));
                let text = format!("{} is {shown}: {why}", self.path);
                match severity {
                    Severity::Warn => self.warnings.push(text),
                    Severity::Refuse => self.refusals.push(text),
                }
            }
            Decision::Class(Within(inner)) if container => {
                self.children(node, &mut Vec::new(), inner);
            }
            Decision::Descend if container => self.children(node, relative, tables),
            Decision::Class(Within(_)) | Decision::Descend => self.refusals.push(format!(
                "{}: Envoy expects a message or a list here, not {node:?}",
                self.path
            )),
            Decision::Unknown if relative.last().is_some_and(|s| s.key == "@type") => {}
            Decision::Unknown => self.refusals.push(format!(
                "{}: a field the harness's loader does not know, so it cannot tell what \
                 Envoy would do with it (not emulated)",
                self.path
            )),
        }
    }
}

/// Which loader is walking.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Loader<'a> {
    /// [`EnvoyConfig`](crate::EnvoyConfig), whose emulated route sends
    /// requests to this cluster.
    Http { upstream: Option<&'a str> },
    /// [`NetworkConfig`](crate::NetworkConfig), whose `tcp_proxy` connects
    /// to this cluster.
    Network { upstream: Option<&'a str> },
}

/// Classifies every field of `root` for `loader`: the warnings (each also
/// logged), or every refusal in one error.
pub(crate) fn check(root: &Value, loader: Loader<'_>) -> Result<Vec<String>> {
    let (tables, upstream): (&[Table], _) = match loader {
        Loader::Http { upstream } => (&[HTTP_BOOTSTRAP, BOOTSTRAP], upstream),
        Loader::Network { upstream } => (&[NETWORK_BOOTSTRAP, BOOTSTRAP], upstream),
    };
    let mut walk = Walk {
        upstream,
        path: String::new(),
        warnings: Vec::new(),
        refusals: Vec::new(),
    };
    walk.children(root, &mut Vec::new(), tables);
    if !walk.refusals.is_empty() {
        return Err(Error::EnvoyConfig(format!(
            "not emulated by the harness: {}",
            walk.refusals.join("; ")
        )));
    }
    for warning in &walk.warnings {
        tracing::warn!("envoy config: {warning}");
    }
    Ok(walk.warnings)
}

/// Editing bootstraps in the loaders' tests.
#[cfg(test)]
pub(crate) mod testing {
    use serde_yaml_ng::Value;

    /// `yaml` with the field at `path` (dot-separated keys and list indices,
    /// `[...]` quoting a key with dots) set to the YAML `value`, or removed
    /// when `value` is empty. A list index last inserts `value` there.
    pub(crate) fn with(yaml: &str, path: &str, value: &str) -> String {
        let mut root: Value = serde_yaml_ng::from_str(yaml).expect("test YAML");
        let parts: Vec<&str> = super::segments(path).collect();
        let (last, parents) = parts.split_last().expect("a path");
        let mut node = &mut root;
        for part in parents {
            node = match part.parse::<usize>() {
                Ok(i) if node.is_sequence() => &mut node[i],
                _ => {
                    if node.get(*part).is_none() {
                        node[*part] = Value::Mapping(serde_yaml_ng::Mapping::new());
                    }
                    &mut node[*part]
                }
            };
        }
        if value.is_empty() {
            if let Some(map) = node.as_mapping_mut() {
                map.remove(*last);
            }
        } else {
            let value: Value = serde_yaml_ng::from_str(value).expect("test value");
            match last.parse::<usize>() {
                Ok(i) if node.is_sequence() => {
                    if let Some(list) = node.as_sequence_mut() {
                        list.insert(i.min(list.len()), value);
                    }
                }
                _ => node[*last] = value,
            }
        }
        serde_yaml_ng::to_string(&root).expect("serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::{BOOTSTRAP, Class, Table, segments};
    use std::cmp::Ordering;

    #[test]
    fn patterns_split_at_dots_outside_brackets() {
        let parts: Vec<&str> = segments("a.[b.c].*.d").collect();
        assert_eq!(parts, ["a", "b.c", "*", "d"]);
        let parts: Vec<&str> = segments("[x.y]").collect();
        assert_eq!(parts, ["x.y"]);
        assert_eq!(segments("").count(), 0);
    }

    /// Every table entry can decide some field: none is hidden by an earlier
    /// entry of its table that decides the same fields, decides a subtree
    /// around them, or makes them messages by going deeper.
    #[test]
    fn every_entry_is_reachable() {
        fn covers(general: &[&str], specific: &[&str]) -> bool {
            general
                .iter()
                .zip(specific)
                .all(|(g, s)| g == s || *g == "*")
        }
        fn check(table: Table, seen: &mut Vec<usize>) {
            let address = table.as_ptr() as usize;
            if seen.contains(&address) {
                return;
            }
            seen.push(address);
            for (i, (pattern, class)) in table.iter().enumerate() {
                let later: Vec<&str> = segments(pattern).collect();
                let read = |c: &Class| matches!(c, Class::Read);
                for (earlier, earlier_class) in &table[..i] {
                    let earlier: Vec<&str> = segments(earlier).collect();
                    let hidden = match earlier.len().cmp(&later.len()) {
                        Ordering::Equal => covers(&earlier, &later),
                        Ordering::Less => !read(earlier_class) && covers(&earlier, &later),
                        Ordering::Greater => !read(class) && covers(&earlier, &later),
                    };
                    assert!(!hidden, "{pattern} is hidden by {}", earlier.join("."));
                }
                if let Class::Within(inner) = class {
                    for t in inner.iter() {
                        check(t, seen);
                    }
                }
            }
        }
        let mut seen = Vec::new();
        for table in [BOOTSTRAP, super::HTTP_BOOTSTRAP, super::NETWORK_BOOTSTRAP] {
            check(table, &mut seen);
        }
        assert!(seen.len() > 20, "walked {} tables", seen.len());
    }
}
