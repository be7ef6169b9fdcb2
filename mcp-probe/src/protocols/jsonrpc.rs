//! JSON-RPC 2.0 message parsing, with the MCP fields the agent needs.
//!
//! Parses borrowed: method names and ids point into the input where they have no escapes,
//! and `params`/`result` are only looked into for the handful of fields that become labels
//! or identity. Nothing else of the payload is kept. The message is read in one pass:
//! the members of `params` and `result` the agent wants are kept as raw text while the
//! envelope is read, and everything else (arguments, contents) is skipped once.

use std::{borrow::Cow, marker::PhantomData};

use serde::{
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::value::RawValue;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Not valid JSON (or not UTF-8).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON that is not a JSON-RPC 2.0 message.
    #[error("not a JSON-RPC 2.0 message: {0}")]
    NotJsonRpc(&'static str),
}

impl ParseError {
    /// Stable label value for the parse-error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::NotJsonRpc(_) => "not_jsonrpc",
        }
    }
}

/// A JSON-RPC id. Numbers and strings are distinct (`1` is not `"1"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    Num(i64),
    /// Non-integer or out-of-range numbers, kept by their text.
    NumText(String),
    Str(String),
}

/// One message.
#[derive(Debug, PartialEq)]
pub enum Message<'a> {
    Request {
        id: Id,
        method: Cow<'a, str>,
        info: RequestInfo<'a>,
    },
    Notification {
        method: Cow<'a, str>,
        info: RequestInfo<'a>,
    },
    Response {
        id: Id,
        info: ResultInfo<'a>,
    },
    /// An error response; `id` is `None` for `"id": null` (errors about unparsable input).
    Error {
        id: Option<Id>,
        code: i64,
    },
}

/// What the agent reads out of `params`.
#[derive(Debug, Default, PartialEq)]
pub struct RequestInfo<'a> {
    /// `params.name` of `tools/call` and `prompts/get`.
    pub name: Option<Cow<'a, str>>,
    /// `params.requestId` of `notifications/cancelled`.
    pub cancelled_id: Option<Id>,
    /// `clientInfo.name` from `initialize` params or the 2026-07-28 `_meta` key.
    pub client_name: Option<Cow<'a, str>>,
    /// Protocol version from `initialize` params or `_meta`.
    pub protocol_version: Option<Cow<'a, str>>,
    /// `params.uri` of `resources/read`, `resources/subscribe` and `resources/unsubscribe`.
    pub uri: Option<Cow<'a, str>>,
    /// W3C trace context the caller put in `params._meta` (`traceparent`, `tracestate`).
    pub traceparent: Option<Cow<'a, str>>,
    pub tracestate: Option<Cow<'a, str>>,
}

/// What the agent reads out of `result`.
#[derive(Debug, Default, PartialEq)]
pub struct ResultInfo<'a> {
    /// `result.isError == true` (a failed tool call).
    pub is_error: bool,
    /// `serverInfo.name` (initialize / server/discover) or the `_meta` serverInfo key.
    pub server_name: Option<Cow<'a, str>>,
    pub protocol_version: Option<Cow<'a, str>>,
}

/// A parsed line: one message or a batch.
#[derive(Debug, PartialEq)]
// A single message is what every SDK sends: boxing it would allocate for each one.
#[allow(clippy::large_enum_variant)]
pub enum Parsed<'a> {
    Single(Message<'a>),
    Batch(Vec<Result<Message<'a>, ParseError>>),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    /// `Some` also for `"id": null` (plain `Option` would fold null into `None`).
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<Members<'a, ParamKeys>>,
    /// `Some` also for `"result": null`, a legal result.
    #[serde(borrow, default, deserialize_with = "present_members")]
    result: Option<Members<'a, ResultKeys>>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn present_members<'de, D: Deserializer<'de>, K: Keys>(
    d: D,
) -> Result<Option<Members<'de, K>>, D::Error> {
    Members::deserialize(d).map(Some)
}

/// Most members the agent looks at in one object.
const MAX_KEYS: usize = 6;

/// The member names of an object the agent looks at (at most [`MAX_KEYS`]).
trait Keys {
    const KEYS: &'static [&'static str];
}

