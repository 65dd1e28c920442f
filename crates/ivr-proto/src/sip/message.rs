//! SIP message parse and print (RFC 3261 §7, §20, §25).
//!
//! Parsing is two-staged: [`parse`] frames the message (start line, unfolded headers, body cut by
//! Content-Length) and rejects what cannot be a SIP message at all; [`validate_request`] then checks
//! the semantics a UAS relies on (single-valued headers, CSeq, URIs, name-addr syntax). Both report
//! typed errors that [`Violation::status`] maps to a response code in one place.
//! When framing fails, [`salvage`] still reads enough headers (Via, From, To, Call-ID, CSeq) to
//! answer with 400/413/505, because a silent drop makes the peer retransmit for 32 s.

use std::fmt::Write as _;

/// Limits applied while parsing, from `EndpointConfig`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 65_535,
            max_headers: 128,
        }
    }
}

/// Methods we know by name; anything else is kept verbatim in `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Refer,
    Notify,
    Subscribe,
    Publish,
    Message,
    Prack,
    Update,
    Other(String),
}

impl Method {
    /// Methods are case-sensitive (RFC 3261 §7.1), so "invite" is an unknown method.
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "PUBLISH" => Method::Publish,
            "MESSAGE" => Method::Message,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Publish => "PUBLISH",
            Method::Message => "MESSAGE",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Other(s) => s,
        }
    }
}

/// One header line as received: `name` as sent (for the app), `value` unfolded and trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl Header {
    pub fn new(name: &str, value: &str) -> Header {
        Header {
            name: name.to_string(),
            value: value.to_string(),
        }
    }
    /// True if this header is `long` (a lowercase full name), also under its compact form.
    pub fn is(&self, long: &str) -> bool {
        canonical(&self.name).eq_ignore_ascii_case(long)
    }
}

