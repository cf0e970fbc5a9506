//! Applying the changes to a stream's headers, through [`HeaderMap`].

use std::fmt;

use crate::attributes::Attribute;
use crate::template::{Phase, Source, Template};
use crate::{Changes, Condition, Config, Header, HeaderMatch, HeaderName, Rename};

/// One header map of the current stream, as the SDK in use exposes it, and the
/// stream's Envoy attributes.
///
/// Header values are bytes; names are lower-case. Each method is one host call.
pub trait HeaderMap {
    /// What a refused host call becomes.
    type Error;

    /// The first value of `name`, or `None` if absent.
    ///
    /// # Errors
    /// If the host refuses the call.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Every value of `name`, in order.
    ///
    /// # Errors
    /// If the host refuses the call or its answer cannot be read.
    fn get_all(&self, name: &str) -> Result<Vec<Vec<u8>>, Self::Error>;

    /// Replaces every value of `name` with `value`.
    ///
    /// # Errors
    /// If the host refuses the call.
    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), Self::Error>;

    /// Appends `value` to `name`.
    ///
    /// # Errors
    /// If the host refuses the call.
    fn add(&mut self, name: &str, value: &[u8]) -> Result<(), Self::Error>;

    /// Removes every value of `name`.
    ///
    /// # Errors
    /// If the host refuses the call.
    fn remove(&mut self, name: &str) -> Result<(), Self::Error>;

    /// The raw value of the attribute at `path`; `None` if it is absent or the
    /// host cannot answer (templates treat both as a missing value).
    fn attribute(&self, path: &[&str]) -> Option<Vec<u8>>;
}

/// The per-stream state: what the response side captured from the request.
#[derive(Debug, Default)]
pub struct Stream {
    /// `None` if the response needs nothing from the request or the request
    /// phase never ran here. Boxed so that streams of literal configurations
    /// carry one null pointer.
    captured: Option<Box<Captured>>,
}

/// Request-phase values kept for the response phase of one stream.
#[derive(Debug, Default)]
struct Captured {
    /// The values of `config.response.carry`.
    values: Vec<Option<Vec<u8>>>,
    /// Per response rule, whether its request-side conditions held.
    rules: Vec<bool>,
}

impl Stream {
    /// Applies `config.request` to the request headers, first capturing what
    /// the response changes will need from them.
    ///
    /// # Errors
    /// The first error of a host call.
    #[inline]
    pub fn request<H: HeaderMap>(
        &mut self,
        config: &Config,
        headers: &mut H,
    ) -> Result<(), H::Error> {
        // One branch for the common case of literal changes both ways.
        if !(config.request.literal & config.response.literal) {
            return self.request_general(config, headers);
        }
        let c = &config.request;
        if c.apply_literal(headers)? {
            log::debug!(
                "request: removed {}, set {}, added {} header(s)",
                c.remove.len(),
                c.set.len(),
                c.add.len()
            );
        }
        Ok(())
    }

    /// Applies `config.response` to the response headers.
    ///
    /// # Errors
    /// The first error of a host call.
    #[inline]
    pub fn response<H: HeaderMap>(
        &mut self,
        config: &Config,
        headers: &mut H,
    ) -> Result<(), H::Error> {
        let c = &config.response;
        if !c.literal {
            return self.response_general(config, headers);
        }
        if c.apply_literal(headers)? {
            log::debug!(
                "response: removed {}, set {}, added {} header(s)",
                c.remove.len(),
                c.set.len(),
                c.add.len()
            );
        }
        Ok(())
    }

    /// The request phase when templates, renames or rules are involved.
    #[inline(never)]
    fn request_general<H: HeaderMap>(
        &mut self,
        config: &Config,
        headers: &mut H,
    ) -> Result<(), H::Error> {
        // Literal response changes read nothing from the request.
        if !config.response.literal {
            self.capture(config, headers)?;
        }
        self.apply(config, Phase::Request, headers)
    }

    /// The response phase when templates, renames or rules are involved.
    #[inline(never)]
    fn response_general<H: HeaderMap>(
        &mut self,
        config: &Config,
        headers: &mut H,
    ) -> Result<(), H::Error> {
        self.apply(config, Phase::Response, headers)
    }

