//! Network (L4) filters, natively, against the in-process mock host: the
//! callbacks, data edits, pausing, closing, errors and configuration.

use std::rc::Rc;

use weir::testing::{Action, MockHost};
use weir::{
    DownstreamData, PeerType, Result, StreamFilter, StreamFlow, UpstreamData, metrics::Counter,
    properties,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Frames end with this byte; a filter waits for a whole frame.
    delimiter: char,
    #[serde(default)]
    tag: String,
}

/// Holds client bytes until a whole frame, tags replies, closes on `bye`.
struct Framer {
    config: Rc<Config>,
    frames: u64,
}

impl StreamFilter for Framer {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Framer { config, frames: 0 }
    }

    fn on_new_connection(&mut self, _: &mut weir::Connection) -> Result<StreamFlow> {
        let peer = properties::source_address()?.unwrap_or_default();
        log::info!("connected from {peer}");
        Ok(StreamFlow::Continue)
    }

    fn on_downstream_data(&mut self, data: &mut DownstreamData) -> Result<StreamFlow> {
        let bytes = data.bytes()?;
        if bytes.starts_with(b"bye") {
            data.connection().close()?;
            return Ok(StreamFlow::Pause);
        }
        if bytes.starts_with(b"bad") {
            return Err(weir::Error::from(weir::ErrorKind::NonUtf8Body {
                target: "the test frame",
            }));
        }
        if !data.end_of_stream() && bytes.last() != Some(&(self.config.delimiter as u8)) {
            return Ok(StreamFlow::Pause);
        }
        self.frames += 1;
        Counter::new("frames")?.inc()?;
        data.prepend(b"[")?;
        data.append(b"]")?;
        Ok(StreamFlow::Continue)
    }

    fn on_upstream_data(&mut self, data: &mut UpstreamData) -> Result<StreamFlow> {
        if data.len() >= 2 {
            data.drain(1)?;
        }
        if !self.config.tag.is_empty() {
            let text = data.text()?;
            data.replace(format!("{}{text}", self.config.tag))?;
        }
        Ok(StreamFlow::Continue)
    }

    fn on_downstream_close(&mut self, peer: PeerType) {
        log::info!("downstream closed by {peer:?}");
    }

    fn on_upstream_close(&mut self, peer: PeerType) {
        log::info!("upstream closed ({peer:?})");
    }

    fn on_done(&mut self) {
        log::info!("done after {} frames", self.frames);
    }
}

fn lines(host: &MockHost) -> Vec<String> {
    host.logs().into_iter().map(|(_, l)| l).collect()
}

#[test]
fn data_is_held_until_a_whole_frame_then_edited() {
    let host = MockHost::new();
    host.set_property(&["source", "address"], b"10.0.0.7:4000");
    let mut plugin = host
        .load_stream_filter::<Framer>(r#"{"delimiter": "\n"}"#)
        .expect("valid config");
    let mut conn = plugin.connection();
    assert_eq!(conn.new_connection(), Action::Continue);
    assert_eq!(conn.downstream_data(b"hel", false), Action::Pause);
    // Envoy re-delivers what it held, with the new bytes.
    assert_eq!(conn.downstream_data(b"lo\n", false), Action::Continue);
    assert_eq!(host.downstream_data(), b"[hello\n]");
    assert_eq!(host.metric("frames"), Some(1));
    // Half-close with no data: end_of_stream lets the frame through.
    assert_eq!(conn.downstream_data(b"", true), Action::Continue);
    assert_eq!(host.downstream_data(), b"[]");
    drop(conn);
    assert_eq!(
        lines(&host),
        ["connected from 10.0.0.7:4000", "done after 2 frames"]
    );
}

#[test]
fn upstream_data_can_be_drained_and_replaced() {
    let host = MockHost::new();
    let mut plugin = host
        .load_stream_filter::<Framer>(r#"{"delimiter": ";", "tag": "up:"}"#)
        .expect("valid config");
    let mut conn = plugin.connection();
    assert_eq!(conn.new_connection(), Action::Continue);
    assert_eq!(conn.upstream_data(b"xpong", true), Action::Continue);
    assert_eq!(host.upstream_data(), b"up:pong");
    conn.upstream_close(PeerType::Unknown);
    conn.downstream_close(PeerType::Local);
    drop(conn);
    let logs = lines(&host);
    assert_eq!(
        &logs[1..],
        [
            "upstream closed (Unknown)",
            "downstream closed by Local",
            "done after 0 frames"
        ]
    );
}

#[test]
fn closing_and_errors_close_the_connection() {
    let host = MockHost::new();
    let mut plugin = host
        .load_stream_filter::<Framer>(r#"{"delimiter": "\n"}"#)
        .expect("valid config");
    let mut conn = plugin.connection();
    assert_eq!(conn.downstream_data(b"bye\n", false), Action::Pause);
    assert_eq!(host.closed_connections(), 1);
    drop(conn);

    let mut conn = plugin.connection();
    assert_eq!(conn.downstream_data(b"bad\n", false), Action::Pause);
    assert_eq!(host.closed_connections(), 2);
    assert!(
        lines(&host)
            .iter()
            .any(|l| l == "Framer: the test frame is not valid UTF-8"),
        "{:?}",
        lines(&host)
    );
}

#[test]
fn invalid_configuration_is_rejected_with_the_field_named() {
    let host = MockHost::new();
    let err = host
        .load_stream_filter::<Framer>(r#"{"delimiter": "\n", "tga": "x"}"#)
        .expect_err("unknown field");
    assert!(err.contains("unknown field `tga`"), "{err}");
    let err = host
        .load_stream_filter::<Framer>(r#"{"delimiter": 5}"#)
        .expect_err("wrong type");
    assert!(
        err.contains("invalid configuration at `delimiter`"),
        "{err}"
    );
}

/// A network filter whose plugin keeps a gRPC stream open to a control plane.
struct Quiet;

impl StreamFilter for Quiet {
    type Config = Watch;

    fn new(_: Rc<Watch>) -> Self {
        Quiet
    }
}

#[derive(serde::Deserialize)]
struct Watch {
    cluster: String,
}

struct Watcher;

impl weir::Plugin for Watcher {
    type Config = Watch;

    fn start(config: &Rc<Watch>, _: &mut weir::PluginContext) -> Result<Self> {
        weir::GrpcStreamRequest::new(&config.cluster, "watch.Watch", "Events").open()?;
        Ok(Watcher)
    }

    fn on_grpc_stream(
        &mut self,
        _: weir::GrpcStream,
        event: &weir::GrpcStreamEvent,
        _: &mut weir::PluginContext,
    ) -> Result<()> {
        log::info!("stream event: {event:?}");
        Ok(())
    }
}

#[test]
fn a_network_filters_plugin_is_told_of_its_grpc_streams() {
    let host = MockHost::new();
    let plugin = host
        .load_stream_filter_with_plugin::<Quiet, Watcher>(r#"{"cluster": "control"}"#)
        .expect("valid config");
    let calls = host.calls();
    let [call] = calls.as_slice() else {
        panic!("one stream opened: {calls:?}")
    };
    assert_eq!(call.grpc_method, "watch.Watch/Events");
    plugin.grpc_response(call.token, Err((14, "unreachable")));
    assert_eq!(lines(&host), ["stream event: Closed(14)"]);
}