struct ParamKeys;
impl Keys for ParamKeys {
    const KEYS: &'static [&'static str] = &[
        "name",
        "requestId",
        "clientInfo",
        "protocolVersion",
        "uri",
        "_meta",
    ];
}

struct ResultKeys;
impl Keys for ResultKeys {
    const KEYS: &'static [&'static str] = &["isError", "serverInfo", "protocolVersion", "_meta"];
}

const _: () = assert!(ParamKeys::KEYS.len() <= MAX_KEYS && ResultKeys::KEYS.len() <= MAX_KEYS);

/// The raw text of the members of an object named in `K::KEYS` (in that order), read in
/// the envelope's pass; every other member is skipped. Any other JSON value (an array of
/// positional params, a scalar result) has none of them, and fails nothing.
struct Members<'a, K> {
    raw: [Option<&'a RawValue>; MAX_KEYS],
    keys: PhantomData<K>,
}

impl<'a, K: Keys> Members<'a, K> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        let i = K::KEYS.iter().position(|k| *k == key)?;
        self.raw[i]
    }

    /// The member decoded as `T`, if it is there and is one.
    fn decode<T: Deserialize<'a>>(&self, key: &str) -> Option<T> {
        serde_json::from_str(self.get(key)?.get()).ok()
    }
}

impl<'de: 'a, 'a, K: Keys> Deserialize<'de> for Members<'a, K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor<'a, K>(PhantomData<(&'a (), K)>);
        impl<'de: 'a, 'a, K: Keys> Visitor<'de> for MembersVisitor<'a, K> {
            type Value = Members<'a, K>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut raw = [None; MAX_KEYS];
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match K::KEYS.iter().position(|k| *k == key) {
                        Some(i) => raw[i] = Some(map.next_value::<&'de RawValue>()?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Members {
                    raw,
                    keys: PhantomData,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Members::none())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Members::none())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Members::none())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Members::none())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Members::none())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Members::none())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Members::none())
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Members::none())
            }
        }
        d.deserialize_any(MembersVisitor(PhantomData))
    }
}

impl<K> Members<'_, K> {
    fn none() -> Self {
        Members {
            raw: [None; MAX_KEYS],
            keys: PhantomData,
        }
    }
}

#[derive(Deserialize, Default)]
struct Named<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct Meta<'a> {
    #[serde(borrow, default, rename = "io.modelcontextprotocol/clientInfo")]
    client_info: Option<Named<'a>>,
    #[serde(borrow, default, rename = "io.modelcontextprotocol/serverInfo")]
    server_info: Option<Named<'a>>,
    #[serde(borrow, default, rename = "io.modelcontextprotocol/protocolVersion")]
    protocol_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    traceparent: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tracestate: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorFields {
    code: serde_json::Number,
}

/// Parses one framed line.
pub fn parse(line: &[u8]) -> Result<Parsed<'_>, ParseError> {
    let first = line.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<&RawValue> =
            serde_json::from_slice(line).map_err(|e| ParseError::InvalidJson(e.to_string()))?;
        if items.is_empty() {
            return Err(ParseError::NotJsonRpc("empty batch"));
        }
        return Ok(Parsed::Batch(
            items
                .into_iter()
                .map(|raw| parse_one(raw.get().as_bytes()))
                .collect(),
        ));
    }
    parse_one(line).map(Parsed::Single)
}

fn parse_one(bytes: &[u8]) -> Result<Message<'_>, ParseError> {
    let env: Envelope<'_> = serde_json::from_slice(bytes).map_err(|e| {
        // A type error stops the parse where it is found: the rest may not be JSON at all.
        match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) if e.is_data() => ParseError::NotJsonRpc("not a JSON-RPC object"),
            Ok(_) => ParseError::InvalidJson(e.to_string()),
            Err(syntax) => ParseError::InvalidJson(syntax.to_string()),
        }
    })?;
    if env.jsonrpc.as_deref() != Some("2.0") {
        return Err(ParseError::NotJsonRpc("missing \"jsonrpc\": \"2.0\""));
    }
    let id = match env.id {
        None => None,
        Some(raw) => parse_id(raw)?,
    };
    if let Some(method) = env.method {
        let info = request_info(&method, env.params);
        return Ok(match (env.id, id) {
            (None, _) => Message::Notification { method, info },
            (Some(_), Some(id)) => Message::Request { id, method, info },
            (Some(_), None) => return Err(ParseError::NotJsonRpc("request with null id")),
        });
    }
    if let Some(error) = env.error {
        let fields: ErrorFields = serde_json::from_str(error.get())
            .map_err(|_| ParseError::NotJsonRpc("error without integer code"))?;
        let code = fields
            .code
            .as_i64()
            .ok_or(ParseError::NotJsonRpc("error code not an integer"))?;
        return Ok(Message::Error { id, code });
    }
    if let Some(result) = env.result {
        let id = id.ok_or(ParseError::NotJsonRpc("result without id"))?;
        return Ok(Message::Response {
            id,
            info: result_info(result),
        });
    }
    Err(ParseError::NotJsonRpc("neither method, result nor error"))
}

