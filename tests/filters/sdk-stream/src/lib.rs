//! A network (L4) test filter on weir's [`StreamFilter`] API. It logs every
//! callback (sizes, `end_of_stream`, peer types, the bytes), counts bytes in
//! metrics, and, as configured, prefixes the bytes in each direction, holds
//! client bytes until a whole frame (pausing), closes the connection on a
//! command, or fails. The conformance suite runs it in the harness and in Envoy
//! and compares what both sides saw.
//!
//! Configuration (every field optional):
//! ```json
//! {
//!   "downstream_prefix": "> ",   // prepended to each client chunk that passes
//!   "upstream_prefix": "< ",     // prepended to each upstream chunk
//!   "frame_delimiter": "\n",     // hold client bytes until they end with this
//!   "close_on": "QUIT",          // client bytes starting with this close the connection
//!   "fail_on": "FAIL",           // client bytes starting with this make the callback fail
//!   "pause_new_connection": false // Pause in on_new_connection
//! }
//! ```

use std::rc::Rc;

use weir::metrics::Counter;
use weir::{
    Connection, DownstreamData, PeerType, Result, StreamData, StreamFilter, StreamFlow,
    UpstreamData,
};

/// The plugin configuration.
#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Prepended to each client chunk that passes.
    downstream_prefix: String,
    /// Prepended to each upstream chunk.
    upstream_prefix: String,
    /// Hold client bytes until they end with this.
    frame_delimiter: Option<String>,
    /// Client bytes starting with this close the connection.
    close_on: Option<String>,
    /// Client bytes starting with this make the callback fail.
    fail_on: Option<String>,
    /// Pause in `on_new_connection`.
    pause_new_connection: bool,
}

/// One value per connection.
#[derive(Debug)]
pub struct Stream {
    config: Rc<Config>,
    downstream: u64,
    upstream: u64,
}

/// The bytes, printable, for log lines.
fn shown(data: &StreamData) -> Result<String> {
    Ok(String::from_utf8_lossy(&data.bytes()?)
        .escape_debug()
        .to_string())
}

/// Adds `n` to the byte counter of `direction` (Envoy refuses increments of 0).
fn count(direction: &str, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    Counter::with_labels("stream_bytes", &[("direction", direction)])?.add(n as u64)
}

impl StreamFilter for Stream {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Stream {
            config,
            downstream: 0,
            upstream: 0,
        }
    }

    fn on_new_connection(&mut self, _connection: &mut Connection) -> Result<StreamFlow> {
        log::info!("new connection");
        if self.config.pause_new_connection {
            return Ok(StreamFlow::Pause);
        }
        Ok(StreamFlow::Continue)
    }

    fn on_downstream_data(&mut self, data: &mut DownstreamData) -> Result<StreamFlow> {
        let text = shown(data)?;
        log::info!(
            "downstream {} eos={}: {text}",
            data.len(),
            data.end_of_stream()
        );
        let bytes = data.bytes()?;
        if let Some(cmd) = &self.config.close_on
            && bytes.starts_with(cmd.as_bytes())
        {
            log::info!("closing");
            data.connection().close()?;
            return Ok(StreamFlow::Pause);
        }
        if let Some(cmd) = &self.config.fail_on
            && bytes.starts_with(cmd.as_bytes())
        {
            return Err(weir::Error::from(weir::ErrorKind::Config {
                path: "fail_on".to_owned(),
                message: "the client sent the failure command".to_owned(),
            }));
        }
        if let Some(delimiter) = &self.config.frame_delimiter
            && !data.end_of_stream()
            && !bytes.ends_with(delimiter.as_bytes())
        {
            log::info!("holding {} bytes", data.len());
            return Ok(StreamFlow::Pause);
        }
        if !data.is_empty() {
            data.prepend(&self.config.downstream_prefix)?;
        }
        self.downstream += data.len() as u64;
        count("downstream", data.len())?;
        Ok(StreamFlow::Continue)
    }

    fn on_upstream_data(&mut self, data: &mut UpstreamData) -> Result<StreamFlow> {
        let text = shown(data)?;
        log::info!(
            "upstream {} eos={}: {text}",
            data.len(),
            data.end_of_stream()
        );
        if !data.is_empty() {
            data.prepend(&self.config.upstream_prefix)?;
        }
        self.upstream += data.len() as u64;
        count("upstream", data.len())?;
        Ok(StreamFlow::Continue)
    }

    fn on_downstream_close(&mut self, peer: PeerType) {
        log::info!("downstream closed: {peer:?}");
    }

    fn on_upstream_close(&mut self, peer: PeerType) {
        log::info!("upstream closed: {peer:?}");
    }

    fn on_done(&mut self) {
        log::info!(
            "done: {} bytes to upstream, {} bytes to client",
            self.downstream,
            self.upstream
        );
    }
}

weir::export_stream_filter!(Stream);
