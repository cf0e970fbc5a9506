//! The plugin configuration: serde types (with their JSON Schema in native
//! builds), value checks while parsing, and cross-field checks in
//! [`Config::validate`], which runs before the plugin starts.

use std::cell::{OnceCell, RefCell};
use std::fmt;

use serde::{Deserialize, Deserializer};

use weir::config::is_token;

use crate::jwk::{self, Key};
use crate::metrics::Metrics;
use crate::remote::Cached;

/// The `auth` filter's configuration.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars", title = "auth configuration")
)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// JSON Web Token validation. At least one of `jwt` and `api_keys` is needed
    /// when any request can be `require`d.
    #[serde(default)]
    pub jwt: Option<Jwt>,
    /// API keys, stored as SHA-256 hashes.
    #[serde(default)]
    pub api_keys: Option<ApiKeys>,
    /// Per path prefix (and method) rules; the first that matches decides.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// What happens to a request no rule matches (default `require`).
    #[serde(default)]
    pub default_action: Action,
    /// The `realm` of `WWW-Authenticate` challenges.
    #[serde(default)]
    pub realm: Option<Realm>,
    /// The prefix of the filter's metric names (default `auth`).
    #[serde(default = "default_stat_prefix")]
    pub stat_prefix: StatName,
    /// Per-VM state: metric handles and the key set last read from shared data.
    #[serde(skip)]
    pub(crate) runtime: Runtime,
}

/// Per-VM state kept next to the configuration.
#[derive(Default)]
pub(crate) struct Runtime {
    pub(crate) metrics: OnceCell<Metrics>,
    pub(crate) remote: RefCell<Option<Cached>>,
    pub(crate) verified: RefCell<crate::jwt::VerifiedCache>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

fn default_stat_prefix() -> StatName {
    StatName("auth".to_owned())
}

/// JWT validation settings.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// Accepted `iss` values; empty accepts any issuer.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Accepted audiences: the token's `aud` (a string or an array) must contain
    /// one of them. Empty skips the check.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `alg` values (default: all of HS256, HS384, HS512, RS256, RS384,
    /// RS512, ES256, ES384, EdDSA). `none` is never accepted, and each key only
    /// verifies the algorithms of its own type.
    #[serde(default = "Algorithm::all")]
    pub algorithms: Vec<Algorithm>,
    /// Inline keys, as a JSON Web Key Set.
    #[serde(default)]
    pub jwks: Option<Jwks>,
    /// Keys fetched from a cluster, cached in shared data and refreshed.
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwks>,
    /// Tolerance for `exp` and `nbf`, in seconds (default 60, at most 3600).
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u32,
    /// Whether a token without `exp` is refused (default true).
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Claims that must be present (and not null).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claims copied into request headers for the upstream. Those headers are
    /// always removed from the client's request first.
    #[serde(default)]
    pub claims_to_headers: Vec<ClaimHeader>,
    /// Where the token is read from, tried in order (default the
    /// `authorization` header with the `Bearer ` prefix).
    #[serde(default = "default_jwt_sources")]
    pub from: Vec<Source>,
    /// Longest token accepted, in bytes (default 8192, 64 to 65536).
    #[serde(default = "default_max_token")]
    pub max_token_bytes: usize,
    /// Whether the token header goes upstream after validation (default true).
    #[serde(default = "yes")]
    pub forward_token: bool,
}

fn yes() -> bool {
    true
}

fn default_skew() -> u32 {
    60
}

fn default_max_token() -> usize {
    8192
}

fn default_jwt_sources() -> Vec<Source> {
    vec![Source::Header {
        name: HeaderName("authorization".to_owned()),
        prefix: "Bearer ".to_owned(),
    }]
}

