//! Kubernetes label selectors in the string syntax of `kubectl -l`.
//!
//! A selector is a comma-separated list of requirements, all of which must
//! hold (AND):
//!
//! | syntax | holds when |
//! |---|---|
//! | `app=foo`, `app==foo` | label `app` is present and equals `foo` |
//! | `app!=foo` | label `app` is absent or differs from `foo` |
//! | `env in (a,b)` | label `env` is present and one of `a`, `b` |
//! | `env notin (a)` | label `env` is absent or none of the values |
//! | `key` | label `key` is present |
//! | `!key` | label `key` is absent |
//! | `n>3`, `n<3` | label `n` is present, and both it and the bound are integers with that order |
//!
//! Spaces around keys, values and operators are ignored. The empty
//! selector selects everything. Keys are `[prefix/]name` with a name of at
//! most 63 characters (alphanumerics, `-`, `_`, `.`, starting and ending
//! alphanumeric) and an optional DNS-subdomain prefix; values follow the
//! name rule but may be empty. Unlike the API server, an empty value list
//! (`env in ()`) is rejected as almost certainly a mistake.
//!
//! [`LabelSelector`]'s `Display` prints the canonical form (`==` as `=`,
//! set values sorted), which the API server accepts as a `labelSelector`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// A parsed label selector: all of its requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// One requirement of a [`LabelSelector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the key's value is tested.
    pub operator: Operator,
    /// The values the operator tests against: one for `=`, `!=`, `>`,
    /// `<`; one or more (sorted, distinct) for `in`/`notin`; none for
    /// `exists`/`!`.
    pub values: BTreeSet<String>,
}

/// The operator of a [`Requirement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` or `key==value`.
    Equals,
    /// `key!=value`.
    NotEquals,
    /// `key in (v1,v2)`.
    In,
    /// `key notin (v1,v2)`.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>n` (integers).
    GreaterThan,
    /// `key<n` (integers).
    LessThan,
}

/// Why a label selector string did not parse. Every variant names the
/// offending part of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// A requirement between commas is empty (`a=b,,c`, trailing comma).
    #[error("empty requirement at byte {position} of label selector {selector:?}")]
    EmptyRequirement {
        /// The whole selector.
        selector: String,
        /// Byte offset of the empty requirement.
        position: usize,
    },
    /// A key is not a valid label key.
    #[error("invalid label key {key:?} in {requirement:?}: {reason}")]
    InvalidKey {
        /// The bad key.
        key: String,
        /// The requirement it appeared in.
        requirement: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value is not a valid label value.
    #[error("invalid label value {value:?} in {requirement:?}: {reason}")]
    InvalidValue {
        /// The bad value.
        value: String,
        /// The requirement it appeared in.
        requirement: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Something other than an operator follows a key.
    #[error(
        "expected an operator (=, ==, !=, in, notin, >, <) or ',' after key {key:?} in \
         {requirement:?}, found {found:?}"
    )]
    ExpectedOperator {
        /// The key.
        key: String,
        /// The requirement.
        requirement: String,
        /// What came instead.
        found: String,
    },
    /// `in`/`notin` is not followed by a parenthesised list, or the list is
    /// not closed.
    #[error("expected a parenthesised value list after {operator:?} in {requirement:?}: {reason}")]
    BadValueList {
        /// `in` or `notin`.
        operator: &'static str,
        /// The requirement.
        requirement: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Input continues after a complete requirement (`a=b c`, `!a=b`).
    #[error("unexpected {found:?} after the requirement in {requirement:?}")]
    Trailing {
        /// The unexpected text.
        found: String,
        /// The requirement.
        requirement: String,
    },
    /// `>` or `<` with a bound that is not an integer.
    #[error("{operator:?} needs an integer, found {value:?} in {requirement:?}")]
    NotInteger {
        /// `>` or `<`.
        operator: &'static str,
        /// The bound.
        value: String,
        /// The requirement.
        requirement: String,
    },
}

