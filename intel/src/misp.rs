//! MISP events (`{"Event": {...}}`, as MISP exports them and its API
//! returns them): the event's attributes and its objects' attributes whose
//! `to_ids` flag is set. Attributes of types a sweep cannot use (email
//! addresses, file names, registry keys, ...) are skipped; composite types
//! (`domain|ip`, `filename|sha256`, `ip-dst|port`) give their usable parts.

use crate::indicator::{Indicator, Kind};
use crate::{Import, IntelError};
use serde_json::Value;

/// What a MISP attribute type holds: the kinds of its `|`-separated parts
/// (`None`: a part a sweep cannot use).
fn parts(misp_type: &str) -> Option<Vec<Option<Kind>>> {
    let kind = |t: &str| match t {
        // `ip` is the address part of composites such as `domain|ip`.
        "ip-src" | "ip-dst" | "ip" => Some(Kind::Ip),
        "domain" | "hostname" => Some(Kind::Domain),
        "url" | "uri" | "link" => Some(Kind::Url),
        "md5" => Some(Kind::Md5),
        "sha1" => Some(Kind::Sha1),
        "sha256" => Some(Kind::Sha256),
        _ => None,
    };
    let parts: Vec<Option<Kind>> = misp_type.split('|').map(kind).collect();
    parts.iter().any(Option::is_some).then_some(parts)
}

/// Reads a MISP event; also a bare event object or `{"response": [...]}`.
pub fn import(bytes: &[u8]) -> Result<Import, IntelError> {
    let document: Value = serde_json::from_slice(bytes)
        .map_err(|e| IntelError::Format(format!("not a MISP event: invalid JSON ({e})")))?;
    let events: Vec<&Value> = if let Some(event) = document.get("Event") {
        vec![event]
    } else if let Some(list) = document.get("response").and_then(Value::as_array) {
        list.iter().filter_map(|e| e.get("Event")).collect()
    } else if document.get("Attribute").is_some() || document.get("Object").is_some() {
        vec![&document]
    } else {
        return Err(IntelError::Format(
            "not a MISP event: expected {\"Event\": {...}} with Attribute or Object lists".into(),
        ));
    };
    let mut import = Import::default();
    let mut n = 0;
    for event in events {
        let direct = event
            .get("Attribute")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let in_objects = event
            .get("Object")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("Attribute").and_then(Value::as_array))
            .flatten();
        for attribute in direct.chain(in_objects) {
            n += 1;
            read_attribute(&mut import, n, attribute);
        }
    }
    Ok(import)
}

fn read_attribute(import: &mut Import, n: usize, attribute: &Value) {
    let uuid = attribute.get("uuid").and_then(Value::as_str).unwrap_or("?");
    let position = format!("attribute {n} ({uuid})");
    let to_ids = match attribute.get("to_ids") {
        Some(Value::Bool(flag)) => *flag,
        Some(Value::String(flag)) => flag == "1" || flag.eq_ignore_ascii_case("true"),
        Some(Value::Number(flag)) => flag.as_u64() == Some(1),
        _ => false,
    };
    if !to_ids {
        import.skipped += 1;
        return;
    }
    let (Some(misp_type), Some(value)) = (
        attribute.get("type").and_then(Value::as_str),
        attribute.get("value").and_then(Value::as_str),
    ) else {
        import.problem(position, "an attribute needs a type and a value");
        return;
    };
    let Some(kinds) = parts(misp_type) else {
        import.skipped += 1;
        return;
    };
    let values: Vec<&str> = if kinds.len() == 1 {
        vec![value]
    } else {
        value.split('|').collect()
    };
    if values.len() != kinds.len() {
        import.problem(
            position,
            format!(
                "a `{misp_type}` value has {} parts, not {}",
                kinds.len(),
                values.len()
            ),
        );
        return;
    }
    for (kind, part) in kinds.into_iter().zip(values) {
        let Some(kind) = kind else { continue };
        match Indicator::of_kind(kind, part) {
            Ok(indicator) => import.push(indicator),
            Err(why) => import.problem(position.clone(), format!("{misp_type}: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_marked_for_detection_are_imported_with_bad_ones_named() {
        let event = r#"{"Event": {
          "info": "Phishing campaign", "uuid": "e-1",
          "Attribute": [
            {"uuid": "a-1", "type": "ip-dst", "value": "203.0.113.50", "to_ids": true},
            {"uuid": "a-2", "type": "domain", "value": "login-portal.example", "to_ids": true},
            {"uuid": "a-3", "type": "comment", "value": "seen on Monday", "to_ids": false},
            {"uuid": "a-4", "type": "sha256", "value": "nothex", "to_ids": true},
            {"uuid": "a-5", "type": "email-src", "value": "a@example.org", "to_ids": true},
            {"uuid": "a-6", "type": "domain|ip", "value": "c2.example|198.51.100.9", "to_ids": "1"},
            {"uuid": "a-7", "type": "ip-dst|port", "value": "198.51.100.10|443", "to_ids": true}
          ],
          "Object": [{"name": "file", "Attribute": [
            {"uuid": "a-8", "type": "md5", "value": "D41D8CD98F00B204E9800998ECF8427E", "to_ids": true},
            {"uuid": "a-9", "type": "filename", "value": "invoice.exe", "to_ids": true}
          ]}]
        }}"#;
        let import = import(event.as_bytes()).expect("event");
        let values: Vec<_> = import.indicators.iter().map(|i| i.value.as_str()).collect();
        assert_eq!(
            values,
            [
                "203.0.113.50",
                "login-portal.example",
                "c2.example",
                "198.51.100.9",
                "198.51.100.10",
                "d41d8cd98f00b204e9800998ecf8427e"
            ]
        );
        assert_eq!(import.problems.len(), 1, "{:?}", import.problems);
        assert!(import.problems[0].position.contains("a-4"));
        assert_eq!(import.skipped, 3, "comment, email, filename");
        assert!(super::import(br#"{"nope": 1}"#).is_err());
    }
}