fn parse_id(raw: &RawValue) -> Result<Option<Id>, ParseError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Ok(None),
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(|s| Some(Id::Str(s)))
            .map_err(|_| ParseError::NotJsonRpc("bad string id")),
        Some(b'-' | b'0'..=b'9') => Ok(Some(match text.parse::<i64>() {
            Ok(n) => Id::Num(n),
            Err(_) => Id::NumText(text.to_owned()),
        })),
        _ => Err(ParseError::NotJsonRpc("id is not a string, number or null")),
    }
}

/// What the agent labels with, from `params`. Invalid params are the server's business (it
/// answers -32602): a member of an unexpected type is just not used.
fn request_info<'a>(method: &str, params: Option<Members<'a, ParamKeys>>) -> RequestInfo<'a> {
    let Some(p) = params else {
        return RequestInfo::default();
    };
    let meta: Meta<'a> = p.decode("_meta").unwrap_or_default();
    let named = matches!(method, "tools/call" | "prompts/get");
    let resource = matches!(
        method,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe"
    );
    RequestInfo {
        name: if named {
            p.get("name").and_then(string)
        } else {
            None
        },
        cancelled_id: p
            .get("requestId")
            .and_then(|raw| parse_id(raw).ok().flatten()),
        client_name: p
            .decode::<Named<'a>>("clientInfo")
            .and_then(|c| c.name)
            .or(meta.client_info.and_then(|c| c.name)),
        protocol_version: p
            .get("protocolVersion")
            .and_then(string)
            .or(meta.protocol_version),
        uri: if resource {
            p.get("uri").and_then(string)
        } else {
            None
        },
        traceparent: meta.traceparent.and_then(string),
        tracestate: meta.tracestate.and_then(string),
    }
}

/// A JSON string value, borrowed when it has no escapes; `None` for anything else.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    if let Ok(s) = serde_json::from_str::<&str>(raw.get()) {
        return Some(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(raw.get())
        .ok()
        .map(Cow::Owned)
}