    /// Captures what the response side needs from the request.
    fn capture<H: HeaderMap>(&mut self, config: &Config, request: &H) -> Result<(), H::Error> {
        let response = &config.response;
        let values = response
            .carry
            .iter()
            .map(|s| lookup(request, s))
            .collect::<Result<_, _>>()?;
        let rules = response
            .rules
            .iter()
            .map(|r| {
                if r.when.reads_request() {
                    r.when.request_matches(request)
                } else {
                    Ok(true)
                }
            })
            .collect::<Result<_, _>>()?;
        self.captured = Some(Box::new(Captured { values, rules }));
        Ok(())
    }

    /// Runs one direction's changes.
    fn apply<H: HeaderMap>(
        &self,
        config: &Config,
        phase: Phase,
        headers: &mut H,
    ) -> Result<(), H::Error> {
        let (changes, name) = match phase {
            Phase::Request => (&config.request, "request"),
            Phase::Response => (&config.response, "response"),
        };
        let mut values = Values {
            phase,
            max: config.max_value_bytes,
            carry: &changes.carry,
            carried: self.captured.as_ref().map_or(&[], |c| &c.values),
            scratch: Vec::new(),
        };
        let mut stats = Stats::default();
        Ops {
            remove: &changes.remove,
            rename: &changes.rename,
            set: &changes.set,
            add: &changes.add,
            at: format_args!("{name}"),
        }
        .apply(headers, &mut values, &mut stats)?;
        for (i, rule) in changes.rules.iter().enumerate() {
            let when = &rule.when;
            let matches = match phase {
                Phase::Request => when.request_matches(headers)?,
                Phase::Response => {
                    let request_ok = !when.reads_request()
                        || self
                            .captured
                            .as_ref()
                            .and_then(|c| c.rules.get(i).copied())
                            .unwrap_or(false);
                    request_ok && headers_match(&when.response_headers, headers)?
                }
            };
            if !matches {
                continue;
            }
            Ops {
                remove: &rule.remove,
                rename: &rule.rename,
                set: &rule.set,
                add: &rule.add,
                at: format_args!("{name}.rules[{i}]"),
            }
            .apply(headers, &mut values, &mut stats)?;
        }
        if stats.removed + stats.renamed + stats.set + stats.added + stats.skipped > 0 {
            log_stats(phase, &stats);
        }
        Ok(())
    }
}

impl Changes {
    /// The fast path for literal changes (see [`Changes::is_literal`]): the same
    /// host calls, and nothing else, as code without templates would make.
    /// Returns whether there were any changes. Inlined into both directions:
    /// it is the whole of the common case.
    #[inline(always)]
    fn apply_literal<H: HeaderMap>(&self, headers: &mut H) -> Result<bool, H::Error> {
        for name in &self.remove {
            headers.remove(name.as_str())?;
        }
        for h in &self.set {
            headers.set(h.name.as_str(), h.value.0.literal_text().as_bytes())?;
        }
        for h in &self.add {
            headers.add(h.name.as_str(), h.value.0.literal_text().as_bytes())?;
        }
        Ok(self.remove.len() + self.set.len() + self.add.len() > 0)
    }
}

impl Condition {
    /// Whether it has conditions on the request.
    fn reads_request(&self) -> bool {
        self.path_prefix.is_some() || !self.methods.is_empty() || !self.request_headers.is_empty()
    }

    /// Whether the request-side conditions hold for `request`.
    fn request_matches<H: HeaderMap>(&self, request: &H) -> Result<bool, H::Error> {
        if let Some(prefix) = &self.path_prefix {
            let path = request.get(":path")?.unwrap_or_default();
            if !path.starts_with(prefix.0.as_bytes()) {
                return Ok(false);
            }
        }
        if !self.methods.is_empty() {
            let method = request.get(":method")?.unwrap_or_default();
            if !self.methods.iter().any(|m| m.0.as_bytes() == method) {
                return Ok(false);
            }
        }
        headers_match(&self.request_headers, request)
    }
}

