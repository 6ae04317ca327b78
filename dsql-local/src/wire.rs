//! Just enough of the PostgreSQL wire protocol (v3) for the gateway: startup packets, message
//! framing, and the few backend messages the gateway writes itself.

use bytes::{Buf, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

pub(crate) const SSL_REQUEST_CODE: u32 = 80_877_103;
pub(crate) const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub(crate) const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// PostgreSQL's own limit for a startup packet.
const MAX_STARTUP_LEN: usize = 10_000;
/// Messages a client may send before authentication completes (the password) are small.
pub(crate) const MAX_PREAUTH_MESSAGE: usize = 64 * 1024;
/// DSQL's words for an optimistic-concurrency data conflict.
pub(crate) const OC000_MESSAGE: &str =
    "change conflicts with another transaction, please retry: (OC000)";

/// The first packet a client sends, before any typed message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Startup {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        key: Vec<u8>,
    },
    Params {
        version: u32,
        params: Vec<(String, String)>,
    },
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Reads one length-prefixed startup packet.
pub(crate) async fn read_startup<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Startup> {
    let len = s.read_u32().await? as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(invalid("invalid startup packet length"));
    }
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await?;
    parse_startup(&body)
}

fn parse_startup(body: &[u8]) -> io::Result<Startup> {
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST_CODE => Ok(Startup::Ssl),
        GSSENC_REQUEST_CODE => Ok(Startup::GssEnc),
        CANCEL_REQUEST_CODE => {
            if rest.len() < 8 {
                return Err(invalid("short cancel request"));
            }
            let pid = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            Ok(Startup::Cancel {
                pid,
                key: rest[4..].to_vec(),
            })
        }
        version => {
            let mut params = Vec::new();
            let mut fields = rest.split(|b| *b == 0);
            loop {
                let key = fields
                    .next()
                    .ok_or_else(|| invalid("unterminated startup packet"))?;
                if key.is_empty() {
                    break;
                }
                let value = fields
                    .next()
                    .ok_or_else(|| invalid("startup parameter without a value"))?;
                let key = String::from_utf8(key.to_vec())
                    .map_err(|_| invalid("startup parameter is not UTF-8"))?;
                let value = String::from_utf8(value.to_vec())
                    .map_err(|_| invalid("startup parameter is not UTF-8"))?;
                params.push((key, value));
            }
            Ok(Startup::Params { version, params })
        }
    }
}

/// If `buf` starts with a complete message, its total length (tag + length field + body).
pub(crate) fn frame_len(buf: &[u8]) -> io::Result<Option<usize>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(invalid("invalid message length"));
    }
    Ok((buf.len() > len).then_some(len + 1))
}

/// Reads one typed message (tag, body), buffering in `buf`. `Ok(None)` on end of stream.
pub(crate) async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    max_len: usize,
) -> io::Result<Option<(u8, BytesMut)>> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if !(4..=max_len).contains(&len) {
                return Err(invalid("invalid message length"));
            }
            if let Some(total) = frame_len(buf)? {
                let mut frame = buf.split_to(total);
                let tag = frame[0];
                frame.advance(5);
                return Ok(Some((tag, frame)));
            }
        }
        if s.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

/// A typed message: tag, length, body.
pub(crate) fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An ErrorResponse with severity, SQLSTATE, message and optional detail.
pub(crate) fn error_response(
    severity: &str,
    code: &str,
    text: &str,
    detail: Option<&str>,
) -> Vec<u8> {
    let mut body = Vec::new();
    let mut field = |t: u8, v: &str| {
        body.push(t);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    };
    field(b'S', severity);
    field(b'V', severity);
    field(b'C', code);
    field(b'M', text);
    if let Some(d) = detail {
        field(b'D', d);
    }
    body.push(0);
    message(b'E', &body)
}