/// A JWKS served by an Envoy cluster.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwks {
    /// The Envoy cluster that serves the key set.
    pub cluster: String,
    /// The path of the key set, e.g. `/.well-known/jwks.json`.
    pub path: String,
    /// The `:authority` of the request (default the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// Timeout of one fetch in milliseconds (default 5000, 1 to 60000).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// How often the key set is refreshed, in seconds (default 300, at least 1).
    #[serde(default = "default_refresh")]
    pub refresh_interval_seconds: u64,
    /// The least time between two fetches caused by requests (a token with an
    /// unknown `kid`), in seconds (default 30; 0 turns the limit off).
    #[serde(default = "default_min_refresh")]
    pub min_refresh_interval_seconds: u64,
    /// Retries after a failed timed fetch, with doubling backoff (default 3, at
    /// most 10).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The first retry's delay in milliseconds (default 1000, 1 to 600000).
    #[serde(default = "default_backoff")]
    pub retry_backoff_ms: u64,
    /// Whether the plugin fetches the key set as soon as it starts (default
    /// true); otherwise the first request that needs it does.
    #[serde(default = "yes")]
    pub fetch_at_start: bool,
}

fn default_timeout() -> u64 {
    5000
}
fn default_refresh() -> u64 {
    300
}
fn default_min_refresh() -> u64 {
    30
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> u64 {
    1000
}

impl RemoteJwks {
    /// The `:authority` of the fetch.
    pub fn authority(&self) -> &str {
        self.authority.as_deref().unwrap_or(&self.cluster)
    }
}

/// One claim copied into a request header.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields)]
pub struct ClaimHeader {
    /// The top-level claim, e.g. `sub`. Strings are copied as they are, other
    /// values as compact JSON.
    pub claim: String,
    /// The request header it is copied into.
    pub header: HeaderName,
}

/// API keys, checked as SHA-256 hashes in constant time.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields)]
pub struct ApiKeys {
    /// Where the key is read from, tried in order (default the `x-api-key`
    /// header).
    #[serde(default = "default_key_sources")]
    pub from: Vec<Source>,
    /// The accepted keys.
    pub keys: Vec<ApiKey>,
    /// A request header set to the matching key's `name` (removed from the
    /// client's request first).
    #[serde(default)]
    pub name_header: Option<HeaderName>,
    /// Whether the key goes upstream after validation (default false: the
    /// header carrying it is removed).
    #[serde(default)]
    pub forward_key: bool,
    /// Longest key accepted, in bytes (default 1024, 16 to 8192).
    #[serde(default = "default_max_key")]
    pub max_key_bytes: usize,
}

fn default_key_sources() -> Vec<Source> {
    vec![Source::Header {
        name: HeaderName("x-api-key".to_owned()),
        prefix: String::new(),
    }]
}

fn default_max_key() -> usize {
    1024
}

/// One accepted API key.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// A name for logs and the `name_header`.
    pub name: String,
    /// The SHA-256 of the key, as 64 hex digits.
    pub sha256: Sha256Hex,
    /// Scopes the key grants, for rules with `scopes`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A rule: requests whose path starts with `prefix` (and whose method is one of
/// `methods`, if given) get `action`.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A path prefix starting with `/` (the query string is not part of the path).
    pub prefix: String,
    /// Methods the rule applies to (default all), e.g. `["GET", "HEAD"]`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// What to do.
    pub action: Action,
    /// With `require`: scopes the credential must have (all of them), from the
    /// token's `scope` (space-separated) or `scp` claim, or the API key's `scopes`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// What a rule does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A valid credential is needed: 401 without one.
    #[default]
    Require,
    /// Anonymous requests pass; a credential that is present must be valid.
    Allow,
    /// Always 403.
    Deny,
}

/// Where a credential is read from: exactly one of `header` (with an optional
/// `prefix`, matched case-insensitively), `cookie` or `query`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SourceSpec")]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
pub enum Source {
    /// A request header; a value without the prefix is not a credential of this
    /// source (for example `Basic ...` when the prefix is `Bearer `).
    Header {
        /// The header.
        name: HeaderName,
        /// The prefix before the credential, e.g. `Bearer `.
        prefix: String,
    },
    /// A cookie of the `cookie` header.
    Cookie(String),
    /// A query parameter (percent-decoded).
    Query(String),
}

/// The JSON form of a [`Source`].
#[derive(Debug, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars", rename = "Source")
)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A request header, e.g. `authorization`.
    #[serde(default)]
    header: Option<String>,
    /// With `header`: the prefix before the credential, e.g. `Bearer `.
    #[serde(default)]
    prefix: Option<String>,
    /// A cookie name.
    #[serde(default)]
    cookie: Option<String>,
    /// A query parameter name.
    #[serde(default)]
    query: Option<String>,
}

