//! Reading request JSON whose shape depends on a tag (`"type"`, `"role"`) or on its JSON type
//! (a string or a list), with errors that name the path and the problem. serde's own tagged
//! and untagged enums buffer the value, which loses the path below it (and, for untagged
//! ones, the reason); the dialects' wire types instead buffer one value, look at its tag,
//! read it again as the variant's struct (`nested`, through `serde_path_to_error`) and carry
//! the inner path out in the error, which `dialect::parse_json` joins to the outer one
//! (`located`). Unknown fields are ignored, as the real APIs ignore them.

use std::fmt::Display;

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer};
use serde_json::Value;

/// One step of a path into a request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// How a dialect writes a path: `messages.0.content` (Anthropic) or `messages[0].content`
/// (OpenAI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathStyle {
    Dotted,
    Bracketed,
}

/// A path as the dialect writes it.
pub fn format_path(steps: &[Step], style: PathStyle) -> String {
    let mut out = String::new();
    for step in steps {
        match (step, style) {
            (Step::Index(i), PathStyle::Bracketed) => out.push_str(&format!("[{i}]")),
            (Step::Index(i), PathStyle::Dotted) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&i.to_string());
            }
            (Step::Key(key), _) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
        }
    }
    out
}

/// Opens and closes the path an error message carries; the steps are separated by `SEP`.
const NESTED: char = '\u{0}';
const SEP: char = '\u{1}';

/// An error at `steps` below the value being read.
pub fn error_at<E: de::Error>(steps: &[Step], message: impl Display) -> E {
    let steps = steps
        .iter()
        .map(|step| match step {
            Step::Key(key) => format!("k{key}"),
            Step::Index(i) => format!("i{i}"),
        })
        .collect::<Vec<_>>()
        .join(&SEP.to_string());
    E::custom(format!("{NESTED}{steps}{NESTED}{message}"))
}

/// An error about the field `key` of the value being read.
pub fn field_error<E: de::Error>(key: &str, message: impl Display) -> E {
    error_at(&[Step::Key(key.to_string())], message)
}

/// The path an error message carries (empty when none) and the message itself.
fn decode(message: &str) -> (Vec<Step>, String) {
    let Some(rest) = message.strip_prefix(NESTED) else {
        return (Vec::new(), message.to_string());
    };
    let Some((steps, message)) = rest.split_once(NESTED) else {
        return (Vec::new(), rest.to_string());
    };
    let steps = steps
        .split(SEP)
        .filter_map(|step| match step.split_at_checked(1) {
            Some(("i", i)) => i.parse().ok().map(Step::Index),
            Some(("k", key)) => Some(Step::Key(key.to_string())),
            _ => None,
        })
        .collect();
    (steps, message.to_string())
}

/// Where an error of `serde_path_to_error` is, in full, and what it says: its own path, then
/// the path its message carries; a missing field is named in the path.
pub fn located(path: &serde_path_to_error::Path, message: &str) -> (Vec<Step>, String) {
    use serde_path_to_error::Segment;
    let mut steps: Vec<Step> = path
        .iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Enum { variant } => Some(Step::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect();
    let (inner, mut message) = decode(message);
    steps.extend(inner);
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
        .map(str::to_string);
    if let Some(field) = missing {
        steps.push(Step::Key(field));
        message = "field required".into();
    }
    (steps, message)
}

/// Reads `value` as `T`; an error keeps its path below `value`.
pub fn nested<T: DeserializeOwned, E: de::Error>(value: Value) -> Result<T, E> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().clone();
        let (steps, message) = located(&path, &e.into_inner().to_string());
        error_at(&steps, message)
    })
}

/// A JSON object read for its tag: the tag's value (`None` when absent or null) and the
/// whole object, to be read again as the variant it names (`nested`).
pub fn tagged<'de, D: Deserializer<'de>>(
    deserializer: D,
    tag: &str,
) -> Result<(Option<String>, Value), D::Error> {
    let value = Value::deserialize(deserializer)?;
    if !value.is_object() {
        return Err(de::Error::custom(format!(
            "expected an object, got {}",
            describe(&value)
        )));
    }
    match value.get(tag) {
        None | Some(Value::Null) => Ok((None, value)),
        Some(Value::String(kind)) => Ok((Some(kind.clone()), value)),
        Some(other) => Err(field_error(
            tag,
            format!("expected a string, got {}", describe(other)),
        )),
    }
}

