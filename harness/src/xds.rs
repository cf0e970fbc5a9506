//! What a bootstrap tells filters about the proxy and its configuration: the
//! node (`xds.node`: `id`, `cluster`, `metadata`, `locality`) and the
//! `metadata` of the listener, the virtual host, the route and the route's
//! cluster (`xds.listener_metadata`, `xds.virtual_host_metadata`,
//! `xds.route_metadata`, `xds.cluster_metadata`), and those of the cluster's
//! one endpoint and of its locality (`xds.upstream_host_metadata`,
//! `xds.upstream_host_locality_metadata`), and that locality itself
//! (`upstream.locality`).
//!
//! Metadata are `google.protobuf.Struct`s: strings, numbers (doubles), bools,
//! nulls, lists and nested structs. A test gives them as JSON
//! ([`Node::metadata`], [`Metadata::filter`]); a bootstrap
//! ([`EnvoyConfig::parse`](crate::EnvoyConfig::parse),
//! [`NetworkConfig::parse`](crate::NetworkConfig::parse)) as YAML, which
//! Envoy 1.40 reads with yaml-cpp's rules: an integer in the 32-bit range is a
//! number, a larger one the string of its decimal digits, any other number
//! (`2.5`, `1e3`) the string of its text; unquoted `yes`, `no`, `on`, `off`,
//! `y`, `n` are bools and unquoted `010` is the octal number 8. Where
//! the YAML parser the harness uses cannot tell what Envoy would make of a
//! value (the text of a non-integer number, whether `yes` was quoted), the
//! loader refuses it and says how to write it unambiguously; an integer written
//! as `0o17` or `0b101` (a string for Envoy) is read as a number.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// One value of a `google.protobuf.Struct`.
#[derive(Clone, Debug)]
pub(crate) enum StructValue {
    Null,
    /// A `number_value` (a double).
    Number(f64),
    String(String),
    Bool(bool),
    Struct(Struct),
    List(Vec<StructValue>),
}

/// Values are equal when they serialize the same (numbers by their bits).
impl PartialEq for StructValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Null, Self::Null) => true,
            (Self::Number(a), Self::Number(b)) => a.to_bits() == b.to_bits(),
            (Self::String(a), Self::String(b)) => a == b,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Struct(a), Self::Struct(b)) => a == b,
            (Self::List(a), Self::List(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for StructValue {}

/// A `google.protobuf.Struct`: its fields by name (listed in name order;
/// Envoy lists them in its hash map's order, which changes from process to
/// process).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Struct {
    pub(crate) fields: BTreeMap<String, StructValue>,
}

fn invalid(message: String) -> Error {
    Error::InvalidMetadata(message)
}

impl Struct {
    /// A JSON object as a `Struct`, for tests of its encodings.
    #[cfg(test)]
    pub(crate) fn from_json_for_tests(value: serde_json::Value) -> Self {
        Self::from_json(value, "test").expect("a JSON object a Struct can hold")
    }

    /// A JSON object as a `Struct`; `at` names it in errors.
    fn from_json(value: serde_json::Value, at: &str) -> Result<Self> {
        match json_value(value, at)? {
            StructValue::Struct(s) => Ok(s),
            _ => Err(invalid(format!(
                "{at} must be a JSON object (a protobuf Struct)"
            ))),
        }
    }
}

/// A JSON value as a `Struct` value: numbers become doubles, so an integer a
/// double cannot hold exactly is refused.
fn json_value(value: serde_json::Value, at: &str) -> Result<StructValue> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => StructValue::Null,
        J::Bool(b) => StructValue::Bool(b),
        J::String(s) => StructValue::String(s),
        J::Number(n) => {
            let exact = |f: f64, exact: i128| f as i128 == exact && f.is_finite();
            let double = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, Some(f)) if exact(f, i128::from(i)) => f,
                (_, Some(u), Some(f)) if exact(f, i128::from(u)) => f,
                (None, None, Some(f)) => f,
                _ => {
                    return Err(invalid(format!(
                        "{at}: {n} cannot be held exactly by a protobuf Struct, whose \
                         numbers are doubles; give it as a string"
                    )));
                }
            };
            StructValue::Number(double)
        }
        J::Array(items) => StructValue::List(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| json_value(v, &format!("{at}[{i}]")))
                .collect::<Result<_>>()?,
        ),
        J::Object(map) => {
            let mut fields = BTreeMap::new();
            for (k, v) in map {
                let value = json_value(v, &format!("{at}.{k}"))?;
                fields.insert(k, value);
            }
            StructValue::Struct(Struct { fields })
        }
    })
}

