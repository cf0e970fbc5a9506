//! Trailers on their way through the filter chain, as Envoy's filter manager
//! moves them: after the data, through each filter's `on_request_trailers`
//! (`on_response_trailers`) in the pass's order. A filter that buffered data
//! sees it with the trailers (Envoy points the body buffer at what it
//! buffered) and, once its trailers callback continues, lets it go as one data
//! frame that does not end the stream, before the trailers reach the next
//! filter. A trailers callback that returns anything but Continue (0) stops
//! the trailers there until a callout response resumes the stream; meanwhile
//! the trailers stay readable and writable.

use std::collections::VecDeque;

use super::sched::Io;
use super::{
    After, BodyPass, Chain, Direction, FailurePolicy, Progress, Reply, after, continues,
    fail_stream, pauses, stalled, wait_paused,
};
use crate::fields::{Fields, Kind};
use crate::hcm::ConnectionManager;
use crate::outcome::Callout;
use crate::state::Held;
use crate::{Error, Result, Trailers};

/// Trailers not yet through every filter.
pub(super) struct PendingTrailers {
    /// The position, in the pass's order, of the next filter to see them.
    pub(super) at: usize,
    pub(super) fields: Fields,
    /// Where they start over once through the whole chain (see
    /// [`PendingTrailers::added`]).
    again: Option<usize>,
    /// What went to the peer when they went through the chain the first time.
    sent: Option<Fields>,
    /// The filter that added them, if one did.
    adder: Option<usize>,
    /// Whether a filter's trailers callback has had them: from then on the
    /// stream has them and its access log reads them, even if it ends there.
    reached: bool,
}

impl PendingTrailers {
    /// Trailers that arrive from a peer: every filter sees them.
    pub(super) fn arriving(fields: Fields) -> Self {
        Self {
            at: 0,
            fields,
            again: None,
            sent: None,
            adder: None,
            reached: false,
        }
    }

    /// Envoy keeps the trailers a filter added within its reach for the rest
    /// of the stream (its context still points at them; nothing it changes
    /// reaches the upstream any more): the adder's VM keeps a copy of the
    /// request trailers as they left the chain, for its response callbacks.
    pub(super) fn keep_with_adder(&self, slots: &mut [super::Slot]) {
        if let Some(slot) = self.adder.and_then(|i| slots.get_mut(i)) {
            slot.vm.state().maps.request_trailers = Some(self.fields.clone());
        }
    }

    /// The trailers a stream that ends (is reset) now logs: those that
    /// reached a filter's trailers callback (measured in Envoy 1.40: after a
    /// local reply from the response trailers, every filter's `on_log` reads
    /// the upstream's trailers as the filters left them).
    pub(super) fn for_log(&mut self) -> Option<&mut Fields> {
        self.reached.then_some(&mut self.fields)
    }

    /// The trailers the peer receives: as they left the chain the first time
    /// (the router sends them then; later changes do not reach the peer).
    pub(super) fn into_sent(self) -> Fields {
        self.sent.unwrap_or(self.fields)
    }

    /// Trailers filter `adder` added at the end of the body: the filters from
    /// position `at` on see them. Measured in Envoy 1.40: when the adding
    /// filter of a request had stopped earlier (it buffered data, or holds the
    /// headers) and now continues, the filter manager's `commonContinue`
    /// passes the trailers on, and then its `decodeData` passes them again,
    /// so the filters after it get `on_request_trailers` twice (the upstream
    /// receives them as they were after the first time).
    pub(super) fn added(
        direction: Direction,
        (adder, at): (usize, usize),
        fields: Fields,
        was_stopped: bool,
    ) -> Self {
        let twice = direction == Direction::Request && was_stopped;
        Self {
            at,
            fields,
            again: twice.then_some(at),
            sent: None,
            adder: Some(adder),
            reached: false,
        }
    }
}

/// What a step of the trailers leaves the pass to do.
pub(super) enum Step {
    /// A filter let go of the data it buffered: the frame is queued and goes
    /// on before the trailers.
    Data,
    /// The pass ends: its reply or its released headers are set.
    Stop,
    /// Nothing is left: no trailers, or they went through the pass's filters.
    Done,
}

