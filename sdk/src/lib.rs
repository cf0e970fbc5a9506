//! An ergonomic, panic-free SDK for Envoy proxy-wasm filters.
//!
//! A filter is a plain struct implementing [`HttpFilter`], with a typed
//! configuration parsed once from the plugin's JSON config. Host calls return
//! [`Result`]s instead of panicking, header values are bytes that are never
//! unwrapped as UTF-8, and an error from a callback becomes a local reply.
//!
//! ```
//! use std::rc::Rc;
//! use weir::{Flow, HttpFilter, RequestHeaders, ResponseHeaders, Result};
//!
//! /// Plugin configuration, e.g. `{"greeting": "hello"}`.
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     greeting: String,
//! }
//!
//! /// One value per HTTP stream.
//! struct Greeter {
//!     config: Rc<Config>,
//!     path: Option<String>,
//! }
//!
//! impl HttpFilter for Greeter {
//!     type Config = Config;
//!
//!     fn new(config: Rc<Config>) -> Self {
//!         Greeter { config, path: None }
//!     }
//!
//!     fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
//!         if req.get("authorization")?.is_none() && req.path()?.as_deref() == Some("/admin") {
//!             return Ok(Flow::Respond(weir::LocalReply::new(401).body("who are you?")));
//!         }
//!         // Request headers are gone by the response phase: keep what you need.
//!         self.path = req.path()?;
//!         req.set("x-greeting", &self.config.greeting)?;
//!         Ok(Flow::Continue)
//!     }
//!
//!     fn on_response_headers(&mut self, res: &mut ResponseHeaders) -> Result<Flow> {
//!         log::info!("{:?} answered {:?}", self.path, res.status()?);
//!         res.remove("server")?;
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! weir::export_http_filter!(Greeter);
//! # fn main() {}
//! ```
//!
//! # async/await
//!
//! A callback that needs a callout, a gRPC call or a timer returns
//! [`Flow::wait`] with a future: the stream is held while the task runs, and
//! what it returns applies when it is done, as a callback's result would.
//! [`HttpCall`] and [`GrpcCall`] are awaited directly; [`task`] has `sleep`,
//! `timeout`, `join` and `select`, and [`PluginContext::spawn`] runs tasks
//! outside requests. A stream that ends drops its tasks.
//!
//! ```
//! use std::rc::Rc;
//! use std::time::Duration;
//! use weir::task::timeout;
//! use weir::{Flow, HttpCall, HttpFilter, LocalReply, RequestHeaders, Result};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { cluster: String }
//!
//! struct Authorize(Rc<Config>);
//!
//! impl HttpFilter for Authorize {
//!     type Config = Config;
//!
//!     fn new(config: Rc<Config>) -> Self {
//!         Authorize(config)
//!     }
//!
//!     fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
//!         let check = HttpCall::get(&self.0.cluster, "/check")
//!             .header("authorization", req.get("authorization")?.unwrap_or_default());
//!         let mut req = req.for_task();
//!         Ok(Flow::wait(async move {
//!             // An error (a timeout, a failed call) becomes a 500 reply.
//!             let answer = timeout(Duration::from_millis(300), check).await??;
//!             if answer.status() != 200 {
//!                 return Ok(Flow::Respond(LocalReply::new(403)));
//!             }
//!             req.set("x-user", answer.body())?;
//!             Ok(Flow::Continue)
//!         }))
//!     }
//! }
//!
//! weir::export_http_filter!(Authorize);
//! # fn main() {}
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip1` and load it into Envoy, Istio or Gloo,
//! or test it with `weir-harness`. Make `cdylib` the crate's only type: with an
//! `rlib` as well, cargo builds the module without link-time optimization, which
//! makes it larger and slower; keep code that tests need as a library in a
//! separate crate.
//!
//! Network (L4) filters for `envoy.filters.network.wasm` implement
//! [`StreamFilter`] instead and are exported with [`export_stream_filter!`]; see
//! [`stream`].

mod body;
mod callout;
mod clock;
pub mod config;
mod env;
mod error;
#[doc(hidden)]
pub mod export;
mod filter;
mod grpc;
mod headers;
mod host;
mod json_path;
pub mod metrics;
mod plugin;
pub mod properties;
mod reply;
mod root;
mod runtime;
mod shared;
pub mod stream;
#[doc(hidden)]
pub mod stream_export;
pub mod task;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod vm_config;

pub use body::{Body, BufferBody, RequestBody, ResponseBody};
pub use callout::{CalloutResponse, CalloutToken, HttpCall, HttpResponse, PendingCall};
#[cfg(feature = "schema")]
pub use config::config_schema;
pub use config::parse_config;
pub use env::{call_foreign, log_level, now};
pub use error::{Error, ErrorKind, HostStatus, IntoLocalReply, Result};
pub use filter::{Flow, HttpFilter};
pub use grpc::{
    GrpcCall, GrpcResponse, GrpcStream, GrpcStreamEvent, GrpcStreamRequest, GrpcToken,
    PendingGrpcCall,
};
pub use headers::{Headers, RequestHeaders, RequestTrailers, ResponseHeaders, ResponseTrailers};
pub use plugin::{NoPlugin, Plugin, PluginContext, Timer};
pub use reply::LocalReply;
/// The `schemars` crate, for deriving `JsonSchema` on configuration types.
#[cfg(feature = "schema")]
pub use schemars;
pub use shared::{Cas, SharedQueue, Versioned, shared_data};
pub use stream::{
    Connection, DownstreamData, PeerType, StreamData, StreamFilter, StreamFlow, UpstreamData,
};
pub use vm_config::vm_config;

/// The `proxy-wasm` crate this SDK is built on, for what weir does not cover yet.
/// Its host-call wrappers panic on unexpected statuses; prefer weir's API.
pub use proxy_wasm as raw;

/// Exports `$filter` (an [`HttpFilter`]) as the module's HTTP filter: generates the
/// module's `_initialize` entry point, which registers the filter with the host.
/// Use it once per module.
///
/// - `export_http_filter!(MyFilter, plugin = MyPlugin)` adds plugin-level
///   behaviour (timers, plugin callouts, queues; see [`Plugin`]);
/// - `export_http_filter!(MyFilter, vm_config = MyVmConfig)` parses the VM
///   configuration into `MyVmConfig` when the VM starts (see [`vm_config()`]);
/// - both may be given, `plugin` first.
#[macro_export]
macro_rules! export_http_filter {
    (@export $filter:ty, $plugin:ty, $vm:ty) => {
        type __WeirHttpFilter = $filter;
        type __WeirPlugin = $plugin;
        type __WeirVmStart = $vm;
        #[doc(hidden)]
        pub mod __weir_export {
            $crate::raw::main! {{
                $crate::export::register_http_filter::<
                    super::__WeirHttpFilter,
                    super::__WeirPlugin,
                    super::__WeirVmStart,
                >();
            }}
        }
    };
    ($filter:ty) => {
        $crate::export_http_filter!(@export $filter,
            $crate::NoPlugin<<$filter as $crate::HttpFilter>::Config>,
            $crate::vm_config::NoVmConfig);
    };
    ($filter:ty, plugin = $plugin:ty) => {
        $crate::export_http_filter!(@export $filter, $plugin,
            $crate::vm_config::NoVmConfig);
    };
    ($filter:ty, vm_config = $vm:ty) => {
        $crate::export_http_filter!(@export $filter,
            $crate::NoPlugin<<$filter as $crate::HttpFilter>::Config>,
            $crate::vm_config::Typed<$vm>);
    };
    ($filter:ty, plugin = $plugin:ty, vm_config = $vm:ty) => {
        $crate::export_http_filter!(@export $filter, $plugin,
            $crate::vm_config::Typed<$vm>);
    };
}

/// Exports `$filter` (a [`StreamFilter`]) as the module's network (L4) filter, for
/// Envoy's `envoy.filters.network.wasm`: generates the module's `_initialize`
/// entry point, which registers the filter with the host. Use it once per module,
/// instead of [`export_http_filter!`]. `plugin = MyPlugin` adds plugin-level
/// behaviour (timers, plugin callouts, queues; see [`Plugin`]) and
/// `vm_config = MyVmConfig` a typed VM configuration, as for
/// [`export_http_filter!`].
#[macro_export]
macro_rules! export_stream_filter {
    (@export $filter:ty, $plugin:ty, $vm:ty) => {
        type __WeirStreamFilter = $filter;
        type __WeirPlugin = $plugin;
        type __WeirVmStart = $vm;
        #[doc(hidden)]
        pub mod __weir_export {
            $crate::raw::main! {{
                $crate::stream_export::register_stream_filter::<
                    super::__WeirStreamFilter,
                    super::__WeirPlugin,
                    super::__WeirVmStart,
                >();
            }}
        }
    };
    ($filter:ty) => {
        $crate::export_stream_filter!(@export $filter,
            $crate::NoPlugin<<$filter as $crate::StreamFilter>::Config>,
            $crate::vm_config::NoVmConfig);
    };
    ($filter:ty, plugin = $plugin:ty) => {
        $crate::export_stream_filter!(@export $filter, $plugin,
            $crate::vm_config::NoVmConfig);
    };
    ($filter:ty, vm_config = $vm:ty) => {
        $crate::export_stream_filter!(@export $filter,
            $crate::NoPlugin<<$filter as $crate::StreamFilter>::Config>,
            $crate::vm_config::Typed<$vm>);
    };
    ($filter:ty, plugin = $plugin:ty, vm_config = $vm:ty) => {
        $crate::export_stream_filter!(@export $filter, $plugin,
            $crate::vm_config::Typed<$vm>);
    };
}
