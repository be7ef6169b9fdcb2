//! The metric and label names a PromQL expression uses, and the expressions of the shipped
//! rule files and dashboards, for the test that checks them against a live agent.
//!
//! This is an identifier scan, not a PromQL parser. It knows: string literals (skipped,
//! so label *values* and Grafana variables inside them are ignored), range and subquery
//! brackets (skipped), label matchers inside `{}` (the names before `=`, `!=`, `=~`,
//! `!~`), the label lists of `by`, `without`, `on`, `ignoring`, `group_left` and
//! `group_right`, function calls (an identifier before `(`), keywords and numbers.
//! Everything else is a metric name. It does not know: metric names given as
//! `{__name__="..."}`, label names passed as strings (`label_replace`, `count_values`),
//! or Grafana's `label_values(metric, label)` (see [`template_query_names`]).

use std::collections::BTreeSet;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub metrics: BTreeSet<String>,
    pub labels: BTreeSet<String>,
}

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
    "inf",
    "nan",
    "Inf",
    "NaN",
    "start",
    "end",
    // Aggregations, which may be followed by `by (...)` rather than `(`.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric and label names `expr` uses.
pub fn names(expr: &str) -> Names {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Names::default();
    let mut i = 0;
    let mut in_braces = false;
    // Inside the parentheses of `by (...)` and friends.
    let mut label_list = false;
    let mut expect_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
            }
            '{' => {
                in_braces = true;
                i += 1;
            }
            '}' => {
                in_braces = false;
                i += 1;
            }
            '(' => {
                label_list = expect_list;
                expect_list = false;
                i += 1;
            }
            ')' => {
                label_list = false;
                i += 1;
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let next = chars.get(j).copied();
                if in_braces || label_list {
                    out.labels.insert(word);
                } else if LABEL_LISTS.contains(&word.as_str()) {
                    expect_list = next == Some('(');
                } else if KEYWORDS.contains(&word.as_str()) || next == Some('(') {
                    // A keyword, a function or an aggregation.
                } else {
                    out.metrics.insert(word);
                }
            }
            '$' => {
                // A Grafana variable outside a string (`$__rate_interval` is in brackets).
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '{' | '}'))
                {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The names of a Grafana template query: `label_values(metric, label)`,
/// `label_values(label)` or a PromQL `query_result(...)`.
pub fn template_query_names(query: &str) -> Names {
    let q = query.trim();
    if let Some(args) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (selector, label) = match args.rsplit_once(',') {
            Some((s, l)) => (s.trim(), l.trim()),
            None => ("", args.trim()),
        };
        let mut out = names(selector);
        out.labels.insert(label.to_owned());
        return out;
    }
    names(
        q.strip_prefix("query_result(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(q),
    )
}

/// `record:` names and `expr:` texts of a Prometheus rule file. A line-based reading of the
/// shipped files' shape: `expr: <one line>` or `expr: |` followed by a more indented block.
pub fn rule_file(text: &str) -> (Vec<String>, Vec<String>) {
    let mut records = Vec::new();
    let mut exprs = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(name) = trimmed.strip_prefix("record:") {
            records.push(name.trim().to_owned());
        } else if let Some(rest) = trimmed.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest == "|" || rest == ">" {
                let indent = line.len() - line.trim_start().len();
                let mut block = String::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    if !next.trim().is_empty() {
                        block.push_str(next.trim());
                        block.push('\n');
                    }
                    i += 1;
                }
                exprs.push(block);
            } else {
                exprs.push(rest.trim_matches('\'').to_owned());
            }
        }
        i += 1;
    }
    (records, exprs)
}

/// Every PromQL expression of a Grafana dashboard: panel targets (also in rows) and
/// template variable queries (as `(query, is_template)`).
pub fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, bool)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, bool)>) {
        for p in list.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((e.to_owned(), false));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str());
            if let Some(q) = q {
                out.push((q.to_owned(), true));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn metrics_and_labels_of_expressions() {
        let n = names(
            r#"histogram_quantile(0.99, sum by (mcp_server_name, le) (rate(mcp_server_operation_duration_seconds_bucket{mcp_server_name=~"$server",outcome!="ok"}[$__rate_interval])))"#,
        );
        assert_eq!(
            n.metrics,
            set(&["mcp_server_operation_duration_seconds_bucket"])
        );
        assert_eq!(n.labels, set(&["le", "mcp_server_name", "outcome"]));

        let n = names(
            "mcp_server:error_ratio:rate5m > 0.05\n  and on (mcp_server_name)\nmcp_server:requests:rate5m * 300 >= 10",
        );
        assert_eq!(
            n.metrics,
            set(&[
                "mcp_server:error_ratio:rate5m",
                "mcp_server:requests:rate5m"
            ])
        );
        assert_eq!(n.labels, set(&["mcp_server_name"]));

        let n = names(
            r#"sum by (client_name) (mcp_active_clients{a="x{y}"}) unless sum by (client_name) (mcp_active_clients offset 1d) or up{job="mcp-probe"} == 0"#,
        );
        assert_eq!(n.metrics, set(&["mcp_active_clients", "up"]));
        assert_eq!(n.labels, set(&["a", "client_name", "job"]));

        let n = names("(a / on (x) group_left b) * on (x) group_left (y) c + rate(d[5m:1m]) - 1e3");
        assert_eq!(n.metrics, set(&["a", "b", "c", "d"]));
        assert_eq!(n.labels, set(&["x", "y"]));
    }

    #[test]
    fn grafana_template_queries() {
        let n = template_query_names("label_values(mcp_server_requests_total, mcp_server_name)");
        assert_eq!(n.metrics, set(&["mcp_server_requests_total"]));
        assert_eq!(n.labels, set(&["mcp_server_name"]));
        let n = template_query_names(r#"label_values(up{job="x"}, instance)"#);
        assert_eq!(
            (n.metrics, n.labels),
            (set(&["up"]), set(&["instance", "job"]))
        );
    }

    #[test]
    fn rule_files() {
        let (records, exprs) = rule_file(
            "groups:\n  - name: g\n    rules:\n      - record: a:b:rate5m\n        expr: |\n          sum(x)\n            or\n          sum(y)\n\n      - alert: A\n        expr: a:b:rate5m > 1\n        for: 1m\n",
        );
        assert_eq!(records, vec!["a:b:rate5m".to_owned()]);
        assert_eq!(
            exprs,
            vec![
                "sum(x)\nor\nsum(y)\n".to_owned(),
                "a:b:rate5m > 1".to_owned()
            ]
        );
    }
}
