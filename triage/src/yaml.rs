//! YAML with line numbers: yaml-rust2's event parser builds a tree that
//! remembers where each node starts, and a serde `Deserializer` over that
//! tree reports every error (unknown key, wrong type, bad value) at the line
//! and column of the node it concerns. [`Spanned`] lets later validation
//! point at a node too.

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl From<Marker> for Mark {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Mark {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// A parsed YAML node and where it starts.
#[derive(Clone, Debug)]
pub struct Node {
    kind: Kind,
    mark: Mark,
}

#[derive(Clone, Debug)]
enum Kind {
    Scalar { value: String, plain: bool },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// An error with the place it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Where; `None` until the error passes through the node it concerns.
    pub mark: Option<Mark>,
    /// What is wrong.
    pub message: String,
}

impl Error {
    fn at(mark: Mark, message: impl Into<String>) -> Self {
        Error {
            mark: Some(mark),
            message: message.into(),
        }
    }

    /// Keeps the innermost place: the first node an error passes through
    /// is the one it is about.
    fn or_at(mut self, mark: Mark) -> Self {
        self.mark.get_or_insert(mark);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mark {
            Some(m) => write!(f, "line {}, column {}: {}", m.line, m.column, self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            mark: None,
            message: msg.to_string(),
        }
    }
}

/// Parses one YAML document into a tree; an empty document is an empty map.
pub fn parse(text: &str) -> Result<Node, Error> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| {
        let mark = Mark::from(*e.marker());
        Error::at(mark, format!("not valid YAML: {}", e.info()))
    })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.root.unwrap_or(Node {
        kind: Kind::Map(Vec::new()),
        mark: Mark { line: 1, column: 1 },
    }))
}

/// Parses `text` and deserializes it into `T`.
pub fn from_str<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, Error> {
    let node = parse(text)?;
    T::deserialize(&node).map_err(|e: Error| e.or_at(node.mark))
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: BTreeMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    error: Option<Error>,
}

enum Frame {
    Seq {
        items: Vec<Node>,
        mark: Mark,
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        mark: Mark,
        anchor: usize,
    },
}

impl Builder {
    fn fail(&mut self, mark: Mark, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(Error::at(mark, message));
        }
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => *key = Some(node),
            },
            None => self.root = Some(node),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        if self.error.is_some() {
            return;
        }
        let mark = Mark::from(marker);
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        mark,
                        "more than one YAML document (`---`); put the whole config in one document",
                    );
                }
            }
            Event::Scalar(value, style, anchor, _) => {
                let plain = style == TScalarStyle::Plain;
                self.finish(
                    Node {
                        kind: Kind::Scalar { value, plain },
                        mark,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                items: Vec::new(),
                mark,
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                entries: Vec::new(),
                key: None,
                mark,
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    items,
                    mark,
                    anchor,
                }) => {
                    self.finish(
                        Node {
                            kind: Kind::Seq(items),
                            mark,
                        },
                        anchor,
                    );
                }
                Some(Frame::Map {
                    entries,
                    mark,
                    anchor,
                    ..
                }) => {
                    let mut seen = BTreeMap::new();
                    for (k, _) in &entries {
                        if let Kind::Scalar { value, .. } = &k.kind
                            && let Some(first) = seen.insert(value.clone(), k.mark)
                        {
                            let message = format!(
                                "key `{value}` appears twice in this map (first at line {}); keep one",
                                first.line
                            );
                            self.fail(k.mark, message);
                        }
                    }
                    self.finish(
                        Node {
                            kind: Kind::Map(entries),
                            mark,
                        },
                        anchor,
                    );
                }
                None => self.fail(mark, "unbalanced YAML structure"),
            },
            Event::Alias(anchor) => match self.anchors.get(&anchor).cloned() {
                Some(node) => self.finish(Node { mark, ..node }, 0),
                None => self.fail(mark, "alias to an unknown anchor"),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

impl Node {
    /// Where the node starts.
    pub fn mark(&self) -> Mark {
        self.mark
    }

    fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true } if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    fn describe(&self) -> String {
        match &self.kind {
            Kind::Scalar { value, .. } => format!("`{value}`"),
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a map".into(),
        }
    }

    fn scalar(&self, expected: &str) -> Result<&str, Error> {
        match &self.kind {
            Kind::Scalar { value, .. } => Ok(value),
            _ => Err(Error::at(
                self.mark,
                format!("expected {expected}, found {}", self.describe()),
            )),
        }
    }

    fn integer<T: std::str::FromStr>(&self) -> Result<T, Error> {
        let text = self.scalar("a number")?;
        text.trim().replace('_', "").parse().map_err(|_| {
            Error::at(
                self.mark,
                format!("expected a whole number in range, found `{text}`"),
            )
        })
    }
}

