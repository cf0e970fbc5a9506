//! Network (L4) filters: Envoy's `envoy.filters.network.wasm`, usually in front
//! of `tcp_proxy`.
//!
//! A filter implements [`StreamFilter`]; one value is created per TCP
//! connection. It sees the bytes the client sends ([`DownstreamData`]) before the
//! next network filter (usually `tcp_proxy`, which forwards them upstream), and
//! the bytes coming back from upstream ([`UpstreamData`]) before they are written
//! to the client. It can read, replace, prepend, append and drain them, pause
//! them, and close the connection.
//!
//! ```
//! use std::rc::Rc;
//! use weir::{DownstreamData, Result, StreamFilter, StreamFlow, UpstreamData};
//!
//! /// Plugin configuration, e.g. `{"banner": "hello\n"}`.
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     banner: String,
//! }
//!
//! /// One value per connection.
//! struct Banner {
//!     config: Rc<Config>,
//!     sent: u64,
//! }
//!
//! impl StreamFilter for Banner {
//!     type Config = Config;
//!
//!     fn new(config: Rc<Config>) -> Self {
//!         Banner { config, sent: 0 }
//!     }
//!
//!     fn on_downstream_data(&mut self, data: &mut DownstreamData) -> Result<StreamFlow> {
//!         if data.bytes()?.starts_with(b"QUIT") {
//!             data.connection().close()?;
//!             return Ok(StreamFlow::Pause);
//!         }
//!         self.sent += data.len() as u64;
//!         Ok(StreamFlow::Continue)
//!     }
//!
//!     fn on_upstream_data(&mut self, data: &mut UpstreamData) -> Result<StreamFlow> {
//!         if data.end_of_stream() {
//!             data.append(&self.config.banner)?;
//!         }
//!         Ok(StreamFlow::Continue)
//!     }
//!
//!     fn on_done(&mut self) {
//!         log::info!("client sent {} bytes", self.sent);
//!     }
//! }
//!
//! weir::export_stream_filter!(Banner);
//! # fn main() {}
//! ```
//!
//! # Envoy's semantics
//!
//! * Order: `on_new_connection` when Envoy accepts the connection (before
//!   `tcp_proxy` connects upstream); then the data callbacks as bytes arrive; then
//!   [`StreamFilter::on_downstream_close`], [`StreamFilter::on_done`] when the
//!   downstream connection closes. [`StreamFilter::on_upstream_close`] comes right
//!   after the upstream's last data (`end_of_stream`), with
//!   [`PeerType::Unknown`]: Envoy does not watch the upstream connection itself.
//! * [`StreamFlow::Pause`] from a data callback keeps the bytes in Envoy's
//!   buffer: the next filters do not see them, and the next bytes that arrive are
//!   added to them, so the callback is called again with everything held so far.
//!   That is how a filter waits for a complete frame. Envoy cannot resume
//!   upstream data from a filter (`proxy_continue_stream` for upstream is
//!   `Unimplemented`), so upstream data paused is held until more arrives.
//! * [`StreamFlow::Pause`] from `on_new_connection` stops the chain there:
//!   `tcp_proxy` never connects, and the connection waits until it is closed.
//! * Edits follow Envoy's buffer rules: [`Body::replace`],
//!   [`Body::prepend`], [`Body::append`] and [`Body::drain`]
//!   (at the front); nothing in the middle.
//! * [`Connection::close`] closes the client connection once the callback returns,
//!   after writing what is already queued for the client (Envoy's `FlushWrite`).
//!   Envoy closes the client connection for `close_upstream` too, so weir offers
//!   only the one.
//! * A callback that returns `Err` has the error logged and the connection
//!   closed, and the data goes no further.
//! * Host properties describe the downstream connection: see
//!   [`properties::source_address`](crate::properties::source_address),
//!   [`properties::destination_address`](crate::properties::destination_address),
//!   [`properties::connection_id`](crate::properties::connection_id). Header
//!   maps and local replies do not exist on a connection.

use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use serde::de::DeserializeOwned;

use crate::host::{self, BufferType};
use crate::{Body, Error, Result};

/// What the connection should do after a data callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum StreamFlow {
    /// Pass the data on to the next filter.
    Continue,
    /// Hold the data here; bytes that arrive later are added to it and the
    /// callback sees everything again (Envoy's `StopIteration`).
    Pause,
}

/// Which side ended a connection (`proxy_peer_type_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerType {
    /// Envoy does not say; the upstream side always reports this.
    Unknown,
    /// Envoy closed the connection (a filter, `tcp_proxy` after the upstream
    /// closed, a timeout).
    Local,
    /// The peer closed it.
    Remote,
}

impl PeerType {
    pub(crate) fn from_raw(raw: proxy_wasm::types::PeerType) -> Self {
        match raw {
            proxy_wasm::types::PeerType::Local => PeerType::Local,
            proxy_wasm::types::PeerType::Remote => PeerType::Remote,
            _ => PeerType::Unknown,
        }
    }
}