/// Expands compact header names (RFC 3261 §7.3.3 and later RFCs) to their full names.
pub fn canonical(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "call-id",
        b'm' => "contact",
        b'e' => "content-encoding",
        b'l' => "content-length",
        b'c' => "content-type",
        b'f' => "from",
        b's' => "subject",
        b'k' => "supported",
        b't' => "to",
        b'v' => "via",
        b'o' => "event",
        b'r' => "refer-to",
        b'b' => "referred-by",
        b'u' => "allow-events",
        b'x' => "session-expires",
        b'y' => "identity",
        _ => name,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

/// A parsed message. Owned: the endpoint keeps requests for the life of their transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

/// Why a message is not acceptable, named after the violation; see [`Violation::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    TooLarge,
    TooManyHeaders,
    NoHeaderEnd,
    BadStartLine,
    BadVersion,
    BadHeaderLine,
    BadContentLength,
    BodyTruncated,
    MissingHeader(&'static str),
    DuplicateHeader(&'static str),
    BadHeaderValue(&'static str),
    CseqMethodMismatch,
    UnsupportedUriScheme,
    UnsupportedExtension(Vec<String>),
    UnsupportedMediaType,
    NotAcceptable,
}

impl Violation {
    /// The one place where violations become SIP status codes (rustls maps errors to alerts so).
    pub fn status(&self) -> u16 {
        match self {
            Violation::TooLarge => 413,
            Violation::BadVersion => 505,
            Violation::UnsupportedUriScheme => 416,
            Violation::UnsupportedExtension(_) => 420,
            Violation::UnsupportedMediaType => 415,
            Violation::NotAcceptable => 406,
            Violation::TooManyHeaders
            | Violation::NoHeaderEnd
            | Violation::BadStartLine
            | Violation::BadHeaderLine
            | Violation::BadContentLength
            | Violation::BodyTruncated
            | Violation::MissingHeader(_)
            | Violation::DuplicateHeader(_)
            | Violation::BadHeaderValue(_)
            | Violation::CseqMethodMismatch => 400,
        }
    }

    /// Headers the response must carry to be useful (RFC 3261 §8.2.2.3, §21.4.13).
    pub fn extra_headers(&self) -> Vec<Header> {
        match self {
            Violation::UnsupportedExtension(tags) => {
                vec![Header::new("Unsupported", &tags.join(", "))]
            }
            Violation::UnsupportedMediaType | Violation::NotAcceptable => {
                vec![Header::new("Accept", "application/sdp")]
            }
            // A 400 says what was wrong (Warning code 399, RFC 3261 §20.43) for peers' logs.
            v if v.status() == 400 => vec![Header::new(
                "Warning",
                &format!("399 ivr \"{}\"", v.describe()),
            )],
            _ => Vec::new(),
        }
    }

    /// Short human description (no message content, so no personal data).
    pub fn describe(&self) -> String {
        match self {
            Violation::TooLarge => "message too large".into(),
            Violation::TooManyHeaders => "too many headers".into(),
            Violation::NoHeaderEnd => "no end of headers".into(),
            Violation::BadStartLine => "malformed start line".into(),
            Violation::BadVersion => "unsupported SIP version".into(),
            Violation::BadHeaderLine => "malformed header line".into(),
            Violation::BadContentLength => "bad Content-Length".into(),
            Violation::BodyTruncated => "body shorter than Content-Length".into(),
            Violation::MissingHeader(h) => format!("missing {h}"),
            Violation::DuplicateHeader(h) => format!("more than one {h}"),
            Violation::BadHeaderValue(h) => format!("malformed {h}"),
            Violation::CseqMethodMismatch => "CSeq method differs from request method".into(),
            Violation::UnsupportedUriScheme => "unsupported URI scheme".into(),
            Violation::UnsupportedExtension(_) => "unsupported extension".into(),
            Violation::UnsupportedMediaType => "unsupported body type".into(),
            Violation::NotAcceptable => "cannot produce an acceptable body".into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl std::error::Error for Violation {}

/// A header value that does not follow its grammar (Via, name-addr, parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntaxError;

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("header syntax error")
    }
}

impl std::error::Error for SyntaxError {}

/// Errors of the TCP framing helper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    TooLarge,
    BadContentLength,
}

/// Standard reason phrases for the codes we send.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => match code / 100 {
            1 => "Progress",
            2 => "OK",
            3 => "Redirect",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// RFC 3261 token (header names, methods, tags).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// Position of the blank line ending the header section and the length of its terminator.
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    // Bare-LF peers exist; accept them (RFC 3261 §7.5 asks for CRLF but robustness wins).
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Splits the header section into unfolded lines (continuation lines start with SP/HT).
fn unfold(section: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in section.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if (line.starts_with(' ') || line.starts_with('\t')) && !lines.is_empty() {
            let last = lines.len() - 1;
            lines[last].push(' ');
            lines[last].push_str(line.trim());
        } else {
            lines.push(line.to_string());
        }
    }
    lines
}

fn split_header(line: &str) -> Option<Header> {
    let colon = line.find(':')?;
    let name = line[..colon].trim_end_matches([' ', '\t']);
    if !is_token(name) {
        return None;
    }
    Some(Header {
        name: name.to_string(),
        value: line[colon + 1..].trim().to_string(),
    })
}

fn parse_start_line(line: &str) -> Result<StartLine, Violation> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let mut parts = rest.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if version != "2.0" {
            return Err(Violation::BadVersion);
        }
        let code_str = parts.next().ok_or(Violation::BadStartLine)?;
        if code_str.len() != 3 || !code_str.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Violation::BadStartLine);
        }
        // Three ASCII digits always parse; bounds checked below.
        let code: u16 = code_str.parse().map_err(|_| Violation::BadStartLine)?;
        if !(100..=699).contains(&code) {
            return Err(Violation::BadStartLine);
        }
        // The SP before an empty reason is mandatory, but some peers drop it; be liberal.
        let reason = parts.next().unwrap_or("");
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single SPs (RFC 4475 lwsstart/trws
    // and lwsruri are rejected here).
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || !is_token(parts[0]) || parts[1].is_empty() {
        // A request line with a foreign version and otherwise sane shape gets 505 rather than 400.
        if parts.len() == 3 && parts[2].starts_with("SIP/") && parts[2] != "SIP/2.0" {
            return Err(Violation::BadVersion);
        }
        return Err(Violation::BadStartLine);
    }
    if parts[2] != "SIP/2.0" {
        return Err(if parts[2].starts_with("SIP/") {
            Violation::BadVersion
        } else {
            Violation::BadStartLine
        });
    }
    let uri = parts[1];
    if uri.starts_with('<') || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Violation::BadStartLine);
    }
    Ok(StartLine::Request {
        method: Method::from_token(parts[0]),
        uri: uri.to_string(),
    })
}

