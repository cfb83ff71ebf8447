//! What an adapter may and may not make the host send: the URL it builds
//! (below the deployment's base, never elsewhere), the headers it may set
//! (never those that steer the connection or carry credentials), and where
//! the key goes (only where the deployment's auth scheme says).

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::domain::AuthScheme;
use crate::failover::FailureClass;

/// A deployment's base URL, checked once at start: each request appends
/// the adapter's path to `prefix` (no reparsing of the base per request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl {
    /// `scheme://host[:port]` and the base path without its trailing `/`.
    prefix: String,
    /// Its query (encoded, without `?`), added to every request: e.g.
    /// Azure OpenAI's `api-version`.
    query: String,
}

impl BaseUrl {
    /// Parses a configured `base_url`: `http` or `https`, a host, no user
    /// name or password (keys go in `api_key_env`). Its query, if any, is
    /// added to every request after the adapter's own (Azure OpenAI's
    /// `?api-version=...`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a valid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "{text:?}: scheme {:?} is not http or https",
                url.scheme()
            ));
        }
        let Some(host) = url.host_str() else {
            return Err(format!("{text:?} has no host"));
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{text:?} contains a user name or password; put the key in api_key_env"
            ));
        }
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let path = url.path().trim_end_matches('/');
        Ok(Self {
            prefix: format!("{}://{host}{port}{path}", url.scheme()),
            query: url.query().unwrap_or("").to_string(),
        })
    }

    /// The full URI of a request for `path_and_query` (already checked by
    /// [`check_path`]), with the key appended as a query parameter when the
    /// auth scheme says so.
    pub fn join(&self, path_and_query: &str, key_param: Option<(&str, &str)>) -> String {
        let mut uri = String::with_capacity(self.prefix.len() + path_and_query.len() + 64);
        uri.push_str(&self.prefix);
        // What a URI cannot carry as is (non-ASCII, spaces and controls in
        // the query, quotes, angle brackets...) is percent-encoded, as a URL
        // parser would; `%` is left alone, so encoded text stays as it is.
        uri.extend(percent_encoding::utf8_percent_encode(
            path_and_query,
            URI_UNSAFE,
        ));
        let mut has_query = path_and_query.contains('?');
        if !self.query.is_empty() {
            uri.push(if has_query { '&' } else { '?' });
            uri.push_str(&self.query);
            has_query = true;
        }
        if let Some((name, key)) = key_param {
            uri.push(if has_query { '&' } else { '?' });
            uri.extend(url::form_urlencoded::byte_serialize(name.as_bytes()));
            uri.push('=');
            uri.extend(url::form_urlencoded::byte_serialize(key.as_bytes()));
        }
        uri
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.prefix)
    }
}

/// Bytes percent-encoded in an adapter's path and query (non-ASCII always is).
const URI_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^');

/// Headers only the host may set: they steer the connection, frame the
/// body or carry credentials.
const HOST_OWNED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "trailers",
    "upgrade",
    "authorization",
    "cookie",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Checks an adapter's path: it must stay below the base URL's path.
pub fn check_path(path_and_query: &str) -> Result<(), String> {
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(format!("path {path_and_query:?} does not start with '/'"));
    }
    if path.starts_with("//") || path.contains("://") {
        return Err(format!("path {path_and_query:?} names another host"));
    }
    if path_and_query.contains('#') {
        return Err(format!("path {path_and_query:?} contains a fragment"));
    }
    if path.contains('\\') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "path {path_and_query:?} contains a backslash, a space or a control character"
        ));
    }
    for segment in path.split('/') {
        let decoded = percent_decode(segment);
        if decoded == "." || decoded == ".." || decoded.contains('/') || decoded.contains('\\') {
            return Err(format!(
                "path {path_and_query:?} has a dot segment or an encoded separator, which could leave the base URL"
            ));
        }
    }
    Ok(())
}

/// Percent-decodes a path segment (repeatedly, so `%252e` is caught too).
fn percent_decode(segment: &str) -> String {
    let mut current = segment.to_string();
    for _ in 0..3 {
        if !current.contains('%') {
            break;
        }
        let bytes = current.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Some(v) = current
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        current = String::from_utf8_lossy(&out).into_owned();
    }
    current
}