/// AuthenticationRequest with the given code (0 ok, 3 cleartext password).
pub(crate) fn auth_request(code: i32) -> Vec<u8> {
    message(b'R', &code.to_be_bytes())
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_.` options.
pub(crate) fn negotiate_protocol_version(unsupported: &[String]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&(unsupported.len() as i32).to_be_bytes());
    for o in unsupported {
        body.extend_from_slice(o.as_bytes());
        body.push(0);
    }
    message(b'v', &body)
}

/// The fields of an ErrorResponse/NoticeResponse body.
pub(crate) fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&t, tail)) = rest.split_first() {
        if t == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        out.push((t, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    out
}

/// The message text of an ErrorResponse body, for logs and errors.
pub(crate) fn error_text(body: &[u8]) -> String {
    let fields = error_fields(body);
    let get = |t: u8| {
        fields
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    format!("{}: {} (SQLSTATE {})", get(b'S'), get(b'M'), get(b'C'))
}

/// PostgreSQL's serialization failure rewritten in DSQL's words, or `None` for any other error.
/// SQLSTATE stays 40001; the detail and hint (PostgreSQL's internals) are dropped.
pub(crate) fn rewrite_serialization_failure(body: &[u8]) -> Option<Vec<u8>> {
    let fields = error_fields(body);
    if !fields.iter().any(|(t, v)| *t == b'C' && v == "40001") {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    for (t, v) in &fields {
        let v = match t {
            b'M' => OC000_MESSAGE,
            b'D' | b'H' | b'W' | b'F' | b'L' | b'R' => continue,
            _ => v.as_str(),
        };
        out.push(*t);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out.push(0);
    Some(message(b'E', &out))
}

/// Splits a libpq `options` value into its words, honouring backslash escapes.
fn option_words(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            in_word = true;
        } else if c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            cur.push(c);
            in_word = true;
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The `-c name=value` / `--name=value` settings in a libpq `options` value.
pub(crate) fn option_settings(options: &str) -> Vec<(String, String)> {
    let words = option_words(options);
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let setting = if w == "-c" {
            i += 1;
            words.get(i).map(String::as_str)
        } else {
            w.strip_prefix("--").or_else(|| w.strip_prefix("-c"))
        };
        if let Some((name, value)) = setting.and_then(|s| s.split_once('=')) {
            out.push((name.replace('-', "_"), value.to_owned()));
        }
        i += 1;
    }
    out
}

fn escape_word(w: &str) -> String {
    let mut out = String::with_capacity(w.len());
    for c in w.chars() {
        if c == '\\' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Removes `-c amzn-cluster-id=<id>` (DSQL's routing option, unknown to PostgreSQL) from a libpq
/// `options` value. Returns the remaining options and the cluster id, if one was given.
pub(crate) fn take_cluster_id(options: &str) -> (String, Option<String>) {
    let words = option_words(options);
    let mut kept: Vec<String> = Vec::new();
    let mut id = None;
    let mut i = 0;
    let is_cluster = |setting: &str| -> Option<String> {
        let (name, value) = setting.split_once('=')?;
        (name.replace('_', "-") == "amzn-cluster-id").then(|| value.to_owned())
    };
    while i < words.len() {
        let w = &words[i];
        if w == "-c" {
            if let Some(next) = words.get(i + 1) {
                if let Some(v) = is_cluster(next) {
                    id = Some(v);
                } else {
                    kept.push(w.clone());
                    kept.push(next.clone());
                }
                i += 2;
                continue;
            }
        } else if let Some(v) = w
            .strip_prefix("--")
            .or_else(|| w.strip_prefix("-c"))
            .and_then(is_cluster)
        {
            id = Some(v);
            i += 1;
            continue;
        }
        kept.push(w.clone());
        i += 1;
    }
    (
        kept.iter()
            .map(|w| escape_word(w))
            .collect::<Vec<_>>()
            .join(" "),
        id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_id_is_taken_out_of_options() {
        let id = "abcdefghijklmnopqrstuvwxyz";
        assert_eq!(
            take_cluster_id(&format!("-c amzn-cluster-id={id}")),
            (String::new(), Some(id.into()))
        );
        assert_eq!(
            take_cluster_id(&format!("-camzn-cluster-id={id}")),
            (String::new(), Some(id.into()))
        );
        assert_eq!(
            take_cluster_id(&format!("--amzn_cluster_id={id}")),
            (String::new(), Some(id.into()))
        );
        assert_eq!(
            take_cluster_id(&format!(
                "-c search_path=a\\ b -c amzn-cluster-id={id} -c work_mem=64kB"
            )),
            (
                "-c search_path=a\\ b -c work_mem=64kB".into(),
                Some(id.into())
            )
        );
        assert_eq!(
            take_cluster_id("-c statement_timeout=5s"),
            ("-c statement_timeout=5s".into(), None)
        );
        assert_eq!(take_cluster_id("-c"), ("-c".into(), None));
    }

    #[test]
    fn option_settings_are_read() {
        assert_eq!(
            option_settings("-c default_transaction_isolation=serializable --work-mem=1MB -cx=y"),
            vec![
                (
                    "default_transaction_isolation".into(),
                    "serializable".into()
                ),
                ("work_mem".into(), "1MB".into()),
                ("x".into(), "y".into())
            ]
        );
        assert!(option_settings("-c").is_empty());
    }

    #[test]
    fn serialization_failures_get_dsql_words() {
        let pg = error_response(
            "ERROR",
            "40001",
            "could not serialize access due to concurrent update",
            Some("x"),
        );
        let body = &pg[5..];
        let out = rewrite_serialization_failure(body).expect("40001 is rewritten");
        let fields = error_fields(&out[5..]);
        assert!(fields.contains(&(b'C', "40001".into())));
        assert!(fields.contains(&(b'M', OC000_MESSAGE.into())));
        assert!(!fields.iter().any(|(t, _)| *t == b'D'));
        let other = error_response("ERROR", "23505", "duplicate key", None);
        assert_eq!(rewrite_serialization_failure(&other[5..]), None);
    }

    #[test]
    fn startup_packets_parse_and_garbage_is_an_error() {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0admin\0database\0postgres\0\0");
        assert_eq!(
            parse_startup(&body).ok(),
            Some(Startup::Params {
                version: 196_608,
                params: vec![
                    ("user".into(), "admin".into()),
                    ("database".into(), "postgres".into())
                ]
            })
        );
        let mut bad = 196_608u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"user\0admin");
        assert!(parse_startup(&bad).is_err());
        assert!(frame_len(&[b'E', 0, 0, 0, 1]).is_err());
        assert_eq!(frame_len(&[b'Z', 0, 0, 0, 5, b'I']).ok(), Some(Some(6)));
        assert_eq!(frame_len(&[b'Z', 0, 0, 0, 5]).ok(), Some(None));
    }
}