/// What the agent reads out of `result` (which may be any JSON value).
fn result_info<'a>(r: Members<'a, ResultKeys>) -> ResultInfo<'a> {
    let meta: Meta<'a> = r.decode("_meta").unwrap_or_default();
    ResultInfo {
        is_error: r.decode::<bool>("isError") == Some(true),
        server_name: r
            .decode::<Named<'a>>("serverInfo")
            .and_then(|s| s.name)
            .or(meta.server_info.and_then(|s| s.name)),
        protocol_version: r
            .get("protocolVersion")
            .and_then(string)
            .or(meta.protocol_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(line: &str) -> Message<'_> {
        match parse(line.as_bytes()) {
            Ok(Parsed::Single(m)) => m,
            other => panic!("expected one message from {line}, got {other:?}"),
        }
    }

    #[test]
    fn request_with_every_id_type() {
        for (text, id) in [
            ("0", Id::Num(0)),
            ("-7", Id::Num(-7)),
            ("9007199254740993", Id::Num(9007199254740993)),
            ("1.5", Id::NumText("1.5".into())),
            ("1e400", Id::NumText("1e400".into())),
            ("\"abc\"", Id::Str("abc".into())),
            ("\"a\\\"b\"", Id::Str("a\"b".into())),
            ("\"\"", Id::Str(String::new())),
        ] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":{text},"method":"ping"}}"#);
            assert_eq!(
                single(&line),
                Message::Request {
                    id,
                    method: "ping".into(),
                    info: RequestInfo::default()
                },
                "{line}"
            );
        }
        assert_ne!(Id::Num(1), Id::Str("1".into()));
    }

    #[test]
    fn null_results_positional_params_and_odd_member_types() {
        // `"result": null` is a legal response.
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":3,"result":null}"#),
            Message::Response {
                id: Id::Num(3),
                info: ResultInfo::default()
            }
        );
        // Positional params, and a scalar result: valid, nothing to label.
        let m =
            single(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1,{"name":"x"}]}"#);
        assert!(matches!(m, Message::Request { info, .. } if info == RequestInfo::default()));
        // A member of an unexpected type costs only that member.
        let m = single(
            r#"{"jsonrpc":"2.0","id":2,"method":"initialize","params":{"name":7,"protocolVersion":"2025-11-25","clientInfo":"x","arguments":{"deep":[[[{"a":"b"}]]]}}}"#,
        );
        let Message::Request { info, .. } = m else {
            panic!("request")
        };
        assert_eq!(info.protocol_version.as_deref(), Some("2025-11-25"));
        assert_eq!(info.client_name, None);
        let m = single(
            r#"{"jsonrpc":"2.0","id":4,"result":{"isError":"yes","content":[{"text":"\u00e9"}],"serverInfo":{"name":"s"}}}"#,
        );
        let Message::Response { info, .. } = m else {
            panic!("response")
        };
        assert_eq!(
            (info.is_error, info.server_name.as_deref()),
            (false, Some("s"))
        );
    }

    #[test]
    fn typescript_key_order_with_id_last() {
        let m = single(
            r#"{"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}},"jsonrpc":"2.0","id":0}"#,
        );
        let Message::Request { id, method, info } = m else {
            panic!("request")
        };
        assert_eq!(
            (id, method.as_ref(), info.name.as_deref()),
            (Id::Num(0), "tools/call", Some("echo"))
        );
    }

    #[test]
    fn prompt_name_and_escaped_method() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":"p1","method":"prompts\/get","params":{"name":"gr\u00e9et"}}"#,
        );
        let Message::Request { method, info, .. } = m else {
            panic!("request")
        };
        assert_eq!(
            (method.as_ref(), info.name.as_deref()),
            ("prompts/get", Some("gréet"))
        );
    }

    #[test]
    fn name_is_only_a_label_for_tools_and_prompts() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x","uri":"file:///a"}}"#,
        );
        let Message::Request { info, .. } = m else {
            panic!("request")
        };
        assert_eq!(info.name, None);
    }

    #[test]
    fn resource_uri_of_resource_methods_only() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///srv/a%20b.txt"}}"#,
        );
        let Message::Request { info, .. } = m else {
            panic!("request")
        };
        assert_eq!(info.uri.as_deref(), Some("file:///srv/a%20b.txt"));
        let m = single(
            r#"{"jsonrpc":"2.0","id":3,"method":"resources/subscribe","params":{"uri":"mem:\/\u0078"}}"#,
        );
        let Message::Request { info, .. } = m else {
            panic!("request")
        };
        assert_eq!(info.uri.as_deref(), Some("mem:/x"));
        // Another method's `uri`, and a `uri` that is not a string, are not resource URIs;
        // the rest of params is still read.
        let m = single(
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"fetch","uri":"http://x"}}"#,
        );
        let Message::Request { info, .. } = m else {
            panic!("request")
        };
        assert_eq!((info.uri, info.name.as_deref()), (None, Some("fetch")));
        let m = single(
            r#"{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":{"a":1},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let Message::Request { info, .. } = m else {
            panic!("request")
        };
        assert_eq!(
            (info.uri, info.protocol_version.as_deref()),
            (None, Some("2026-07-28"))
        );
    }

    #[test]
    fn trace_context_in_meta() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","arguments":{},"_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"vendor=x"}}}"#,
        );
        let Message::Request { info, .. } = m else {
            panic!("request")
        };
        assert_eq!(
            (
                info.name.as_deref(),
                info.traceparent.as_deref(),
                info.tracestate.as_deref()
            ),
            (
                Some("echo"),
                Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                Some("vendor=x")
            )
        );
        // Notifications carry it too; a non-string traceparent is ignored, not an error.
        let m = single(
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"_meta":{"traceparent":7}}}"#,
        );
        assert_eq!(
            m,
            Message::Notification {
                method: "notifications/progress".into(),
                info: RequestInfo::default()
            }
        );
    }

    #[test]
    fn initialize_and_discover_identity() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"claude","version":"1"}}}"#,
        );
        let Message::Request { info, .. } = m else {
            panic!("request")
        };
        assert_eq!(
            (
                info.client_name.as_deref(),
                info.protocol_version.as_deref()
            ),
            (Some("claude"), Some("2025-11-25"))
        );

        let m = single(
            r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","serverInfo":{"name":"probe-py1","version":"1"},"capabilities":{}}}"#,
        );
        assert_eq!(
            m,
            Message::Response {
                id: Id::Num(0),
                info: ResultInfo {
                    is_error: false,
                    server_name: Some("probe-py1".into()),
                    protocol_version: Some("2025-11-25".into())
                }
            }
        );

        let m = single(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"2"}}}}"#,
        );
        let Message::Request { info, .. } = m else {
            panic!("request")
        };
        assert_eq!(
            (
                info.client_name.as_deref(),
                info.protocol_version.as_deref()
            ),
            (Some("mcp"), Some("2026-07-28"))
        );

        let m = single(
            r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[],"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"probe-py2"}}}}"#,
        );
        let Message::Response { info, .. } = m else {
            panic!("response")
        };
        assert_eq!(info.server_name.as_deref(), Some("probe-py2"));
    }

    #[test]
    fn tool_error_result() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"boom"}],"isError":true}}"#,
        );
        let Message::Response { info, .. } = m else {
            panic!("response")
        };
        assert!(info.is_error);
    }

    #[test]
    fn errors_with_and_without_id() {
        assert_eq!(
            single(
                r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32601,"message":"Method not found"}}"#
            ),
            Message::Error {
                id: Some(Id::Num(4)),
                code: -32601
            }
        );
        assert_eq!(
            single(
                r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#
            ),
            Message::Error {
                id: None,
                code: -32700
            }
        );
    }

    #[test]
    fn notifications_and_cancellation() {
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Message::Notification {
                method: "notifications/initialized".into(),
                info: RequestInfo::default()
            }
        );
        let m = single(
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"r-9","reason":"timeout"}}"#,
        );
        let Message::Notification { info, .. } = m else {
            panic!("notification")
        };
        assert_eq!(info.cancelled_id, Some(Id::Str("r-9".into())));
    }

    #[test]
    fn batches() {
        let Ok(Parsed::Batch(items)) = parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"},{"x":1}]"#,
        ) else {
            panic!("batch");
        };
        assert_eq!(items.len(), 3);
        assert!(matches!(items[0], Ok(Message::Request { .. })));
        assert!(matches!(items[1], Ok(Message::Notification { .. })));
        assert_eq!(items[2].as_ref().unwrap_err().reason(), "not_jsonrpc");
        assert_eq!(parse(b"[]").unwrap_err().reason(), "not_jsonrpc");
    }

    #[test]
    fn invalid_input() {
        for bad in [
            &b"{"[..],
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"",
            b"\xff\xfe",
            b"nul",
            b"{\"a\":1}}",
            b"{\"jsonrpc\":{{{\"2.0\",\"id\":1}",
            b"{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"a\" junk",
        ] {
            assert_eq!(parse(bad).unwrap_err().reason(), "invalid_json", "{bad:?}");
        }
        for bad in [
            &br#"{"id":1,"method":"a"}"#[..],
            br#"{"jsonrpc":"1.0","id":1,"method":"a"}"#,
            br#"{"jsonrpc":"2.0","id":{"x":1},"method":"a"}"#,
            br#"{"jsonrpc":"2.0","id":null,"method":"a"}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":"x"}}"#,
            br#"{"jsonrpc":"2.0","result":{}}"#,
            b"42",
            b"\"str\"",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().reason(),
                "not_jsonrpc",
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_crash() {
        let mut line = String::from(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":"#);
        line.push_str(&"[".repeat(100_000));
        assert!(parse(line.as_bytes()).is_err());
    }
}