/// Parses one Content-Length value: digits only, so "-999" can never become a counter.
fn parse_content_length(v: &str) -> Result<usize, Violation> {
    let v = v.trim();
    if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Violation::BadContentLength);
    }
    v.parse().map_err(|_| Violation::BadContentLength)
}

/// Frames and parses one message. For UDP (`stream == false`) the body is Content-Length bytes
/// (trailing octets ignored, RFC 3261 §18.3) or the rest of the datagram when it is absent.
pub fn parse(data: &[u8], limits: &Limits, stream: bool) -> Result<Message, Violation> {
    if data.len() > limits.max_message_bytes {
        return Err(Violation::TooLarge);
    }
    // CRLFs before the start line are to be ignored (RFC 3261 §7.5).
    let data = &data[leading_crlf(data)..];
    let (end, term) = match header_end(data) {
        Some(found) => found,
        // A datagram is complete by definition: a missing final blank line only means "no body"
        // (RFC 4475 baddn.dat is cut so). On a stream it means "wait for more".
        None if !stream => (data.len(), 0),
        None => return Err(Violation::NoHeaderEnd),
    };
    let section = String::from_utf8_lossy(&data[..end]);
    let mut lines = unfold(&section).into_iter();
    let first = lines.next().ok_or(Violation::BadStartLine)?;
    let start = parse_start_line(&first)?;
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let h = split_header(&line).ok_or(Violation::BadHeaderLine)?;
        headers.push(h);
        if headers.len() > limits.max_headers {
            return Err(Violation::TooManyHeaders);
        }
    }
    let rest = &data[end + term..];
    // Several Content-Length lines must agree (RFC 4475 mcl01); one bad value poisons all.
    let mut length: Option<usize> = None;
    for h in headers.iter().filter(|h| h.is("content-length")) {
        let n = parse_content_length(&h.value)?;
        if length.is_some_and(|l| l != n) {
            return Err(Violation::BadContentLength);
        }
        length = Some(n);
    }
    let body = match length {
        Some(n) if n > rest.len() => return Err(Violation::BodyTruncated),
        Some(n) => rest[..n].to_vec(),
        None if stream => Vec::new(),
        None => rest.to_vec(),
    };
    Ok(Message {
        start,
        headers,
        body,
    })
}

