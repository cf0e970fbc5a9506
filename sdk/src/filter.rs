//! The HTTP filter trait and what its callbacks return.

use std::future::Future;
use std::rc::Rc;

use serde::de::DeserializeOwned;

use crate::task::Task;
use crate::{
    CalloutResponse, CalloutToken, GrpcResponse, GrpcStream, GrpcStreamEvent, GrpcToken,
    LocalReply, RequestBody, RequestHeaders, RequestTrailers, ResponseBody, ResponseHeaders,
    ResponseTrailers, Result,
};

/// What the filter chain should do after a callback.
#[derive(Debug)]
#[must_use]
pub enum Flow {
    /// Pass the headers on to the next filter.
    Continue,
    /// Hold the stream here until the filter resumes it. In Envoy, pausing in a
    /// headers callback also holds the body (`StopAllIterationAndWatermark`).
    Pause,
    /// Answer the client now; the request goes no further.
    Respond(LocalReply),
    /// Hold the stream while a task runs; made by [`Flow::wait`].
    Wait(Task),
}

impl Flow {
    /// Holds the stream while `task` runs, then does what it returns: see
    /// [`weir::task`](crate::task).
    ///
    /// The task's first poll runs now: one that finishes without waiting
    /// answers this callback directly. Otherwise the stream is held
    /// ([`Flow::Pause`]) until the task finishes; [`Flow::Continue`] then resumes
    /// it, [`Flow::Respond`] answers it, [`Flow::Pause`] leaves it held, and an
    /// error becomes a local reply as from a callback. The task is dropped if
    /// the stream ends first.
    ///
    /// ```
    /// # use weir::{Flow, HttpCall, LocalReply};
    /// # fn f() -> Flow {
    /// Flow::wait(async {
    ///     let answer = HttpCall::get("auth", "/check").await?;
    ///     Ok(if answer.status() == 200 {
    ///         Flow::Continue
    ///     } else {
    ///         Flow::Respond(LocalReply::new(403))
    ///     })
    /// })
    /// # }
    /// ```
    pub fn wait(task: impl Future<Output = Result<Flow>> + 'static) -> Flow {
        Flow::Wait(Task::new(task))
    }
}

/// Tasks cannot be compared: a [`Flow::Wait`] equals nothing, itself included.
impl PartialEq for Flow {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Flow::Continue, Flow::Continue) | (Flow::Pause, Flow::Pause) => true,
            (Flow::Respond(a), Flow::Respond(b)) => a == b,
            _ => false,
        }
    }
}

