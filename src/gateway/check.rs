//! Config-check plumbing shared by every module that checks a piece of config: issues located
//! by path, did-you-mean suggestions, and `$NAME` secret references. The bottom layer: it
//! imports nothing from the gateway, so any feature can report into the same `Issues`.

use serde_json::Value;

/// One problem found in a config, located by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects issues while a config is checked.
#[derive(Default)]
pub struct Issues(pub Vec<ConfigIssue>);

impl Issues {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue { path: path.into(), message: message.into() });
    }

    /// `field: unknown X "v" (did you mean "w"?)` when a close candidate exists.
    pub fn unknown(&mut self, path: impl Into<String>, what: &str, value: &str, candidates: &[&str]) {
        let hint = match did_you_mean(value, candidates) {
            Some(s) => format!(" (did you mean \"{s}\"?)"),
            None => format!(" (expected one of: {})", candidates.join(", ")),
        };
        self.push(path, format!("unknown {what} \"{value}\"{hint}"));
    }

    /// Deserializes `value` into `T`, recording serde's complaint at `path` on failure.
    pub fn parse<T: serde::de::DeserializeOwned>(&mut self, path: &str, value: Value) -> Option<T> {
        serde_json::from_value(value).map_err(|e| self.push(path, e.to_string())).ok()
    }
}

/// A `$NAME` reference resolved through the host's secrets, or a literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    Literal(String),
}

impl SecretRef {
    pub fn parse(value: &str) -> SecretRef {
        match value.strip_prefix('$') {
            Some(name) if !name.is_empty() => SecretRef::Env(name.to_string()),
            _ => SecretRef::Literal(value.to_string()),
        }
    }
}

/// Closest candidate by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(value: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(value, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_refs() {
        assert_eq!(SecretRef::parse("$OPENAI_API_KEY"), SecretRef::Env("OPENAI_API_KEY".into()));
        assert_eq!(SecretRef::parse("sk-literal"), SecretRef::Literal("sk-literal".into()));
        assert_eq!(SecretRef::parse("$"), SecretRef::Literal("$".into()));
    }

    #[test]
    fn suggestions_only_for_likely_typos() {
        assert_eq!(did_you_mean("opena", &["openai", "anthropic"]), Some("openai"));
        assert_eq!(did_you_mean("zzzzzz", &["openai", "anthropic"]), None);
    }
}
