//! Ready-to-apply configuration for a published filter: an Istio `WasmPlugin`,
//! a Gloo `Gateway` snippet and an Envoy `remote` code source.

use crate::image::{Image, Layout, media_type};
use crate::manifest::FilterManifest;
use crate::registry::ImageRef;

/// A filter image as published: where it is and what it holds.
#[derive(Debug, Clone)]
pub struct Published<'a> {
    /// The tag (or digest) reference users name.
    pub reference: &'a ImageRef,
    /// The image, as pulled back.
    pub image: &'a Image,
    /// The filter manifest.
    pub filter: &'a FilterManifest,
    /// Whether the registry speaks plain HTTP.
    pub insecure: bool,
}

impl Published<'_> {
    fn k8s_name(&self) -> String {
        self.filter
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .trim_matches('-')
            .to_owned()
    }

    fn digest_hex(&self) -> &str {
        self.image
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&self.image.digest)
    }

    fn tagged(&self) -> String {
        match self.reference.tag() {
            Some(tag) => format!("{}:{tag}", self.reference.name()),
            None => format!("{}@{}", self.reference.name(), self.image.digest),
        }
    }

    fn root_id(&self) -> &str {
        self.filter.root_ids.first().map_or("", String::as_str)
    }

    /// The registry URL of the raw module blob, when the image stores the
    /// module unwrapped (oci and cncf formats).
    pub fn module_blob_url(&self) -> Option<String> {
        let layer = self.image.manifest.layers.iter().find(|l| {
            l.media_type == media_type::HUB_CONTENT || l.media_type == media_type::CNCF_LAYER
        })?;
        let scheme = if self.insecure { "http" } else { "https" };
        Some(format!(
            "{scheme}://{}/v2/{}/blobs/{}",
            self.reference.registry(),
            self.reference.repository(),
            layer.digest
        ))
    }

    /// An Istio `WasmPlugin`, pinned by the manifest digest, with an explicit
    /// `failStrategy`. `None` for layouts Istio does not load.
    pub fn istio_wasm_plugin(&self) -> Option<String> {
        if !matches!(
            self.image.layout(),
            Layout::Compat | Layout::CompatDocker | Layout::Hub
        ) {
            return None;
        }
        let plugin_name = match self.root_id() {
            "" => String::new(),
            id => format!("  pluginName: {id}\n"),
        };
        Some(format!(
            "apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: {name}
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  url: oci://{url}
  sha256: {sha}
  imagePullPolicy: IfNotPresent
  failStrategy: FAIL_CLOSE
{plugin_name}  phase: UNSPECIFIED_PHASE
  type: HTTP
  pluginConfig: {{}}
",
            name = self.k8s_name(),
            url = self.tagged(),
            sha = self.digest_hex(),
        ))
    }

    /// A Gloo Edge `Gateway` with the filter in `httpGateway.options.wasm`.
    pub fn gloo_gateway(&self) -> String {
        let note = if self.image.layout() == Layout::Hub {
            ""
        } else {
            "# Gloo pulls WebAssembly-Hub images: publish with --format oci for Gloo.\n"
        };
        format!(
            "{note}apiVersion: gateway.solo.io/v1
kind: Gateway
metadata:
  name: gateway-proxy
  namespace: gloo-system
spec:
  bindAddress: \"::\"
  bindPort: 8080
  proxyNames: [gateway-proxy]
  httpGateway:
    options:
      wasm:
        filters:
        - name: {name}
          image: {image}
          rootId: \"{root}\"
          vmType: V8
          config:
            \"@type\": type.googleapis.com/google.protobuf.StringValue
            value: '{{}}'
",
            name = self.k8s_name(),
            image = self.tagged(),
            root = self.root_id(),
        )
    }

    /// An Envoy HTTP filter whose code is a `remote` source checked by the
    /// module's sha256, plus the cluster it is fetched through.
    pub fn envoy_remote(&self) -> String {
        let (uri, note) = match self.module_blob_url() {
            Some(url) => (
                url,
                "# Envoy fetches the module blob straight from the registry (anonymous pull).\n"
                    .to_owned(),
            ),
            None => (
                format!("http://wasm-files.internal/{}.wasm", self.filter.name),
                format!(
                    "# Serve the module over HTTP (`weir pull {} -o {}.wasm`), then point uri at it.\n",
                    self.tagged(),
                    self.filter.name
                ),
            ),
        };
        let (host, port) = host_port(&uri);
        let tls = if uri.starts_with("https://") {
            format!(
                "  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
      sni: {host}
"
            )
        } else {
            String::new()
        };
        format!(
            "{note}http_filters:
- name: envoy.filters.http.wasm
  typed_config:
    \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: {name}
      root_id: \"{root}\"
      failure_policy: FAIL_CLOSED
      configuration:
        \"@type\": type.googleapis.com/google.protobuf.StringValue
        value: '{{}}'
      vm_config:
        vm_id: {name}
        runtime: envoy.wasm.runtime.v8
        code:
          remote:
            http_uri:
              uri: {uri}
              cluster: weir_wasm_fetch
              timeout: 10s
            sha256: {sha}
            retry_policy:
              num_retries: 3
clusters:
- name: weir_wasm_fetch
  type: STRICT_DNS
  connect_timeout: 5s
  load_assignment:
    cluster_name: weir_wasm_fetch
    endpoints:
    - lb_endpoints:
      - endpoint:
          address:
            socket_address: {{ address: {host}, port_value: {port} }}
{tls}",
            name = self.filter.name,
            root = self.root_id(),
            sha = self.filter.sha256,
        )
    }
}

/// Host and port of an `http(s)://host[:port]/…` URL.
fn host_port(uri: &str) -> (String, u16) {
    let (default, rest) = match uri.split_once("://") {
        Some(("https", rest)) => (443, rest),
        Some((_, rest)) => (80, rest),
        None => (80, uri),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(default)),
        None => (authority.to_owned(), default),
    }
}