impl TryFrom<SourceSpec> for Source {
    type Error = String;

    fn try_from(spec: SourceSpec) -> Result<Self, String> {
        let given = [&spec.header, &spec.cookie, &spec.query]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given != 1 {
            return Err("give exactly one of `header`, `cookie` and `query`".to_owned());
        }
        if spec.prefix.is_some() && spec.header.is_none() {
            return Err("`prefix` only applies to `header`".to_owned());
        }
        if let Some(name) = spec.header {
            let prefix = spec.prefix.unwrap_or_default();
            if prefix.bytes().any(|b| b.is_ascii_control()) {
                return Err(format!("invalid prefix {prefix:?}: control characters"));
            }
            return Ok(Source::Header {
                name: HeaderName::parse(&name)?,
                prefix,
            });
        }
        if let Some(cookie) = spec.cookie {
            if cookie.is_empty() || !cookie.bytes().all(is_token) {
                return Err(format!("invalid cookie name {cookie:?}"));
            }
            return Ok(Source::Cookie(cookie));
        }
        let query = spec.query.unwrap_or_default();
        if query.is_empty()
            || query
                .bytes()
                .any(|b| b"&=#?".contains(&b) || !b.is_ascii_graphic())
        {
            return Err(format!("invalid query parameter name {query:?}"));
        }
        Ok(Source::Query(query))
    }
}

/// A lower-cased HTTP header name (no pseudo-headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderName(String);

impl HeaderName {
    /// Validates and lower-cases `name`.
    ///
    /// # Errors
    /// A message naming the problem.
    pub fn parse(name: &str) -> Result<Self, String> {
        // weir's rules, without the pseudo-headers it also takes.
        if name.starts_with(':') {
            return Err(format!(
                "invalid header name {name:?}: character ':' is not allowed"
            ));
        }
        weir::config::HeaderName::parse(name).map(|n| Self(n.as_str().to_owned()))
    }

    /// The lower-cased name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The realm of challenges: printable ASCII without `"` and `\`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realm(String);

impl Realm {
    /// The realm.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Realm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            Ok(Self(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "invalid realm {s:?}: printable ASCII without '\"' and '\\' only"
            )))
        }
    }
}

/// A metric name part: ASCII letters, digits and `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatName(String);

impl StatName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for StatName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            Ok(Self(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "invalid stat prefix {s:?}: ASCII letters, digits and '_' only"
            )))
        }
    }
}

/// A SHA-256 digest given as 64 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Sha256Hex(pub(crate) [u8; 32]);

impl fmt::Debug for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sha256Hex(..)")
    }
}

impl Sha256Hex {
    /// Parses 64 hex digits (either case).
    ///
    /// # Errors
    /// A message naming the problem.
    pub fn parse(hex: &str) -> Result<Self, String> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(format!(
                "a SHA-256 is 64 hex digits, this has {} characters",
                bytes.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]);
            let lo = hex_digit(pair[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
                _ => return Err("a SHA-256 is 64 hex digits: found a non-hex character".into()),
            }
        }
        Ok(Self(out))
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A JWS algorithm this filter verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms, reason = "the JWA names")]
pub enum Algorithm {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// Every algorithm, in the order of the JWA registry.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    fn all() -> Vec<Algorithm> {
        Self::ALL.to_vec()
    }

    /// The JWA name, e.g. `RS256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The algorithm with this exact (case-sensitive) JWA name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The cargo feature that builds this algorithm in.
    pub fn feature(self) -> &'static str {
        match self {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "hmac",
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => "rsa",
            Algorithm::ES256 | Algorithm::ES384 => "ecdsa",
            Algorithm::EdDSA => "eddsa",
        }
    }

    /// Whether this module was built with the algorithm.
    pub fn built_in(self) -> bool {
        match self.feature() {
            "hmac" => cfg!(feature = "hmac"),
            "rsa" => cfg!(feature = "rsa"),
            "ecdsa" => cfg!(feature = "ecdsa"),
            _ => cfg!(feature = "eddsa"),
        }
    }

    /// Parses a configured algorithm name.
    ///
    /// # Errors
    /// For `none`, unknown names and algorithms not built in.
    pub fn parse_configured(name: &str) -> Result<Self, String> {
        if name.eq_ignore_ascii_case("none") {
            return Err("the `none` algorithm is never accepted".to_owned());
        }
        let Some(alg) = Self::from_name(name) else {
            let known: Vec<&str> = Self::ALL.iter().map(|a| a.name()).collect();
            return Err(format!(
                "unknown algorithm {name:?}: expected one of {}",
                known.join(", ")
            ));
        };
        if !alg.built_in() {
            return Err(format!(
                "algorithm {name} is not built into this module (cargo feature `{}`)",
                alg.feature()
            ));
        }
        Ok(alg)
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_configured(&s).map_err(serde::de::Error::custom)
    }
}

