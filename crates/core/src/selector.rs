//! Selectors: the `type:value` facts an attestor observes about a node or a workload
//! (`unix:uid:1000`, `systemd:unit:web.service`), and sets of them.
//!
//! An entry matches a caller when the entry's selectors are a subset of the caller's.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest selector type, in bytes.
pub const MAX_SELECTOR_TYPE_LEN: usize = 64;
/// Longest selector value, in bytes.
pub const MAX_SELECTOR_VALUE_LEN: usize = 1024;

/// Why a string is not a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    #[error("selector must have the form TYPE:VALUE (for example unix:uid:1000)")]
    MissingColon,
    #[error("selector type is empty")]
    EmptyType,
    #[error("selector value is empty")]
    EmptyValue,
    #[error("selector type characters are limited to a-z, 0-9, `_` and `-` (found {found:?})")]
    TypeChar { found: char },
    #[error("selector value must not contain control characters")]
    ValueControlChar,
    #[error("selector type is {len} bytes long; the limit is {MAX_SELECTOR_TYPE_LEN}")]
    TypeTooLong { len: usize },
    #[error("selector value is {len} bytes long; the limit is {MAX_SELECTOR_VALUE_LEN}")]
    ValueTooLong { len: usize },
}

/// One selector: a type (`unix`) and a value (`uid:1000`). The value may contain `:`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    kind: String,
    value: String,
}

/// A set of selectors, ordered and without duplicates.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SelectorSet(BTreeSet<Selector>);

// === impl Selector ===

impl Selector {
    /// Builds a selector from its two parts.
    pub fn new(kind: &str, value: &str) -> Result<Self, SelectorError> {
        validate_type(kind)?;
        validate_value(value)?;
        Ok(Self {
            kind: kind.to_owned(),
            value: value.to_owned(),
        })
    }

    /// The selector type, e.g. `unix`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The value, e.g. `uid:1000`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, value) = s.split_once(':').ok_or(SelectorError::MissingColon)?;
        Self::new(kind, value)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({self})")
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn validate_type(kind: &str) -> Result<(), SelectorError> {
    if kind.is_empty() {
        return Err(SelectorError::EmptyType);
    }
    if kind.len() > MAX_SELECTOR_TYPE_LEN {
        return Err(SelectorError::TypeTooLong { len: kind.len() });
    }
    match kind
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    {
        Some(found) => Err(SelectorError::TypeChar { found }),
        None => Ok(()),
    }
}

fn validate_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() {
        return Err(SelectorError::EmptyValue);
    }
    if value.len() > MAX_SELECTOR_VALUE_LEN {
        return Err(SelectorError::ValueTooLong { len: value.len() });
    }
    if value.chars().any(char::is_control) {
        return Err(SelectorError::ValueControlChar);
    }
    Ok(())
}

// === impl SelectorSet ===

impl SelectorSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a selector; returns false if it was already there.
    pub fn insert(&mut self, selector: Selector) -> bool {
        self.0.insert(selector)
    }

    /// True if every selector of `self` is also in `other`: an entry with these selectors may be
    /// served to a caller whose attested selectors are `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.0.is_subset(&other.0)
    }

    /// True if the two sets share at least one selector.
    pub fn intersects(&self, other: &Self) -> bool {
        !self.0.is_disjoint(&other.0)
    }

    pub fn contains(&self, selector: &Selector) -> bool {
        self.0.contains(selector)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Selector> {
        self.0.iter()
    }
}

impl FromIterator<Selector> for SelectorSet {
    fn from_iter<I: IntoIterator<Item = Selector>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl IntoIterator for SelectorSet {
    type Item = Selector;
    type IntoIter = std::collections::btree_set::IntoIter<Selector>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a SelectorSet {
    type Item = &'a Selector;
    type IntoIter = std::collections::btree_set::Iter<'a, Selector>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for SelectorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.0.iter().map(ToString::to_string))
            .finish()
    }
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