impl LabelSelector {
    /// The selector that selects everything (the empty string).
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether this selects everything (has no requirements).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    /// Whether a set of labels satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(Ok(have)), Some(Ok(bound))) = (
                    value.map(|v| v.parse::<i64>()),
                    self.values.first().map(|b| b.parse::<i64>()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > bound
                } else {
                    have < bound
                }
            }
        }
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut requirements = Vec::new();
        for (start, part) in split_requirements(s) {
            if part.trim().is_empty() {
                return Err(SelectorError::EmptyRequirement {
                    selector: s.to_string(),
                    position: start,
                });
            }
            requirements.push(parse_requirement(part.trim())?);
        }
        Ok(Self { requirements })
    }
}

/// Splits at commas outside parentheses, with each part's byte offset.
fn split_requirements(s: &str) -> Vec<(usize, &str)> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push((start, &s[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push((start, &s[start..]));
    parts
}

fn is_special(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '(' | ')' | '=' | '!' | '<' | '>')
}

/// A cursor over one requirement's text.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let rest = self.rest();
        let end = rest.find(is_special).unwrap_or(rest.len());
        self.pos += end;
        &rest[..end]
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos == self.text.len()
    }
}

fn parse_requirement(text: &str) -> Result<Requirement, SelectorError> {
    let mut cur = Cursor { text, pos: 0 };
    let requirement = || text.to_string();
    let negated = cur.eat("!");
    let key = cur.word();
    validate_key(key).map_err(|reason| SelectorError::InvalidKey {
        key: key.to_string(),
        requirement: requirement(),
        reason,
    })?;
    let mut values = BTreeSet::new();
    let operator = if negated {
        Operator::DoesNotExist
    } else if cur.at_end() {
        Operator::Exists
    } else if cur.eat("==") || cur.eat("=") {
        Operator::Equals
    } else if cur.eat("!=") {
        Operator::NotEquals
    } else if cur.eat(">") {
        Operator::GreaterThan
    } else if cur.eat("<") {
        Operator::LessThan
    } else {
        let save = cur.pos;
        match cur.word() {
            "in" => Operator::In,
            "notin" => Operator::NotIn,
            _ => {
                cur.pos = save;
                cur.skip_ws();
                return Err(SelectorError::ExpectedOperator {
                    key: key.to_string(),
                    requirement: requirement(),
                    found: cur.rest().to_string(),
                });
            }
        }
    };
    let check_value = |value: &str| {
        validate_value(value).map_err(|reason| SelectorError::InvalidValue {
            value: value.to_string(),
            requirement: requirement(),
            reason,
        })
    };
    match operator {
        Operator::Exists | Operator::DoesNotExist => {}
        Operator::Equals | Operator::NotEquals => {
            let value = cur.word();
            check_value(value)?;
            values.insert(value.to_string());
        }
        Operator::GreaterThan | Operator::LessThan => {
            let value = cur.word();
            if value.parse::<i64>().is_err() {
                return Err(SelectorError::NotInteger {
                    operator: if operator == Operator::GreaterThan {
                        ">"
                    } else {
                        "<"
                    },
                    value: value.to_string(),
                    requirement: requirement(),
                });
            }
            values.insert(value.to_string());
        }
        Operator::In | Operator::NotIn => {
            let name = if operator == Operator::In {
                "in"
            } else {
                "notin"
            };
            let bad = |reason| SelectorError::BadValueList {
                operator: name,
                requirement: requirement(),
                reason,
            };
            if !cur.eat("(") {
                return Err(bad("missing '('"));
            }
            if cur.eat(")") {
                return Err(bad("the value list is empty"));
            }
            loop {
                let value = cur.word();
                check_value(value)?;
                values.insert(value.to_string());
                if cur.eat(")") {
                    break;
                }
                if !cur.eat(",") {
                    return Err(bad(if cur.at_end() {
                        "missing ')'"
                    } else {
                        "values must be separated by ','"
                    }));
                }
            }
        }
    }
    if !cur.at_end() {
        return Err(SelectorError::Trailing {
            found: cur.rest().to_string(),
            requirement: requirement(),
        });
    }
    Ok(Requirement {
        key: key.to_string(),
        operator,
        values,
    })
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// A label name or value body: alphanumerics, `-`, `_`, `.`, starting and
/// ending alphanumeric, at most 63 characters.
fn validate_name(s: &str) -> Result<(), &'static str> {
    let bytes = s.as_bytes();
    if bytes.len() > 63 {
        return Err("longer than 63 characters");
    }
    if !bytes.iter().all(|&b| is_name_char(b)) {
        return Err("only alphanumerics, '-', '_' and '.' are allowed");
    }
    if let (Some(first), Some(last)) = (bytes.first(), bytes.last()) {
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return Err("must start and end with an alphanumeric character");
        }
    }
    Ok(())
}

