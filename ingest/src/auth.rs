//! Bearer-token authentication of a route's ingest endpoint.
//!
//! A route with `spec.ingest.auth` accepts only requests carrying
//! `Authorization: Bearer <token>` with one of the tokens in its Secret,
//! mounted (or, in local mode, written) at
//! `<secrets dir>/<secretRef.name>/<secretRef.key or "tokens">`, one token
//! per line. Kubernetes updates mounted Secrets in place, so the file is
//! polled and re-read when it changes: tokens can be rotated without a
//! restart. Tokens are kept only as SHA-256 digests and compared in constant
//! time, so neither the content nor the length of a token leaks through
//! timing.

use std::{
    path::{Path, PathBuf},
    sync::RwLock,
    time::{Duration, SystemTime},
};

use http::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a token file cannot be used at startup.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("route {route}: cannot read ingest auth tokens from {path}: {source}")]
    Read {
        /// `<namespace>/<name>`.
        route: String,
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no token.
    #[error("route {route}: the ingest auth token file {path} holds no token (one per line)")]
    Empty {
        /// `<namespace>/<name>`.
        route: String,
        /// The token file.
        path: PathBuf,
    },
}

/// The tokens of a token file: one per line, surrounding whitespace removed,
/// blank lines and lines starting with `#` ignored.
pub fn parse_tokens(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// The token of an `Authorization: Bearer <token>` header (scheme
/// case-insensitive).
pub fn bearer_token(value: &HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

type Stamp = Option<(SystemTime, u64)>;

struct State {
    digests: Vec<[u8; 32]>,
    stamp: Stamp,
}

/// The accepted tokens of one route, reloaded from their file when it
/// changes.
pub struct TokenFile {
    route: String,
    path: PathBuf,
    state: RwLock<State>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .finish()
    }
}

impl TokenFile {
    /// Reads the tokens of `route` from `path`; a missing, unreadable or
    /// empty file is an error.
    pub fn load(route: &str, path: &Path) -> Result<Self, AuthError> {
        let stamp = stamp(path);
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            route: route.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        let digests = digests(&text);
        if digests.is_empty() {
            return Err(AuthError::Empty {
                route: route.to_owned(),
                path: path.to_owned(),
            });
        }
        Ok(Self {
            route: route.to_owned(),
            path: path.to_owned(),
            state: RwLock::new(State { digests, stamp }),
        })
    }

    /// Whether the header carries an accepted token. Every token is compared,
    /// in constant time, whatever matched.
    pub fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(token) = authorization.and_then(bearer_token) else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(token).into();
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut found = subtle::Choice::from(0);
        for digest in &state.digests {
            found |= digest.ct_eq(&presented);
        }
        found.into()
    }

    /// Re-reads the file if its modification time or size changed. A file
    /// that disappeared or cannot be read keeps the tokens in force (a
    /// Secret update swaps files, which can be seen half done); a file that
    /// now holds no token accepts none.
    pub fn reload_if_changed(&self) {
        let stamp = stamp(&self.path);
        if stamp.is_none() || stamp == self.state.read().unwrap_or_else(|e| e.into_inner()).stamp {
            if stamp.is_none() {
                tracing::warn!(route = %self.route, path = %self.path.display(), "ingest auth token file is missing; keeping the tokens in force");
            }
            return;
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let digests = digests(&text);
                if digests.is_empty() {
                    tracing::warn!(route = %self.route, path = %self.path.display(), "ingest auth token file holds no token: every request to this route is refused");
                } else {
                    tracing::info!(route = %self.route, tokens = digests.len(), "ingest auth tokens reloaded");
                }
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                *state = State { digests, stamp };
            }
            Err(error) => {
                tracing::warn!(route = %self.route, path = %self.path.display(), %error, "cannot re-read ingest auth tokens; keeping the tokens in force");
            }
        }
    }

    /// Polls the file every `interval` until the task is dropped.
    pub async fn watch(self: std::sync::Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let this = self.clone();
            // File system calls block; keep them off the request threads.
            let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
        }
    }
}

fn digests(text: &str) -> Vec<[u8; 32]> {
    parse_tokens(text)
        .into_iter()
        .map(|token| Sha256::digest(token.as_bytes()).into())
        .collect()
}

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lines_skip_blanks_and_comments() {
        let text = "# rotated 2026-01-01\n alpha \n\n#old\nbeta\r\n   \n";
        assert_eq!(parse_tokens(text), ["alpha", "beta"]);
        assert!(parse_tokens("# only comments\n\n").is_empty());
    }

    #[test]
    fn bearer_header_parsing() {
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert_eq!(bearer_token(&header("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer_token(&header("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer_token(&header("Basic abc")), None);
        assert_eq!(bearer_token(&header("Bearer ")), None);
        assert_eq!(bearer_token(&header("Bearer")), None);
    }

    #[test]
    fn accepts_only_listed_tokens_and_refuses_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "one\ntwo\n").unwrap();
        let tokens = TokenFile::load("default/r", &path).unwrap();
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(tokens.accepts(Some(&header("Bearer one"))));
        assert!(tokens.accepts(Some(&header("Bearer two"))));
        assert!(!tokens.accepts(Some(&header("Bearer three"))));
        assert!(!tokens.accepts(Some(&header("Bearer on"))));
        assert!(!tokens.accepts(None));

        std::fs::write(&path, "# none\n").unwrap();
        let err = TokenFile::load("default/r", &path).unwrap_err();
        assert!(err.to_string().contains("holds no token"), "{err}");
        let err = TokenFile::load("default/r", &dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }
}