/// TCP framing: the length of the first complete message in `buf`, `Ok(None)` if more bytes are
/// needed. Leading CRLFs (RFC 5626 keep-alives) are returned as their own short frame, which
/// `Endpoint::handle_input` ignores.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let keepalive = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if keepalive > 0 {
        return Ok(Some(keepalive));
    }
    let Some((end, term)) = header_end(buf) else {
        return if buf.len() > Limits::default().max_message_bytes {
            Err(FrameError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let section = String::from_utf8_lossy(&buf[..end]);
    let mut length = 0usize;
    for line in unfold(&section).iter().skip(1) {
        if let Some(h) = split_header(line)
            && h.is("content-length")
        {
            length = parse_content_length(&h.value).map_err(|_| FrameError::BadContentLength)?;
        }
    }
    let total = end + term + length;
    if total > Limits::default().max_message_bytes {
        return Err(FrameError::TooLarge);
    }
    Ok(if buf.len() >= total {
        Some(total)
    } else {
        None
    })
}

fn leading_crlf(data: &[u8]) -> usize {
    data.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Best-effort read of the headers needed to answer a message that failed [`parse`].
/// `None` if it is not a request or carries no Via (then no response is possible).
pub fn salvage(data: &[u8]) -> Option<Vec<Header>> {
    let data = &data[leading_crlf(data)..];
    let end = header_end(data)
        .map(|(e, _)| e)
        .unwrap_or(data.len().min(65_535));
    let section = String::from_utf8_lossy(&data[..end]);
    let lines = unfold(&section);
    let first = lines.first()?;
    if first.starts_with("SIP/") || first.is_empty() {
        return None;
    }
    let keep = ["via", "from", "to", "call-id", "cseq"];
    let headers: Vec<Header> = lines
        .iter()
        .skip(1)
        .filter_map(|l| split_header(l))
        .filter(|h| keep.iter().any(|k| h.is(k)))
        .take(64)
        .collect();
    if !headers.iter().any(|h| h.is("via")) {
        return None;
    }
    Some(headers)
}

impl Message {
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// First value of header `long` (full lowercase name; compact forms match too).
    pub fn header(&self, long: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.is(long))
            .map(|h| h.value.as_str())
    }

    pub fn headers_named<'a>(&'a self, long: &'a str) -> impl Iterator<Item = &'a Header> + 'a {
        self.headers.iter().filter(move |h| h.is(long))
    }

    /// All comma-separated values of a list header, over all its lines, in order.
    pub fn values<'a>(&'a self, long: &'a str) -> Vec<&'a str> {
        self.headers_named(long)
            .flat_map(|h| split_list(&h.value))
            .collect()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("call-id")
    }

    pub fn cseq(&self) -> Option<(u32, &str)> {
        parse_cseq(self.header("cseq")?)
    }

    pub fn top_via(&self) -> Option<Via> {
        Via::parse(self.values("via").first()?).ok()
    }

    pub fn from_tag(&self) -> Option<String> {
        NameAddr::parse(self.header("from")?)
            .ok()?
            .param("tag")
            .map(str::to_string)
    }

    pub fn to_tag(&self) -> Option<String> {
        NameAddr::parse(self.header("to")?)
            .ok()?
            .param("tag")
            .map(str::to_string)
    }

    /// Serializes with a correct Content-Length (any received one is replaced).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512);
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(out, "{} {} SIP/2.0\r\n", method.as_str(), uri);
            }
            StartLine::Response { code, reason } => {
                let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for h in self.headers.iter().filter(|h| !h.is("content-length")) {
            let _ = write!(out, "{}: {}\r\n", h.name, h.value);
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Splits a header value at top-level commas (not inside quotes or <>), trimming each part.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out
}

/// CSeq = 1*DIGIT LWS Method, the number below 2**31 in spirit and 2**32 by the grammar.
fn parse_cseq(v: &str) -> Option<(u32, &str)> {
    let mut it = v.split_whitespace();
    let num = it.next()?;
    let method = it.next()?;
    if it.next().is_some() || !num.bytes().all(|b| b.is_ascii_digit()) || num.len() > 10 {
        return None;
    }
    // Leading zeros are legal ("0009"); u32 overflow is not (RFC 4475 scalar02).
    Some((num.parse().ok()?, method))
}

/// Parses `;name[=value]` parameters. Empty names (";;") are a syntax error (RFC 4475 badinv01).
fn parse_params(s: &str) -> Result<Vec<(String, Option<String>)>, SyntaxError> {
    let mut out = Vec::new();
    let s = s.trim();
    if s.is_empty() {
        return Ok(out);
    }
    let s = s.strip_prefix(';').ok_or(SyntaxError)?;
    for p in split_outside_quotes(s, ';') {
        let p = p.trim();
        let (name, value) = match p.find('=') {
            Some(eq) => (p[..eq].trim(), Some(p[eq + 1..].trim().to_string())),
            None => (p, None),
        };
        if !is_token(name) {
            return Err(SyntaxError);
        }
        if let Some(v) = &value
            && v.is_empty()
        {
            return Err(SyntaxError);
        }
        out.push((name.to_ascii_lowercase(), value));
    }
    Ok(out)
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// One Via value: `SIP/2.0/UDP host[:port];params`, LWS around '/' allowed (RFC 4475 wsinv).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub sent_by: String,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    pub fn parse(v: &str) -> Result<Via, SyntaxError> {
        let semi = v.find(';').unwrap_or(v.len());
        let (proto_host, params) = v.split_at(semi);
        let parts: Vec<&str> = proto_host.splitn(3, '/').collect();
        if parts.len() != 3 || parts[0].trim() != "SIP" || parts[1].trim() != "2.0" {
            return Err(SyntaxError);
        }
        let mut rest = parts[2].split_whitespace();
        let transport = rest.next().ok_or(SyntaxError)?;
        let sent_by: String = rest.collect::<Vec<_>>().join("");
        if !is_token(transport) || sent_by.is_empty() || sent_by.contains(['<', '>', '"', ',']) {
            return Err(SyntaxError);
        }
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            sent_by,
            params: parse_params(params)?,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch")
    }
}

/// name-addr / addr-spec with header parameters (From, To, Contact, Route).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(v: &str) -> Result<NameAddr, SyntaxError> {
        let v = v.trim();
        let (display, uri, params) = if let Some(rest) = v.strip_prefix('"') {
            let close = closing_quote(rest).ok_or(SyntaxError)?;
            let display = unescape_quoted(&rest[..close]);
            let after = rest[close + 1..].trim_start();
            let (uri, params) = bracketed(after)?;
            (Some(display), uri, params)
        } else if let Some(lt) = v.find('<') {
            let name = v[..lt].trim();
            // Unquoted display names are tokens separated by LWS (RFC 4475 baddn has a comma).
            // Non-ASCII letters are tolerated: real trunks send "José <sip:..>" unquoted, and
            // refusing a caller over a display name helps no one.
            let display_ok = |w: &str| w.chars().all(|c| is_token_char(c) || !c.is_ascii());
            if !name.split_whitespace().all(display_ok) {
                return Err(SyntaxError);
            }
            let (uri, params) = bracketed(&v[lt..])?;
            (
                if name.is_empty() {
                    None
                } else {
                    Some(name.to_string())
                },
                uri,
                params,
            )
        } else {
            // addr-spec form: params after the URI belong to the header, and the URI may not
            // carry '?' headers or ',' (RFC 3261 §20.10, RFC 4475 regbadct).
            let semi = v.find(';').unwrap_or(v.len());
            let (uri, params) = v.split_at(semi);
            let uri = uri.trim_end();
            if uri.contains(['?', ',', '"']) {
                return Err(SyntaxError);
            }
            (None, uri, params)
        };
        if uri.is_empty() || uri.chars().any(|c| c.is_whitespace()) || !uri.contains(':') {
            return Err(SyntaxError);
        }
        Ok(NameAddr {
            display,
            uri: uri.to_string(),
            params: parse_params(params)?,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The user part of a sip/sips/tel URI, raw (no unescaping), or "".
    pub fn user(&self) -> &str {
        uri_user(&self.uri)
    }
}

fn bracketed(s: &str) -> Result<(&str, &str), SyntaxError> {
    let s = s.strip_prefix('<').ok_or(SyntaxError)?;
    let gt = s.find('>').ok_or(SyntaxError)?;
    Ok((&s[..gt], &s[gt + 1..]))
}

fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some(i);
        }
    }
    None
}

