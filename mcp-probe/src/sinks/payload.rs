//! Opt-in payload capture for the request log: the message's JSON with credential-like
//! fields and configured paths redacted, then capped. Nothing here runs unless
//! `--request-log-payloads` is given.
//!
//! Redaction happens on the parsed message, before the cap, so a cut never leaves half a
//! secret. Redacted, whatever their JSON type, are:
//! - the value of every key that looks like a credential (see [`is_credential_key`]);
//! - every string that starts with an HTTP auth scheme (`Bearer `, `Basic `);
//! - the value at each configured path (`params.arguments.*`, `result.content.0.text`).

use serde_json::Value;

use super::SinkError;

pub const REDACTED: &str = "[REDACTED]";
/// Messages longer than this are not parsed for capture (only their size is logged).
pub const MAX_PARSED_BYTES: usize = 1 << 20;

/// Key fragments (lower case, without `_`, `-` and `.`) of credential-like keys.
const CREDENTIAL_KEYS: &[&str] = &[
    "token",
    "passw",
    "secret",
    "authorization",
    "apikey",
    "cookie",
    "credential",
    "privatekey",
    "accesskey",
    "signature",
];

/// True for keys such as `password`, `api_key`, `X-Api-Key`, `accessToken`,
/// `client_secret`, `Authorization`, `set-cookie`. Note that `maxTokens` matches too: a
/// number lost is better than a secret kept.
pub fn is_credential_key(key: &str) -> bool {
    let norm: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    norm == "pwd" || norm == "auth" || CREDENTIAL_KEYS.iter().any(|k| norm.contains(k))
}

fn is_credential_value(text: &str) -> bool {
    let head = text.get(..7).unwrap_or(text).to_ascii_lowercase();
    head.starts_with("bearer ") || head.starts_with("basic ")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Any,
}

/// Payload capture settings.
#[derive(Debug, Clone)]
pub struct Capture {
    max_bytes: usize,
    paths: Vec<Vec<Segment>>,
}

impl Capture {
    pub fn new(max_bytes: usize, paths: &[String]) -> Result<Self, SinkError> {
        let paths = paths
            .iter()
            .map(|p| parse_path(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { max_bytes, paths })
    }

    /// The redacted JSON of `raw`, cut to `max_bytes` (then ending in `…[+N bytes]`).
    pub fn capture(&self, raw: &[u8]) -> Box<str> {
        self.redacted(raw)
    }

    fn redacted(&self, raw: &[u8]) -> Box<str> {
        if raw.len() > MAX_PARSED_BYTES {
            return format!("[not captured: {} bytes]", raw.len()).into();
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(raw) else {
            return "[not captured: not JSON]".into();
        };
        self.redact(&mut value);
        let text = value.to_string();
        if text.len() <= self.max_bytes {
            return text.into();
        }
        let kept = super::bounded(&text, self.max_bytes);
        format!("{kept}…[+{} bytes]", text.len() - kept.len()).into()
    }

    /// Redacts `value` in place.
    pub fn redact(&self, value: &mut Value) {
        for path in &self.paths {
            redact_path(value, path);
        }
        redact_credentials(value);
    }
}

fn parse_path(path: &str) -> Result<Vec<Segment>, SinkError> {
    let bad = |reason| SinkError::RedactPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(bad("empty"));
    }
    path.split('.')
        .map(|s| match s {
            "" => Err(bad("empty segment")),
            "*" => Ok(Segment::Any),
            key => Ok(Segment::Key(key.to_owned())),
        })
        .collect()
}

fn redact_path(value: &mut Value, path: &[Segment]) {
    let Some((first, rest)) = path.split_first() else {
        *value = Value::String(REDACTED.to_owned());
        return;
    };
    match (value, first) {
        (Value::Object(map), Segment::Any) => {
            map.values_mut().for_each(|v| redact_path(v, rest));
        }
        (Value::Object(map), Segment::Key(k)) => {
            if let Some(v) = map.get_mut(k) {
                redact_path(v, rest);
            }
        }
        (Value::Array(items), Segment::Any) => {
            items.iter_mut().for_each(|v| redact_path(v, rest));
        }
        (Value::Array(items), Segment::Key(k)) => {
            if let Some(v) = k.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                redact_path(v, rest);
            }
        }
        _ => {}
    }
}

fn redact_credentials(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_credential_key(k) {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact_credentials(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_credentials),
        Value::String(s) if is_credential_value(s) => *s = REDACTED.to_owned(),
        _ => {}
    }
}

/// A resource URI as logged by default: without user info, query and fragment (which can
/// carry credentials), at most 256 bytes.
pub fn resource_uri(uri: &str) -> String {
    let cut = uri.find(['?', '#']).unwrap_or(uri.len());
    let uri = &uri[..cut];
    let uri = match uri.find("://") {
        Some(scheme_end) => {
            let rest = &uri[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{}{}", &uri[..scheme_end + 3], &rest[at + 1..]),
                None => uri.to_owned(),
            }
        }
        None => uri.to_owned(),
    };
    super::bounded(&uri, 256)
}

