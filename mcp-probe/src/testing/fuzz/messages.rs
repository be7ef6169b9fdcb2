//! The message harnesses: `jsonrpc` (the JSON-RPC parser against `serde_json`) and
//! `decode` (ring buffer records against their encoding).

use mcp_probe_common::{EventHeader, EventKind, EVENT_HEADER_LEN};

use crate::{
    decode,
    protocols::jsonrpc::{self, Id, Message, Parsed},
    testing::generator::header_of,
};

/// `jsonrpc::parse`: whatever it reports agrees with an independent `serde_json::Value`
/// parse of the same bytes. Bytes that are not UTF-8 are tolerated inside strings the
/// parser skips (a tool's arguments, say), so the reference parses them lossily. Numbers
/// beyond `f64` (`1e400`, a legal id) are valid JSON that a `Value` cannot hold: such
/// inputs are only parsed.
pub fn jsonrpc(data: &[u8]) {
    let utf8 = std::str::from_utf8(data).is_ok();
    let value = serde_json::from_str::<serde_json::Value>(&String::from_utf8_lossy(data));
    let parsed = jsonrpc::parse(data);
    if matches!(&value, Err(e) if e.to_string().starts_with("number out of range")) {
        return;
    }
    match parsed {
        Err(jsonrpc::ParseError::InvalidJson(e)) => {
            assert!(!utf8 || value.is_err(), "valid JSON reported invalid ({e})")
        }
        Err(jsonrpc::ParseError::NotJsonRpc(_)) => {
            assert!(
                value.is_ok(),
                "invalid JSON reported as valid but not JSON-RPC"
            )
        }
        Ok(parsed) => {
            let Ok(value) = value else {
                panic!("invalid JSON parsed as {parsed:?}");
            };
            match parsed {
                Parsed::Single(msg) => check_message(&msg, &value),
                Parsed::Batch(items) => {
                    let Some(array) = value.as_array() else {
                        panic!("a batch from a non-array");
                    };
                    assert_eq!(items.len(), array.len(), "batch length");
                    for (item, v) in items.iter().zip(array) {
                        if let Ok(msg) = item {
                            check_message(msg, v);
                        }
                    }
                }
            }
        }
    }
}

fn check_id(id: &Id, v: Option<&serde_json::Value>) {
    let Some(v) = v else {
        panic!("{id:?} without an id member");
    };
    match id {
        Id::Num(n) => assert!(
            v.as_i64() == Some(*n) || (v.is_f64() && v.as_f64() == Some(*n as f64)),
            "id {n} from {v}"
        ),
        Id::NumText(_) => assert!(v.is_number(), "numeric id from {v}"),
        Id::Str(s) => assert_eq!(v.as_str(), Some(s.as_str()), "string id"),
    }
}

fn check_str(got: Option<&str>, v: Option<&serde_json::Value>, what: &str) {
    if let Some(got) = got {
        assert_eq!(v.and_then(|v| v.as_str()), Some(got), "{what}");
    }
}

fn check_message(msg: &Message<'_>, v: &serde_json::Value) {
    let Some(obj) = v.as_object() else {
        panic!("{msg:?} from a non-object");
    };
    assert_eq!(obj.get("jsonrpc").and_then(|v| v.as_str()), Some("2.0"));
    match msg {
        Message::Request { id, method, info } => {
            check_id(id, obj.get("id"));
            check_request(method, info, obj);
        }
        Message::Notification { method, info } => {
            assert!(!obj.contains_key("id"), "a notification with an id");
            check_request(method, info, obj);
        }
        Message::Response { id, info } => {
            check_id(id, obj.get("id"));
            assert!(obj.contains_key("result") && !obj.contains_key("method"));
            let result = obj.get("result");
            if info.is_error {
                assert_eq!(
                    result.and_then(|r| r.get("isError")),
                    Some(&serde_json::Value::Bool(true))
                );
            }
            if let Some(name) = info.server_name.as_deref() {
                let direct = result.and_then(|r| r.get("serverInfo")?.get("name"));
                let in_meta = result.and_then(|r| {
                    r.get("_meta")?
                        .get("io.modelcontextprotocol/serverInfo")?
                        .get("name")
                });
                assert!(
                    direct.and_then(|v| v.as_str()) == Some(name)
                        || in_meta.and_then(|v| v.as_str()) == Some(name),
                    "server name {name}"
                );
            }
        }
        Message::Error { id, code } => {
            match id {
                Some(id) => check_id(id, obj.get("id")),
                None => assert!(obj.get("id").is_none_or(|v| v.is_null())),
            }
            assert!(!obj.contains_key("method"));
            let got = obj.get("error").and_then(|e| e.get("code"));
            assert!(
                got.and_then(|c| c.as_i64()) == Some(*code)
                    || got.and_then(|c| c.as_f64()) == Some(*code as f64),
                "error code {code} from {got:?}"
            );
        }
    }
}

fn check_request(
    method: &str,
    info: &jsonrpc::RequestInfo<'_>,
    obj: &serde_json::Map<String, serde_json::Value>,
) {
    let params = obj.get("params");
    let meta = params.and_then(|p| p.get("_meta"));
    check_str(Some(method), obj.get("method"), "method");
    check_str(
        info.name.as_deref(),
        params.and_then(|p| p.get("name")),
        "params.name",
    );
    if let Some(name) = info.client_name.as_deref() {
        let direct = params.and_then(|p| p.get("clientInfo")?.get("name"));
        let in_meta = meta.and_then(|m| m.get("io.modelcontextprotocol/clientInfo")?.get("name"));
        assert!(
            direct.and_then(|v| v.as_str()) == Some(name)
                || in_meta.and_then(|v| v.as_str()) == Some(name),
            "client name {name}"
        );
    }
    if let Some(cancelled) = &info.cancelled_id {
        check_id(cancelled, params.and_then(|p| p.get("requestId")));
    }
}

// ---------------------------------------------------------------------------------------
// decode

/// `decode::decode`: errors are the documented ones, and a decoded record re-encodes to
/// the header and payload it came from.
pub fn decode(data: &[u8]) {
    let record = match decode::decode(data) {
        Ok(r) => r,
        Err(decode::DecodeError::Short(n)) => {
            assert!(n == data.len() && n < EVENT_HEADER_LEN);
            return;
        }
        Err(_) => {
            assert!(data.len() >= EVENT_HEADER_LEN);
            return;
        }
    };
    let _ = record.comm();
    let header = header_of(&record);
    let mut again = decode::encode(&header, record.payload);
    if record.kind == EventKind::ProcessExit {
        // Exit records carry no stream: the decoder does not read their stream kind.
        let at = std::mem::offset_of!(EventHeader, stream_kind);
        again[at..at + 4].copy_from_slice(&data[at..at + 4]);
    }
    assert_eq!(
        again,
        &data[..EVENT_HEADER_LEN + record.payload.len()],
        "a record does not re-encode to its bytes"
    );
}