/// `envoy.config.core.v3.Locality`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Locality {
    pub(crate) region: String,
    pub(crate) zone: String,
    pub(crate) sub_zone: String,
}

impl Locality {
    /// A locality of these three fields, as the builders take them.
    pub(crate) fn new(
        region: impl Into<String>,
        zone: impl Into<String>,
        sub_zone: impl Into<String>,
    ) -> Self {
        Self {
            region: region.into(),
            zone: zone.into(),
            sub_zone: sub_zone.into(),
        }
    }
}

/// The bootstrap's `node`, as filters read it in `xds.node` (Envoy adds its
/// own `user_agent_name` and `user_agent_build_version`).
///
/// ```
/// use serde_json::json;
/// use weir_harness::Node;
///
/// # fn main() -> Result<(), weir_harness::Error> {
/// let node = Node::default()
///     .id("sidecar~10.0.0.1~web-0.default~default.svc.cluster.local")
///     .cluster("web")
///     .metadata(json!({"NAMESPACE": "default", "LABELS": {"app": "web"}}))?
///     .locality("us-east1", "us-east1-b", "");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Node {
    pub(crate) id: String,
    pub(crate) cluster: String,
    /// `None`: no `metadata` field (an empty `Struct` given is still set).
    pub(crate) metadata: Option<Struct>,
    /// `None`: no `locality` field.
    pub(crate) locality: Option<Locality>,
}

impl Node {
    /// `id` (`xds.node.id`; default empty).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// `cluster` (`xds.node.cluster`; default empty).
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = cluster.into();
        self
    }

    /// `metadata` (`xds.node.metadata`): a JSON object, as a
    /// `google.protobuf.Struct` holds it (numbers are doubles).
    ///
    /// # Errors
    /// [`Error::InvalidMetadata`] for a value that is not an object, or an
    /// integer a double cannot hold exactly.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Result<Self> {
        self.metadata = Some(Struct::from_json(metadata, "node.metadata")?);
        Ok(self)
    }

    /// `locality` (`xds.node.locality`): its `region`, `zone` and
    /// `sub_zone`.
    pub fn locality(
        mut self,
        region: impl Into<String>,
        zone: impl Into<String>,
        sub_zone: impl Into<String>,
    ) -> Self {
        self.locality = Some(Locality::new(region, zone, sub_zone));
        self
    }
}

/// An `envoy.config.core.v3.Metadata`: its `filter_metadata`, a `Struct` per
/// filter name (`typed_filter_metadata` is not emulated: it reads as an
/// empty map).
///
/// ```
/// use serde_json::json;
/// use weir_harness::{ConnectionManager, Metadata};
///
/// # fn main() -> Result<(), weir_harness::Error> {
/// let route = Metadata::new().filter("istio", json!({"config": "/apis/v1/ns/default"}))?;
/// let hcm = ConnectionManager::default().route_metadata(route);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Metadata {
    pub(crate) filter_metadata: BTreeMap<String, Struct>,
}

impl Metadata {
    /// No metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `filter_metadata[filter]` to `value`, a JSON object (a
    /// `google.protobuf.Struct`).
    ///
    /// # Errors
    /// [`Error::InvalidMetadata`] for a value that is not an object, or an
    /// integer a double cannot hold exactly.
    pub fn filter(mut self, filter: impl Into<String>, value: serde_json::Value) -> Result<Self> {
        let filter = filter.into();
        let value = Struct::from_json(value, &format!("filter_metadata.{filter}"))?;
        self.filter_metadata.insert(filter, value);
        Ok(self)
    }
}

