//! Extra fields read from a record by configured JSON pointers (today: breakdown dimension
//! values), beside the built-in user, event, time, feature and session id.
//!
//! They ride the decoder's one pass: their pointers go into the same trie, each extra
//! field in a capture slot of its own after the built-in ones, with the same "first
//! present wins, `null` is absent" rule. A record whose extra pointers match nothing costs
//! nothing more, and with none configured the trie and the walk are exactly as before —
//! which is why this is not a second pass over a `serde_json::Value`.
//!
//! What lives here is what is particular to extra fields: how their pointer lists enter the
//! trie, and how a captured scalar becomes a value.

use crate::decode::Scalar;
use crate::dimensions::{MAX_DIMENSIONS, ValueBuffer};

/// Capture slots for extra fields.
pub const MAX_EXTRA_FIELDS: usize = MAX_DIMENSIONS;

/// Calls `insert(slot, pointer, priority)` for every pointer of every extra field, `slot`
/// being the field's position; a pointer's priority is its position in its list.
pub(crate) fn insert_extra<'a>(
    fields: impl Iterator<Item = &'a [String]>,
    mut insert: impl FnMut(usize, &str, u8),
) {
    for (slot, paths) in fields.enumerate().take(MAX_EXTRA_FIELDS) {
        for (priority, pointer) in paths.iter().enumerate().take(usize::from(u8::MAX)) {
            insert(slot, pointer, priority as u8);
        }
    }
}

/// A dimension's value from what its pointers captured, written to `values`: text as is
/// (trimmed), numbers and booleans as their JSON text, an object or array `__invalid__`,
/// nothing `__none__`.
pub(crate) fn push_dimension_value(values: &mut ValueBuffer, captured: Option<(u8, Scalar<'_>)>) {
    let Some((_, scalar)) = captured else {
        return values.push_none();
    };
    match scalar {
        Scalar::Str(s) => values.push_text(&s),
        Scalar::Int(i) => values.push_text(itoa::Buffer::new().format(i)),
        Scalar::UInt(u) => values.push_text(itoa::Buffer::new().format(u)),
        // Rust's shortest round-trip form: `2.5`, but `2.0` becomes `2`.
        Scalar::Float(f) => values.push_written(|text| {
            use std::fmt::Write;
            write!(text, "{f}").expect("writing to a String cannot fail");
        }),
        Scalar::Bool(b) => values.push_text(if b { "true" } else { "false" }),
        // A number's raw text (captured so for the money fields, when they share the key).
        Scalar::Number(text) => values.push_text(text),
        Scalar::Unusable => values.push_invalid(),
    }
}

#[cfg(test)]
mod tests {
    use crate::decode::Decoder;
    use crate::dimensions::{DimValue, DimensionSettings};
    use crate::settings::EngineSettings;

    fn decoder() -> Decoder {
        let dimension = |name: &str, paths: &[&str]| DimensionSettings {
            name: name.into(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            max_values: 25,
        };
        Decoder::new(&EngineSettings {
            dimensions: vec![
                dimension("platform", &["/platform", "/properties/$os"]),
                dimension("version", &["/app/version"]),
            ],
            ..EngineSettings::default()
        })
    }

    fn values(json: &str) -> [DimValue<'_>; 2] {
        let event = decoder().decode(json.as_bytes()).unwrap();
        event.dimensions.try_into().expect("two dimensions")
    }

    fn text(s: &str) -> DimValue<'_> {
        DimValue::Text(s.into())
    }

    #[test]
    fn first_present_pointer_wins_and_scalars_are_their_text() {
        let base = r#""user_id":"u","event":"login","ts":1"#;
        let cases = [
            (
                r#""platform":" ios ","app":{"version":"2.1"}"#,
                [text("ios"), text("2.1")],
            ),
            (
                r#""platform":null,"properties":{"$os":"Android"}"#,
                [text("Android"), DimValue::None],
            ),
            (r#""app":{"version":3}"#, [DimValue::None, text("3")]),
            (
                r#""app":{"version":2.5},"platform":true"#,
                [text("true"), text("2.5")],
            ),
            (
                r#""platform":"","app":{"version":{"major":2}}"#,
                [DimValue::Invalid, DimValue::Invalid],
            ),
            (
                r#""platform":[1],"app":"2.1""#,
                [DimValue::Invalid, DimValue::None],
            ),
        ];
        for (fields, want) in cases {
            let json = format!("{{{base},{fields}}}");
            assert_eq!(values(&json), want, "{json}");
        }
    }

    #[test]
    fn without_dimensions_there_are_no_values() {
        let event = Decoder::new(&EngineSettings::default())
            .decode(br#"{"user_id":"u","event":"login","platform":"ios"}"#)
            .unwrap();
        assert!(event.dimensions.is_empty());
    }
}
