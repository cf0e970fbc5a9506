//! The `auth` filter as a library: authenticates requests with JSON Web Tokens
//! or API keys, with rules per path prefix and method. See the `auth` crate's
//! README for the configuration. The `auth` crate exports [`Auth`] and
//! [`AuthPlugin`] as the module's filter; this crate holds everything else, so
//! tests link it natively while the module keeps link-time optimization.
//!
//! Per request: the headers the filter sets are removed from the client's
//! request, the first matching rule (or `default_action`) decides between
//! `require`, `allow` (anonymous passes, a credential present must be valid) and
//! `deny`; then the credential is found (JWT sources first, then API-key
//! sources) and checked. Failures answer 401 (with `WWW-Authenticate` per
//! RFC 6750), 403 or 503, with a JSON body.
//!
//! A token whose `kid` is not in the key set makes the request wait for one
//! refresh of the remote key set, if the rate limit allows one (the README's
//! "Unknown `kid`" explains the rules).

// A module built without some signature families leaves code paths unused.
#![cfg_attr(
    not(all(
        feature = "hmac",
        feature = "rsa",
        feature = "ecdsa",
        feature = "eddsa"
    )),
    allow(unused_imports, unused_variables, dead_code, unreachable_patterns)
)]

use std::rc::Rc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use weir::{
    CalloutResponse, CalloutToken, Flow, Headers, HttpFilter, Plugin, PluginContext,
    RequestHeaders, Result, Timer,
};

pub mod config;
mod jwk;
mod jwt;
mod metrics;
pub mod reason;
mod remote;

pub use config::Config;
use config::{Action, Rule, Source};
use reason::{Allowed, Reason};
use remote::Why;

/// The fuzzing and property-test entry point: validates `token` against the
/// inline keys of `config`'s `jwt` section at `now` (Unix seconds), as the
/// filter does, without a host. `Err` says why it was refused.
///
/// # Errors
/// The [`Reason`] the filter would deny the token for.
pub fn validate_token(config: &Config, token: &[u8], now: f64) -> std::result::Result<(), Reason> {
    let Some(jwt) = &config.jwt else {
        return Err(Reason::Missing);
    };
    let inline = jwt.jwks.as_ref().map_or(&[][..], |j| &j.0[..]);
    jwt::validate(token, jwt, &[inline], now).map(|_| ())
}

/// A credential found in the request.
enum Credential {
    /// The credential and the index of the source it came from.
    Found(Vec<u8>, usize),
    /// A source had something that cannot be a credential.
    Unreadable,
    /// No source had anything.
    Absent,
}

/// A token waiting for a key-set fetch.
#[derive(Debug)]
struct Pending {
    token: Vec<u8>,
    source: usize,
    rule: Option<usize>,
}

/// The filter: one value per HTTP stream.
#[derive(Debug)]
pub struct Auth {
    config: Rc<Config>,
    pending: Option<Pending>,
}

fn now_ms() -> Result<u64> {
    let now = weir::now()?;
    Ok(now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Whether a path (without query) could be read differently by the upstream
/// than by prefix matching: dot segments, empty segments, backslashes, or
/// percent-encoded `.`, `/` and `\`.
fn unsafe_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.contains("//")
        || path.contains('\\')
        || ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e))
        || path.split('/').any(|s| s == "." || s == "..")
}

/// The value of cookie `name` in `cookie` header values.
fn cookie<'a>(values: &'a [Vec<u8>], name: &str) -> Option<&'a [u8]> {
    values
        .iter()
        .flat_map(|v| v.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = trim(pair);
            let at = pair.iter().position(|&b| b == b'=')?;
            (trim(&pair[..at]) == name.as_bytes()).then(|| {
                let value = trim(&pair[at + 1..]);
                match value {
                    [b'"', inner @ .., b'"'] => inner,
                    v => v,
                }
            })
        })
}

impl Auth {
    fn metrics(&self) -> Option<&metrics::Metrics> {
        self.config.runtime.metrics.get()
    }