/// What the bootstrap says about the node and the configuration a chain's
/// filters run in; shared by the chain's VMs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bootstrap {
    pub(crate) node: Node,
    pub(crate) listener: Metadata,
    pub(crate) virtual_host: Metadata,
    pub(crate) route: Metadata,
    pub(crate) cluster: Metadata,
    /// The `metadata` of the cluster's one endpoint (`lb_endpoints[0]`) and
    /// of its locality (`endpoints[0]`).
    pub(crate) host: HostMetadata,
}

/// The `metadata` of an upstream host (an `LbEndpoint`) and of its locality
/// (its `LocalityLbEndpoints`) as Envoy holds them: each `None` for a null
/// message (see [`host_metadata_from_yaml`] for when Envoy has one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HostMetadata {
    pub(crate) endpoint: Option<Metadata>,
    pub(crate) locality: Option<Metadata>,
    /// The endpoint's locality (`upstream.locality`): empty when the
    /// bootstrap gives none.
    pub(crate) place: Locality,
}

// Reading them from a bootstrap (YAML).

type Yaml = serde_yaml_ng::Value;

fn bad(message: String) -> Error {
    Error::EnvoyConfig(message)
}

/// yaml-cpp's `convert<bool>`: `y`, `yes`, `true`, `on` and their negations,
/// all lower case, all upper case or capitalized.
fn yaml_cpp_bool(text: &str) -> Option<bool> {
    let mut chars = text.chars();
    let first = chars.next()?;
    let rest: String = chars.collect();
    let flexible = text == text.to_lowercase()
        || text == text.to_uppercase()
        || (first.is_uppercase() && rest == rest.to_lowercase());
    if !flexible {
        return None;
    }
    match text.to_lowercase().as_str() {
        "y" | "yes" | "true" | "on" => Some(true),
        "n" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Whether yaml-cpp's `convert<int64_t>` reads `text` as an integer: a C++
/// stream extraction with the base taken from the prefix (`0x` hex, `0`
/// octal), nothing but whitespace after it.
fn yaml_cpp_int(text: &str) -> bool {
    let negative = text.starts_with('-');
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    // After `0x` a hex digit must follow; after a leading `0` the zero is
    // already a digit.
    let (digits, radix, zero) = if let Some(hex) = unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        (hex, 16, false)
    } else if let Some(octal) = unsigned.strip_prefix('0') {
        (octal, 8, true)
    } else {
        (unsigned, 10, false)
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    let (number, tail) = digits.split_at(end);
    let limit = if negative {
        i64::MIN.unsigned_abs()
    } else {
        i64::MAX.unsigned_abs()
    };
    let fits = number.is_empty() || u64::from_str_radix(number, radix).is_ok_and(|n| n <= limit);
    (zero || !number.is_empty())
        && fits
        && tail
            .trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c'])
            .is_empty()
}

/// `text`, a YAML string, unless it is one Envoy may read as something else:
/// an unquoted scalar that YAML 1.2 reads as this string but yaml-cpp as a
/// bool or a number. Quoted or not, it is this string to the harness's
/// parser, and the two differ in Envoy.
fn unambiguous<'a>(text: &'a str, at: &str) -> Result<&'a str> {
    let plain = serde_yaml_ng::from_str::<Yaml>(text).ok();
    let reads_as_text = plain.as_ref().and_then(Yaml::as_str) == Some(text);
    if reads_as_text && (yaml_cpp_bool(text).is_some() || yaml_cpp_int(text)) {
        return Err(bad(format!(
            "{at}: {text:?}: Envoy reads it as a bool or a number when unquoted and as a \
             string when quoted, which the harness cannot tell apart; write true or false \
             for a bool, a decimal integer for a number"
        )));
    }
    Ok(text)
}

