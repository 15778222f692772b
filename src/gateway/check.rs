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

/// Longest value compared for a suggestion: anything longer is no typo of a config name.
const MAX_SUGGEST_LEN: usize = 128;

/// Closest candidate by edit distance, if it is close enough to be a likely typo. Bounded:
/// a candidate whose length differs by more than the allowed distance is not compared, and
/// each comparison stops once the distance exceeds what is allowed, so the cost is at most
/// O(candidates × 128 × allowed) whatever the value's length.
pub fn did_you_mean<'a>(value: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if value.len() > MAX_SUGGEST_LEN {
        return None;
    }
    candidates
        .iter()
        .filter_map(|c| {
            let allowed = 2.max(c.chars().count() / 3);
            edit_distance_within(value, c, allowed).map(|d| (d, *c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance between `a` and `b` if it is at most `max`, else `None`. Only the
/// diagonal band of width `2 * max + 1` is computed.
pub fn edit_distance_within(a: &str, b: &str, max: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let big = max + 1;
    let mut prev: Vec<usize> = (0..=b.len()).map(|j| j.min(big)).collect();
    let mut cur = vec![big; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        let lo = (i + 1).saturating_sub(max);
        let hi = (i + 1 + max).min(b.len());
        cur.fill(big);
        if lo == 0 {
            cur[0] = (i + 1).min(big);
        }
        let mut best = cur[0];
        for j in lo.max(1)..=hi {
            let cost = usize::from(*ca != b[j - 1]);
            let d = (prev[j - 1] + cost).min(prev[j] + 1).min(cur[j - 1] + 1).min(big);
            cur[j] = d;
            best = best.min(d);
        }
        if best > max {
            return None;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    Some(prev[b.len()]).filter(|d| *d <= max)
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
    fn hopeless_suggestions_are_skipped() {
        let long = "x".repeat(1 << 20);
        assert_eq!(did_you_mean(&long, &["openai", "anthropic"]), None);
        assert_eq!(edit_distance_within("kitten", "sitting", 3), Some(3));
        assert_eq!(edit_distance_within("kitten", "sitting", 2), None);
        assert_eq!(edit_distance_within(&long, "x", 2), None);
    }

    #[test]
    fn suggestions_only_for_likely_typos() {
        assert_eq!(did_you_mean("opena", &["openai", "anthropic"]), Some("openai"));
        assert_eq!(did_you_mean("zzzzzz", &["openai", "anthropic"]), None);
    }
}