fn unescape_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// Scheme of a URI, lowercased ("sip", "tel", ...), or "" if there is none.
pub fn uri_scheme(uri: &str) -> String {
    match uri.find(':') {
        Some(i) if i > 0 => uri[..i].to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// User part of a sip:, sips: or tel: URI; "" when there is none.
pub fn uri_user(uri: &str) -> &str {
    let Some(colon) = uri.find(':') else {
        return "";
    };
    let rest = &uri[colon + 1..];
    if uri_scheme(uri) == "tel" {
        return rest.split(';').next().unwrap_or("");
    }
    match rest.rfind('@') {
        Some(at) => &rest[..at],
        None => "",
    }
}

/// Semantic checks of a framed request (RFC 3261 §8.2 and §20), syntax → 400 first.
pub fn validate_request(msg: &Message) -> Result<(), Violation> {
    let StartLine::Request { method, uri } = &msg.start else {
        return Ok(());
    };
    if uri.is_empty() {
        return Err(Violation::BadStartLine);
    }
    for name in ["call-id", "from", "to", "cseq"] {
        let count = msg.headers_named(name).count();
        let label = static_name(name);
        if count == 0 {
            return Err(Violation::MissingHeader(label));
        }
        if count > 1 {
            return Err(Violation::DuplicateHeader(label));
        }
    }
    if msg.headers_named("max-forwards").count() > 1 {
        return Err(Violation::DuplicateHeader("Max-Forwards"));
    }
    let vias = msg.values("via");
    if vias.is_empty() {
        return Err(Violation::MissingHeader("Via"));
    }
    for v in vias {
        Via::parse(v).map_err(|_| Violation::BadHeaderValue("Via"))?;
    }
    // From/To are the dialog identity: a malformed one would make tags unreliable, so reject.
    for (name, label) in [("from", "From"), ("to", "To")] {
        // Single-valued headers: a top-level comma is a second value (or a bad display name).
        let value = msg.header(name).unwrap_or("");
        if split_list(value).len() != 1 {
            return Err(Violation::BadHeaderValue(label));
        }
        NameAddr::parse(value).map_err(|_| Violation::BadHeaderValue(label))?;
    }
    if msg
        .call_id()
        .is_none_or(|c| c.is_empty() || c.contains(char::is_whitespace))
    {
        return Err(Violation::BadHeaderValue("Call-ID"));
    }
    let (_, cseq_method) = msg.cseq().ok_or(Violation::BadHeaderValue("CSeq"))?;
    if let Some(mf) = msg.header("max-forwards") {
        let ok = !mf.is_empty() && mf.len() <= 10 && mf.bytes().all(|b| b.is_ascii_digit());
        if !ok || mf.parse::<u32>().map_or(true, |n| n > 255) {
            return Err(Violation::BadHeaderValue("Max-Forwards"));
        }
    }
    if let Some(exp) = msg.header("expires")
        && overflows_u32(exp)
    {
        return Err(Violation::BadHeaderValue("Expires"));
    }
    for c in msg.values("contact") {
        if c == "*" {
            continue;
        }
        let na = NameAddr::parse(c).map_err(|_| Violation::BadHeaderValue("Contact"))?;
        if let Some(e) = na.param("expires")
            && overflows_u32(e)
        {
            return Err(Violation::BadHeaderValue("Contact"));
        }
    }
    // Method first (405/501 are decided by the endpoint before the CSeq cross-check for unknown
    // methods, RFC 4475 mismatch02), then the CSeq method must equal the request method.
    if !matches!(method, Method::Other(_)) && cseq_method != method.as_str() {
        return Err(Violation::CseqMethodMismatch);
    }
    Ok(())
}

/// Header inspection after the method is known to be supported (RFC 3261 §8.2.2, §8.2.3):
/// URI scheme (416), Require (420), and for INVITE the Accept (406) and body type (415).
/// Returns the SDP body of an INVITE, if any (also found inside multipart/mixed).
pub fn inspect_request<'a>(
    msg: &'a Message,
    supported: &[&str],
) -> Result<Option<&'a [u8]>, Violation> {
    let StartLine::Request { method, uri } = &msg.start else {
        return Ok(None);
    };
    if !matches!(uri_scheme(uri).as_str(), "sip" | "sips" | "tel") {
        return Err(Violation::UnsupportedUriScheme);
    }
    if !matches!(method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<String> = msg
            .values("require")
            .into_iter()
            .filter(|t| !t.is_empty() && !supported.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .map(str::to_string)
            .collect();
        if !unsupported.is_empty() {
            return Err(Violation::UnsupportedExtension(unsupported));
        }
    }
    if !matches!(method, Method::Invite | Method::Ack) {
        return Ok(None);
    }
    if *method == Method::Invite {
        let accepts = msg.values("accept");
        let acceptable = |t: &str| {
            let t = t
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            matches!(t.as_str(), "application/sdp" | "application/*" | "*/*")
        };
        // An empty Accept list says "no body"; we tolerate it rather than fail the call.
        if accepts.iter().any(|a| !a.is_empty()) && !accepts.iter().any(|a| acceptable(a)) {
            return Err(Violation::NotAcceptable);
        }
    }
    if msg.body.is_empty() {
        return Ok(None);
    }
    if msg
        .header("content-encoding")
        .is_some_and(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return Err(Violation::UnsupportedMediaType);
    }
    let content_type = msg.header("content-type").unwrap_or("application/sdp");
    sdp_in_body(content_type, &msg.body)
        .map(Some)
        .ok_or(Violation::UnsupportedMediaType)
}

/// The application/sdp part of a body: the body itself or one part of a multipart body.
fn sdp_in_body<'a>(content_type: &str, body: &'a [u8]) -> Option<&'a [u8]> {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if media == "application/sdp" {
        return Some(body);
    }
    if !media.starts_with("multipart/") {
        return None;
    }
    let boundary = parts.find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })?;
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + d.len() <= body.len() {
        if &body[i..i + d.len()] == d {
            starts.push(i);
            i += d.len();
        } else {
            i += 1;
        }
    }
    for w in starts.windows(2) {
        let part = &body[w[0] + d.len()..w[1]];
        let (end, term) = header_end(part)?;
        let head = String::from_utf8_lossy(&part[..end]);
        let is_sdp = unfold(&head)
            .iter()
            .filter_map(|l| split_header(l))
            .any(|h| {
                h.is("content-type")
                    && h.value
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .eq_ignore_ascii_case("application/sdp")
            });
        if is_sdp {
            let content = &part[end + term..];
            // The CRLF before the next delimiter belongs to the delimiter (RFC 2046 §5.1.1).
            let content = content.strip_suffix(b"\r\n").unwrap_or(content);
            return Some(content);
        }
    }
    None
}