/// The client's trailers, as Envoy's HTTP/1 codec delivers them: only with
/// `enable_trailers` on the connection manager (else dropped, with a warning).
///
/// # Errors
/// [`Error::InvalidRequest`] for a request with trailers and `content-length`
/// (an HTTP/1 client cannot send that).
pub(super) fn from_client(
    request: &http::Request<bytes::Bytes>,
    hcm: &ConnectionManager,
    warnings: &mut Vec<String>,
) -> Result<Option<PendingTrailers>> {
    let Some(trailers) = request.extensions().get::<Trailers>() else {
        return Ok(None);
    };
    if request.headers().contains_key(http::header::CONTENT_LENGTH) {
        return Err(Error::InvalidRequest(
            "a request with trailers has a chunked body in HTTP/1: remove content-length \
             (and send transfer-encoding: chunked as a client does)"
                .to_owned(),
        ));
    }
    if !hcm.downstream_trailers() {
        warnings.push(
            "the request's trailers were dropped: Envoy's HTTP/1 codec reads them only with \
             the connection manager's http_protocol_options.enable_trailers \
             (ConnectionManager::enable_trailers)"
                .to_owned(),
        );
        return Ok(None);
    }
    Ok(Some(PendingTrailers::arriving(
        trailers.to_fields(Kind::Plain),
    )))
}

/// The upstream's trailers, as the router's HTTP/1 connection delivers them:
/// only with the cluster's `enable_trailers` and after a chunked body (else
/// dropped, with a warning).
pub(super) fn from_upstream(
    response: &http::Response<bytes::Bytes>,
    hcm: &ConnectionManager,
    warnings: &mut Vec<String>,
) -> Option<PendingTrailers> {
    let trailers = response.extensions().get::<Trailers>()?;
    if response
        .headers()
        .contains_key(http::header::CONTENT_LENGTH)
    {
        warnings.push(
            "the upstream response's trailers were dropped: a response framed by \
             content-length cannot carry trailers in HTTP/1"
                .to_owned(),
        );
        return None;
    }
    if !hcm.upstream_trailers() {
        warnings.push(
            "the upstream response's trailers were dropped: Envoy's HTTP/1 codec reads them \
             only with the cluster's http_protocol_options.enable_trailers \
             (ConnectionManager::upstream_enable_trailers)"
                .to_owned(),
        );
        return None;
    }
    Some(PendingTrailers::arriving(
        trailers.to_fields(Kind::ResponseTrailers),
    ))
}

/// How a message's body frames end, as Envoy's HTTP/1 codec delivers them:
/// with trailers, no empty frame ends the stream (the trailers do); a chunked
/// message (per `headers`) without body or trailers still has its empty
/// frame that ends the stream (the headers do not).
pub(super) fn last_frames(frames: &mut Vec<(Vec<u8>, bool)>, trailers: bool, chunked: bool) {
    if trailers {
        if matches!(frames.last(), Some((data, true)) if data.is_empty()) {
            frames.pop();
        }
    } else if frames.is_empty() && chunked {
        frames.push((Vec::new(), true));
    }
}

/// Whether `transfer-encoding` says chunked.
pub(super) fn is_chunked(headers: &Fields) -> bool {
    headers.get(b"transfer-encoding").is_some_and(says_chunked)
}

