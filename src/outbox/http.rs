//! A minimal HTTP/1.1 POST client for SMS providers: one request per connection
//! (`Connection: close`), status line read, body ignored. http:// over tokio, https:// over
//! tokio-rustls (ring, webpki roots) which lettre already brings in. A full client (reqwest,
//! hyper-util) would add ~40 crates for one POST a message.
//!
//! URL parsing, request printing and status parsing are pure and unit-tested; `post` is the IO.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

/// Where to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum HttpError {
    Url,
    Io(std::io::Error),
    Tls(String),
    Timeout,
    /// The response did not start with `HTTP/1.x NNN`, or its head exceeded the limit.
    BadResponse,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Url => f.write_str("bad URL"),
            HttpError::Io(e) => write!(f, "{e}"),
            HttpError::Tls(e) => write!(f, "TLS: {e}"),
            HttpError::Timeout => f.write_str("timed out"),
            HttpError::BadResponse => f.write_str("malformed HTTP response"),
        }
    }
}

impl std::error::Error for HttpError {}

/// `http[s]://host[:port][/path]`; IPv6 literals in brackets. No userinfo: credentials go in
/// the config's auth fields, never in a URL that might be logged.
pub fn parse_url(url: &str) -> Result<Target, HttpError> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(HttpError::Url);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty()
        || authority.contains('@')
        || !path.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(HttpError::Url);
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or(HttpError::Url)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| HttpError::Url)?,
            None if after.is_empty() => default_port,
            None => return Err(HttpError::Url),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| HttpError::Url)?),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(HttpError::Url);
    }
    Ok(Target {
        tls,
        host,
        port,
        path: path.to_string(),
    })
}

/// The request bytes. Header values come from config and the idempotency key; CR/LF in them
/// would split the request, so they are dropped.
pub fn build_request(target: &Target, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let clean = |s: &str| s.replace(['\r', '\n'], "");
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let default_port = if target.tls { 443 } else { 80 };
    let mut head = format!("POST {} HTTP/1.1\r\nHost: {host}", target.path);
    if target.port != default_port {
        head.push_str(&format!(":{}", target.port));
    }
    head.push_str(&format!(
        "\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: ivr-outbox\r\n",
        body.len()
    ));
    for (name, value) in headers {
        head.push_str(&format!("{}: {}\r\n", clean(name), clean(value)));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The status code of a response head (`HTTP/1.1 202 Accepted`).
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// A TLS connector trusting the webpki roots, built once per sender.
pub fn tls_connector() -> Result<TlsConnector, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HttpError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// POST `body` and return the response status. The whole exchange is bounded by `timeout`.
pub async fn post(
    target: &Target,
    tls: Option<&TlsConnector>,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<u16, HttpError> {
    let request = build_request(target, headers, body);
    let exchange = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(HttpError::Io)?;
        tcp.set_nodelay(true).map_err(HttpError::Io)?;
        if target.tls {
            let connector = tls.ok_or_else(|| HttpError::Tls("no TLS connector".into()))?;
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| HttpError::Tls(e.to_string()))?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| HttpError::Tls(e.to_string()))?;
            exchange(stream, &request).await
        } else {
            exchange(tcp, &request).await
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout)?
}

/// Largest response head read; providers answer in well under 1 KiB.
const HEAD_MAX: usize = 16 * 1024;

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<u16, HttpError> {
    stream.write_all(request).await.map_err(HttpError::Io)?;
    stream.flush().await.map_err(HttpError::Io)?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        // The status line is all we need; stop as soon as it is complete.
        if head.windows(2).any(|w| w == b"\r\n") {
            break;
        }
        let n = stream.read(&mut buf).await.map_err(HttpError::Io)?;
        if n == 0 || head.len() + n > HEAD_MAX {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head).ok_or(HttpError::BadResponse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            parse_url("https://api.sms.example/v1/send?x=1").unwrap(),
            Target {
                tls: true,
                host: "api.sms.example".into(),
                port: 443,
                path: "/v1/send?x=1".into()
            }
        );
        let t = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (false, "127.0.0.1", 8080, "/")
        );
        let t = parse_url("http://[::1]:9/s").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        for bad in [
            "ftp://x",
            "http://",
            "http://:80/",
            "http://u:p@host/",
            "http://host:99999/",
            "http://host/a b",
            "http://[::1/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_is_well_formed_and_injection_free() {
        let t = parse_url("http://127.0.0.1:8080/send").unwrap();
        let req = build_request(
            &t,
            &[
                ("Idempotency-Key", "k\r\nX-Evil: 1"),
                ("Content-Type", "application/json"),
            ],
            b"{}",
        );
        let text = String::from_utf8(req).unwrap();
        assert!(
            text.starts_with(
                "POST /send HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 2\r\n"
            )
        );
        assert!(text.contains("Idempotency-Key: kX-Evil: 1\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));
        let t = parse_url("https://api.example/").unwrap();
        let text = String::from_utf8(build_request(&t, &[], b"")).unwrap();
        assert!(text.contains("Host: api.example\r\n"));
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 202 Accepted\r\n\r\n"), Some(202));
        assert_eq!(parse_status(b"HTTP/1.0 500\r\n"), Some(500));
        assert_eq!(parse_status(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(parse_status(b"SIP/2.0 200 OK\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 200 OK"), None, "incomplete line");
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn tls_connector_builds_with_ring() {
        assert!(tls_connector().is_ok());
    }
}