/// A JSON Web Key Set given inline, parsed when the configuration is read.
#[derive(Debug)]
pub struct Jwks(pub(crate) Vec<Key>);

impl<'de> Deserialize<'de> for Jwks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        jwk::parse_set(&value, jwk::Strictness::Config)
            .map(Jwks)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod schema {
    use std::borrow::Cow;

    use weir::schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

    impl JsonSchema for super::HeaderName {
        fn schema_name() -> Cow<'static, str> {
            "HeaderName".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "description": "An HTTP header name (token characters). Lower-cased.",
                "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
            })
        }
    }

    impl JsonSchema for super::Realm {
        fn schema_name() -> Cow<'static, str> {
            "Realm".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "description": "Printable ASCII without '\"' and '\\'.",
                "pattern": "^[ !#-\\[\\]-~]*$"
            })
        }
    }

    impl JsonSchema for super::StatName {
        fn schema_name() -> Cow<'static, str> {
            "StatName".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "pattern": "^[A-Za-z0-9_]+$"
            })
        }
    }

    impl JsonSchema for super::Sha256Hex {
        fn schema_name() -> Cow<'static, str> {
            "Sha256Hex".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "description": "A SHA-256 digest as 64 hex digits.",
                "pattern": "^[0-9A-Fa-f]{64}$"
            })
        }
    }

    impl JsonSchema for super::Algorithm {
        fn schema_name() -> Cow<'static, str> {
            "Algorithm".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "enum": ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"]
            })
        }
    }

    impl JsonSchema for super::Jwks {
        fn schema_name() -> Cow<'static, str> {
            "Jwks".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "object",
                "description": "A JSON Web Key Set (RFC 7517): public RSA, EC (P-256, P-384) and OKP (Ed25519) keys, and `oct` secrets of at least 32 bytes for HMAC.",
                "required": ["keys"],
                "properties": {
                    "keys": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["kty"],
                            "properties": {
                                "kty": {"enum": ["oct", "RSA", "EC", "OKP"]},
                                "kid": {"type": "string"},
                                "alg": {"type": "string"},
                                "use": {"const": "sig"}
                            }
                        }
                    }
                }
            })
        }
    }
}

/// A configuration error: the field's path and what is wrong.
fn invalid(path: impl Into<String>, message: impl Into<String>) -> weir::Error {
    weir::Error::from(weir::ErrorKind::Config {
        path: path.into(),
        message: message.into(),
    })
}

impl Config {
    /// Checks what the field types alone cannot: ranges, fields that depend on
    /// each other, and that every `require` has something to check.
    ///
    /// # Errors
    /// [`weir::ErrorKind::Config`] naming the field.
    pub fn validate(&self) -> weir::Result<()> {
        let requires = self.default_action == Action::Require
            || self.rules.iter().any(|r| r.action == Action::Require);
        if requires && self.jwt.is_none() && self.api_keys.is_none() {
            return Err(invalid(
                ".",
                "requests are `require`d (the default action) but neither `jwt` nor `api_keys` \
                 is configured",
            ));
        }
        if let Some(jwt) = &self.jwt {
            jwt.validate()?;
        }
        if let Some(keys) = &self.api_keys {
            keys.validate()?;
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(i)?;
        }
        Ok(())
    }
}

