//! Glue between a [`HttpFilter`] (and its [`Plugin`]) and the `proxy-wasm`
//! dispatcher: the adapters implement its context traits, so context ids and boxed
//! trait objects stay in here. Every call into the host goes through the private
//! `host` module.
//!
//! The success path of each callback does nothing but build the view and call the
//! filter; error handling, local replies and logging are out of line (`#[cold]`),
//! so a filter pays for them only when they happen.

use std::marker::PhantomData;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::host;
use crate::root::{FilterKind, Root};
use crate::runtime::{self, StreamRef};
use crate::task::Task;
use crate::{
    BufferBody, CalloutResponse, CalloutToken, Error, Flow, GrpcResponse, GrpcStream,
    GrpcStreamEvent, GrpcToken, HttpFilter, IntoLocalReply, LocalReply, Plugin, RequestBody,
    RequestHeaders, RequestTrailers, ResponseBody, ResponseHeaders, ResponseTrailers, Result,
};

/// Registers `F` (with plugin `P`) as the module's HTTP filter. Called from the
/// module's `_initialize` by [`export_http_filter!`](crate::export_http_filter).
#[doc(hidden)]
pub fn register_http_filter<F, P, V>()
where
    F: HttpFilter,
    P: Plugin<Config = F::Config>,
    V: crate::vm_config::VmStart,
{
    // proxy-wasm's log backend also installs a panic hook that logs the message
    // and location at critical level before the trap.
    host::register_root_context(|id| -> Box<dyn RootContext> {
        Box::new(Root::<Http<F>, P>::new(id, V::vm_start))
    });
}

/// [`Root`] creates HTTP streams of filter `F`.
struct Http<F>(PhantomData<F>);

impl<F: HttpFilter> FilterKind for Http<F> {
    type Config = F::Config;
    type Filter = F;
}

/// The last path segment of a type's name, for log lines.
pub(crate) fn type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    // Byte search keeps string searchers out of the module.
    match full.bytes().rposition(|b| b == b':') {
        Some(at) => &full[at + 1..],
        None => full,
    }
}

