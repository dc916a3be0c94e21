//! Which request content types are accepted as JSON.
//!
//! Ingest stores bodies as received and forwards the content type to the
//! destinations, so it only accepts types that promise JSON:
//! `application/json` and any `application/<something>+json` (for example
//! `application/cloudevents+json`), with parameters such as `charset`
//! allowed. Anything else is refused with 415 before the body is read.

/// Whether a `Content-Type` header value names a JSON media type.
pub fn is_json(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    if !kind.eq_ignore_ascii_case("application") {
        return false;
    }
    if subtype.eq_ignore_ascii_case("json") {
        return true;
    }
    let lower = subtype.len() > 5
        && subtype.is_char_boundary(subtype.len() - 5)
        && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json");
    lower
        && subtype[..subtype.len() - 5]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_json_and_structured_json_types_with_parameters() {
        for value in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/cloudevents+json",
            "application/vnd.api+json; charset=utf-8",
        ] {
            assert!(is_json(value.as_bytes()), "{value}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for value in [
            "",
            "text/plain",
            "application/xml",
            "application/jsonx",
            "application/+json",
            "text/json",
            "application",
            "application/json-seq",
            "multipart/form-data; boundary=x",
        ] {
            assert!(!is_json(value.as_bytes()), "{value}");
        }
        assert!(!is_json(b"application/\xffjson"));
    }
}
