//! A TOML document tree that remembers where every key and value came from.
//!
//! `toml::Value` forgets positions and `#[derive(Deserialize)]` with
//! `toml::Spanned` fields reports type and unknown-key errors without the
//! dotted key path. So the document is first deserialized into this small
//! tree, which accepts any well-formed TOML; all typing and validation is then
//! done by hand in `parse.rs`, where both the byte offset and the key path of
//! every value are known.
//!
//! Positions come from `toml::Spanned`'s deserialization protocol: asking a
//! deserializer for the `Spanned` struct makes toml hand over the value's byte
//! range first. The magic struct and field names are learned at run time from
//! `toml::Spanned` itself (see [`magic`]), so nothing private is hard-coded.
//! Values toml has no span for (implicit tables such as `a` in `[a.b]`) get
//! the position of their key, or of their parent.

use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The key toml uses to pass a datetime through `deserialize_any`.
const DATETIME_FIELD: &str = "$__toml_private_datetime";

/// A value of the document with its byte offset.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// Byte offset of the first character of the value (of the header for a
    /// `[table]`).
    pub pos: usize,
    /// The value.
    pub kind: Kind,
}

/// The TOML value kinds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

impl Kind {
    /// The TOML type name, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Str(_) => "a string",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Bool(_) => "a boolean",
            Kind::Datetime(_) => "a datetime",
            Kind::Array(_) => "an array",
            Kind::Table(_) => "a table",
        }
    }
}

/// A `key = value` pair of a table, in document order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The key as written (unquoted).
    pub key: String,
    /// Byte offset of the key.
    pub key_pos: usize,
    /// The value.
    pub value: Node,
}

/// Parses a document into a tree. Errors are TOML syntax errors.
pub(crate) fn parse(text: &str) -> Result<Node, toml::de::Error> {
    let raw: Raw = toml::from_str(text)?;
    Ok(raw.into_node(0))
}

/// The names `toml::Spanned` uses in its serde protocol.
struct Magic {
    name: &'static str,
    fields: &'static [&'static str],
    start: &'static str,
    end: &'static str,
    value: &'static str,
}

/// Learns the `Spanned` protocol names by deserializing a `toml::Spanned`
/// from a probe that records what it is asked for.
fn magic() -> &'static Magic {
    static MAGIC: OnceLock<Magic> = OnceLock::new();
    MAGIC.get_or_init(|| {
        let mut probe = Probe(None);
        // The probe always fails; only what it recorded matters.
        let _ = <toml::Spanned<bool> as serde::Deserialize>::deserialize(&mut probe);
        match probe.0 {
            Some((name, fields @ &[start, end, value])) => Magic {
                name,
                fields,
                start,
                end,
                value,
            },
            // Not expected with toml 0.8; fall back to serde_spanned 0.6's names.
            _ => {
                const START: &str = "$__serde_spanned_private_start";
                const END: &str = "$__serde_spanned_private_end";
                const VALUE: &str = "$__serde_spanned_private_value";
                Magic {
                    name: "$__serde_spanned_private_Spanned",
                    fields: &[START, END, VALUE],
                    start: START,
                    end: END,
                    value: VALUE,
                }
            }
        }
    })
}

/// A deserializer that records the struct name and fields it is asked for.
struct Probe(Option<(&'static str, &'static [&'static str])>);

impl<'de> Deserializer<'de> for &mut Probe {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("probe"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = Some((name, fields));
        Err(de::Error::custom("probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// A value as deserialized, position possibly unknown.
#[derive(Debug)]
struct Raw {
    pos: Option<usize>,
    kind: RawKind,
}

#[derive(Debug)]
enum RawKind {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Raw>),
    Table(Vec<(RawKey, Raw)>),
}

#[derive(Debug)]
struct RawKey {
    name: String,
    pos: Option<usize>,
}

impl Raw {
    /// Resolves unknown positions to `fallback` (the key's or parent's).
    fn into_node(self, fallback: usize) -> Node {
        let pos = self.pos.unwrap_or(fallback);
        let kind = match self.kind {
            RawKind::Str(s) => Kind::Str(s),
            RawKind::Int(i) => Kind::Int(i),
            RawKind::Float(f) => Kind::Float(f),
            RawKind::Bool(b) => Kind::Bool(b),
            RawKind::Datetime(d) => Kind::Datetime(d),
            RawKind::Array(items) => {
                Kind::Array(items.into_iter().map(|v| v.into_node(pos)).collect())
            }
            RawKind::Table(entries) => Kind::Table(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let key_pos = k.pos.unwrap_or(pos);
                        Entry {
                            key: k.name,
                            key_pos,
                            value: v.into_node(key_pos),
                        }
                    })
                    .collect(),
            ),
        };
        Node { pos, kind }
    }
}

/// Deserializes the root (which has no useful span) with `deserialize_any`.
impl<'de> serde::Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PlainSeed.deserialize(deserializer)
    }
}

/// Deserializes a value, asking for its span.
struct SpannedSeed;

impl<'de> DeserializeSeed<'de> for SpannedSeed {
    type Value = Raw;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        let m = magic();
        deserializer.deserialize_struct(m.name, m.fields, RawVisitor { spanned: true })
    }
}

/// Deserializes a value without asking for its span (the inner value of a
/// spanned one, or the root).
struct PlainSeed;

impl<'de> DeserializeSeed<'de> for PlainSeed {
    type Value = Raw;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_any(RawVisitor { spanned: false })
    }
}

/// Builds a [`Raw`]. With `spanned`, a map may be the `Spanned` protocol's
/// `{start, end, value}` rather than a TOML table.
struct RawVisitor {
    spanned: bool,
}

