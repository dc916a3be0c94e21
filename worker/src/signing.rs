//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256>`
//! over `"{webhook-id}.{webhook-timestamp}.{body}"`.
//!
//! The key is read once at startup from the mounted Secret. A value of the
//! form `whsec_<base64>` is the Standard Webhooks encoding and is decoded;
//! any other value is used as raw bytes (trailing newline trimmed), so a
//! secret created with `kubectl create secret generic --from-literal` works.

use std::{fmt, path::Path};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a signing key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(#[from] std::io::Error),
    /// `whsec_` followed by something that is not base64.
    #[error("the value after `whsec_` is not base64")]
    Base64,
    /// The key is empty.
    #[error("the secret is empty")]
    Empty,
}

/// A destination's signing key. Its bytes never appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Reads the key from a Secret file.
    pub fn read(path: &Path) -> Result<Self, SigningError> {
        let raw = std::fs::read(path)?;
        Self::parse(&raw)
    }

    /// Parses the content of a Secret value.
    pub fn parse(raw: &[u8]) -> Result<Self, SigningError> {
        let mut value = raw;
        while let [rest @ .., b'\n' | b'\r'] = value {
            value = rest;
        }
        let key = match value.strip_prefix(SECRET_PREFIX.as_bytes()) {
            Some(encoded) => STANDARD.decode(encoded).map_err(|_| SigningError::Base64)?,
            None => value.to_vec(),
        };
        if key.is_empty() {
            return Err(SigningError::Empty);
        }
        Ok(Self(key))
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_whsec_and_keeps_raw_values() {
        let key = SigningKey::parse(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        assert_eq!(key.bytes().len(), 24);
        let raw = SigningKey::parse(b"plain-secret\r\n").unwrap();
        assert_eq!(raw.bytes(), b"plain-secret");
        assert!(matches!(
            SigningKey::parse(b"whsec_!!!"),
            Err(SigningError::Base64)
        ));
        assert!(matches!(SigningKey::parse(b"\n"), Err(SigningError::Empty)));
        assert_eq!(format!("{raw:?}"), "SigningKey(..)");
    }

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks specification and its
        // reference libraries.
        let key = SigningKey::parse(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