/// A value whose tag must say `name`, read as `T`; another tag is handed back (`Err`), for a
/// wire type that serves one kind and keeps or refuses the others by name.
pub fn only<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    deserializer: D,
    tag: &str,
    name: &str,
) -> Result<Result<T, String>, D::Error> {
    match tagged(deserializer, tag)? {
        (Some(kind), value) if kind == name => nested(value).map(Ok),
        (Some(kind), _) => Ok(Err(kind)),
        (None, _) => Err(field_error(tag, "field required")),
    }
}

/// The `text` of a text block or part.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Text {
    pub text: String,
}

/// What kind of JSON a value is, for error messages.
pub fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// What a list holds, for the error of a value that is neither a string nor a list.
pub trait Listed {
    /// The plural noun: `content blocks`, `strings`.
    const PLURAL: &'static str;
}

impl Listed for String {
    const PLURAL: &'static str = "strings";
}

/// A string or a list of `T`, as message content, a system prompt or a stop list can be
/// (and as a function's output is listed back: the string, or the list).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum TextOr<T> {
    Text(String),
    List(Vec<T>),
}

impl<'de, T: DeserializeOwned + Listed> Deserialize<'de> for TextOr<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) => Ok(TextOr::Text(text)),
            list @ Value::Array(_) => nested(list).map(TextOr::List),
            other => Err(de::Error::custom(format!(
                "must be a string or a list of {}, got {}",
                T::PLURAL,
                describe(&other)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Inner {
        #[allow(dead_code)]
        text: String,
    }

    #[derive(Debug)]
    enum Block {
        Inner(#[allow(dead_code)] Inner),
    }

    impl Listed for Block {
        const PLURAL: &'static str = "blocks";
    }

    impl<'de> Deserialize<'de> for Block {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            match tagged(d, "type")? {
                (Some(kind), value) if kind == "inner" => nested(value).map(Block::Inner),
                (Some(kind), _) => Err(field_error("type", format!("unknown type `{kind}`"))),
                (None, _) => Err(field_error("type", "field required")),
            }
        }
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[allow(dead_code)]
        content: TextOr<Block>,
    }

    fn error(json: &str) -> (String, String) {
        let value: Value = serde_json::from_str(json).unwrap();
        let e = serde_path_to_error::deserialize::<_, Outer>(value).unwrap_err();
        let path = e.path().clone();
        let (steps, message) = located(&path, &e.into_inner().to_string());
        (format_path(&steps, PathStyle::Dotted), message)
    }

    #[test]
    fn errors_below_a_tagged_value_keep_their_whole_path() {
        assert_eq!(
            error(r#"{"content": [{"type": "inner", "text": "a"}, {"type": "inner", "text": 5}]}"#),
            (
                "content.1.text".into(),
                "invalid type: integer `5`, expected a string".into()
            )
        );
        assert_eq!(
            error(r#"{"content": [{"type": "inner"}]}"#),
            ("content.0.text".into(), "field required".into())
        );
        assert_eq!(
            error(r#"{"content": [{"type": "foo"}]}"#),
            ("content.0.type".into(), "unknown type `foo`".into())
        );
        assert_eq!(
            error(r#"{"content": [{"type": 3}]}"#),
            (
                "content.0.type".into(),
                "expected a string, got a number".into()
            )
        );
        assert_eq!(
            error(r#"{"content": 5}"#),
            (
                "content".into(),
                "must be a string or a list of blocks, got a number".into()
            )
        );
        assert_eq!(error(r#"{}"#), ("content".into(), "field required".into()));
    }

    #[test]
    fn paths_in_both_styles() {
        let steps = [
            Step::Key("messages".into()),
            Step::Index(0),
            Step::Key("content".into()),
            Step::Index(2),
            Step::Key("type".into()),
        ];
        assert_eq!(
            format_path(&steps, PathStyle::Dotted),
            "messages.0.content.2.type"
        );
        assert_eq!(
            format_path(&steps, PathStyle::Bracketed),
            "messages[0].content[2].type"
        );
    }
}