/// A network filter. One value is created per downstream connection with
/// [`StreamFilter::new`]; per-connection state is simply fields of the
/// implementing type.
///
/// Every callback has a default that continues. See the [module
/// documentation](crate::stream) for the order of callbacks and what pausing does
/// in Envoy.
pub trait StreamFilter: 'static {
    /// The plugin configuration, parsed from JSON once in `on_configure`. Invalid
    /// configuration makes `on_configure` fail (Envoy rejects the plugin) and logs
    /// the path of the offending field.
    type Config: DeserializeOwned + 'static;

    /// Creates the filter for a new connection.
    fn new(config: Rc<Self::Config>) -> Self
    where
        Self: Sized;

    /// The client connected. [`StreamFlow::Pause`] stops the filter chain here:
    /// the upstream is not connected and no data is read.
    ///
    /// # Errors
    /// Any error is logged and closes the connection.
    fn on_new_connection(&mut self, connection: &mut Connection) -> Result<StreamFlow> {
        let _ = connection;
        Ok(StreamFlow::Continue)
    }

    /// Bytes from the client (everything held so far, after a pause).
    /// `end_of_stream` is set, with the last bytes or none, once the client has
    /// half-closed its side.
    ///
    /// # Errors
    /// Any error is logged and closes the connection.
    fn on_downstream_data(&mut self, data: &mut DownstreamData) -> Result<StreamFlow> {
        let _ = data;
        Ok(StreamFlow::Continue)
    }

    /// Bytes from the upstream, on their way to the client (everything held so
    /// far, after a pause). `end_of_stream` is set once the upstream has closed
    /// its side.
    ///
    /// # Errors
    /// Any error is logged and closes the connection.
    fn on_upstream_data(&mut self, data: &mut UpstreamData) -> Result<StreamFlow> {
        let _ = data;
        Ok(StreamFlow::Continue)
    }

    /// The client connection closed, by `peer`.
    fn on_downstream_close(&mut self, peer: PeerType) {
        let _ = peer;
    }

    /// The upstream ended its side (after its last data). Envoy reports
    /// [`PeerType::Unknown`].
    fn on_upstream_close(&mut self, peer: PeerType) {
        let _ = peer;
    }

    /// The connection is over, just before the filter is destroyed: the place for
    /// access-log style work. Properties of the connection can still be read.
    fn on_done(&mut self) {}
}

/// The downstream connection of the running callback.
///
/// A handle without state: every method acts on the connection the callback is
/// running for.
#[derive(Debug, Default)]
pub struct Connection {
    _private: (),
}

impl Connection {
    pub(crate) fn new() -> Self {
        Self { _private: () }
    }

    /// Closes the client connection once the callback returns, after writing what
    /// is already queued for the client (Envoy's `FlushWrite`). `tcp_proxy` then
    /// closes the upstream connection. Return [`StreamFlow::Pause`] with it so
    /// that the data goes no further.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn close(&mut self) -> Result<()> {
        host::close_stream(host::STREAM_DOWNSTREAM).map_err(|status| {
            Error::host("proxy_close_stream", "the downstream connection", status)
        })
    }
}

/// The bytes of the running data callback, owned by the host: Envoy's
/// connection buffer, edited in place. Dereferences to [`Body`] for reading and
/// editing the bytes ([`Body::bytes`], [`Body::replace`], [`Body::drain`], ...).
#[derive(Debug)]
pub struct StreamData {
    data: Body,
    connection: Connection,
}

impl StreamData {
    fn new(buffer: BufferType, target: &'static str, len: usize, end_of_stream: bool) -> Self {
        Self {
            data: Body::new(buffer, target, len, end_of_stream),
            connection: Connection::new(),
        }
    }

    /// The connection, to close it.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.connection
    }
}

impl Deref for StreamData {
    type Target = Body;
    fn deref(&self) -> &Body {
        &self.data
    }
}

impl DerefMut for StreamData {
    fn deref_mut(&mut self) -> &mut Body {
        &mut self.data
    }
}

/// Bytes from the client, in [`StreamFilter::on_downstream_data`]. Dereferences
/// to [`StreamData`].
#[derive(Debug)]
pub struct DownstreamData(StreamData);

impl DownstreamData {
    pub(crate) fn new(len: usize, end_of_stream: bool) -> Self {
        Self(StreamData::new(
            BufferType::DownstreamData,
            "the downstream data",
            len,
            end_of_stream,
        ))
    }
}

/// Bytes from the upstream, in [`StreamFilter::on_upstream_data`].
/// Dereferences to [`StreamData`].
#[derive(Debug)]
pub struct UpstreamData(StreamData);

impl UpstreamData {
    pub(crate) fn new(len: usize, end_of_stream: bool) -> Self {
        Self(StreamData::new(
            BufferType::UpstreamData,
            "the upstream data",
            len,
            end_of_stream,
        ))
    }
}

macro_rules! deref_to_data {
    ($($view:ty),*) => {$(
        impl Deref for $view {
            type Target = StreamData;
            fn deref(&self) -> &StreamData {
                &self.0
            }
        }
        impl DerefMut for $view {
            fn deref_mut(&mut self) -> &mut StreamData {
                &mut self.0
            }
        }
    )*};
}
deref_to_data!(DownstreamData, UpstreamData);