fn validate_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("missing key");
    }
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err("the prefix must be 1 to 253 characters");
            }
            let dns_ok = prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
            if !dns_ok {
                return Err("the prefix must be a lowercase DNS subdomain");
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("missing name after the prefix");
    }
    validate_name(name)
}

fn validate_value(value: &str) -> Result<(), &'static str> {
    validate_name(value)
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        let list = || self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, list()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, list()),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{first}", self.key),
            Operator::LessThan => write!(f, "{}<{first}", self.key),
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn matching_table() {
        let l = labels(&[("app", "foo"), ("env", "prod"), ("tier", ""), ("n", "5")]);
        for (selector, want) in [
            ("", true),
            ("app=foo", true),
            ("app==foo", true),
            ("app=bar", false),
            ("app!=foo", false),
            ("app!=bar", true),
            ("missing!=x", true),
            ("env in (prod,staging)", true),
            ("env in (staging)", false),
            ("missing in (a)", false),
            ("env notin (prod)", false),
            ("env notin (dev,staging)", true),
            ("missing notin (a)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("tier=", true),
            ("app=foo,env=prod", true),
            ("app=foo,env=dev", false),
            (" app = foo , env in ( prod , x ) ", true),
            ("n>3", true),
            ("n<3", false),
            ("app>3", false),
            ("missing<3", false),
            ("example.com/team-a.x_y", false),
        ] {
            assert_eq!(sel(selector).matches(&l), want, "{selector:?}");
        }
    }

    #[test]
    fn display_is_canonical_and_reparses() {
        for (input, canonical) in [
            ("app==foo", "app=foo"),
            ("env in (b, a)", "env in (a,b)"),
            ("env notin (a)", "env notin (a)"),
            (" !key ", "!key"),
            ("key,app!=x", "key,app!=x"),
            ("n > 10", "n>10"),
            ("tier=", "tier="),
            ("example.com/name=v", "example.com/name=v"),
            ("", ""),
        ] {
            let s = sel(input);
            assert_eq!(s.to_string(), canonical, "{input:?}");
            assert_eq!(sel(canonical), s);
        }
    }

    #[test]
    fn errors_name_the_bad_part() {
        for (input, needle) in [
            ("app=foo,,x", "empty requirement at byte 8"),
            ("app=foo,", "empty requirement"),
            ("=foo", "missing key"),
            ("-app=foo", "\"-app\""),
            ("app=fo o", "unexpected \"o\""),
            ("app=-foo", "invalid label value \"-foo\""),
            ("env in a,b", "missing '('"),
            ("env in (a,b", "missing ')'"),
            ("env in ()", "empty"),
            ("env notin (a b)", "separated by ','"),
            ("env is (a)", "found \"is (a)\""),
            ("!app=foo", "unexpected \"=foo\""),
            ("n>x", "needs an integer, found \"x\""),
            ("Bad_Prefix/app=x", "DNS subdomain"),
            ("a/=x", "missing name"),
        ] {
            let err = input.parse::<LabelSelector>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
        let long = "x".repeat(64);
        let err = format!("{long}=a").parse::<LabelSelector>().unwrap_err();
        assert!(matches!(err, SelectorError::InvalidKey { .. }), "{err}");
    }
}