/// An HTTP filter. One value is created per HTTP stream with [`HttpFilter::new`];
/// per-stream state is simply fields of the implementing type.
///
/// Every callback has a default that continues, so a filter implements only what it
/// needs. A callback that returns `Err` is answered with a local reply: the one the
/// error carries ([`Error::respond`](crate::Error::respond)), otherwise `500` with
/// response-code details `weir_filter_error` and the error logged; nothing panics.
pub trait HttpFilter: 'static {
    /// The plugin configuration, parsed from JSON once in `on_configure`. Invalid
    /// configuration makes `on_configure` fail (Envoy rejects the plugin) and logs
    /// the path of the offending field.
    type Config: DeserializeOwned + 'static;

    /// Creates the filter for a new HTTP stream.
    fn new(config: Rc<Self::Config>) -> Self
    where
        Self: Sized;

    /// Called once with the request headers.
    ///
    /// # Errors
    /// Any error becomes a local `500` reply.
    fn on_request_headers(&mut self, headers: &mut RequestHeaders) -> Result<Flow> {
        let _ = headers;
        Ok(Flow::Continue)
    }

    /// Called with the request body: once per chunk, or once with the whole body
    /// if `on_request_headers` asked for it with
    /// [`Headers::buffer_body`](crate::Headers::buffer_body). Request headers
    /// cannot be changed any more here (Envoy has sent them on).
    ///
    /// A request with trailers ends with them rather than with its body: the
    /// last chunk has `end_of_stream` false, and a whole body is handed over
    /// (with `end_of_stream` true) just before
    /// [`on_request_trailers`](HttpFilter::on_request_trailers), which is not
    /// called if this pauses or answers.
    ///
    /// # Errors
    /// Any error becomes a local `500` reply.
    fn on_request_body(&mut self, body: &mut RequestBody) -> Result<Flow> {
        let _ = body;
        Ok(Flow::Continue)
    }

    /// The answer to a callout this stream sent with
    /// [`HttpCall::send`](crate::HttpCall::send). [`Flow::Continue`] resumes the
    /// paused request, [`Flow::Respond`] answers it, [`Flow::Pause`] keeps it
    /// waiting (for another callout). The request headers can still be changed.
    ///
    /// # Errors
    /// Any error becomes a local `500` reply.
    fn on_callout_response(
        &mut self,
        token: CalloutToken,
        response: &CalloutResponse,
        headers: &mut RequestHeaders,
    ) -> Result<Flow> {
        let _ = (token, response, headers);
        Ok(Flow::Continue)
    }

    /// The answer to a gRPC call this stream sent with
    /// [`GrpcCall::send`](crate::GrpcCall::send); as for
    /// [`HttpFilter::on_callout_response`].
    ///
    /// # Errors
    /// Any error becomes a local reply.
    fn on_grpc_response(
        &mut self,
        token: GrpcToken,
        response: &GrpcResponse,
        headers: &mut RequestHeaders,
    ) -> Result<Flow> {
        let _ = (token, response, headers);
        Ok(Flow::Continue)
    }

    /// Something arrived on a gRPC stream this stream opened with
    /// [`GrpcStreamRequest::open`](crate::GrpcStreamRequest::open): the
    /// server's initial metadata, a message, its trailing metadata, or the
    /// close (always last). [`Flow::Continue`] resumes the paused request,
    /// [`Flow::Respond`] answers it, [`Flow::Pause`] (the default) leaves the
    /// request as it is. The request headers can still be changed.
    ///
    /// # Errors
    /// Any error becomes a local reply.
    fn on_grpc_stream(
        &mut self,
        stream: GrpcStream,
        event: &GrpcStreamEvent,
        headers: &mut RequestHeaders,
    ) -> Result<Flow> {
        let _ = (stream, event, headers);
        Ok(Flow::Pause)
    }

    /// Called with the request trailers, if the request has any (after the last
    /// body chunk, which then has `end_of_stream` false). They end the stream.
    /// Envoy delivers them only if the connection manager's
    /// `http_protocol_options.enable_trailers` is on (HTTP/1).
    ///
    /// # Errors
    /// Any error becomes a local reply.
    fn on_request_trailers(&mut self, trailers: &mut RequestTrailers) -> Result<Flow> {
        let _ = trailers;
        Ok(Flow::Continue)
    }

    /// Called once with the response headers (also for local replies).
    ///
    /// # Errors
    /// Any error becomes a local `500` reply.
    fn on_response_headers(&mut self, headers: &mut ResponseHeaders) -> Result<Flow> {
        let _ = headers;
        Ok(Flow::Continue)
    }

    /// Called with the response body, per chunk or whole (see
    /// [`HttpFilter::on_request_body`]). The response has started by now: a local
    /// reply from here makes Envoy reset the stream.
    ///
    /// # Errors
    /// Any error becomes a local `500` reply (in practice, a reset).
    fn on_response_body(&mut self, body: &mut ResponseBody) -> Result<Flow> {
        let _ = body;
        Ok(Flow::Continue)
    }

    /// Called with the response trailers, if the response has any (gRPC
    /// responses carry `grpc-status` here), after the body (a whole body is
    /// handed over just before, as for requests). With an HTTP/1 upstream
    /// Envoy reads them only if the cluster's `enable_trailers` is on.
    ///
    /// # Errors
    /// Any error becomes a local reply (in practice, a reset).
    fn on_response_trailers(&mut self, trailers: &mut ResponseTrailers) -> Result<Flow> {
        let _ = trailers;
        Ok(Flow::Continue)
    }

    /// Called when the stream is complete, just before it is destroyed: the place
    /// for access-log style work (Envoy's `on_log`). Request and response headers
    /// can still be read.
    fn on_done(&mut self) {}
}