impl<F: HttpFilter, P: Plugin<Config = F::Config>> RootContext for Root<Http<F>, P> {
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        self.vm_started(vm_configuration_size)
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        self.configured(plugin_configuration_size)
    }

    fn on_tick(&mut self) {
        self.tick();
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        self.queue_ready(queue_id);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            filter: self.config.as_ref().map(|c| F::new(Rc::clone(c))),
            buffers: None,
            id: context_id,
            root: self.ctx.root(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream<F> {
    /// `None` if the plugin was never configured successfully.
    filter: Option<F>,
    /// Set when the filter asked for a whole body. Boxed: most filters never
    /// do, and their streams stay one word larger than the filter.
    buffers: Option<Box<Buffers>>,
    /// The stream's context id and its root's, for the tasks it starts.
    id: u32,
    root: u32,
}

/// The whole-body buffering a stream's filter asked for.
#[derive(Default)]
struct Buffers {
    request: Option<BufferBody>,
    response: Option<BufferBody>,
    /// The size of the request body Envoy holds for the filter (paused, not
    /// handed over yet).
    request_held: Option<usize>,
    /// Likewise for the response body.
    response_held: Option<usize>,
}

impl<F> Stream<F> {
    /// Where a task returned by a callback of `direction` belongs.
    #[inline]
    fn at(&self, direction: u32) -> StreamRef {
        StreamRef {
            id: self.id,
            root: self.root,
            direction,
            name: "",
        }
    }

    /// The buffering asked for in `direction`'s headers callback, if any.
    #[inline]
    fn buffer(&self, response: bool) -> Option<&BufferBody> {
        let buffers = self.buffers.as_deref()?;
        if response {
            buffers.response.as_ref()
        } else {
            buffers.request.as_ref()
        }
    }

    /// Records how much of `direction`'s body Envoy holds for the filter
    /// (`None`: it was handed over).
    #[inline]
    fn set_held(&mut self, response: bool, size: Option<usize>) {
        if let Some(buffers) = self.buffers.as_deref_mut() {
            if response {
                buffers.response_held = size;
            } else {
                buffers.request_held = size;
            }
        }
    }

    /// Takes the size of the body Envoy holds for the filter, if any.
    #[inline]
    fn take_held(&mut self, response: bool) -> Option<usize> {
        let buffers = self.buffers.as_deref_mut()?;
        if response {
            buffers.response_held.take()
        } else {
            buffers.request_held.take()
        }
    }

    /// Records that the filter asked for the whole body of one direction.
    #[cold]
    #[inline(never)]
    fn set_buffer(&mut self, response: bool, spec: BufferBody) {
        let buffers = self.buffers.get_or_insert_with(Box::default);
        if response {
            buffers.response = Some(spec);
        } else {
            buffers.request = Some(spec);
        }
    }
}

/// What to do with a body chunk when the filter asked for the whole body:
/// `None` to hand it to the filter now.
#[inline]
fn buffering(spec: Option<&BufferBody>, size: usize, end_of_stream: bool) -> Option<Action> {
    let spec = spec?;
    if size > spec.limit() {
        return Some(respond(spec.too_large_reply()));
    }
    // Pausing makes Envoy accumulate the chunks; the next call gets them all.
    (!end_of_stream).then_some(Action::Pause)
}

/// Turns a callback's result into the dispatcher's action.
#[inline]
fn finish<F>(result: Result<Flow>, at: StreamRef) -> Action {
    match result {
        Ok(Flow::Continue) => Action::Continue,
        Ok(Flow::Pause) => Action::Pause,
        Ok(Flow::Respond(reply)) => respond(&reply),
        Ok(Flow::Wait(task)) => wait::<F>(task, at),
        Err(e) => failed::<F>(e),
    }
}

/// Starts the task a callback returned.
#[cold]
#[inline(never)]
fn wait<F>(task: Task, at: StreamRef) -> Action {
    match runtime::hooks() {
        Some(hooks) => (hooks.start)(
            task,
            StreamRef {
                name: type_name::<F>(),
                ..at
            },
        ),
        // Making a task installs the executor: not reached.
        None => {
            drop(task);
            unconfigured::<F>()
        }
    }
}

/// A body or trailers callback's action while a task holds its direction:
/// the stream goes on when the task is done.
#[inline]
fn held(action: Action, stream: u32, direction: u32) -> Action {
    match runtime::hooks() {
        Some(hooks) if action == Action::Continue && (hooks.holds)(stream, direction) => {
            Action::Pause
        }
        _ => action,
    }
}

#[cold]
#[inline(never)]
fn failed<F>(e: Error) -> Action {
    if e.reply().is_none() {
        log::error!("{}: {e}", type_name::<F>());
    }
    respond(&e.into_local_reply())
}

#[cold]
#[inline(never)]
fn unconfigured<F>() -> Action {
    log::error!(
        "{}: stream started without a valid configuration",
        type_name::<F>()
    );
    respond(&LocalReply::new(500).details("weir_filter_not_configured"))
}

#[cold]
#[inline(never)]
fn respond(reply: &LocalReply) -> Action {
    if let Err(e) = reply.send() {
        log::error!("cannot send local reply: {e}");
    }
    Action::Pause
}

impl<F: HttpFilter> Context for Stream<F> {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        // proxy-wasm has made this stream the effective context.
        let Some(filter) = self.filter.as_mut() else {
            return;
        };
        if let Some(hooks) = runtime::hooks()
            && (hooks.http_response)(self.id, token_id, num_headers, body_size, num_trailers)
        {
            return;
        }
        let response = CalloutResponse::new(num_headers, body_size, num_trailers);
        let result = filter.on_callout_response(
            CalloutToken(token_id),
            &response,
            &mut RequestHeaders::new(false),
        );
        resume_after::<F>(result, self.at(host::STREAM_REQUEST));
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some(filter) = self.filter.as_mut() else {
            return;
        };
        if let Some(hooks) = runtime::hooks()
            && (hooks.grpc_response)(self.id, token_id, status_code, response_size)
        {
            return;
        }
        let response = GrpcResponse::new(status_code, response_size);
        let result = filter.on_grpc_response(
            GrpcToken(token_id),
            &response,
            &mut RequestHeaders::new(false),
        );
        resume_after::<F>(result, self.at(host::STREAM_REQUEST));
    }

    fn on_done(&mut self) -> bool {
        // The stream is over: its tasks go, and the answers they await are
        // ignored.
        if let Some(hooks) = runtime::hooks() {
            (hooks.end)(self.id);
        }
        true
    }

    fn on_grpc_stream_initial_metadata(&mut self, token_id: u32, num_elements: u32) {
        self.grpc_stream(
            token_id,
            GrpcStreamEvent::InitialMetadata(num_elements as usize),
        );
    }

    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        self.grpc_stream(token_id, GrpcStreamEvent::Message(message_size));
    }

    fn on_grpc_stream_trailing_metadata(&mut self, token_id: u32, num_elements: u32) {
        self.grpc_stream(
            token_id,
            GrpcStreamEvent::TrailingMetadata(num_elements as usize),
        );
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        self.grpc_stream(token_id, GrpcStreamEvent::Closed(status_code));
    }
}

