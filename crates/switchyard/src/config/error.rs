//! Config errors: [`ConfigFileError`], and how a validation error is tied to the file, the
//! line and the field it is about.
use std::fmt;

use super::locate::{line_col, Entry, Layout};
use super::{Config, NodeConfig};
use crate::error::ConfigError;

/// What part of a config an error is about.
#[derive(Debug, Clone, Copy)]
pub(super) enum Owner {
    /// The top-level `capabilities`.
    Capabilities,
    /// The `[weights]` table.
    Weights,
    /// `nodes[i]`.
    Node(usize),
    /// `chains[i]`.
    Chain(usize),
    /// The `[admission]` table.
    Admission,
    /// `tenants[i]`.
    Tenant(usize),
}

impl Config {
    /// An error that cannot be tied to an entry of the config.
    pub(super) fn unlocated(&self, e: ConfigError) -> ConfigFileError {
        ConfigFileError::from(Detail {
            file: self.source_name().to_string(),
            line: None,
            column: None,
            context: None,
            field: None,
            message: e.to_string(),
            cause: Cause::Config(e),
        })
    }

    /// Locates a validation error in the source text.
    pub(super) fn error(&self, e: ConfigError, owner: Owner) -> ConfigFileError {
        let layout = Layout::scan(&self.origin.text);
        let (context, field) = match owner {
            Owner::Capabilities => (None, "capabilities".to_string()),
            Owner::Weights => (
                Some("[weights]".to_string()),
                match &e {
                    ConfigError::InvalidNumber { field, .. }
                    | ConfigError::InvalidSetting { field, .. } => field.to_string(),
                    _ => "weights".to_string(),
                },
            ),
            Owner::Node(i) => {
                let node = self.nodes.get(i);
                let name = node.map_or("", |n| n.name.as_str());
                (Some(format!("node {name:?}")), node_field(&e, node))
            }
            Owner::Chain(i) => {
                let name = self.chains.get(i).map_or("", |c| c.name.as_str());
                (Some(format!("chain {name:?}")), chain_field(&e))
            }
            Owner::Admission => (
                Some("[admission]".to_string()),
                match &e {
                    ConfigError::InvalidSetting { field, .. } => field.to_string(),
                    _ => "headroom".to_string(),
                },
            ),
            Owner::Tenant(i) => {
                let id = self.tenants.get(i).map_or(0, |t| t.id);
                let field = match &e {
                    ConfigError::InvalidSetting { field, .. } if *field != "tenant" => {
                        field.to_string()
                    }
                    _ => "id".to_string(),
                };
                (Some(format!("tenant {id}")), field)
            }
        };
        let path: Vec<&str> = field.split('.').collect();
        let line = match owner {
            Owner::Capabilities | Owner::Weights => layout.root_key_line(&path),
            Owner::Node(i) => self.entry_line(&layout, "node", &self.names_of_nodes(), i, &path),
            Owner::Chain(i) => self.entry_line(&layout, "chain", &self.names_of_chains(), i, &path),
            Owner::Admission => {
                let mut p = vec!["admission"];
                p.extend(&path);
                layout.root_key_line(&p)
            }
            Owner::Tenant(i) => match layout.entries("tenant").get(i) {
                Some(e) => e.key_line(&path).or(Some(e.line)),
                None => layout.root_key_line(&["tenant"]),
            },
        };
        ConfigFileError::from(Detail {
            file: self.source_name().to_string(),
            line,
            column: None,
            context,
            field: Some(field),
            message: describe(&e),
            cause: Cause::Config(e),
        })
    }