    fn scheme(&self) -> &'static str {
        if self.config.jwt.is_some() {
            "Bearer"
        } else {
            "ApiKey"
        }
    }

    fn rule(&self, index: Option<usize>) -> Option<&Rule> {
        index.and_then(|i| self.config.rules.get(i))
    }

    fn deny(&self, reason: Reason, rule: Option<usize>) -> Flow {
        if let Some(m) = self.metrics() {
            m.denied(reason);
        }
        log::debug!("denied: {}", reason.label());
        let scopes = self.rule(rule).map_or(&[][..], |r| &r.scopes[..]);
        let realm = self.config.realm.as_ref().map(config::Realm::as_str);
        Flow::Respond(reason::reply(reason, self.scheme(), realm, scopes))
    }

    fn allow(&self, how: Allowed) -> Flow {
        if let Some(m) = self.metrics() {
            m.allowed(how);
        }
        Flow::Continue
    }

    /// The first credential in `sources`.
    fn credential(req: &Headers, sources: &[Source], max: usize) -> Result<Credential> {
        let check = |value: &[u8], i: usize| {
            if value.is_empty() || value.len() > max || std::str::from_utf8(value).is_err() {
                Credential::Unreadable
            } else {
                Credential::Found(value.to_vec(), i)
            }
        };
        for (i, source) in sources.iter().enumerate() {
            match source {
                Source::Header { name, prefix } => {
                    let Some(raw) = req.get_bytes(name.as_str())? else {
                        continue;
                    };
                    let value = trim(&raw);
                    let p = prefix.as_bytes();
                    if p.is_empty() {
                        return Ok(check(value, i));
                    }
                    if value.len() >= p.len() && value[..p.len()].eq_ignore_ascii_case(p) {
                        return Ok(check(trim(&value[p.len()..]), i));
                    }
                    // `Bearer` alone: the scheme without a credential.
                    if value.eq_ignore_ascii_case(trim(p)) {
                        return Ok(Credential::Unreadable);
                    }
                }
                Source::Cookie(name) => {
                    let values = req.get_all_bytes("cookie")?;
                    if let Some(value) = cookie(&values, name) {
                        return Ok(check(value, i));
                    }
                }
                Source::Query(name) => {
                    // `:path` was checked to be UTF-8 before.
                    if let Some(value) = Self::query(req, name)? {
                        return Ok(check(value.as_bytes(), i));
                    }
                }
            }
        }
        Ok(Credential::Absent)
    }

    fn query(req: &Headers, name: &str) -> Result<Option<String>> {
        let Some(path) = req.get(":path")? else {
            return Ok(None);
        };
        let Some((_, query)) = path.split_once('?') else {
            return Ok(None);
        };
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        Ok(query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        }))
    }

    /// Removes the header a credential came from, if it came from a header.
    fn strip(req: &mut Headers, sources: &[Source], source: usize) -> Result<()> {
        if let Some(Source::Header { name, .. }) = sources.get(source) {
            req.remove(name.as_str())?;
        }
        Ok(())
    }

    fn check_jwt(
        &mut self,
        req: &mut Headers,
        token: Vec<u8>,
        source: usize,
        rule: Option<usize>,
        refresh: bool,
    ) -> Result<Flow> {
        let config = Rc::clone(&self.config);
        let Some(jwt_config) = &config.jwt else {
            return Ok(self.deny(Reason::Missing, rule));
        };
        let now = now_ms()?;
        let remote = match &jwt_config.remote_jwks {
            Some(remote) => remote.keys(&config.runtime)?,
            None => None,
        };
        let (version, remote_keys) = match remote {
            Some((version, keys)) => (version, Some(keys)),
            None => (0, None),
        };
        let inline = jwt_config.jwks.as_ref().map_or(&[][..], |j| &j.0[..]);
        let remote_set = remote_keys.as_deref().map_or(&[][..], |k| &k[..]);
        #[allow(clippy::cast_precision_loss, reason = "ms since 1970 fit in 53 bits")]
        let now_s = now as f64 / 1000.0;
        let digest: [u8; 32] = Sha256::digest(&token).into();
        let cached = config.runtime.verified.borrow_mut().get(&digest, version);
        let verified = match cached {
            Some(claims) => Ok(claims),
            None => jwt::verify(&token, jwt_config, &[inline, remote_set]).map(|claims| {
                let claims = Rc::new(claims);
                config
                    .runtime
                    .verified
                    .borrow_mut()
                    .insert(digest, version, Rc::clone(&claims));
                claims
            }),
        };
        let checked = verified
            .and_then(|claims| jwt::check_claims(&claims, jwt_config, now_s).map(|()| claims));
        let claims = match checked {
            Ok(claims) => claims,
            Err(Reason::UnknownKey) if jwt_config.remote_jwks.is_some() => {
                let Some(remote) = &jwt_config.remote_jwks else {
                    return Ok(self.deny(Reason::UnknownKey, rule));
                };
                if refresh && remote.claim(now, Why::Request)? {
                    match remote.call().send() {
                        Ok(_) => {
                            log::debug!("unknown key: fetching the key set");
                            self.pending = Some(Pending {
                                token,
                                source,
                                rule,
                            });
                            return Ok(Flow::Pause);
                        }
                        Err(e) => {
                            log::warn!("cannot fetch the key set: {e}");
                            remote.failed()?;
                            if let Some(m) = self.metrics() {
                                m.fetched(false);
                            }
                        }
                    }
                }
                let reason = if remote_keys.is_none() {
                    Reason::JwksUnavailable
                } else {
                    Reason::UnknownKey
                };
                return Ok(self.deny(reason, rule));
            }
            Err(reason) => return Ok(self.deny(reason, rule)),
        };
        if let Some(r) = self.rule(rule) {
            let have = claims.scopes();
            if !r.scopes.iter().all(|s| have.contains(&s.as_str())) {
                return Ok(self.deny(Reason::InsufficientScope, rule));
            }
        }
        for ch in &jwt_config.claims_to_headers {
            match claims.header_value(&ch.claim) {
                Some(value) => req.set(ch.header.as_str(), value)?,
                None if claims.0.contains_key(&ch.claim) => {
                    log::debug!("claim `{}` is not a valid header value", ch.claim);
                }
                None => {}
            }
        }
        if !jwt_config.forward_token {
            Self::strip(req, &jwt_config.from, source)?;
        }
        Ok(self.allow(Allowed::Jwt))
    }

    fn check_api_key(
        &self,
        req: &mut Headers,
        key: &[u8],
        source: usize,
        rule: Option<usize>,
    ) -> Result<Flow> {
        let Some(keys) = &self.config.api_keys else {
            return Ok(self.deny(Reason::Missing, rule));
        };
        let digest: [u8; 32] = Sha256::digest(key).into();
        // Every configured hash is compared, in constant time, whatever matches.
        let mut found = u32::MAX;
        for (i, k) in keys.keys.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            found.conditional_assign(&index, k.sha256.0.ct_eq(&digest));
        }
        let Some(matched) = keys.keys.get(found as usize) else {
            return Ok(self.deny(Reason::BadApiKey, rule));
        };
        if let Some(r) = self.rule(rule)
            && !r.scopes.iter().all(|s| matched.scopes.contains(s))
        {
            return Ok(self.deny(Reason::InsufficientScope, rule));
        }
        if let Some(h) = &keys.name_header {
            req.set(h.as_str(), &matched.name)?;
        }
        if !keys.forward_key {
            Self::strip(req, &keys.from, source)?;
        }
        Ok(self.allow(Allowed::ApiKey))
    }

    /// The rule for this request: `Err` if the path is unsafe to match.
    fn decide(
        &self,
        method: &str,
        path: &str,
    ) -> std::result::Result<(Action, Option<usize>), Reason> {
        if self.config.rules.is_empty() {
            return Ok((self.config.default_action, None));
        }
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if unsafe_path(path) {
            return Err(Reason::UnsafePath);
        }
        Ok(self
            .config
            .rules
            .iter()
            .position(|r| r.matches(method, path))
            .map_or((self.config.default_action, None), |i| {
                (self.config.rules[i].action, Some(i))
            }))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| char::from(c).to_digit(16);
        match b {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 2;
                }
                _ => out.push(b),
            },
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl HttpFilter for Auth {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            pending: None,
        }
    }

    fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
        let config = Rc::clone(&self.config);
        // Headers the filter sets are never taken from the client.
        if let Some(jwt) = &config.jwt {
            for ch in &jwt.claims_to_headers {
                req.remove(ch.header.as_str())?;
            }
        }
        if let Some(h) = config
            .api_keys
            .as_ref()
            .and_then(|k| k.name_header.as_ref())
        {
            req.remove(h.as_str())?;
        }
        let method = req.get_bytes(":method")?.unwrap_or_default();
        let path = req.get_bytes(":path")?.unwrap_or_default();
        let (Ok(method), Ok(path)) = (std::str::from_utf8(&method), std::str::from_utf8(&path))
        else {
            return Ok(self.deny(Reason::UnsafePath, None));
        };
        let (action, rule) = match self.decide(method, path) {
            Ok(decision) => decision,
            Err(reason) => return Ok(self.deny(reason, None)),
        };
        if action == Action::Deny {
            return Ok(self.deny(Reason::DeniedByRule, rule));
        }
        if let Some(jwt) = &config.jwt {
            match Self::credential(req, &jwt.from, jwt.max_token_bytes)? {
                Credential::Found(token, source) => {
                    return self.check_jwt(req, token, source, rule, true);
                }
                Credential::Unreadable => return Ok(self.deny(Reason::InvalidRequest, rule)),
                Credential::Absent => {}
            }
        }
        if let Some(keys) = &config.api_keys {
            match Self::credential(req, &keys.from, keys.max_key_bytes)? {
                Credential::Found(key, source) => {
                    return self.check_api_key(req, &key, source, rule);
                }
                Credential::Unreadable => return Ok(self.deny(Reason::InvalidRequest, rule)),
                Credential::Absent => {}
            }
        }
        if action == Action::Allow {
            return Ok(self.allow(Allowed::Anonymous));
        }
        Ok(self.deny(Reason::Missing, rule))
    }

    fn on_callout_response(
        &mut self,
        _token: CalloutToken,
        response: &CalloutResponse,
        req: &mut RequestHeaders,
    ) -> Result<Flow> {
        let Some(pending) = self.pending.take() else {
            return Ok(Flow::Continue);
        };
        let config = Rc::clone(&self.config);
        if let Some(remote) = config.jwt.as_ref().and_then(|j| j.remote_jwks.as_ref()) {
            let ok = remote.complete(response, now_ms()?, &config.runtime);
            log_fetch(remote, &ok);
            if let Some(m) = self.metrics() {
                m.fetched(ok.is_ok());
            }
        }
        self.check_jwt(req, pending.token, pending.source, pending.rule, false)
    }
}