fn headers_match<H: HeaderMap>(matches: &[HeaderMatch], headers: &H) -> Result<bool, H::Error> {
    for m in matches {
        let value = headers.get(m.name.as_str())?;
        let ok = match (&value, &m.equals) {
            (None, _) => !m.present,
            (Some(v), Some(expected)) => v.as_slice() == expected.as_str().as_bytes(),
            (Some(_), None) => m.present,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What one direction's changes did, for the debug log.
#[derive(Debug, Default)]
struct Stats {
    removed: usize,
    renamed: usize,
    set: usize,
    added: usize,
    skipped: usize,
}

fn log_stats(phase: Phase, s: &Stats) {
    if s.renamed == 0 && s.skipped == 0 {
        log::debug!(
            "{}: removed {}, set {}, added {} header(s)",
            phase.as_str(),
            s.removed,
            s.set,
            s.added
        );
    } else {
        log::debug!(
            "{}: removed {}, renamed {}, set {}, added {} header(s), skipped {}",
            phase.as_str(),
            s.removed,
            s.renamed,
            s.set,
            s.added,
            s.skipped
        );
    }
}

/// Where template values come from while one direction's changes run.
struct Values<'a> {
    phase: Phase,
    max: usize,
    /// The response side's carried sources and their captured values.
    carry: &'a [Source],
    carried: &'a [Option<Vec<u8>>],
    scratch: Vec<u8>,
}

/// Reads an attribute; absent, unreadable or malformed values are missing.
fn attribute<H: HeaderMap>(headers: &H, a: &Attribute) -> Option<Vec<u8>> {
    a.render(headers.attribute(a.path)?)
}

/// The value of `source` in the phase whose headers are `headers`.
fn lookup<H: HeaderMap>(headers: &H, source: &Source) -> Result<Option<Vec<u8>>, H::Error> {
    match source {
        Source::RequestHeader(name) | Source::ResponseHeader(name) => headers.get(name.as_str()),
        Source::Attribute(a) => Ok(attribute(headers, a)),
    }
}

impl Values<'_> {
    fn value<H: HeaderMap>(
        &self,
        headers: &H,
        source: &Source,
    ) -> Result<Option<Vec<u8>>, H::Error> {
        if self.phase == Phase::Response && source.from_request_headers() {
            // Captured in the request phase (absent if it never ran).
            let at = self.carry.iter().position(|s| s == source);
            return Ok(at.and_then(|i| self.carried.get(i)).cloned().flatten());
        }
        lookup(headers, source)
    }

    /// The value `template` gives now, or `None` (logged) if the operation is
    /// to be skipped.
    fn render<'t, H: HeaderMap>(
        &'t mut self,
        headers: &H,
        template: &'t Template,
        what: fmt::Arguments<'_>,
    ) -> Result<Option<&'t [u8]>, H::Error> {
        if let Some(text) = template.as_literal() {
            return Ok(Some(text.as_bytes()));
        }
        let mut out = std::mem::take(&mut self.scratch);
        let rendered = template.render(&mut out, |s| self.value(headers, s))?;
        self.scratch = out;
        let problem = if !rendered {
            "a value is missing and has no default"
        } else if self.scratch.len() > self.max {
            "the value is longer than max_value_bytes"
        } else if self.scratch.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            "the value contains CR, LF or NUL"
        } else {
            return Ok(Some(&self.scratch));
        };
        log::debug!("{what} skipped: {problem}");
        Ok(None)
    }
}

/// One set of operations (a direction's unconditional ones or a rule's).
struct Ops<'a> {
    remove: &'a [HeaderName],
    rename: &'a [Rename],
    set: &'a [Header],
    add: &'a [Header],
    /// For log lines, e.g. `request` or `response.rules[2]`.
    at: fmt::Arguments<'a>,
}

impl Ops<'_> {
    fn apply<H: HeaderMap>(
        &self,
        headers: &mut H,
        values: &mut Values<'_>,
        stats: &mut Stats,
    ) -> Result<(), H::Error> {
        for name in self.remove {
            headers.remove(name.as_str())?;
            stats.removed += 1;
        }
        for r in self.rename {
            let moved = headers.get_all(r.from.as_str())?;
            if moved.is_empty() {
                continue;
            }
            headers.remove(r.from.as_str())?;
            headers.remove(r.to.as_str())?;
            for v in &moved {
                headers.add(r.to.as_str(), v)?;
            }
            stats.renamed += 1;
        }
        for (i, h) in self.set.iter().enumerate() {
            let at = format_args!("{}.set[{i}] `{}`", self.at, h.name);
            match values.render(headers, &h.value.0, at)? {
                Some(v) => {
                    headers.set(h.name.as_str(), v)?;
                    stats.set += 1;
                }
                None => stats.skipped += 1,
            }
        }
        for (i, h) in self.add.iter().enumerate() {
            let at = format_args!("{}.add[{i}] `{}`", self.at, h.name);
            match values.render(headers, &h.value.0, at)? {
                Some(v) => {
                    headers.add(h.name.as_str(), v)?;
                    stats.added += 1;
                }
                None => stats.skipped += 1,
            }
        }
        Ok(())
    }
}