impl Jwt {
    fn validate(&self) -> weir::Result<()> {
        if self.jwks.is_none() && self.remote_jwks.is_none() {
            return Err(invalid("jwt", "give `jwks`, `remote_jwks` or both"));
        }
        if self.algorithms.is_empty() {
            return Err(invalid("jwt.algorithms", "must not be empty"));
        }
        if self.clock_skew_seconds > 3600 {
            return Err(invalid("jwt.clock_skew_seconds", "at most 3600"));
        }
        if !(64..=65536).contains(&self.max_token_bytes) {
            return Err(invalid("jwt.max_token_bytes", "must be 64 to 65536"));
        }
        check_sources("jwt.from", &self.from)?;
        for (i, name) in self.required_claims.iter().enumerate() {
            if name.is_empty() {
                return Err(invalid(format!("jwt.required_claims[{i}]"), "empty"));
            }
        }
        for (i, c) in self.claims_to_headers.iter().enumerate() {
            if c.claim.is_empty() {
                return Err(invalid(
                    format!("jwt.claims_to_headers[{i}].claim"),
                    "empty",
                ));
            }
        }
        if let Some(Jwks(keys)) = &self.jwks {
            if keys.is_empty() && self.remote_jwks.is_none() {
                return Err(invalid("jwt.jwks.keys", "no keys"));
            }
            let usable = keys
                .iter()
                .any(|k| self.algorithms.iter().any(|&a| k.fits(a)));
            if !keys.is_empty() && !usable && self.remote_jwks.is_none() {
                return Err(invalid(
                    "jwt.jwks",
                    "no key can verify any of the algorithms in `jwt.algorithms`",
                ));
            }
        }
        if let Some(remote) = &self.remote_jwks {
            remote.validate()?;
        }
        Ok(())
    }
}

impl RemoteJwks {
    fn validate(&self) -> weir::Result<()> {
        let at = |field: &str| format!("jwt.remote_jwks.{field}");
        if self.cluster.is_empty() || self.cluster.contains("://") {
            return Err(invalid(
                at("cluster"),
                "an Envoy cluster name is needed (not a URL)",
            ));
        }
        if !self.path.starts_with('/') || self.path.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(invalid(
                at("path"),
                "must start with '/' and be printable ASCII",
            ));
        }
        if self.authority().is_empty() || self.authority().bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(invalid(at("authority"), "must be printable ASCII"));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err(invalid(at("timeout_ms"), "must be 1 to 60000"));
        }
        if !(1..=86_400 * 7).contains(&self.refresh_interval_seconds) {
            return Err(invalid(
                at("refresh_interval_seconds"),
                "must be 1 to 604800",
            ));
        }
        if self.min_refresh_interval_seconds > self.refresh_interval_seconds {
            return Err(invalid(
                at("min_refresh_interval_seconds"),
                "must not exceed `refresh_interval_seconds`",
            ));
        }
        if self.retries > 10 {
            return Err(invalid(at("retries"), "at most 10"));
        }
        if !(1..=600_000).contains(&self.retry_backoff_ms) {
            return Err(invalid(at("retry_backoff_ms"), "must be 1 to 600000"));
        }
        Ok(())
    }
}

impl ApiKeys {
    fn validate(&self) -> weir::Result<()> {
        check_sources("api_keys.from", &self.from)?;
        if self.keys.is_empty() {
            return Err(invalid("api_keys.keys", "no keys"));
        }
        if !(16..=8192).contains(&self.max_key_bytes) {
            return Err(invalid("api_keys.max_key_bytes", "must be 16 to 8192"));
        }
        for (i, key) in self.keys.iter().enumerate() {
            if key.name.is_empty() || key.name.bytes().any(|b| !(b' '..=b'~').contains(&b)) {
                return Err(invalid(
                    format!("api_keys.keys[{i}].name"),
                    "must be non-empty printable ASCII",
                ));
            }
            if let Some(j) = self.keys[..i].iter().position(|k| k.name == key.name) {
                return Err(invalid(
                    format!("api_keys.keys[{i}].name"),
                    format!("the same name as keys[{j}]"),
                ));
            }
            if let Some(j) = self.keys[..i].iter().position(|k| k.sha256 == key.sha256) {
                return Err(invalid(
                    format!("api_keys.keys[{i}].sha256"),
                    format!("the same key as keys[{j}]"),
                ));
            }
        }
        Ok(())
    }
}

