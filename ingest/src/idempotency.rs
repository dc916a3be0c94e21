//! `Idempotency-Key`: a retried POST returns the first answer instead of
//! storing its events twice.
//!
//! With the header, the write is one Lua script run atomically by Redis: if
//! the route's idempotency key for it exists, the script returns the stored
//! answer and writes nothing; otherwise it adds the event(s) to the stream,
//! stores the answer with the route's `ingest.idempotencyTtl` and returns it.
//! Because Redis runs the script as one step, two concurrent requests with
//! the same key cannot both store. The key is per route, shared by the
//! `event` and `batch` endpoints.

use fanout_api::entry::{FIELD_BODY, FIELD_CONTENT_TYPE};

/// The header carrying the key.
pub const HEADER: &str = "idempotency-key";

/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 200;

/// Whether a header value is a usable key: 1 to 200 printable ASCII
/// characters (space included, control characters not).
pub fn is_valid_key(value: &[u8]) -> bool {
    (1..=MAX_KEY_LEN).contains(&value.len()) && value.iter().all(|b| (0x20..0x7f).contains(b))
}

/// The script. KEYS: the idempotency key, the stream. ARGV: TTL in
/// milliseconds, `event` or `batch`, the content-type field name, the body
/// field name, the content type, then one body per event. Returns
/// `{stored, answer}` where `stored` is 1 when the events were written now
/// and 0 when an earlier answer was replayed.
const SOURCE: &str = r#"
local previous = redis.call('GET', KEYS[1])
if previous then
  return {0, previous}
end
local ids = {}
for i = 6, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[2], '*', ARGV[3], ARGV[5], ARGV[4], ARGV[i])
end
local answer
if ARGV[2] == 'event' then
  answer = '{"id":"' .. ids[1] .. '"}'
else
  answer = '{"ids":["' .. table.concat(ids, '","') .. '"]}'
end
redis.call('SET', KEYS[1], answer, 'PX', ARGV[1])
return {1, answer}
"#;

/// The compiled script (its SHA is computed once; `invoke_async` uses
/// EVALSHA and falls back to EVAL when Redis does not know it yet).
pub fn script() -> redis::Script {
    redis::Script::new(SOURCE)
}

/// The field names the script writes, in the order of
/// [`fanout_api::entry::StoredEvent::fields`].
pub const FIELDS: [&str; 2] = [FIELD_CONTENT_TYPE, FIELD_BODY];

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_api::entry::StoredEvent;

    #[test]
    fn keys_are_one_to_two_hundred_printable_ascii_characters() {
        assert!(is_valid_key(b"a"));
        assert!(is_valid_key(b"order-42 retry:1/2"));
        assert!(is_valid_key("x".repeat(200).as_bytes()));
        assert!(!is_valid_key(b""));
        assert!(!is_valid_key("x".repeat(201).as_bytes()));
        assert!(!is_valid_key(b"tab\there"));
        assert!(!is_valid_key(b"del\x7f"));
        assert!(!is_valid_key("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn script_fields_follow_the_stored_event_layout() {
        let event = StoredEvent {
            content_type: "application/json".into(),
            body: b"1".to_vec(),
        };
        let names: Vec<&str> = event.fields().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, FIELDS);
    }
}