/// Delta-seconds beyond 2**32-1 (RFC 4475 scalar02). Non-numeric values (RFC 2543 dates) are
/// left alone: we never act on Expires, so refusing legacy peers over it would gain nothing.
fn overflows_u32(v: &str) -> bool {
    let v = v.trim();
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && v.parse::<u32>().is_err()
}

fn static_name(long: &str) -> &'static str {
    match long {
        "call-id" => "Call-ID",
        "from" => "From",
        "to" => "To",
        _ => "CSeq",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Message, Violation> {
        parse(s.as_bytes(), &Limits::default(), false)
    }

    const OPTIONS: &str = "OPTIONS sip:ivr@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
        f: <sip:a@example.com>;tag=1\r\nt: sip:ivr@example.com\r\ni: abc\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";

    #[test]
    fn parses_compact_and_folded_headers() {
        let m = p(OPTIONS).unwrap();
        assert_eq!(m.method(), Some(&Method::Options));
        assert_eq!(m.call_id(), Some("abc"));
        assert_eq!(m.from_tag().as_deref(), Some("1"));
        assert_eq!(m.cseq(), Some((1, "OPTIONS")));
        validate_request(&m).unwrap();
        let folded = OPTIONS.replace("i: abc", "Call-ID:\r\n  abc");
        assert_eq!(p(&folded).unwrap().call_id(), Some("abc"));
    }

    #[test]
    fn content_length_rules() {
        let base = OPTIONS.replace("l: 0\r\n", "");
        let with = |cl: &str, body: &str| {
            p(&format!(
                "{}{}",
                base.replace("\r\n\r\n", &format!("\r\nl: {cl}\r\n\r\n")),
                body
            ))
        };
        assert_eq!(with("3", "abcdef").unwrap().body, b"abc");
        assert_eq!(with("9", "abc"), Err(Violation::BodyTruncated));
        assert_eq!(with("-3", "abc"), Err(Violation::BadContentLength));
        assert_eq!(p(&format!("{base}xyz")).unwrap().body, b"xyz");
    }

    #[test]
    fn start_line_errors() {
        assert_eq!(
            p(&OPTIONS.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia")),
            Err(Violation::BadVersion)
        );
        assert_eq!(
            p(&OPTIONS.replace("OPTIONS sip", "OPTIONS  sip")),
            Err(Violation::BadStartLine)
        );
        assert!(p("SIP/2.0 4294967301 nope\r\n\r\n").is_err());
        assert!(matches!(
            p("SIP/2.0 100 \r\nVia: x\r\n\r\n").unwrap().start,
            StartLine::Response { code: 100, .. }
        ));
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"A \\\"B\\\"\" <sip:alice@x.com;transport=udp>;tag=9").unwrap();
        assert_eq!(n.display.as_deref(), Some("A \"B\""));
        assert_eq!(n.user(), "alice");
        assert_eq!(n.param("tag"), Some("9"));
        let n = NameAddr::parse("sip:bob@x.com;tag=7").unwrap();
        assert_eq!(
            (n.uri.as_str(), n.param("tag")),
            ("sip:bob@x.com", Some("7"))
        );
        assert!(NameAddr::parse("\"open <sip:a@b>").is_err());
        assert!(NameAddr::parse("Bell, Alexander <sip:a@b>").is_err());
        assert_eq!(
            NameAddr::parse("José Núñez <sip:a@b>")
                .unwrap()
                .display
                .as_deref(),
            Some("José Núñez")
        );
        assert!(NameAddr::parse("< sip:a@b >").is_err());
        assert!(NameAddr::parse("sip:a@b?Route=x").is_err());
        assert!(NameAddr::parse("<sip:a@b>;;;").is_err());
    }

    #[test]
    fn wsinv_is_valid() {
        // The header section of RFC 4475 §3.1.1.1 (wsinv), folding and LWS intact.
        let data = "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\nTO :\r\n \
            sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\nfrom   : \"J Rosenberg \\\\\\\"\"       \
            <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\nMaX-fOrWaRdS: 0068\r\nCall-ID: wsinv.ndaksdj@192.0.2.1\r\n\
            Content-Length   : 0\r\ncseq: 0009\r\n  INVITE\r\nVia  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n\
            s :\r\nNewFangledHeader:   newfangled value\r\n continued newfangled value\r\n\
            UnknownHeaderWithUnusualValue: ;;,,;;,;\r\nRoute:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n\
            v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n \
            SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n\
            m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33\r\n\r\n";
        let m = parse(data.as_bytes(), &Limits::default(), false).unwrap();
        assert_eq!(m.from_tag().as_deref(), Some("98asjd8"));
        assert_eq!(validate_request(&m), Ok(()));
        assert_eq!(m.to_tag().as_deref(), Some("1918181833n"));
        assert_eq!(m.values("via").len(), 3);
        assert_eq!(m.cseq(), Some((9, "INVITE")));
    }

    #[test]
    fn via_with_lws() {
        let v = Via::parse("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (v.transport.as_str(), v.sent_by.as_str(), v.branch()),
            ("UDP", "192.0.2.2", Some("390skdjuw"))
        );
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;").is_err());
    }

    #[test]
    fn frame_len_cuts_stream() {
        let msg = OPTIONS.replace("l: 0", "l: 4");
        let mut buf = format!("{msg}body").into_bytes();
        let len = buf.len();
        assert_eq!(frame_len(&buf), Ok(Some(len)));
        buf.truncate(len - 1);
        assert_eq!(frame_len(&buf), Ok(None));
        assert_eq!(frame_len(b"\r\n\r\nINVITE"), Ok(Some(4)));
        let two = format!("{OPTIONS}{OPTIONS}");
        assert_eq!(frame_len(two.as_bytes()), Ok(Some(OPTIONS.len())));
        assert_eq!(
            frame_len(OPTIONS.replace("l: 0", "l: -1").as_bytes()),
            Err(FrameError::BadContentLength)
        );
    }

    #[test]
    fn printer_round_trips() {
        let m = p(OPTIONS).unwrap();
        let again = parse(&m.to_bytes(), &Limits::default(), false).unwrap();
        assert_eq!(again.headers.len(), m.headers.len());
        assert_eq!(again.call_id(), Some("abc"));
    }

    #[test]
    fn salvage_needs_via() {
        assert!(salvage(b"GARBAGE\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n").is_some());
        assert!(salvage(b"\x00\x01\x02").is_none());
        assert!(salvage(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n").is_none());
    }
}
