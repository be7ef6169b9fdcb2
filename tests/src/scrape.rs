//! A scrape of the agent's /metrics, parsed: series name -> label set -> value.

use super::*;

/// A parsed scrape: series name -> label set -> value.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut series = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').expect("metric line has a value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (
                    n.to_owned(),
                    parse_labels(rest.strip_suffix('}').expect("closing brace")),
                ),
                None => (name_labels.to_owned(), BTreeMap::new()),
            };
            series.push((name, labels, value));
        }
        Metrics { series }
    }

    /// Sum of `name` over series whose labels include every `(key, value)` in `filter`
    /// (an empty value matches an absent or empty label).
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && filter
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str).unwrap_or("") == *v)
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Distinct values of `label` among series of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .series
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, _)| l.get(label).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Every series name, with the label names its series carry.
    pub fn names(&self) -> BTreeMap<String, std::collections::BTreeSet<String>> {
        let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for (name, labels, _) in &self.series {
            out.entry(name.clone())
                .or_default()
                .extend(labels.keys().cloned());
        }
        out
    }

    pub fn dump(&self, prefix: &str) -> String {
        self.series
            .iter()
            .filter(|(n, _, _)| n.starts_with(prefix) && !n.ends_with("_bucket"))
            .map(|(n, l, v)| format!("{n}{l:?} {v}\n"))
            .collect()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label key");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = after[end..].trim_start_matches(',');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openmetrics_lines() {
        let m = Metrics::parse(
            "# HELP x y\nmcp_a_total{s=\"p\",t=\"\"} 3\nmcp_a_total{s=\"q\\\"x\",t=\"e\"} 2\nmcp_b 1.5\n# EOF\n",
        );
        assert_eq!(m.sum("mcp_a_total", &[]), 5.0);
        assert_eq!(m.sum("mcp_a_total", &[("s", "p"), ("t", "")]), 3.0);
        assert_eq!(m.sum("mcp_a_total", &[("s", "q\"x")]), 2.0);
        assert_eq!(m.sum("mcp_b", &[]), 1.5);
        assert_eq!(
            m.label_values("mcp_a_total", "t"),
            vec!["".to_owned(), "e".to_owned()]
        );
    }
}
