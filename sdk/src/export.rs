//! Glue between a [`HttpFilter`] and the `proxy-wasm` dispatcher: the adapters
//! implement its context traits, so context ids and boxed trait objects stay in
//! here. Every call into the host goes through the private `host` module.

use std::marker::PhantomData;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::host::{self, BufferType};
use crate::{
    BufferBody, CalloutResponse, CalloutToken, Flow, HttpFilter, LocalReply, RequestBody,
    RequestHeaders, ResponseBody, ResponseHeaders, Result,
};

/// Registers `F` as the module's HTTP filter. Called from the module's
/// `_initialize` by [`export_http_filter!`](crate::export_http_filter).
#[doc(hidden)]
pub fn register_http_filter<F: HttpFilter>() {
    host::register_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root::<F> {
            config: None,
            _filter: PhantomData,
        })
    });
}

fn filter_name<F>() -> &'static str {
    let full = std::any::type_name::<F>();
    full.rsplit("::").next().unwrap_or(full)
}

struct Root<F: HttpFilter> {
    config: Option<Rc<F::Config>>,
    _filter: PhantomData<F>,
}

impl<F: HttpFilter> Context for Root<F> {}

impl<F: HttpFilter> RootContext for Root<F> {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match host::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log::error!(
                    "{}: cannot read the plugin configuration: {status}",
                    filter_name::<F>()
                );
                return false;
            }
        };
        match crate::parse_config::<F::Config>(&bytes) {
            Ok(config) => {
                self.config = Some(Rc::new(config));
                true
            }
            Err(e) => {
                log::error!("{}: {e}", filter_name::<F>());
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let filter = self.config.as_ref().map(|c| F::new(Rc::clone(c)));
        Some(Box::new(Stream {
            filter,
            request_buffer: None,
            response_buffer: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream<F> {
    /// `None` if the plugin was never configured successfully.
    filter: Option<F>,
    /// Set when the filter asked for the whole request body.
    request_buffer: Option<BufferBody>,
    /// Set when the filter asked for the whole response body.
    response_buffer: Option<BufferBody>,
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

impl<F: HttpFilter> Stream<F> {
    #[inline]
    fn run(&mut self, callback: impl FnOnce(&mut F) -> Result<Flow>) -> Action {
        let Some(filter) = self.filter.as_mut() else {
            log::error!(
                "{}: stream started without a valid configuration",
                filter_name::<F>()
            );
            return respond(&LocalReply::new(500).details("weir_filter_not_configured"));
        };
        match callback(filter) {
            Ok(Flow::Continue) => Action::Continue,
            Ok(Flow::Pause) => Action::Pause,
            Ok(Flow::Respond(reply)) => respond(&reply),
            Err(e) => {
                log::error!("{}: {e}", filter_name::<F>());
                respond(&LocalReply::new(500).details("weir_filter_error"))
            }
        }
    }
}

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
        _num_trailers: usize,
    ) {
        // proxy-wasm has made this stream the effective context.
        let action = self.run(|f| {
            let response = CalloutResponse::read(num_headers, body_size)?;
            f.on_callout_response(
                CalloutToken(token_id),
                response,
                &mut RequestHeaders::new(false),
            )
        });
        if action == Action::Continue
            && let Err(status) = host::continue_request()
        {
            log::error!("cannot resume the request after a callout: {status}");
        }
    }
}

impl<F: HttpFilter> HttpContext for Stream<F> {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let mut headers = RequestHeaders::new(end_of_stream);
        let action = self.run(|f| f.on_request_headers(&mut headers));
        self.request_buffer = headers.take_buffer_body();
        action
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(action) = buffering(self.request_buffer.as_ref(), body_size, end_of_stream) {
            return action;
        }
        self.run(|f| f.on_request_body(&mut RequestBody::new(body_size, end_of_stream)))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let mut headers = ResponseHeaders::new(end_of_stream);
        let action = self.run(|f| f.on_response_headers(&mut headers));
        self.response_buffer = headers.take_buffer_body();
        action
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(action) = buffering(self.response_buffer.as_ref(), body_size, end_of_stream) {
            return action;
        }
        self.run(|f| f.on_response_body(&mut ResponseBody::new(body_size, end_of_stream)))
    }
}
