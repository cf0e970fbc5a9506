//! `sdk-callout`: exercises the weir SDK's callout API for the conformance
//! suite. Each request is held while `GET <path>` on `cluster` checks its
//! `x-user`; a 200 answer lets it through with `x-auth` set to the answer's body,
//! anything else is answered `403`. A request without `x-user` is answered `401`
//! without a callout. `x-probe-id` is passed on to the callout.

use std::rc::Rc;

use serde::Deserialize;
use weir::{
    CalloutResponse, CalloutToken, Flow, HttpCall, HttpFilter, LocalReply, RequestHeaders, Result,
};

/// The plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cluster to call.
    pub cluster: String,
    /// The path to call.
    pub path: String,
}

/// The filter.
#[derive(Debug)]
pub struct SdkCallout {
    config: Rc<Config>,
}

impl HttpFilter for SdkCallout {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self { config }
    }

    fn on_request_headers(&mut self, headers: &mut RequestHeaders) -> Result<Flow> {
        let Some(user) = headers.get("x-user")? else {
            log::info!("no user: 401");
            return Ok(Flow::Respond(LocalReply::new(401).body("who are you?")));
        };
        let mut call = HttpCall::get(&self.config.cluster, &self.config.path)
            .authority("auth.test")
            .header("x-user", user);
        if let Some(id) = headers.get("x-probe-id")? {
            call = call.header("x-probe-id", id);
        }
        match call.send() {
            Ok(_) => {
                log::info!("callout sent");
                Ok(Flow::Pause)
            }
            Err(e) => {
                log::info!("{e}");
                Ok(Flow::Respond(
                    LocalReply::new(503).body("authorization unavailable"),
                ))
            }
        }
    }

    fn on_callout_response(
        &mut self,
        _token: CalloutToken,
        response: &CalloutResponse,
        headers: &mut RequestHeaders,
    ) -> Result<Flow> {
        let status = response.status()?;
        log::info!("callout answered {status:?}");
        if status == Some(200) {
            headers.set("x-auth", response.body()?)?;
            Ok(Flow::Continue)
        } else {
            Ok(Flow::Respond(LocalReply::new(403).body("denied")))
        }
    }
}

impl Drop for SdkCallout {
    fn drop(&mut self) {
        log::info!("stream done");
    }
}

weir::export_http_filter!(SdkCallout);