/// The stitcher captures payloads through this, without knowing the sinks.
impl crate::events::PayloadCapture for Capture {
    fn capture(&self, raw: &[u8]) -> Box<str> {
        self.redacted(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(paths: &[&str], max: usize, raw: &str) -> String {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        Capture::new(max, &paths)
            .expect("valid paths")
            .capture(raw.as_bytes())
            .into()
    }

    #[test]
    fn credential_like_keys_are_redacted_at_any_depth() {
        let raw = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"login","arguments":{"user":"ann","password":"hunter2","nested":[{"api_key":"k-1"},{"X-Api-Key":"k-2"}],"accessToken":"t","client_secret":{"v":1},"Authorization":"Bearer abc","note":"Bearer xyz","ok":"fine"}}}"#;
        assert_eq!(
            capture(&[], 4096, raw),
            r#"{"id":1,"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"Authorization":"[REDACTED]","accessToken":"[REDACTED]","client_secret":"[REDACTED]","nested":[{"api_key":"[REDACTED]"},{"X-Api-Key":"[REDACTED]"}],"note":"[REDACTED]","ok":"fine","password":"[REDACTED]","user":"ann"},"name":"login"}}"#
        );
    }

    #[test]
    fn configured_paths_are_redacted() {
        let raw = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"ssn 123"},{"type":"text","text":"b"}],"isError":false}}"#;
        assert_eq!(
            capture(&["result.content.*.text"], 4096, raw),
            r#"{"id":2,"jsonrpc":"2.0","result":{"content":[{"text":"[REDACTED]","type":"text"},{"text":"[REDACTED]","type":"text"}],"isError":false}}"#
        );
        assert_eq!(
            capture(&["result.content.1.text", "result.missing.x"], 4096, raw),
            r#"{"id":2,"jsonrpc":"2.0","result":{"content":[{"text":"ssn 123","type":"text"},{"text":"[REDACTED]","type":"text"}],"isError":false}}"#
        );
        let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"q","arguments":{"sql":"select 1","limit":5}}}"#;
        assert_eq!(
            capture(&["params.arguments.*"], 4096, call),
            r#"{"id":3,"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"limit":"[REDACTED]","sql":"[REDACTED]"},"name":"q"}}"#
        );
        assert_eq!(
            capture(&["params.arguments"], 4096, call),
            r#"{"id":3,"jsonrpc":"2.0","method":"tools/call","params":{"arguments":"[REDACTED]","name":"q"}}"#
        );
        for bad in ["", "a..b", "."] {
            assert!(Capture::new(10, &[bad.to_owned()]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_cap_applies_after_redaction() {
        let raw = r#"{"jsonrpc":"2.0","id":4,"result":{"token":"0123456789abcdef","text":"héllo wörld"}}"#;
        let full = capture(&[], 4096, raw);
        assert_eq!(
            full,
            r#"{"id":4,"jsonrpc":"2.0","result":{"text":"héllo wörld","token":"[REDACTED]"}}"#
        );
        let cut = capture(&[], 40, raw);
        assert_eq!(
            cut,
            r#"{"id":4,"jsonrpc":"2.0","result":{"text"…[+39 bytes]"#
        );
        // Not cut inside a character: `é` is bytes 43 and 44.
        let cut = capture(&[], 44, raw);
        assert_eq!(
            cut,
            r#"{"id":4,"jsonrpc":"2.0","result":{"text":"h…[+36 bytes]"#
        );
    }

    #[test]
    fn unparsable_or_huge_messages_are_not_captured() {
        assert_eq!(capture(&[], 100, "{nope"), "[not captured: not JSON]");
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_PARSED_BYTES));
        assert_eq!(
            capture(&[], 100, &big),
            format!("[not captured: {} bytes]", big.len())
        );
    }

    #[test]
    fn credential_key_names() {
        for k in [
            "token",
            "refresh_token",
            "Password",
            "passwd",
            "pwd",
            "SECRET",
            "x-api-key",
            "apiKey",
            "Cookie",
            "set-cookie",
            "aws_access_key_id",
            "private_key",
            "credentials",
            "auth",
        ] {
            assert!(is_credential_key(k), "{k}");
        }
        for k in ["name", "text", "uri", "author", "path", "sessionId"] {
            assert!(!is_credential_key(k), "{k}");
        }
    }

    #[test]
    fn resource_uris_lose_credentials_queries_and_fragments() {
        assert_eq!(resource_uri("file:///srv/notes.md"), "file:///srv/notes.md");
        assert_eq!(
            resource_uri("https://ann:pw@example.com/a/b?sig=xyz#frag"),
            "https://example.com/a/b"
        );
        assert_eq!(resource_uri("db://u@host"), "db://host");
        assert_eq!(resource_uri("mem:x?y"), "mem:x");
        assert_eq!(resource_uri("s3://bucket/a@b"), "s3://bucket/a@b");
        assert_eq!(resource_uri(&"a".repeat(300)).len(), 256);
    }
}