fn log_fetch(remote: &config::RemoteJwks, result: &std::result::Result<usize, String>) {
    match result {
        Ok(n) => log::info!(
            "fetched the key set from {}{}: {n} usable key(s)",
            remote.cluster,
            remote.path
        ),
        Err(e) => log::warn!(
            "fetching the key set from {}{} failed: {e}",
            remote.cluster,
            remote.path
        ),
    }
}

/// Plugin-level work: metrics, and the remote key set's timed refresh with a
/// bounded retry.
#[derive(Debug)]
pub struct AuthPlugin {
    config: Rc<Config>,
    refresh: Option<Timer>,
    first: Option<Timer>,
    retry: Option<Timer>,
    inflight: Option<CalloutToken>,
    /// Retries made since the last timed fetch.
    retries: u32,
}

impl AuthPlugin {
    fn remote(&self) -> Option<&config::RemoteJwks> {
        self.config.jwt.as_ref()?.remote_jwks.as_ref()
    }

    fn fetch(&mut self, ctx: &mut PluginContext) -> Result<()> {
        let config = Rc::clone(&self.config);
        let Some(remote) = config.jwt.as_ref().and_then(|j| j.remote_jwks.as_ref()) else {
            return Ok(());
        };
        if self.inflight.is_some() || !remote.claim(now_ms()?, Why::Timer)? {
            return Ok(());
        }
        match remote.call().send() {
            Ok(token) => self.inflight = Some(token),
            Err(e) => {
                log::warn!("cannot fetch the key set: {e}");
                remote.failed()?;
                self.after_failure(ctx);
            }
        }
        Ok(())
    }