/// Whether a `transfer-encoding` value says chunked.
pub(super) fn says_chunked(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

impl Chain {
    /// Moves pending trailers on through the filters of `order`, from where
    /// they are, until they are through, a filter lets go of buffered data
    /// (queued in `frames`, to pass first), or the pass ends (a reply, or the
    /// holding filter continuing: its buffered data is released).
    #[allow(
        clippy::too_many_arguments,
        reason = "the state of one stream's pass, owned by `send`"
    )]
    pub(super) async fn trailers_step(
        io: &mut Io<'_, '_>,
        direction: Direction,
        trailers: &mut Option<PendingTrailers>,
        order: &[usize],
        progress: &[Progress],
        buffered: &mut [Option<Vec<u8>>],
        hold: &mut Option<(usize, &mut Fields)>,
        frames: &mut VecDeque<(usize, Vec<u8>, bool)>,
        callouts: &mut Vec<Callout>,
        pass: &mut BodyPass,
    ) -> Result<Step> {
        let Some(pending) = trailers.as_mut() else {
            return Ok(Step::Done);
        };
        let callback = match direction {
            Direction::Request => "on_request_trailers",
            Direction::Response => "on_response_trailers",
        };
        // The trailers end the stream: it is complete once they arrive.
        pass.complete = true;
        pending.reached = true;
        let filters = io.chain().slots.len();
        loop {
            let Some(&i) = order.get(pending.at) else {
                // Through the whole chain: once more if Envoy passes them twice.
                if order.len() == filters
                    && let Some(at) = pending.again.take()
                {
                    pending.sent = Some(pending.fields.clone());
                    pending.at = at;
                    continue;
                }
                break;
            };
            let position = pending.at;
            let (stream, result) = {
                let mut guard = io.chain();
                let slot = &mut guard.slots[i];
                let (Some(stream), true) = (progress[i].context, progress[i].decoded) else {
                    pending.at += 1;
                    continue;
                };
                if slot.failed_for(progress[i].generation) {
                    if slot.policy == FailurePolicy::FailOpen {
                        pending.at += 1;
                        continue;
                    }
                    pass.reply = Some(Reply {
                        slot: Some(i),
                        request: fail_stream(),
                    });
                    pass.reply_in_trailers = true;
                    return Ok(Step::Stop);
                }
                let holding: Option<&mut Fields> = match hold {
                    Some((h, headers)) if *h == i => Some(&mut **headers),
                    _ => None,
                };
                let count = pending.fields.len();
                let body = buffered[i].take();
                let mut state = slot.vm.state();
                let maps = &mut state.maps;
                let lent = Some(std::mem::take(&mut pending.fields));
                match direction {
                    Direction::Request => {
                        maps.request_trailers = lent;
                        maps.request_body = body;
                    }
                    Direction::Response => {
                        maps.response_trailers = lent;
                        maps.response_body = body;
                    }
                }
                if let Some(headers) = holding {
                    *direction.headers(maps) = Some(std::mem::take(headers));
                }
                drop(state);
                let result = match direction {
                    Direction::Request => slot.vm.on_request_trailers(stream, count),
                    Direction::Response => slot.vm.on_response_trailers(stream, count),
                };
                // Envoy's FilterTrailersStatus: 0 continues, anything else stops
                // iteration (1 is what [`wait_paused`] takes for a stop).
                (
                    stream,
                    result.map(|action| action.map(|a| i32::from(a != 0))),
                )
            };
            // The chain's borrow ends before any wait.
            let step = after(
                &mut io.chain().slots[i],
                stream,
                result,
                direction,
                callback,
            );
            let step = match step {
                Ok(step) if pauses(&step) => {
                    wait_paused(io, i, stream, step, direction, callback, callouts).await
                }
                other => other,
            };
            let mut guard = io.chain();
            let slot = &mut guard.slots[i];
            let mut state = slot.vm.state();
            let maps = &mut state.maps;
            let (fields, body, headers) = match direction {
                Direction::Request => (
                    maps.request_trailers.take(),
                    maps.request_body.take(),
                    maps.request_headers.take(),
                ),
                Direction::Response => (
                    maps.response_trailers.take(),
                    maps.response_body.take(),
                    maps.response_headers.take(),
                ),
            };
            // The stream ended here (a reply, a close, a client that left):
            // the context still points at the trailers in `on_log`.
            let ended = matches!(
                step,
                Ok(After::Reply(_)) | Err(Error::Reset { .. } | Error::Disconnected { .. })
            );
            // The stream ended here: the context keeps the trailers (see
            // `HeldMaps`), its own copy of the request trailers (the access
            // log has none), the access log's response trailers.
            if ended && let Some(fields) = &fields {
                let hold = state.hold(stream);
                match direction {
                    Direction::Request => hold.request_trailers = Held::Own(fields.clone()),
                    Direction::Response => hold.response_trailers = Held::Logged,
                }
            }
            drop(state);
            if let Some(fields) = fields {
                pending.fields = fields;
            }
            let holding = matches!(hold, Some((h, _)) if *h == i);
            if let Some((_, held)) = hold.as_mut().filter(|_| holding) {
                **held = headers.unwrap_or_default();
            }
            match step? {
                After::Failed => {
                    pass.reply = Some(Reply {
                        slot: Some(i),
                        request: fail_stream(),
                    });
                    pass.reply_in_trailers = true;
                    return Ok(Step::Stop);
                }
                After::Reply(request) => {
                    pass.reply = Some(Reply {
                        slot: Some(i),
                        request,
                    });
                    pass.reply_in_trailers = true;
                    return Ok(Step::Stop);
                }
                After::Returned { action, resumed } => {
                    if !continues(action) && !resumed {
                        return Err(stalled(slot, callback));
                    }
                    pending.at = position + 1;
                    if holding {
                        // The held headers go on to the next filters, with
                        // what the filter buffered, then the trailers.
                        pass.released = Some((body.unwrap_or_default(), false));
                        return Ok(Step::Stop);
                    }
                    if let Some(body) = body {
                        frames.push_back((position + 1, body, false));
                        return Ok(Step::Data);
                    }
                }
            }
        }
        Ok(Step::Done)
    }
}
