//! Why a request was allowed or denied, and what the client is told.

use weir::LocalReply;

/// Why a request was denied. The label is the `reason` of the metrics and of
/// Envoy's response-code details (`auth_<label>`); the client only sees the
/// status and the RFC 6750 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No credential (401, no error code).
    Missing,
    /// The credential cannot be read: not UTF-8, empty, too long (401
    /// `invalid_request`).
    InvalidRequest,
    /// Not a compact JWS with a JSON header and payload (401 `invalid_token`).
    Malformed,
    /// `none`, an unknown or not accepted `alg`, or a key of another type than the
    /// algorithm's (401 `invalid_token`).
    BadAlgorithm,
    /// No key with the token's `kid` (after a refresh), or no single key for a
    /// token without `kid` (401 `invalid_token`).
    UnknownKey,
    /// The signature does not verify (401 `invalid_token`).
    BadSignature,
    /// `exp` has passed (401 `invalid_token`).
    Expired,
    /// `nbf` is still ahead (401 `invalid_token`).
    NotYetValid,
    /// `iss` is not accepted (401 `invalid_token`).
    BadIssuer,
    /// `aud` has no accepted audience (401 `invalid_token`).
    BadAudience,
    /// A required claim (or `exp`) is missing (401 `invalid_token`).
    MissingClaim,
    /// A registered claim has the wrong type, e.g. a string `exp` (401
    /// `invalid_token`).
    InvalidClaims,
    /// An API key that matches no configured hash (401 `invalid_token`).
    BadApiKey,
    /// The credential lacks a scope the rule requires (403 `insufficient_scope`).
    InsufficientScope,
    /// A `deny` rule matched (403).
    DeniedByRule,
    /// A path with dot segments, `//`, backslashes or encoded `.`, `/`, `\` while
    /// rules are configured (403): it could match another rule than the path the
    /// upstream serves.
    UnsafePath,
    /// No key set could be fetched (503).
    JwksUnavailable,
}

/// How an allowed request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Allowed {
    /// A valid JWT.
    Jwt,
    /// A valid API key.
    ApiKey,
    /// No credential, on an `allow` rule.
    Anonymous,
}

impl Reason {
    /// Every reason, for metrics.
    pub const ALL: [Reason; 17] = [
        Reason::Missing,
        Reason::InvalidRequest,
        Reason::Malformed,
        Reason::BadAlgorithm,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::BadIssuer,
        Reason::BadAudience,
        Reason::MissingClaim,
        Reason::InvalidClaims,
        Reason::BadApiKey,
        Reason::InsufficientScope,
        Reason::DeniedByRule,
        Reason::UnsafePath,
        Reason::JwksUnavailable,
    ];

    /// The metric label, e.g. `bad_signature`.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::InvalidRequest => "invalid_request",
            Reason::Malformed => "malformed",
            Reason::BadAlgorithm => "bad_algorithm",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::BadIssuer => "bad_issuer",
            Reason::BadAudience => "bad_audience",
            Reason::MissingClaim => "missing_claim",
            Reason::InvalidClaims => "invalid_claims",
            Reason::BadApiKey => "bad_api_key",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::DeniedByRule => "denied_by_rule",
            Reason::UnsafePath => "unsafe_path",
            Reason::JwksUnavailable => "jwks_unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Reason::InsufficientScope | Reason::DeniedByRule | Reason::UnsafePath => 403,
            Reason::JwksUnavailable => 503,
            _ => 401,
        }
    }

    /// The RFC 6750 error code, if any.
    pub fn error_code(self) -> Option<&'static str> {
        match self {
            Reason::Missing | Reason::DeniedByRule | Reason::UnsafePath => None,
            Reason::JwksUnavailable => None,
            Reason::InvalidRequest => Some("invalid_request"),
            Reason::InsufficientScope => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }

    /// The `error_description` the client sees. Deliberately coarse: it never
    /// tells which check of a token failed, except that it expired (which a
    /// client needs to know to refresh it).
    fn description(self) -> &'static str {
        match self {
            Reason::Missing => "Authentication is required.",
            Reason::InvalidRequest => "The credential could not be read.",
            Reason::Expired => "The access token expired.",
            Reason::BadApiKey => "The API key is not valid.",
            Reason::InsufficientScope => "The credential lacks a required scope.",
            Reason::DeniedByRule | Reason::UnsafePath => "Access is denied.",
            Reason::JwksUnavailable => "The keys to verify the credential are unavailable.",
            _ => "The access token is not valid.",
        }
    }
}

impl Allowed {
    /// Every way in, for metrics.
    pub const ALL: [Allowed; 3] = [Allowed::Jwt, Allowed::ApiKey, Allowed::Anonymous];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Allowed::Jwt => "jwt",
            Allowed::ApiKey => "api_key",
            Allowed::Anonymous => "anonymous",
        }
    }
}

/// What a denial answers: the status, `WWW-Authenticate` for 401 and
/// `insufficient_scope`, and a JSON body `{"error": ..., "error_description": ...}`.
///
/// `scheme` is `Bearer` (JWTs configured) or `ApiKey`; `scopes` are the scopes
/// the rule needs (for `insufficient_scope`).
pub(crate) fn reply(
    reason: Reason,
    scheme: &str,
    realm: Option<&str>,
    scopes: &[String],
) -> LocalReply {
    let status = reason.status();
    let mut reply = LocalReply::new(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .details(format!("auth_{}", reason.label()));
    if status == 401 || reason == Reason::InsufficientScope {
        let mut params = Vec::new();
        if let Some(realm) = realm {
            params.push(format!("realm=\"{realm}\""));
        }
        if let Some(code) = reason.error_code() {
            params.push(format!("error=\"{code}\""));
            params.push(format!("error_description=\"{}\"", reason.description()));
        }
        if reason == Reason::InsufficientScope && !scopes.is_empty() {
            params.push(format!("scope=\"{}\"", scopes.join(" ")));
        }
        let challenge = if params.is_empty() {
            scheme.to_owned()
        } else {
            format!("{scheme} {}", params.join(", "))
        };
        reply = reply.header("www-authenticate", challenge);
    }
    let error = match reason.error_code() {
        Some(code) => code,
        None => match status {
            401 => "unauthorized",
            403 => "forbidden",
            _ => "temporarily_unavailable",
        },
    };
    let body = serde_json::json!({
        "error": error,
        "error_description": reason.description(),
    });
    reply.body(body.to_string())
}
