//! De-duplication by an event's own id (`spec.ingest.eventIdField`).
//!
//! When a route names a member, say `id`, every event that is a JSON object
//! whose top-level `id` is a non-empty string or a number is stored only the
//! first time that id is seen on the route. The route's key
//! [`fanout_api::RouteKeys::event_id`] remembers the entry id of the first
//! event for `ingest.idempotencyTtl`; a later event with the same id is not
//! stored and is answered with that entry id.
//!
//! A request whose events carry ids is written by one Lua script ([`script`])
//! that reads every id's key, then adds the events not seen before and
//! remembers their ids, all in one atomic step: a batch stays all or
//! nothing, two concurrent requests with one id store it once, and a batch
//! holding an id twice stores it once. Requests whose events carry no id
//! keep the ordinary (faster) writes of [`crate::store`].
//!
//! The id is the member's text: a string decoded (escapes resolved), a
//! number exactly as written (`1.0` and `1` are different ids, the string
//! `"1"` and the number `1` the same one).

use std::borrow::Cow;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Longest id accepted, in bytes of its text; a longer one refuses the
/// request (400 `invalid_event_id`).
pub const MAX_ID_LEN: usize = 200;

/// Why an event's id cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventIdError {
    /// The id's text is longer than [`MAX_ID_LEN`] bytes.
    #[error("the event id is {len} bytes long, more than the limit of {MAX_ID_LEN}")]
    TooLong {
        /// Bytes of the id's text.
        len: usize,
    },
}

/// The id of `event` (one JSON value, already checked) under the top-level
/// member `field`: `None` when the event is not an object, lacks the member,
/// or the member is neither a non-empty string nor a number. When the
/// object holds the member twice, the first one counts.
pub fn event_id(event: &[u8], field: &str) -> Result<Option<String>, EventIdError> {
    let starts_object = event
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !starts_object {
        return Ok(None);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(event);
    // The event was checked as JSON already; should it fail here, it has no id.
    let Ok(Some(raw)) = deserializer.deserialize_map(FindMember { field }) else {
        return Ok(None);
    };
    let text = raw.get();
    let id = match text.as_bytes().first() {
        Some(b'"') => match serde_json::from_str::<String>(text) {
            Ok(id) if !id.is_empty() => id,
            _ => return Ok(None),
        },
        Some(b'-' | b'0'..=b'9') => text.to_owned(),
        _ => return Ok(None),
    };
    if id.len() > MAX_ID_LEN {
        return Err(EventIdError::TooLong { len: id.len() });
    }
    Ok(Some(id))
}

/// Walks an object's members, keeping the raw value of the first one named
/// `field` and skipping the others without building them.
struct FindMember<'f> {
    field: &'f str,
}

impl<'de> Visitor<'de> for FindMember<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(MemberName(name)) = map.next_key()? {
            if found.is_none() && name == self.field {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A member name, borrowed from the body unless it holds escapes.
struct MemberName<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = MemberName<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a member name")
            }

            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Borrowed(name)))
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(name.to_owned())))
            }

            fn visit_string<E: de::Error>(self, name: String) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(name)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// The script. KEYS: the stream, then one key per distinct id of the
/// request. ARGV: TTL in milliseconds, the content-type field name, the body
/// field name, the content type, then for each event the index in KEYS of
/// its id's key (`0`: no id) and its body. Returns `{stored, ids}`: how many
/// events were written now, and the entry id answered for each event, in
/// order.
///
/// Every read comes before the first write, so Redis' out-of-memory check
/// (made at a script's first write) refuses the whole script or none of it.
const SOURCE: &str = r#"
local known = {}
for k = 2, #KEYS do
  known[k] = redis.call('GET', KEYS[k])
end
local ids, stored = {}, 0
for i = 5, #ARGV, 2 do
  local k = tonumber(ARGV[i])
  local id = known[k]
  if not id then
    id = redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[4], ARGV[3], ARGV[i + 1])
    stored = stored + 1
    if k > 0 then
      redis.call('SET', KEYS[k], id, 'PX', ARGV[1])
      known[k] = id
    end
  end
  ids[#ids + 1] = id
end
return {stored, ids}
"#;

/// The compiled script (EVALSHA, falling back to EVAL once per connection
/// that does not know it yet).
pub fn script() -> redis::Script {
    redis::Script::new(SOURCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(event: &str) -> Option<String> {
        event_id(event.as_bytes(), "id").unwrap()
    }

    #[test]
    fn strings_and_numbers_are_ids() {
        assert_eq!(id(r#"{"id":"a-1","n":2}"#).as_deref(), Some("a-1"));
        assert_eq!(
            id(r#" {"n":{"id":"inner"}, "id": 42 } "#).as_deref(),
            Some("42")
        );
        assert_eq!(id(r#"{"id":-1.5e3}"#).as_deref(), Some("-1.5e3"));
        // Escapes are resolved, in values and in member names.
        assert_eq!(id(r#"{"\u0069d":"x\u0041"}"#).as_deref(), Some("xA"));
        // The first of two members with the name counts.
        assert_eq!(
            id(r#"{"id":"first","id":"second"}"#).as_deref(),
            Some("first")
        );
        assert_eq!(
            event_id(br#"{"id":1,"eventId":"e"}"#, "eventId")
                .unwrap()
                .as_deref(),
            Some("e")
        );
    }

    #[test]
    fn other_events_have_no_id() {
        for event in [
            r#"{"n":1}"#,
            r#"{"id":""}"#,
            r#"{"id":null}"#,
            r#"{"id":true}"#,
            r#"{"id":{"a":1}}"#,
            r#"{"id":["a"]}"#,
            r#"{"ID":"a"}"#,
            r#"{"nested":{"id":"a"}}"#,
            r#"[{"id":"a"}]"#,
            r#""id""#,
            "42",
            "null",
        ] {
            assert_eq!(id(event), None, "{event}");
        }
    }

    #[test]
    fn ids_over_the_limit_are_refused() {
        let at_limit = format!(r#"{{"id":"{}"}}"#, "x".repeat(MAX_ID_LEN));
        assert_eq!(id(&at_limit).map(|i| i.len()), Some(MAX_ID_LEN));
        let over = format!(r#"{{"id":"{}"}}"#, "x".repeat(MAX_ID_LEN + 1));
        assert_eq!(
            event_id(over.as_bytes(), "id"),
            Err(EventIdError::TooLong {
                len: MAX_ID_LEN + 1
            })
        );
        let long_number = format!(r#"{{"id":{}}}"#, "9".repeat(MAX_ID_LEN + 1));
        assert!(event_id(long_number.as_bytes(), "id").is_err());
    }
}