impl<F: HttpFilter> Stream<F> {
    /// A gRPC stream event, delivered with this stream as the effective context.
    fn grpc_stream(&mut self, token: u32, event: GrpcStreamEvent) {
        let Some(filter) = self.filter.as_mut() else {
            return;
        };
        let result =
            filter.on_grpc_stream(GrpcStream(token), &event, &mut RequestHeaders::new(false));
        resume_after::<F>(result, self.at(host::STREAM_REQUEST));
    }
}

/// After a callout answer or gRPC event: resume the request if the filter
/// continues.
fn resume_after<F>(result: Result<Flow>, at: StreamRef) {
    if finish::<F>(result, at) == Action::Continue
        && let Err(status) = host::continue_stream(host::STREAM_REQUEST)
    {
        log::error!("cannot resume the request after a callout: {status}");
    }
}

impl<F: HttpFilter> HttpContext for Stream<F> {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(filter) = self.filter.as_mut() else {
            return unconfigured::<F>();
        };
        let mut headers = RequestHeaders::new(end_of_stream);
        let result = filter.on_request_headers(&mut headers);
        if let Some(spec) = headers.take_buffer_body() {
            self.set_buffer(false, spec);
        }
        finish::<F>(result, self.at(host::STREAM_REQUEST))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(action) = buffering(self.buffer(false), body_size, end_of_stream) {
            self.set_held(false, Some(body_size));
            return action;
        }
        self.set_held(false, None);
        let Some(filter) = self.filter.as_mut() else {
            return Action::Continue;
        };
        let action = finish::<F>(
            filter.on_request_body(&mut RequestBody::new(body_size, end_of_stream)),
            self.at(host::STREAM_REQUEST),
        );
        held(action, self.id, host::STREAM_REQUEST)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let whole = self.take_held(false);
        let at = self.at(host::STREAM_REQUEST);
        let Some(filter) = self.filter.as_mut() else {
            return Action::Continue;
        };
        // The trailers end the stream: a body held for the filter is whole now
        // (Envoy still points the body buffer at it).
        if let Some(size) = whole {
            let action = finish::<F>(
                filter.on_request_body(&mut RequestBody::new(size, true)),
                at,
            );
            let action = held(action, self.id, host::STREAM_REQUEST);
            if action != Action::Continue {
                return action;
            }
        }
        let action = finish::<F>(filter.on_request_trailers(&mut RequestTrailers::new()), at);
        held(action, self.id, host::STREAM_REQUEST)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(filter) = self.filter.as_mut() else {
            return Action::Continue;
        };
        let mut headers = ResponseHeaders::new(end_of_stream);
        let result = filter.on_response_headers(&mut headers);
        if let Some(spec) = headers.take_buffer_body() {
            self.set_buffer(true, spec);
        }
        finish::<F>(result, self.at(host::STREAM_RESPONSE))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(action) = buffering(self.buffer(true), body_size, end_of_stream) {
            self.set_held(true, Some(body_size));
            return action;
        }
        self.set_held(true, None);
        let Some(filter) = self.filter.as_mut() else {
            return Action::Continue;
        };
        let action = finish::<F>(
            filter.on_response_body(&mut ResponseBody::new(body_size, end_of_stream)),
            self.at(host::STREAM_RESPONSE),
        );
        held(action, self.id, host::STREAM_RESPONSE)
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        let whole = self.take_held(true);
        let at = self.at(host::STREAM_RESPONSE);
        let Some(filter) = self.filter.as_mut() else {
            return Action::Continue;
        };
        // The trailers end the stream: a body held for the filter is whole now
        // (Envoy still points the body buffer at it).
        if let Some(size) = whole {
            let action = finish::<F>(
                filter.on_response_body(&mut ResponseBody::new(size, true)),
                at,
            );
            let action = held(action, self.id, host::STREAM_RESPONSE);
            if action != Action::Continue {
                return action;
            }
        }
        let action = finish::<F>(
            filter.on_response_trailers(&mut ResponseTrailers::new()),
            at,
        );
        held(action, self.id, host::STREAM_RESPONSE)
    }

    fn on_log(&mut self) {
        if let Some(filter) = self.filter.as_mut() {
            filter.on_done();
        }
    }
}