/// The request headers: the adapter's, minus those the host owns, plus the
/// key where `auth` puts it in a header. (A query-parameter key is added to
/// the URL by [`BaseUrl::join`].) Errors are (class, message) for the attempt.
pub fn headers(
    adapter_headers: &[(String, String)],
    auth: &AuthScheme,
    key: Option<&str>,
) -> Result<HeaderMap, (FailureClass, String)> {
    let auth_header = match auth {
        AuthScheme::Header(name) => Some(name.to_ascii_lowercase()),
        _ => None,
    };
    let mut headers = HeaderMap::with_capacity(adapter_headers.len() + 3);
    for (name, value) in adapter_headers {
        // Adapters mostly send names in lower case already: no copy then.
        let lower: std::borrow::Cow<str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            name.to_ascii_lowercase().into()
        } else {
            name.as_str().into()
        };
        let carries_key = key.is_some_and(|k| !k.is_empty() && value.contains(k));
        if HOST_OWNED_HEADERS.contains(&&*lower)
            || auth_header.as_deref() == Some(&*lower)
            || carries_key
        {
            tracing::debug!(header = %lower, "dropped a header the host owns from the adapter's request");
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(&*lower),
            HeaderValue::try_from(value.as_str()),
        ) else {
            return Err((
                FailureClass::Plugin,
                format!("adapter returned invalid header {name:?}"),
            ));
        };
        headers.append(name, value);
    }
    if !headers.contains_key(http::header::USER_AGENT) {
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("switchyard/", env!("CARGO_PKG_VERSION"))),
        );
    }
    if !headers.contains_key(http::header::ACCEPT) {
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
    }
    let Some(key) = key else {
        return Ok(headers);
    };
    let bad_key = || {
        (
            FailureClass::Auth,
            "API key is not a valid header value".to_string(),
        )
    };
    match auth {
        AuthScheme::None | AuthScheme::Query(_) => {}
        AuthScheme::Bearer => {
            let mut v = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| bad_key())?;
            v.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, v);
        }
        AuthScheme::Header(name) => {
            let name = HeaderName::try_from(name.as_str()).map_err(|_| {
                (
                    FailureClass::Plugin,
                    format!("adapter asked for invalid auth header {name:?}"),
                )
            })?;
            let mut v = HeaderValue::try_from(key).map_err(|_| bad_key())?;
            v.set_sensitive(true);
            headers.insert(name, v);
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_base_are_refused() {
        for ok in [
            "/chat/completions",
            "/models/m:generate?alt=sse",
            "/v1/a.b/c..d",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/../admin",
            "/v1/..",
            "/./x",
            "/%2e%2E/admin",
            "/%2e/admin",
            "/%252e%252e/admin",
            "/a%2fb",
            "//evil.example/x",
            "http://evil.example/x",
            "/..\\admin",
            "relative",
            "/a b",
            "/x#frag",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn adapter_path_is_appended_to_the_base() {
        let base = BaseUrl::parse("http://h:1/v1/").unwrap();
        assert_eq!(
            base.join("/chat/completions", None),
            "http://h:1/v1/chat/completions"
        );
        let base = BaseUrl::parse("https://h/v1beta").unwrap();
        assert_eq!(
            base.join("/models/m:generate?alt=sse", None),
            "https://h/v1beta/models/m:generate?alt=sse"
        );
        assert_eq!(
            base.join("/x", Some(("key", "a b&c"))),
            "https://h/v1beta/x?key=a+b%26c"
        );
        assert_eq!(
            base.join("/x?alt=sse", Some(("key", "k"))),
            "https://h/v1beta/x?alt=sse&key=k"
        );
        // The base's own query (Azure OpenAI's api-version) goes on every
        // request, after the adapter's.
        let azure = BaseUrl::parse(
            "https://r.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21",
        )
        .unwrap();
        assert_eq!(
            azure.join("/chat/completions", None),
            "https://r.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            azure.join("/x?alt=sse", Some(("key", "k"))),
            "https://r.openai.azure.com/openai/deployments/gpt4o/x?alt=sse&api-version=2024-10-21&key=k"
        );
        // What a URI cannot carry is encoded, not refused.
        assert_eq!(
            base.join("/models/modèle:generate?q=a b&t=\"x\"&e=%20", None),
            "https://h/v1beta/models/mod%C3%A8le:generate?q=a%20b&t=%22x%22&e=%20"
        );
        assert!(check_path("/x?q=a b").is_ok());
        let v6 = BaseUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(v6.join("/a", None), "http://[::1]:8080/a");
        // Every joined URI is one `http::Uri` accepts.
        for base in [base, v6] {
            let uri: http::Uri = base
                .join("/a/é b?c=<d>|{}^`\\", Some(("k", "v/+=")))
                .parse()
                .unwrap();
            assert!(uri.host().is_some());
        }
    }

    #[test]
    fn bad_base_urls_are_refused_with_the_reason() {
        for (bad, why) in [
            ("not a url", "not a valid URL"),
            ("ftp://h/x", "not http or https"),
            ("http://user:pw@h/v1", "user name or password"),
        ] {
            let e = BaseUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn host_owned_headers_and_the_key_never_come_from_the_adapter() {
        let adapter = [
            ("Host".to_string(), "evil.example".to_string()),
            ("Authorization".to_string(), "Bearer stolen".to_string()),
            ("X-Api-Key".to_string(), "sk-other".to_string()),
            ("X-Echo".to_string(), "prefix sk-secret".to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
        ];
        let h = headers(
            &adapter,
            &AuthScheme::Header("x-api-key".into()),
            Some("sk-secret"),
        )
        .unwrap();
        assert!(h.get("host").is_none());
        assert!(h.get("authorization").is_none());
        assert!(h.get("x-echo").is_none(), "a header carrying the key");
        assert_eq!(h["x-api-key"], "sk-secret");
        assert_eq!(h["content-type"], "application/json");
        assert!(h["user-agent"].to_str().unwrap().starts_with("switchyard/"));
        let h = headers(&[], &AuthScheme::Bearer, Some("sk")).unwrap();
        assert_eq!(h["authorization"], "Bearer sk");
        assert!(h["authorization"].is_sensitive());
        let bad = headers(&[("bad name".into(), "v".into())], &AuthScheme::None, None);
        assert_eq!(bad.unwrap_err().0, FailureClass::Plugin);
    }
}
