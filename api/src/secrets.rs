//! Where the data plane finds the Secrets a route refers to.
//!
//! In a cluster the operator mounts each referenced Secret as a directory
//! `<secrets dir>/<secret name>/`, one file per key. Local mode uses the same
//! layout on disk, so ingest and worker read tokens and signing keys the same
//! way everywhere and secrets never pass through the route's ConfigMap.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The default directory the data plane reads secrets from; the operator
/// mounts Secrets here.
pub const DEFAULT_SECRETS_DIR: &str = "/var/run/fanout/secrets";

/// A key of a Secret in the route's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the route's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret. Defaults to `tokens` for ingest auth and
    /// `secret` for signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The file holding this key under `secrets_dir`, with `default_key` when
    /// the reference names no key.
    pub fn path(&self, secrets_dir: &Path, default_key: &str) -> PathBuf {
        secrets_dir
            .join(&self.name)
            .join(self.key.as_deref().unwrap_or(default_key))
    }
}

/// Key read for `spec.ingest.auth.secretRef` when it names none: one bearer
/// token per line.
pub const DEFAULT_AUTH_KEY: &str = "tokens";
/// Key read for `spec.destinations[].signing.secretRef` when it names none.
pub const DEFAULT_SIGNING_KEY: &str = "secret";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_uses_named_key_or_default() {
        let dir = Path::new("/s");
        let named = SecretKeyRef {
            name: "a".into(),
            key: Some("k".into()),
        };
        let unnamed = SecretKeyRef {
            name: "a".into(),
            key: None,
        };
        assert_eq!(named.path(dir, "tokens"), Path::new("/s/a/k"));
        assert_eq!(unnamed.path(dir, "tokens"), Path::new("/s/a/tokens"));
    }
}
