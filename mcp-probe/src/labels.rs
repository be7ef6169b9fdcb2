//! Caps on label values learned from traffic (methods, tools, servers, users, error
//! types) and on the label combinations of a metric family, so that a hostile or merely
//! busy host cannot grow the agent's series without bound.

use crate::HashSet;

/// Caps the number of distinct label *combinations* (series) of a metric family: a
/// combination seen before, or one that fits under the cap, is admitted; past the cap the
/// caller folds the traffic-derived labels into `_other`. Each label is capped on its own
/// by [`LabelCap`], but their product is what costs memory. Keeps 8 bytes per series.
pub struct SeriesCap {
    cap: usize,
    seen: HashSet<u64>,
    hasher: foldhash::fast::RandomState,
}

impl SeriesCap {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: HashSet::default(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// True if the series `key` may be created (or already exists).
    pub fn admit(&mut self, key: &impl std::hash::Hash) -> bool {
        use std::hash::BuildHasher as _;
        let hash = self.hasher.hash_one(key);
        if self.seen.contains(&hash) {
            return true;
        }
        if self.seen.len() >= self.cap {
            return false;
        }
        self.seen.insert(hash);
        true
    }
}

/// Caps the number of distinct values a traffic-derived label may take; values past the cap
/// become `_other`. Values are also cleaned: at most 128 bytes, no control characters, and
/// `\` and `"` escaped (prometheus-client writes label values as they are, so an unescaped
/// quote from a peer would break every scrape).
pub struct LabelCap {
    name: &'static str,
    cap: usize,
    seen: HashSet<String>,
}

pub const OTHER: &str = "_other";
const MAX_LABEL_BYTES: usize = 128;

impl LabelCap {
    pub fn new(name: &'static str, cap: usize) -> Self {
        Self {
            name,
            cap,
            seen: HashSet::default(),
        }
    }

    /// The label value for `raw`; past the cap `_other`, with the label's name pushed onto
    /// `overflowed` (the caller counts it in `mcp_probe_label_overflow_total`).
    pub fn value(&mut self, raw: &str, overflowed: &mut Vec<&'static str>) -> String {
        // The common case, a value seen before that needs no cleaning, allocates once.
        if self.seen.contains(raw) && is_clean(raw) {
            return raw.to_owned();
        }
        let clean = clean_label(raw);
        if self.seen.contains(&clean) {
            return clean;
        }
        if self.seen.len() >= self.cap {
            overflowed.push(self.name);
            return OTHER.to_owned();
        }
        self.seen.insert(clean.clone());
        clean
    }
}

/// `raw` is its own cleaned form.
fn is_clean(raw: &str) -> bool {
    raw.len() <= MAX_LABEL_BYTES && !raw.chars().any(|c| c == '\\' || c == '"' || c.is_control())
}

fn clean_label(raw: &str) -> String {
    let mut end = raw.len().min(MAX_LABEL_BYTES);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    let mut clean = String::with_capacity(end);
    for c in raw[..end].chars() {
        match c {
            '\\' | '"' => {
                clean.push('\\');
                clean.push(c);
            }
            c if c.is_control() => clean.push('?'),
            c => clean.push(c),
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_cap_buckets_overflow_and_cleans_values() {
        let mut overflow = Vec::new();
        let mut cap = LabelCap::new("gen_ai_tool_name", 2);
        assert_eq!(cap.value("a", &mut overflow), "a");
        assert_eq!(cap.value("b\n", &mut overflow), "b?");
        assert_eq!(
            LabelCap::new("x", 10).value(r#"unix:/tmp/a"b\c"#, &mut overflow),
            r#"unix:/tmp/a\"b\\c"#,
            "quotes and backslashes are escaped for the exposition format"
        );
        assert_eq!(cap.value("a", &mut overflow), "a");
        assert_eq!(cap.value("c", &mut overflow), OTHER);
        assert_eq!(overflow, ["gen_ai_tool_name"]);
        let long = "é".repeat(100);
        let mut cap = LabelCap::new("x", 10);
        let v = cap.value(&long, &mut overflow);
        assert!(v.len() <= MAX_LABEL_BYTES && v.chars().all(|c| c == 'é'));
    }
}