/// A YAML value as Envoy 1.40's YAML loader makes it a `Struct` value; `at`
/// names it in errors.
fn yaml_value(value: &Yaml, at: &str) -> Result<StructValue> {
    Ok(match value {
        Yaml::Null => StructValue::Null,
        Yaml::Bool(b) => StructValue::Bool(*b),
        Yaml::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) if i32::try_from(i).is_ok() => StructValue::Number(i as f64),
            (Some(i), _) => StructValue::String(i.to_string()),
            (None, Some(u)) => StructValue::String(u.to_string()),
            (None, None) => {
                return Err(bad(format!(
                    "{at}: {n}: Envoy keeps a number that is not an integer as the string of \
                     its text (`2.50` stays \"2.50\"), which the harness cannot read back; \
                     write it quoted"
                )));
            }
        },
        Yaml::String(s) => StructValue::String(unambiguous(s, at)?.to_owned()),
        Yaml::Sequence(items) => StructValue::List(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| yaml_value(v, &format!("{at}[{i}]")))
                .collect::<Result<_>>()?,
        ),
        Yaml::Mapping(_) => StructValue::Struct(yaml_struct(value, at)?),
        Yaml::Tagged(t) => {
            return Err(bad(format!(
                "{at}: the YAML tag {} is not emulated by the harness",
                t.tag
            )));
        }
    })
}

/// A YAML mapping as a `Struct`.
fn yaml_struct(value: &Yaml, at: &str) -> Result<Struct> {
    let map = value
        .as_mapping()
        .ok_or_else(|| bad(format!("{at} must be a mapping (a protobuf Struct)")))?;
    let mut fields = BTreeMap::new();
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            return Err(bad(format!(
                "{at}: the key {k:?} is not a string (Envoy takes its text); write it quoted"
            )));
        };
        fields.insert(key.to_owned(), yaml_value(v, &format!("{at}.{key}"))?);
    }
    Ok(Struct { fields })
}

/// Refuses the keys of `map` (at `at`) that are not in `known`.
fn only(map: &serde_yaml_ng::Mapping, known: &[&str], at: &str) -> Result<()> {
    for key in map.keys() {
        let key = key.as_str().unwrap_or_default();
        if !known.contains(&key) {
            return Err(bad(format!("{at}.{key} is not emulated by the harness")));
        }
    }
    Ok(())
}

fn yaml_string(map: &serde_yaml_ng::Mapping, key: &str, at: &str) -> Result<String> {
    match map.get(key) {
        None => Ok(String::new()),
        Some(Yaml::String(s)) => Ok(unambiguous(s, &format!("{at}.{key}"))?.to_owned()),
        Some(other) => Err(bad(format!("{at}.{key} must be a string, found {other:?}"))),
    }
}

/// A `Locality` (`at` names it in errors): its `region`, `zone` and
/// `sub_zone`, each empty when not given; a `null` is an empty one.
fn locality_from_yaml(locality: &Yaml, at: &str) -> Result<Locality> {
    if locality.is_null() {
        return Ok(Locality::default());
    }
    let l = locality
        .as_mapping()
        .ok_or_else(|| bad(format!("{at} must be a mapping")))?;
    only(l, &["region", "zone", "sub_zone"], at)?;
    Ok(Locality {
        region: yaml_string(l, "region", at)?,
        zone: yaml_string(l, "zone", at)?,
        sub_zone: yaml_string(l, "sub_zone", at)?,
    })
}

/// The bootstrap's `node` (`node` is the value of the root's `node` key).
pub(crate) fn node_from_yaml(node: Option<&Yaml>) -> Result<Node> {
    let Some(node) = node else {
        return Ok(Node::default());
    };
    let map = node
        .as_mapping()
        .ok_or_else(|| bad("node must be a mapping".to_owned()))?;
    only(map, &["id", "cluster", "metadata", "locality"], "node")?;
    let locality = match map.get("locality") {
        None => None,
        Some(l) if l.is_null() => {
            return Err(bad("node.locality must be a mapping".to_owned()));
        }
        Some(l) => Some(locality_from_yaml(l, "node.locality")?),
    };
    Ok(Node {
        id: yaml_string(map, "id", "node")?,
        cluster: yaml_string(map, "cluster", "node")?,
        metadata: map
            .get("metadata")
            .map(|m| yaml_struct(m, "node.metadata"))
            .transpose()?,
        locality,
    })
}

