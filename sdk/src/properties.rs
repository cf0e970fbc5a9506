//! Envoy attributes (`proxy_get_property`): typed accessors for the common ones and
//! raw access to any path.
//!
//! Values are decoded as Envoy encodes them: strings raw, integers 8-byte
//! little-endian, booleans one byte, timestamps and durations as nanoseconds.
//! Header-derived request attributes (`request.path`, `request.method`, ...) are
//! only available while the request headers are (Envoy answers `NotFound` in the
//! response phase), so copy what you need early. Root contexts see only `xds.*`
//! and the `plugin_*` attributes.
//!
//! ```no_run
//! use weir::properties;
//! let id = properties::request_id()?;          // Option<String>
//! let peer = properties::source_address()?;    // "10.0.0.1:51234"
//! let raw = properties::get(&["xds", "route_name"])?;
//! # Ok::<(), weir::Error>(())
//! ```

use std::time::{Duration, SystemTime};

use crate::host;
use crate::{Error, Result};

/// The raw value at `path` (segments such as `["request", "headers", "x-id"]`), or
/// `None` if Envoy has no such attribute here.
///
/// # Errors
/// A host error (for example `SerializationFailure` for a whole map such as
/// `["request"]`).
pub fn get(path: &[&str]) -> Result<Option<Vec<u8>>> {
    let joined = path.join("\0");
    host::get_property(joined.as_bytes())
        .map_err(|s| Error::host("proxy_get_property", "a property", s))
}

/// Writes filter state `wasm.<name>`, readable later with `get(&[name])` by this
/// or another filter of the stream.
///
/// # Errors
/// A host error (Envoy answers `NotFound` outside a stream).
pub fn set(name: &str, value: &[u8]) -> Result<()> {
    host::set_property(name.as_bytes(), value)
        .map_err(|s| Error::host("proxy_set_property", "a property", s))
}

/// A string attribute (invalid UTF-8 is replaced with U+FFFD).
///
/// # Errors
/// As for [`get`].
pub fn get_string(path: &[&str]) -> Result<Option<String>> {
    Ok(get(path)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

fn eight(path: &[&str]) -> Result<Option<[u8; 8]>> {
    match get(path)? {
        None => Ok(None),
        Some(v) => <[u8; 8]>::try_from(v.as_slice()).map(Some).map_err(|_| {
            Error::malformed(format!("property {} (expected 8 bytes)", path.join(".")))
        }),
    }
}

/// A signed integer attribute.
///
/// # Errors
/// As for [`get`], or [`ErrorKind::Malformed`](crate::ErrorKind::Malformed) if the
/// value is not 8 bytes.
pub fn get_i64(path: &[&str]) -> Result<Option<i64>> {
    Ok(eight(path)?.map(i64::from_le_bytes))
}

/// An unsigned integer attribute.
///
/// # Errors
/// As for [`get_i64`].
pub fn get_u64(path: &[&str]) -> Result<Option<u64>> {
    Ok(eight(path)?.map(u64::from_le_bytes))
}

/// A boolean attribute.
///
/// # Errors
/// As for [`get`], or [`ErrorKind::Malformed`](crate::ErrorKind::Malformed) if the
/// value is not one byte.
pub fn get_bool(path: &[&str]) -> Result<Option<bool>> {
    match get(path)? {
        None => Ok(None),
        Some(v) if v.len() == 1 => Ok(Some(v[0] != 0)),
        Some(_) => Err(Error::malformed(format!(
            "property {} (expected 1 byte)",
            path.join(".")
        ))),
    }
}

/// A timestamp attribute.
///
/// # Errors
/// As for [`get_i64`].
pub fn get_timestamp(path: &[&str]) -> Result<Option<SystemTime>> {
    Ok(get_i64(path)?.map(|ns| {
        let offset = Duration::from_nanos(ns.unsigned_abs());
        if ns >= 0 {
            SystemTime::UNIX_EPOCH + offset
        } else {
            SystemTime::UNIX_EPOCH - offset
        }
    }))
}

/// A duration attribute.
///
/// # Errors
/// As for [`get_i64`].
pub fn get_duration(path: &[&str]) -> Result<Option<Duration>> {
    Ok(get_i64(path)?.map(|ns| Duration::from_nanos(ns.max(0).unsigned_abs())))
}

macro_rules! accessors {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $getter:ident [$($seg:literal),+];)*) => {$(
        $(#[$doc])*
        ///
        /// # Errors
        /// As for [`get`].
        pub fn $name() -> Result<Option<$ty>> {
            $getter(&[$($seg),+])
        }
    )*};
}

accessors! {
    /// `request.id`: the `x-request-id` Envoy assigned or forwarded.
    request_id: String = get_string["request", "id"];
    /// `request.path`, query included.
    request_path: String = get_string["request", "path"];
    /// `request.url_path`: the path without the query.
    request_url_path: String = get_string["request", "url_path"];
    /// `request.method`.
    request_method: String = get_string["request", "method"];
    /// `request.host`.
    request_host: String = get_string["request", "host"];
    /// `request.scheme`.
    request_scheme: String = get_string["request", "scheme"];
    /// `request.protocol`, e.g. `HTTP/1.1`.
    request_protocol: String = get_string["request", "protocol"];
    /// `request.time`: when the first byte arrived.
    request_time: SystemTime = get_timestamp["request", "time"];
    /// `response.code`.
    response_code: i64 = get_i64["response", "code"];
    /// `response.code_details`.
    response_code_details: String = get_string["response", "code_details"];
    /// `source.address`: the downstream peer, `ip:port`.
    source_address: String = get_string["source", "address"];
    /// `source.port`.
    source_port: i64 = get_i64["source", "port"];
    /// `destination.address`: the local address the connection arrived at.
    destination_address: String = get_string["destination", "address"];
    /// `destination.port`.
    destination_port: i64 = get_i64["destination", "port"];
    /// `connection.id`.
    connection_id: u64 = get_u64["connection", "id"];
    /// `connection.mtls`: whether the peer presented a verified certificate.
    connection_mtls: bool = get_bool["connection", "mtls"];
    /// `connection.requested_server_name` (SNI).
    connection_sni: String = get_string["connection", "requested_server_name"];
    /// `upstream.address`.
    upstream_address: String = get_string["upstream", "address"];
    /// `xds.route_name`.
    route_name: String = get_string["xds", "route_name"];
    /// `xds.cluster_name`: the upstream cluster of the route.
    cluster_name: String = get_string["xds", "cluster_name"];
    /// `xds.virtual_host_name`.
    virtual_host_name: String = get_string["xds", "virtual_host_name"];
    /// `xds.listener_direction`.
    listener_direction: i64 = get_i64["xds", "listener_direction"];
    /// `plugin_name`: the plugin's `name` in the Envoy config.
    plugin_name: String = get_string["plugin_name"];
    /// `plugin_root_id`.
    plugin_root_id: String = get_string["plugin_root_id"];
    /// `plugin_vm_id`.
    plugin_vm_id: String = get_string["plugin_vm_id"];
}