/// The struct name [`Spanned`] asks for, so the deserializer hands it the
/// node's place along with the value.
const SPANNED: &str = "$quarry_triage::yaml::Spanned";
const SPANNED_FIELDS: &[&str] = &["line", "column", "value"];

/// A value and the place in the YAML text it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    /// Where the value starts.
    pub mark: Mark,
    /// The value.
    pub value: T,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpannedVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
            type Value = Spanned<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value with its place")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut line = 0;
                let mut column = 0;
                let mut value = None;
                while let Some(key) = map.next_key::<&str>()? {
                    match key {
                        "line" => line = map.next_value()?,
                        "column" => column = map.next_value()?,
                        _ => value = Some(map.next_value()?),
                    }
                }
                let value = value.ok_or_else(|| de::Error::missing_field("value"))?;
                Ok(Spanned {
                    mark: Mark { line, column },
                    value,
                })
            }
        }

        deserializer.deserialize_struct(
            SPANNED,
            SPANNED_FIELDS,
            SpannedVisitor(std::marker::PhantomData),
        )
    }
}

struct SpannedAccess<'a> {
    node: &'a Node,
    step: usize,
}

impl<'de> de::MapAccess<'de> for SpannedAccess<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match SPANNED_FIELDS.get(self.step) {
            Some(name) => seed
                .deserialize(de::value::BorrowedStrDeserializer::new(name))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let step = self.step;
        self.step += 1;
        match step {
            0 => seed.deserialize((self.node.mark.line as u64).into_deserializer()),
            1 => seed.deserialize((self.node.mark.column as u64).into_deserializer()),
            _ => seed.deserialize(self.node),
        }
    }
}

struct SeqAccess<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            // Errors a seed raises after reading the node (a value refused by
            // a `TryFrom`) belong to the node too.
            Some(node) => seed
                .deserialize(node)
                .map(Some)
                .map_err(|e| e.or_at(node.mark)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key)
                    .map(Some)
                    .map_err(|e| e.or_at(key.mark))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(node) => seed.deserialize(node).map_err(|e| e.or_at(node.mark)),
            None => Err(de::Error::custom("value without a key")),
        }
    }
}