fn check_sources(path: &str, sources: &[Source]) -> weir::Result<()> {
    if sources.is_empty() {
        return Err(invalid(path, "must not be empty"));
    }
    for (i, s) in sources.iter().enumerate() {
        if sources[..i].contains(s) {
            return Err(invalid(format!("{path}[{i}]"), "listed twice"));
        }
    }
    Ok(())
}

impl Rule {
    fn validate(&self, i: usize) -> weir::Result<()> {
        let at = |field: &str| format!("rules[{i}].{field}");
        if self.prefix.is_empty() {
            return Err(invalid(
                at("prefix"),
                "empty: use \"/\" to match every path",
            ));
        }
        if !self.prefix.starts_with('/') {
            return Err(invalid(at("prefix"), "must start with '/'"));
        }
        if self.prefix.contains(['?', '#']) || self.prefix.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(invalid(
                at("prefix"),
                "a path prefix: printable ASCII without '?' and '#'",
            ));
        }
        for (j, m) in self.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(invalid(
                    format!("rules[{i}].methods[{j}]"),
                    format!("invalid method {m:?}: upper-case letters only"),
                ));
            }
        }
        if !self.scopes.is_empty() && self.action != Action::Require {
            return Err(invalid(at("scopes"), "only a `require` rule has scopes"));
        }
        if self.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err(invalid(
                at("scopes"),
                "scopes are non-empty, without spaces",
            ));
        }
        Ok(())
    }

    /// Whether the rule applies to `method` on `path` (without the query).
    pub fn matches(&self, method: &str, path: &str) -> bool {
        path.starts_with(self.prefix.as_str())
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_lower_cased_tokens_without_pseudo_headers() {
        assert_eq!(
            HeaderName::parse("X-User").map(|n| n.as_str().to_owned()),
            Ok("x-user".to_owned())
        );
        for (name, message) in [
            ("", "invalid header name \"\": empty"),
            (
                ":path",
                "invalid header name \":path\": character ':' is not allowed",
            ),
            (
                ":",
                "invalid header name \":\": character ':' is not allowed",
            ),
            (
                "a b",
                "invalid header name \"a b\": character ' ' is not allowed",
            ),
        ] {
            assert_eq!(HeaderName::parse(name), Err(message.to_owned()), "{name:?}");
        }
    }

    /// `config.schema.json` (published by `weir push`) is generated from `Config`;
    /// `WEIR_UPDATE_SCHEMA=1 cargo test -p auth-core --lib` rewrites it.
    #[test]
    fn the_published_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.schema.json");
        let generated = weir::config_schema::<Config>();
        if std::env::var_os("WEIR_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).expect("write the schema");
        }
        let published = std::fs::read_to_string(&path).expect("config.schema.json");
        assert_eq!(
            published, generated,
            "config.schema.json is stale: run WEIR_UPDATE_SCHEMA=1 cargo test -p auth-core --lib"
        );
        let schema: serde_json::Value = serde_json::from_str(&generated).expect("JSON");
        assert_eq!(schema["additionalProperties"], false);
        assert!(schema["properties"].get("runtime").is_none());
        let source = &schema["$defs"]["Source"];
        assert_eq!(source["additionalProperties"], false, "{source}");
        assert!(source["properties"].get("cookie").is_some());
        let action = &schema["$defs"]["Action"];
        let variants = action["oneOf"].as_array().or(action["enum"].as_array());
        assert_eq!(variants.map(Vec::len), Some(3), "{action}");
    }

    #[test]
    fn algorithms_parse_exactly() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::parse_configured(alg.name()), Ok(alg));
        }
        assert!(Algorithm::parse_configured("rs256").is_err());
        assert!(
            Algorithm::parse_configured("NONE")
                .expect_err("none")
                .contains("never")
        );
    }

    #[test]
    fn sha256_hex_parses_both_cases() {
        let lower = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let a = Sha256Hex::parse(lower).expect("lower");
        let b = Sha256Hex::parse(&lower.to_uppercase()).expect("upper");
        assert_eq!(a, b);
        assert_eq!(a.0[0], 0x9f);
        assert!(Sha256Hex::parse(&lower[1..]).is_err());
        assert!(Sha256Hex::parse(&lower.replace('9', "g")).is_err());
    }
}
