//! Reading a routes file: the local-mode (and ConfigMap) form of routes.
//!
//! A routes file is exactly what one would `kubectl apply`: one or more
//! `FanoutRoute` YAML documents. A document without `metadata.namespace` is
//! in `default`. Every route is validated here, so a binary that loaded its
//! routes can trust them.

use std::{collections::BTreeMap, path::Path};

use crate::{
    route::FanoutRoute,
    validation::{FieldError, validate_route},
};

/// Why a routes file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RoutesFileError {
    /// The file could not be read.
    #[error("cannot read routes file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error (part of the message, not a separate cause, so it
        /// is printed once).
        error: std::io::Error,
    },
    /// A document is not a FanoutRoute.
    #[error("routes document {index}: {error}")]
    Parse {
        /// Position of the document in the file, from 0.
        index: usize,
        /// The YAML error.
        error: serde_yaml::Error,
    },
    /// A document has another apiVersion or kind.
    #[error(
        "routes document {index}: expected apiVersion fanout.dev/v1alpha1 and kind FanoutRoute, found {found}"
    )]
    WrongKind {
        /// Position of the document.
        index: usize,
        /// What the document declared.
        found: String,
    },
    /// A route breaks validation rules.
    #[error("route {route}: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// `<namespace>/<name>`.
        route: String,
        /// Every problem found.
        problems: Vec<FieldError>,
    },
    /// Two routes share a name or an ingest path.
    #[error("routes {first} and {second} both use {what}")]
    Conflict {
        /// The first route.
        first: String,
        /// The second route.
        second: String,
        /// What they share.
        what: String,
    },
    /// The file holds no route.
    #[error("the routes file holds no FanoutRoute")]
    Empty,
}

/// Reads, parses and validates a routes file.
pub fn load_routes_file(path: &Path) -> Result<Vec<FanoutRoute>, RoutesFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| RoutesFileError::Read {
        path: path.display().to_string(),
        error,
    })?;
    parse_routes(&text)
}

/// Parses and validates the text of a routes file.
pub fn parse_routes(text: &str) -> Result<Vec<FanoutRoute>, RoutesFileError> {
    let mut routes = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|error| RoutesFileError::Parse { index, error })?;
        if value.is_null() {
            continue; // an empty document, as after a trailing `---`
        }
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        if api_version != "fanout.dev/v1alpha1" || kind != "FanoutRoute" {
            return Err(RoutesFileError::WrongKind {
                index,
                found: format!("{api_version:?} {kind:?}"),
            });
        }
        let mut route: FanoutRoute = serde_yaml::from_value(value)
            .map_err(|error| RoutesFileError::Parse { index, error })?;
        route
            .metadata
            .namespace
            .get_or_insert_with(|| "default".to_owned());
        let problems = validate_route(&route);
        if !problems.is_empty() {
            return Err(RoutesFileError::Invalid {
                route: qualified_name(&route),
                problems,
            });
        }
        routes.push(route);
    }
    check_conflicts(&routes)?;
    if routes.is_empty() {
        return Err(RoutesFileError::Empty);
    }
    Ok(routes)
}

use serde::Deserialize as _;

/// `<namespace>/<name>` of a route.
pub fn qualified_name(route: &FanoutRoute) -> String {
    format!("{}/{}", route.namespace_or_default(), route.name())
}

fn check_conflicts(routes: &[FanoutRoute]) -> Result<(), RoutesFileError> {
    let mut names = BTreeMap::new();
    let mut paths = BTreeMap::new();
    for route in routes {
        let name = qualified_name(route);
        if let Some(first) = names.insert(name.clone(), name.clone()) {
            return Err(RoutesFileError::Conflict {
                first,
                second: name,
                what: "the same name".into(),
            });
        }
        if let Some(first) = paths.insert(route.spec.ingest.path.clone(), name.clone()) {
            return Err(RoutesFileError::Conflict {
                first,
                second: name,
                what: format!("ingest path {}", route.spec.ingest.path),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
apiVersion: fanout.dev/v1alpha1
kind: FanoutRoute
metadata: {name: orders}
spec:
  ingest: {path: /orders}
  destinations: [{name: a, url: "http://127.0.0.1:9/a"}]
---
apiVersion: fanout.dev/v1alpha1
kind: FanoutRoute
metadata: {name: users, namespace: crm}
spec:
  ingest: {path: /users, maxBatchEvents: 10}
  destinations: [{name: b, url: "http://127.0.0.1:9/b", timeout: 2s, retry: {maxAttempts: 3}}]
---
"#;

    #[test]
    fn reads_every_document_with_defaults() {
        let routes = parse_routes(TWO).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].namespace_or_default(), "default");
        assert_eq!(routes[0].spec.ingest.max_batch_events, 1000);
        assert_eq!(routes[0].spec.destinations[0].max_in_flight, 64);
        assert_eq!(routes[1].namespace_or_default(), "crm");
        assert_eq!(routes[1].spec.ingest.max_batch_events, 10);
        let retry = &routes[1].spec.destinations[0].retry;
        assert_eq!(retry.max_attempts, 3);
        assert_eq!(retry.initial_backoff.to_string(), "1s");
    }

    #[test]
    fn refuses_other_kinds_invalid_routes_and_conflicts() {
        let other = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
        assert!(matches!(
            parse_routes(other),
            Err(RoutesFileError::WrongKind { .. })
        ));
        let invalid = TWO.replace("/users", "users");
        let err = parse_routes(&invalid).unwrap_err();
        assert!(err.to_string().contains("spec.ingest.path"), "{err}");
        let same_path = TWO.replace("/users", "/orders");
        assert!(matches!(
            parse_routes(&same_path),
            Err(RoutesFileError::Conflict { .. })
        ));
        assert!(matches!(parse_routes("---\n"), Err(RoutesFileError::Empty)));
        let typo = TWO.replace("maxBatchEvents: 10", "maxBatchEvents: ten");
        assert!(matches!(
            parse_routes(&typo),
            Err(RoutesFileError::Parse { index: 1, .. })
        ));
    }
}