/// The `metadata` field of a listener, virtual host, route or cluster (`at`
/// names it in errors).
pub(crate) fn metadata_from_yaml(metadata: Option<&Yaml>, at: &str) -> Result<Metadata> {
    let Some(metadata) = metadata else {
        return Ok(Metadata::default());
    };
    let map = metadata
        .as_mapping()
        .ok_or_else(|| bad(format!("{at} must be a mapping")))?;
    if map.contains_key("typed_filter_metadata") {
        return Err(bad(format!(
            "{at}.typed_filter_metadata is not emulated by the harness (filters read it as \
             typed messages in Envoy); use filter_metadata"
        )));
    }
    only(map, &["filter_metadata"], at)?;
    let mut out = Metadata::default();
    if let Some(filters) = map.get("filter_metadata") {
        let filters = filters
            .as_mapping()
            .ok_or_else(|| bad(format!("{at}.filter_metadata must be a mapping")))?;
        for (name, value) in filters {
            let Some(name) = name.as_str() else {
                return Err(bad(format!(
                    "{at}.filter_metadata: the key {name:?} is not a string"
                )));
            };
            let value = yaml_struct(value, &format!("{at}.filter_metadata.{name}"))?;
            out.filter_metadata.insert(name.to_owned(), value);
        }
    }
    Ok(out)
}

