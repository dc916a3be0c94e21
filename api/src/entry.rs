//! How an event, a retry and a dead letter are laid out in Redis.
//!
//! Ingest writes [`StoredEvent`]s, the worker reads them, keeps
//! [`RetryState`] between attempts and writes [`DeadLetter`]s; the operator
//! only counts. Field names are short because they are repeated in every
//! stream entry.

/// Stream field holding the event body, exactly as received.
pub const FIELD_BODY: &str = "b";
/// Stream field holding the content type the event was POSTed with.
pub const FIELD_CONTENT_TYPE: &str = "ct";

/// The content type recorded for events whose request carried none usable
/// (each element of a batch is stored with this type).
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// One event as stored in the route's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The request's content type, forwarded to destinations.
    pub content_type: String,
    /// The JSON body, byte for byte as received.
    pub body: Vec<u8>,
}

/// Why a stream entry could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream entry has no `{0}` field")]
pub struct MissingField(&'static str);

impl StoredEvent {
    /// The entry's field/value pairs, in the order they are written.
    pub fn fields(&self) -> [(&'static str, &[u8]); 2] {
        [
            (FIELD_CONTENT_TYPE, self.content_type.as_bytes()),
            (FIELD_BODY, &self.body),
        ]
    }

    /// Reads an event back from a stream entry's fields.
    pub fn from_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, MissingField> {
        let (mut content_type, mut body) = (None, None);
        for (name, value) in fields {
            match name {
                FIELD_CONTENT_TYPE => {
                    content_type = Some(String::from_utf8_lossy(value).into_owned())
                }
                FIELD_BODY => body = Some(value.to_vec()),
                _ => {}
            }
        }
        Ok(Self {
            content_type: content_type.unwrap_or_else(|| JSON_CONTENT_TYPE.to_owned()),
            body: body.ok_or(MissingField(FIELD_BODY))?,
        })
    }
}

/// What the worker remembers of an entry between two attempts, stored in
/// the destination's retry hash (field: entry id) as `<attempts> <due ms>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryState {
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix time in milliseconds before which the next attempt must not
    /// start.
    pub due_unix_ms: u64,
}

impl RetryState {
    /// The hash value.
    pub fn encode(&self) -> String {
        format!("{} {}", self.attempts, self.due_unix_ms)
    }

    /// Parses a hash value written by [`RetryState::encode`].
    pub fn decode(value: &str) -> Option<Self> {
        let (attempts, due) = value.split_once(' ')?;
        Some(Self {
            attempts: attempts.parse().ok()?,
            due_unix_ms: due.parse().ok()?,
        })
    }
}

/// Dead-letter stream field: the entry id in the route's stream.
pub const DEAD_FIELD_ENTRY_ID: &str = "id";
/// Dead-letter stream field: the last HTTP status (empty when there was no
/// answer).
pub const DEAD_FIELD_STATUS: &str = "status";
/// Dead-letter stream field: why delivery ended.
pub const DEAD_FIELD_ERROR: &str = "error";
/// Dead-letter stream field: attempts made.
pub const DEAD_FIELD_ATTEMPTS: &str = "attempts";

/// An event that will not be delivered, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Id of the entry in the route's stream (the stream entry itself is
    /// trimmed once every destination is done with it).
    pub entry_id: String,
    /// The event.
    pub event: StoredEvent,
    /// The last HTTP status, if the destination answered.
    pub last_status: Option<u16>,
    /// Human-readable reason: the last error or answer.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
}

impl DeadLetter {
    /// The dead-letter stream entry's field/value pairs.
    pub fn fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (DEAD_FIELD_ENTRY_ID, self.entry_id.clone().into_bytes()),
            (
                FIELD_CONTENT_TYPE,
                self.event.content_type.clone().into_bytes(),
            ),
            (FIELD_BODY, self.event.body.clone()),
            (
                DEAD_FIELD_STATUS,
                self.last_status
                    .map(|s| s.to_string())
                    .unwrap_or_default()
                    .into_bytes(),
            ),
            (DEAD_FIELD_ERROR, self.error.clone().into_bytes()),
            (DEAD_FIELD_ATTEMPTS, self.attempts.to_string().into_bytes()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_event_round_trips_through_fields() {
        let event = StoredEvent {
            content_type: "application/json; charset=utf-8".into(),
            body: br#"{"a": 1}"#.to_vec(),
        };
        let back = StoredEvent::from_fields(event.fields()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn stored_event_without_body_is_refused() {
        let fields: [(&str, &[u8]); 1] = [(FIELD_CONTENT_TYPE, b"application/json")];
        assert!(StoredEvent::from_fields(fields).is_err());
    }

    #[test]
    fn retry_state_round_trips() {
        let state = RetryState {
            attempts: 3,
            due_unix_ms: 1_700_000_000_123,
        };
        assert_eq!(RetryState::decode(&state.encode()), Some(state));
        assert_eq!(RetryState::decode("x"), None);
    }
}