    fn after_failure(&mut self, ctx: &mut PluginContext) {
        if let Some(m) = self.config.runtime.metrics.get() {
            m.fetched(false);
        }
        let Some(remote) = self.remote() else { return };
        if self.retries >= remote.retries {
            log::warn!(
                "giving up on the key set after {} retries, until the next refresh",
                self.retries
            );
            return;
        }
        let delay = remote
            .retry_backoff_ms
            .saturating_mul(1 << self.retries.min(20));
        self.retries += 1;
        self.retry = Some(ctx.after(Duration::from_millis(delay)));
    }
}

impl Plugin for AuthPlugin {
    type Config = Config;

    fn start(config: &Rc<Config>, ctx: &mut PluginContext) -> Result<Self> {
        config.validate()?;
        match metrics::Metrics::define(config.stat_prefix.as_str()) {
            Ok(m) => {
                let _ = config.runtime.metrics.set(m);
            }
            Err(e) => log::warn!("metrics are off: {e}"),
        }
        let mut plugin = Self {
            config: Rc::clone(config),
            refresh: None,
            first: None,
            retry: None,
            inflight: None,
            retries: 0,
        };
        if let Some(remote) = plugin.remote() {
            let period = Duration::from_secs(remote.refresh_interval_seconds);
            let first = remote.fetch_at_start;
            plugin.refresh = Some(ctx.every(period));
            if first {
                plugin.first = Some(ctx.after(Duration::from_millis(1)));
            }
        }
        Ok(plugin)
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut PluginContext) -> Result<()> {
        if Some(timer) == self.refresh || Some(timer) == self.first {
            self.retries = 0;
            self.fetch(ctx)
        } else if Some(timer) == self.retry {
            self.retry = None;
            self.fetch(ctx)
        } else {
            Ok(())
        }
    }

    fn on_callout_response(
        &mut self,
        token: CalloutToken,
        response: &CalloutResponse,
        ctx: &mut PluginContext,
    ) -> Result<()> {
        if self.inflight != Some(token) {
            return Ok(());
        }
        self.inflight = None;
        let config = Rc::clone(&self.config);
        let Some(remote) = config.jwt.as_ref().and_then(|j| j.remote_jwks.as_ref()) else {
            return Ok(());
        };
        let result = remote.complete(response, now_ms()?, &config.runtime);
        log_fetch(remote, &result);
        if result.is_ok() {
            self.retries = 0;
            if let Some(m) = config.runtime.metrics.get() {
                m.fetched(true);
            }
        } else {
            self.after_failure(ctx);
        }
        Ok(())
    }
}