impl RawVisitor {
    fn plain(kind: RawKind) -> Raw {
        Raw { pos: None, kind }
    }
}

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Self::plain(RawKind::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Self::plain(RawKind::Int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        match i64::try_from(v) {
            Ok(v) => Ok(Self::plain(RawKind::Int(v))),
            Err(_) => Err(E::custom(format!("integer {v} is out of range"))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Self::plain(RawKind::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Self::plain(RawKind::Str(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Self::plain(RawKind::Str(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(SpannedSeed)? {
            items.push(item);
        }
        Ok(Self::plain(RawKind::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let m = magic();
        let Some(first) = map.next_key_seed(KeySeed)? else {
            return Ok(Self::plain(RawKind::Table(Vec::new())));
        };
        if self.spanned && first.name == m.start {
            // The Spanned protocol: start, end, then the value itself.
            let start: usize = map.next_value()?;
            let mut value = None;
            while let Some(key) = map.next_key_seed(KeySeed)? {
                if key.name == m.value {
                    value = Some(map.next_value_seed(PlainSeed)?);
                } else if key.name == m.end {
                    let _end: usize = map.next_value()?;
                } else {
                    return Err(de::Error::custom(format!(
                        "unexpected key `{}` in a spanned value",
                        key.name
                    )));
                }
            }
            let Some(mut value) = value else {
                return Err(de::Error::custom("spanned value without a value"));
            };
            value.pos = Some(start);
            return Ok(value);
        }
        if first.name == DATETIME_FIELD {
            let value = map.next_value_seed(PlainSeed)?;
            return match value.kind {
                RawKind::Str(s) => Ok(Self::plain(RawKind::Datetime(s))),
                _ => Err(de::Error::custom("malformed datetime")),
            };
        }
        let mut entries = Vec::new();
        let value = map.next_value_seed(SpannedSeed)?;
        entries.push((first, value));
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(SpannedSeed)?;
            entries.push((key, value));
        }
        Ok(Self::plain(RawKind::Table(entries)))
    }
}

/// Deserializes a table key, asking for its span.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = RawKey;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawKey, D::Error> {
        let m = magic();
        deserializer.deserialize_struct(m.name, m.fields, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = RawKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKey, E> {
        Ok(RawKey {
            name: v.to_owned(),
            pos: None,
        })
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<RawKey, E> {
        Ok(RawKey { name: v, pos: None })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKey, A::Error> {
        let m = magic();
        let mut pos = None;
        let mut name = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == m.start {
                pos = Some(map.next_value::<usize>()?);
            } else if key == m.end {
                let _end: usize = map.next_value()?;
            } else if key == m.value {
                name = Some(map.next_value::<String>()?);
            } else {
                return Err(de::Error::custom(format!(
                    "unexpected key `{key}` in a spanned key"
                )));
            }
        }
        match name {
            Some(name) => Ok(RawKey { name, pos }),
            None => Err(de::Error::custom("spanned key without a value")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_names_are_learned_from_toml() {
        let m = magic();
        assert!(m.name.contains("Spanned"), "{}", m.name);
        assert!(m.start.contains("start"));
        assert!(m.end.contains("end"));
        assert!(m.value.contains("value"));
    }

    fn table(node: &Node) -> &[Entry] {
        match &node.kind {
            Kind::Table(e) => e,
            k => panic!("not a table: {k:?}"),
        }
    }

    #[test]
    fn positions_of_keys_and_values() {
        let text = "a = 1\n[t]\nb = \"x\"\nc.d = [true, 2.5]\n[[arr]]\ne = 1979-05-27\n";
        let root = parse(text).unwrap();
        let top = table(&root);
        assert_eq!(top[0].key, "a");
        assert_eq!(top[0].key_pos, 0);
        assert_eq!(top[0].value.pos, 4);
        assert_eq!(top[0].value.kind, Kind::Int(1));
        assert_eq!(top[1].key, "t");
        let t = table(&top[1].value);
        assert_eq!(top[1].value.pos, text.find("[t]").unwrap());
        assert_eq!(t[0].value.pos, text.find("\"x\"").unwrap());
        // Dotted key: implicit table `c` takes the key's position.
        assert_eq!(t[1].key, "c");
        assert_eq!(t[1].key_pos, text.find("c.d").unwrap());
        assert_eq!(t[1].value.pos, t[1].key_pos);
        let c = table(&t[1].value);
        let Kind::Array(items) = &c[0].value.kind else {
            panic!()
        };
        assert_eq!(items[1].pos, text.find("2.5").unwrap());
        assert_eq!(items[1].kind, Kind::Float(2.5));
        let Kind::Array(arr) = &top[2].value.kind else {
            panic!()
        };
        assert_eq!(arr[0].pos, text.find("[[arr]]").unwrap());
        let e = table(&arr[0]);
        assert!(matches!(e[0].value.kind, Kind::Datetime(_)));
        assert_eq!(e[0].value.pos, text.find("1979").unwrap());
    }

    #[test]
    fn implicit_header_tables() {
        let text = "[a.b]\nx = 1\n";
        let root = parse(text).unwrap();
        let top = table(&root);
        assert_eq!(top[0].key, "a");
        assert_eq!(top[0].key_pos, 1);
        let a = table(&top[0].value);
        assert_eq!(a[0].key, "b");
        assert_eq!(a[0].key_pos, 3);
        let b = table(&a[0].value);
        assert_eq!(b[0].value.pos, text.find('1').unwrap());
    }

    #[test]
    fn syntax_error_has_span() {
        let err = parse("a = \n").unwrap_err();
        assert!(err.span().is_some());
    }
}