    fn names_of_nodes(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    fn names_of_chains(&self) -> Vec<&str> {
        self.chains.iter().map(|c| c.name.as_str()).collect()
    }

    /// The line of `path` in entry `i` of the `[[kind]]` tables, or of the entry's `name`, or
    /// of its header; `None` when the text does not hold that entry.
    fn entry_line(
        &self,
        layout: &Layout,
        kind: &str,
        names: &[&str],
        i: usize,
        path: &[&str],
    ) -> Option<usize> {
        let text = &*self.origin.text;
        let entries = layout.entries(kind);
        let name_of = |e: &Entry<'_>| e.string_value(text, &["name"]);
        let wanted = names.get(i).copied();
        // The entry with the same index when it still has the same name, else the first entry
        // with that name (the fields may have changed since parsing).
        let entry = entries
            .get(i)
            .filter(|e| entries.len() == names.len() && name_of(e).as_deref() == wanted)
            .or_else(|| {
                wanted.and_then(|w| entries.iter().find(|e| name_of(e).as_deref() == Some(w)))
            });
        match entry {
            Some(e) => e
                .key_line(path)
                .or_else(|| e.key_line(&["name"]))
                .or(Some(e.line)),
            // `node = [{ ... }]`: the inline array's line.
            None => layout.root_key_line(&[kind]),
        }
    }
}

/// The field of a node that a validation error is about.
fn node_field(e: &ConfigError, node: Option<&NodeConfig>) -> String {
    let scores = node.map(|n| &n.capability_scores);
    match e {
        ConfigError::InvalidNumber { field, .. } if *field == "capability_score" => {
            // The first score out of 0–1, in the order validation checks them.
            match scores.and_then(|s| {
                s.iter()
                    .find(|(_, v)| !(v.is_finite() && (0.0..=1.0).contains(*v)))
            }) {
                Some((cap, _)) => format!("capability_scores.{cap}"),
                None => "capability_scores".to_string(),
            }
        }
        ConfigError::InvalidNumber { field, .. }
        | ConfigError::ZeroCapacity { field, .. }
        | ConfigError::CapacityTooLarge { field, .. } => field.to_string(),
        ConfigError::UnknownCapability(cap) => {
            if node.is_some_and(|n| !n.capabilities.contains(cap))
                && scores.is_some_and(|s| s.contains_key(cap))
            {
                format!("capability_scores.{cap}")
            } else {
                "capabilities".to_string()
            }
        }
        _ => "name".to_string(),
    }
}

/// The field of a chain that a validation error is about.
fn chain_field(e: &ConfigError) -> String {
    match e {
        ConfigError::BadChain { .. } | ConfigError::UnknownNode(_) => "stages",
        ConfigError::UnknownCapability(_) => "capabilities",
        _ => "name",
    }
    .to_string()
}

/// A validation error without its owner (the message names the owner and the field already).
fn describe(e: &ConfigError) -> String {
    match e {
        ConfigError::InvalidNumber { value, .. } => {
            format!("must be finite and in range, got {value}")
        }
        ConfigError::ZeroCapacity { .. } => "must be greater than zero".to_string(),
        ConfigError::CapacityTooLarge { max, .. } => format!("must be at most {max}"),
        ConfigError::UnknownCapability(cap) => {
            format!("unknown capability {cap:?} (not in the top-level `capabilities`)")
        }
        ConfigError::UnknownNode(n) => format!("{n:?} is not a node of this config"),
        ConfigError::InvalidSetting { reason, .. } => reason.to_string(),
        other => other.to_string(),
    }
}

/// An invalid or unreadable config: names the file, the line (1-based) and the field.
///
/// Displays as ``file:line: context: field `name`: what is wrong``, for instance
/// ``fleet.toml:14: node "gpu-1": field `weight`: must be finite and in range, got NaN``;
/// TOML syntax and type errors also carry the column (`file:line:column: ...`).
#[derive(Debug)]
pub struct ConfigFileError(Box<Detail>);

#[derive(Debug)]
pub(super) struct Detail {
    pub(super) file: String,
    pub(super) line: Option<usize>,
    pub(super) column: Option<usize>,
    pub(super) context: Option<String>,
    pub(super) field: Option<String>,
    pub(super) message: String,
    pub(super) cause: Cause,
}

impl From<Detail> for ConfigFileError {
    fn from(d: Detail) -> Self {
        Self(Box::new(d))
    }
}

#[derive(Debug)]
pub(super) enum Cause {
    Io(std::io::Error),
    Toml(toml::de::Error),
    Config(ConfigError),
}

impl ConfigFileError {
    /// The file (the source name given to [`Config::parse`]).
    pub fn file(&self) -> &str {
        &self.0.file
    }

    /// The line, from 1; `None` for an unreadable file, or for an entry of a changed config
    /// that is no longer in the text.
    pub fn line(&self) -> Option<usize> {
        self.0.line
    }

    /// The column, from 1 (TOML syntax and type errors only).
    pub fn column(&self) -> Option<usize> {
        self.0.column
    }

    /// The field, e.g. `weight`, `capability_scores.code`, `weights.load` or `stages`.
    pub fn field(&self) -> Option<&str> {
        self.0.field.as_deref()
    }

    /// The entry the error is in, e.g. `node "gpu-1"`, `chain "guarded"` or `[weights]`.
    pub fn context(&self) -> Option<&str> {
        self.0.context.as_deref()
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The router's own error, for values it refused.
    pub fn config_error(&self) -> Option<&ConfigError> {
        match &self.0.cause {
            Cause::Config(e) => Some(e),
            _ => None,
        }
    }

    pub(super) fn from_toml(file: &str, text: &str, e: toml::de::Error) -> Self {
        let layout = Layout::scan(text);
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        // `unknown field `x``, `missing field `x``, `duplicate key `x``: the message names it.
        let named = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field `") || message.contains("key `"))
            .map(str::to_string);
        let (line, column, context, field) = match e.span() {
            Some(span) => {
                let (line, column) = line_col(text, span.start);
                let (context, key) = layout.at(text, span.start);
                let field = match (key, named) {
                    (Some(k), Some(n)) if !k.ends_with(n.as_str()) => Some(format!("{k}.{n}")),
                    (Some(k), _) => Some(k),
                    (None, n) => n,
                };
                (line, Some(column), context, field)
            }
            None => {
                // No position: the key the message names, if the text has it; else line 1.
                let line = named
                    .as_deref()
                    .and_then(|n| layout.any_key_line(n))
                    .unwrap_or(1);
                (line, None, None, named)
            }
        };
        ConfigFileError::from(Detail {
            file: file.to_string(),
            line: Some(line),
            column,
            context,
            field,
            message,
            cause: Cause::Toml(e),
        })
    }
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.file)?;
        if let Some(line) = self.0.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.0.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(c) = &self.0.context {
            write!(f, "{c}: ")?;
        }
        if let Some(field) = &self.0.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for ConfigFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.cause {
            Cause::Io(e) => Some(e),
            Cause::Toml(e) => Some(e),
            Cause::Config(e) => Some(e),
        }
    }
}