macro_rules! integer {
    ($($method:ident $ty:ty => $visit:ident,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let n: $ty = self.integer()?;
            visitor.$visit(n.into()).map_err(|e: Error| e.or_at(self.mark))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let out = match &self.kind {
            Kind::Scalar { value, plain: true } => {
                if self.is_null() {
                    visitor.visit_unit()
                } else if value == "true" {
                    visitor.visit_bool(true)
                } else if value == "false" {
                    visitor.visit_bool(false)
                } else if let Ok(n) = value.parse::<i64>() {
                    visitor.visit_i64(n)
                } else if let Ok(x) = value.parse::<f64>() {
                    visitor.visit_f64(x)
                } else {
                    visitor.visit_str(value)
                }
            }
            Kind::Scalar { value, .. } => visitor.visit_str(value),
            Kind::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
            }),
            Kind::Map(entries) => visitor.visit_map(MapAccess {
                entries: entries.iter(),
                value: None,
            }),
        };
        out.map_err(|e: Error| e.or_at(self.mark))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.scalar("true or false")? {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            other => Err(Error::at(
                self.mark,
                format!("expected true or false, found `{other}`"),
            )),
        }
    }

    integer! {
        deserialize_i8 i8 => visit_i64,
        deserialize_i16 i16 => visit_i64,
        deserialize_i32 i32 => visit_i64,
        deserialize_i64 i64 => visit_i64,
        deserialize_u8 u8 => visit_u64,
        deserialize_u16 u16 => visit_u64,
        deserialize_u32 u32 => visit_u64,
        deserialize_u64 u64 => visit_u64,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let text = self.scalar("a number")?;
        let x: f64 = text
            .trim()
            .parse()
            .map_err(|_| Error::at(self.mark, format!("expected a number, found `{text}`")))?;
        visitor.visit_f64(x).map_err(|e: Error| e.or_at(self.mark))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let text = self.scalar("text")?;
        visitor
            .visit_str(text)
            .map_err(|e: Error| e.or_at(self.mark))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_none()
        } else {
            visitor
                .visit_some(self)
                .map_err(|e: Error| e.or_at(self.mark))
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_unit()
        } else {
            Err(Error::at(
                self.mark,
                format!("expected nothing, found {}", self.describe()),
            ))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor
            .visit_newtype_struct(self)
            .map_err(|e: Error| e.or_at(self.mark))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.kind {
            Kind::Seq(items) => visitor
                .visit_seq(SeqAccess {
                    items: items.iter(),
                })
                .map_err(|e: Error| e.or_at(self.mark)),
            // `key:` with nothing after it: an empty list.
            _ if self.is_null() => visitor
                .visit_seq(SeqAccess { items: [].iter() })
                .map_err(|e: Error| e.or_at(self.mark)),
            _ => Err(Error::at(
                self.mark,
                format!(
                    "expected a list (`- item` lines or `[a, b]`), found {}",
                    self.describe()
                ),
            )),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.kind {
            Kind::Map(entries) => visitor
                .visit_map(MapAccess {
                    entries: entries.iter(),
                    value: None,
                })
                .map_err(|e: Error| e.or_at(self.mark)),
            _ if self.is_null() => visitor
                .visit_map(MapAccess {
                    entries: [].iter(),
                    value: None,
                })
                .map_err(|e: Error| e.or_at(self.mark)),
            _ => Err(Error::at(
                self.mark,
                format!(
                    "expected a map (`key: value` lines), found {}",
                    self.describe()
                ),
            )),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == SPANNED {
            return visitor
                .visit_map(SpannedAccess {
                    node: self,
                    step: 0,
                })
                .map_err(|e: Error| e.or_at(self.mark));
        }
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let text = self.scalar("a name")?;
        visitor
            .visit_enum(de::value::StrDeserializer::<Error>::new(text))
            .map_err(|e: Error| e.or_at(self.mark))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: String,
        #[serde(default)]
        count: Option<u32>,
        #[serde(default)]
        items: Vec<Spanned<String>>,
        #[serde(default)]
        level: Option<Level>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Level {
        Low,
        High,
    }

    fn err(text: &str) -> Error {
        from_str::<Doc>(text).expect_err("should fail")
    }

    #[test]
    fn values_and_places() {
        let doc: Doc =
            from_str("name: x\ncount: 3\nitems:\n  - a\n  - 'b'\nlevel: high\n").expect("doc");
        assert_eq!(doc.name, "x");
        assert_eq!(doc.count, Some(3));
        assert_eq!(doc.level, Some(Level::High));
        assert_eq!(doc.items[1].value, "b");
        assert_eq!(doc.items[1].mark, Mark { line: 5, column: 5 });
    }

    #[test]
    fn errors_point_at_the_offending_node() {
        let e = err("name: x\ncuont: 3\n");
        assert_eq!(e.mark.map(|m| m.line), Some(2));
        assert!(e.message.contains("unknown field `cuont`"), "{e}");
        let e = err("name: x\ncount: lots\n");
        assert_eq!(e.mark.map(|m| m.line), Some(2));
        assert!(e.message.contains("whole number"), "{e}");
        let e = err("name: x\ncount: 5000000000\n");
        assert_eq!(e.mark.map(|m| m.line), Some(2));
        let e = err("name: x\nlevel: medium\n");
        assert_eq!(e.mark.map(|m| m.line), Some(2));
        assert!(e.message.contains("unknown variant `medium`"), "{e}");
        let e = err("count: 1\n");
        assert!(e.message.contains("missing field `name`"), "{e}");
        let e = err("name: x\nitems: {a: 1}\n");
        assert_eq!(e.mark.map(|m| m.line), Some(2));
        let e = err("name: x\nname: y\n");
        assert_eq!(e.mark.map(|m| m.line), Some(2));
        assert!(e.message.contains("twice"), "{e}");
        let e = err("name: [x\n");
        assert!(e.message.contains("not valid YAML"), "{e}");
        let e = err("name: x\n---\nname: y\n");
        assert!(e.message.contains("one YAML document"), "{e}");
    }

    #[test]
    fn anchors_and_empty_documents() {
        let doc: Doc = from_str("name: &n x\nitems: [*n, y]\n").expect("doc");
        assert_eq!(doc.items[0].value, "x");
        assert!(from_str::<Doc>("").is_err());
        let empty: BTreeMap<String, String> = from_str("# nothing\n").expect("empty");
        assert!(empty.is_empty());
    }
}