/// The `metadata` of the one endpoint of `cluster` (a static cluster of the
/// bootstrap, `name` naming it in errors) and of its locality: its
/// `load_assignment`'s `endpoints[0].lb_endpoints[0].metadata` and
/// `endpoints[0].metadata`. A `null` is protobuf's default: no metadata.
/// With them, the locality itself (`endpoints[0].locality`, empty when not
/// given).
///
/// Envoy 1.40 gives the hosts of a `STATIC` cluster (the default `type`) a
/// null message where the bootstrap gives no metadata, and those of a
/// `STRICT_DNS` or `LOGICAL_DNS` cluster an empty one (measured,
/// `tests/conformance/upstream-host-metadata-*dns.yaml`).
pub(crate) fn host_metadata_from_yaml(cluster: Option<&Yaml>, name: &str) -> Result<HostMetadata> {
    let dns = cluster
        .and_then(|c| c.get("type"))
        .and_then(Yaml::as_str)
        .is_some_and(|t| matches!(t, "STRICT_DNS" | "LOGICAL_DNS"));
    let locality = cluster
        .and_then(|c| c.get("load_assignment"))
        .and_then(|a| a.get("endpoints"))
        .and_then(|e| e.get(0));
    let endpoint = locality
        .and_then(|l| l.get("lb_endpoints"))
        .and_then(|e| e.get(0));
    let read = |metadata: Option<&Yaml>, at: String| {
        let given = metadata
            .filter(|m| !m.is_null())
            .map(|m| metadata_from_yaml(Some(m), &at))
            .transpose()?;
        Ok::<_, Error>(given.or_else(|| dns.then(Metadata::default)))
    };
    let place = locality
        .and_then(|l| l.get("locality"))
        .map(|l| {
            locality_from_yaml(
                l,
                &format!("clusters[{name}].load_assignment.endpoints[0].locality"),
            )
        })
        .transpose()?
        .unwrap_or_default();
    Ok(HostMetadata {
        place,
        endpoint: read(
            endpoint.and_then(|e| e.get("metadata")),
            format!("clusters[{name}].load_assignment.endpoints[0].lb_endpoints[0].metadata"),
        )?,
        locality: read(
            locality.and_then(|l| l.get("metadata")),
            format!("clusters[{name}].load_assignment.endpoints[0].metadata"),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn yaml(text: &str) -> Result<StructValue> {
        let value: Yaml = serde_yaml_ng::from_str(text).expect("yaml");
        yaml_value(&value, "v")
    }

    fn string(s: &str) -> StructValue {
        StructValue::String(s.to_owned())
    }

    #[test]
    fn yaml_scalars_become_what_envoys_loader_makes_of_them() {
        assert_eq!(yaml("7").ok(), Some(StructValue::Number(7.0)));
        assert_eq!(
            yaml("-2147483648").ok(),
            Some(StructValue::Number(-2_147_483_648.0))
        );
        assert_eq!(yaml("0x10").ok(), Some(StructValue::Number(16.0)));
        // Past the 32-bit range: the decimal digits.
        assert_eq!(yaml("2147483648").ok(), Some(string("2147483648")));
        assert_eq!(yaml("0x100000000").ok(), Some(string("4294967296")));
        assert_eq!(
            yaml("18446744073709551615").ok(),
            Some(string("18446744073709551615"))
        );
        assert_eq!(yaml("true").ok(), Some(StructValue::Bool(true)));
        assert_eq!(yaml("~").ok(), Some(StructValue::Null));
        // Quoted: a string, when the harness's parser reads it unquoted as
        // something else (a number, a null) and can tell the two apart.
        for quoted in [r#""7""#, r#""2.5""#, "'-3'", r#""""#, r#""null""#] {
            let text = quoted.trim_matches(['"', '\'']);
            assert_eq!(yaml(quoted).ok(), Some(string(text)), "{quoted}");
        }
        assert_eq!(yaml("08").ok(), Some(string("08")));
        assert_eq!(yaml("1_000").ok(), Some(string("1_000")));
        assert_eq!(yaml("plain text").ok(), Some(string("plain text")));
        assert_eq!(
            yaml("[a, 1, {k: null}]").ok(),
            Some(StructValue::List(vec![
                string("a"),
                StructValue::Number(1.0),
                StructValue::Struct(Struct {
                    fields: BTreeMap::from([("k".to_owned(), StructValue::Null)]),
                }),
            ]))
        );
    }

    #[test]
    fn yaml_the_harness_cannot_read_as_envoy_does_is_refused() {
        for text in [
            "2.5", "1e3", ".5", ".inf", "yes", "No", "on", "OFF", "y", "010", "-07", "'yes'",
            r#""010""#,
        ] {
            let err = yaml(text).expect_err(text).to_string();
            assert!(err.contains("v: "), "{text}: {err}");
        }
        let err = yaml("{1: one}").expect_err("key").to_string();
        assert!(err.contains("not a string"), "{err}");
        let err = yaml("!custom x").expect_err("tag").to_string();
        assert!(err.contains("tag"), "{err}");
    }

    #[test]
    fn yaml_cpp_integers_and_bools() {
        for text in [
            "0",
            "00",
            "7",
            "+7",
            "-7",
            "0x1F",
            "010",
            "12 ",
            "-9223372036854775808",
        ] {
            assert!(yaml_cpp_int(text), "{text}");
        }
        for text in [
            "",
            "0x",
            "08",
            "1.5",
            "1e3",
            " 1",
            "0o17",
            "9223372036854775808",
            "x",
        ] {
            assert!(!yaml_cpp_int(text), "{text}");
        }
        assert_eq!(yaml_cpp_bool("Yes"), Some(true));
        assert_eq!(yaml_cpp_bool("OFF"), Some(false));
        assert_eq!(yaml_cpp_bool("yEs"), None);
        assert_eq!(yaml_cpp_bool("maybe"), None);
    }

    #[test]
    fn json_numbers_are_doubles() {
        let s = Struct::from_json(json!({"i": 7, "f": 2.5, "n": -3}), "m").expect("struct");
        assert_eq!(s.fields["i"], StructValue::Number(7.0));
        assert_eq!(s.fields["f"], StructValue::Number(2.5));
        assert_eq!(s.fields["n"], StructValue::Number(-3.0));
        assert!(Struct::from_json(json!({"big": 9_007_199_254_740_992_u64}), "m").is_ok());
        let err =
            Struct::from_json(json!({"x": [9_007_199_254_740_993_u64]}), "m").expect_err("inexact");
        assert!(err.to_string().contains("m.x[0]"), "{err}");
        let err = Struct::from_json(json!(["a"]), "m").expect_err("not an object");
        assert!(err.to_string().contains("JSON object"), "{err}");
        let err = Metadata::new()
            .filter("f", json!("x"))
            .expect_err("not an object");
        assert!(err.to_string().contains("filter_metadata.f"), "{err}");
    }

    #[test]
    fn node_and_metadata_from_a_bootstrap() {
        let root: Yaml = serde_yaml_ng::from_str(
            "node: {id: node-a, cluster: c, metadata: {a: [1]}, locality: {zone: z}}",
        )
        .expect("yaml");
        let node = node_from_yaml(root.get("node")).expect("node");
        assert_eq!(node.id, "node-a");
        assert_eq!(node.cluster, "c");
        assert_eq!(
            node.locality,
            Some(Locality {
                zone: "z".to_owned(),
                ..Locality::default()
            })
        );
        assert!(node.metadata.is_some());
        let root: Yaml =
            serde_yaml_ng::from_str("node: {id: node-a, user_agent_name: x}").expect("yaml");
        let err = node_from_yaml(root.get("node")).expect_err("unknown");
        assert!(err.to_string().contains("node.user_agent_name"), "{err}");
        let root: Yaml = serde_yaml_ng::from_str("node: {id: 7}").expect("yaml");
        assert!(node_from_yaml(root.get("node")).is_err());
        // Unquoted, Envoy reads `n` as a bool and refuses it as an id.
        let root: Yaml = serde_yaml_ng::from_str("node: {id: n}").expect("yaml");
        let err = node_from_yaml(root.get("node")).expect_err("ambiguous");
        assert!(err.to_string().contains("node.id"), "{err}");

        let md: Yaml = serde_yaml_ng::from_str("filter_metadata: {f: {k: v}}").expect("yaml");
        let md = metadata_from_yaml(Some(&md), "route.metadata").expect("metadata");
        assert_eq!(md.filter_metadata["f"].fields["k"], string("v"));
        let typed: Yaml = serde_yaml_ng::from_str("typed_filter_metadata: {f: {}}").expect("yaml");
        let err = metadata_from_yaml(Some(&typed), "route.metadata").expect_err("typed");
        assert!(
            err.to_string()
                .contains("route.metadata.typed_filter_metadata"),
            "{err}"
        );
        let scalar: Yaml = serde_yaml_ng::from_str("filter_metadata: {f: x}").expect("yaml");
        assert!(metadata_from_yaml(Some(&scalar), "route.metadata").is_err());
    }

    #[test]
    fn host_metadata_from_a_cluster() {
        let cluster: Yaml = serde_yaml_ng::from_str(
            "load_assignment:\n  endpoints:\n  - metadata: {filter_metadata: {loc: {r: 1}}}\n    \
             lb_endpoints:\n    - metadata: {filter_metadata: {istio: {w: web}}}\n",
        )
        .expect("yaml");
        let host = host_metadata_from_yaml(Some(&cluster), "up").expect("metadata");
        let endpoint = host.endpoint.expect("endpoint metadata");
        assert_eq!(endpoint.filter_metadata["istio"].fields["w"], string("web"));
        let locality = host.locality.expect("locality metadata");
        assert_eq!(
            locality.filter_metadata["loc"].fields["r"],
            StructValue::Number(1.0)
        );
        // Absent, null or no endpoint at all: none.
        for text in [
            "{}",
            "load_assignment: {endpoints: [{lb_endpoints: [{metadata: null}]}]}",
            "load_assignment: {endpoints: [{lb_endpoints: []}]}",
        ] {
            let cluster: Yaml = serde_yaml_ng::from_str(text).expect("yaml");
            let host = host_metadata_from_yaml(Some(&cluster), "up").expect(text);
            assert_eq!(host, HostMetadata::default(), "{text}");
        }
        assert_eq!(
            host_metadata_from_yaml(None, "up").expect("no cluster"),
            HostMetadata::default()
        );
        // A DNS cluster's host has empty metadata when the bootstrap gives none.
        for kind in ["STRICT_DNS", "LOGICAL_DNS"] {
            let text = format!(
                "{{type: {kind}, load_assignment: {{endpoints: [{{lb_endpoints: [{{metadata: \
                 {{filter_metadata: {{f: {{k: v}}}}}}}}]}}]}}}}"
            );
            let cluster: Yaml = serde_yaml_ng::from_str(&text).expect("yaml");
            let host = host_metadata_from_yaml(Some(&cluster), "up").expect(kind);
            assert_eq!(host.locality, Some(Metadata::new()), "{kind}");
            let endpoint = host.endpoint.expect("given");
            assert_eq!(endpoint.filter_metadata["f"].fields["k"], string("v"));
        }
        let cluster: Yaml = serde_yaml_ng::from_str("{type: STATIC}").expect("yaml");
        assert_eq!(
            host_metadata_from_yaml(Some(&cluster), "up").expect("static"),
            HostMetadata::default()
        );
        // Present but empty: a host with empty metadata.
        let cluster: Yaml = serde_yaml_ng::from_str(
            "load_assignment: {endpoints: [{metadata: {}, lb_endpoints: [{metadata: {}}]}]}",
        )
        .expect("yaml");
        let host = host_metadata_from_yaml(Some(&cluster), "up").expect("empty");
        assert_eq!(host.endpoint, Some(Metadata::new()));
        assert_eq!(host.locality, Some(Metadata::new()));
        // A value Envoy reads differently is refused, the path named.
        let cluster: Yaml = serde_yaml_ng::from_str(
            "load_assignment: {endpoints: [{lb_endpoints: [{metadata: {filter_metadata: {f: {k: 2.5}}}}]}]}",
        )
        .expect("yaml");
        let err = host_metadata_from_yaml(Some(&cluster), "up").expect_err("float");
        assert!(
            err.to_string().contains(
                "clusters[up].load_assignment.endpoints[0].lb_endpoints[0].metadata.filter_metadata.f.k"
            ),
            "{err}"
        );
        let cluster: Yaml = serde_yaml_ng::from_str(
            "load_assignment: {endpoints: [{metadata: {filter_metadata: {f: [x]}}}]}",
        )
        .expect("yaml");
        let err = host_metadata_from_yaml(Some(&cluster), "up").expect_err("not a struct");
        assert!(
            err.to_string()
                .contains("clusters[up].load_assignment.endpoints[0].metadata.filter_metadata.f"),
            "{err}"
        );
    }

    #[test]
    fn an_endpoints_locality_from_a_cluster() {
        let read = |text: &str| {
            let cluster: Yaml = serde_yaml_ng::from_str(text).expect("yaml");
            host_metadata_from_yaml(Some(&cluster), "up").map(|host| host.place)
        };
        let place = read(
            "load_assignment: {endpoints: [{locality: {region: r, zone: z, sub_zone: s}, \
             lb_endpoints: []}]}",
        )
        .expect("a locality");
        assert_eq!(
            (
                place.region.as_str(),
                place.zone.as_str(),
                place.sub_zone.as_str()
            ),
            ("r", "z", "s")
        );
        // Absent, null, empty or with fields left out: empty ones.
        for text in [
            "{}",
            "load_assignment: {endpoints: [{locality: null}]}",
            "load_assignment: {endpoints: [{locality: {}}]}",
        ] {
            assert_eq!(read(text).expect(text), Locality::default(), "{text}");
        }
        let place = read("load_assignment: {endpoints: [{locality: {zone: z}}]}").expect("zone");
        assert_eq!((place.region.as_str(), place.zone.as_str()), ("", "z"));
        // What Envoy's Locality cannot hold is refused, the path named.
        for (text, path) in [
            (
                "load_assignment: {endpoints: [{locality: [r]}]}",
                "clusters[up].load_assignment.endpoints[0].locality must be a mapping",
            ),
            (
                "load_assignment: {endpoints: [{locality: {zone: 3}}]}",
                "clusters[up].load_assignment.endpoints[0].locality.zone",
            ),
            (
                "load_assignment: {endpoints: [{locality: {rack: r}}]}",
                "clusters[up].load_assignment.endpoints[0].locality.rack",
            ),
        ] {
            let err = read(text).expect_err(text);
            assert!(err.to_string().contains(path), "{err}");
        }
        // The node's locality stays refused when null, as before.
        let node: Yaml = serde_yaml_ng::from_str("{locality: null}").expect("yaml");
        assert!(node_from_yaml(Some(&node)).is_err());
    }
}
