//! Provider adapters: translate between the canonical request/response
//! (OpenAI chat-completions JSON) and one upstream's HTTP dialect.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::bindings::adapter::exports::switchyard::plugin::adapter as wit;
use crate::stream::StreamParser;
use crate::types::{Metadata, Usage};

pub use wit::{
    AdapterMetadata, AuthScheme, BuildError, ChatResponse, ErrorClass, HttpRequest, HttpResponse,
    QuotaHint, StreamEvents, StreamFraming, StreamStart, StreamStep, Target, UpstreamError,
};

/// A provider adapter. All functions are stateless: the host may call them on
/// any instance, in any order, and replaces instances at will; the state of a
/// stream lives in [`Adapter::Stream`], which the host keeps as bytes between
/// calls.
pub trait Adapter {
    /// Parses one streamed upstream response.
    type Stream: StreamParser;

    /// Name, version and capability tags (the kind is implied by
    /// [`export_adapter!`](crate::export_adapter)).
    fn metadata() -> Metadata;

    /// How the host attaches a deployment's API key (a deployment's `auth`
    /// config may override it). Declared once rather than per request so the
    /// key never enters the sandbox and a request cannot redirect it.
    /// Default: `Authorization: Bearer <key>`.
    fn auth() -> AuthScheme {
        AuthScheme::Bearer
    }

    /// How the upstream frames streamed bodies; the host splits them into
    /// [`StreamEvent`](crate::StreamEvent)s accordingly. Default: server-sent events.
    fn framing() -> StreamFraming {
        StreamFraming::Sse
    }

    /// The response headers this adapter reads (names, or prefixes ending in
    /// `-`, lower case): the host passes it only those, so the header block
    /// copied into the sandbox and scanned on each call holds a few lines
    /// rather than the two dozen providers send. Default `None`: every header. An adapter that reads headers
    /// only through the SDK's helpers (quota, retry delays, `Date`) returns
    /// [`read_by_sdk_and(&[])`](crate::read_by_sdk_and).
    fn response_headers() -> Option<Vec<String>> {
        None
    }

    /// Canonical request JSON in, upstream HTTP request out.
    ///
    /// [`BuildError::InvalidRequest`] says this provider cannot serve the
    /// request as asked (the caller gets a 400 naming the deployment, and
    /// deployments behind other adapters are still tried);
    /// [`BuildError::Failed`] is the adapter's own failure (the next
    /// candidate is tried). Never attach the key or set `host`,
    /// `content-length` or hop-by-hop headers: the host owns them and drops
    /// such headers.
    fn build_request(target: &Target, request: &str) -> Result<HttpRequest, BuildError>;

    /// A 2xx upstream response in, canonical `chat.completion` out. Return an
    /// [`UpstreamError`] when the body is unusable, so the host can try the
    /// next deployment instead of passing garbage on. A `quota` left `None`
    /// is filled in from the headers by [`Adapter::quota`].
    fn parse_response(
        target: &Target,
        response: &HttpResponse,
    ) -> Result<ChatResponse, UpstreamError>;

    /// A non-2xx upstream response in, its [`ErrorClass`] out: the class
    /// decides whether the host retries elsewhere, cools the deployment down or
    /// returns the error to the caller. A `quota` left `None` is filled in
    /// from the headers by [`Adapter::quota`].
    fn classify_error(response: &HttpResponse) -> UpstreamError;

    /// The rate-limit state in a response's headers, reported to the host
    /// with every answer, error and stream start. The default reads the
    /// common dialects ([`QuotaHint::from_headers`]); override it for a
    /// provider with headers of its own, and name those in
    /// [`Adapter::response_headers`] if it declares a list (only the
    /// headers listed there arrive). `headers` is the response's header
    /// block: read it with [`header`](crate::header) or
    /// [`header_lines`](crate::header_lines).
    fn quota(headers: &str) -> Option<QuotaHint> {
        QuotaHint::from_headers(headers)
    }
}

impl UpstreamError {
    /// An upstream error of `class` with a human-readable `message`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        UpstreamError {
            class,
            message: message.into(),
            quota: None,
        }
    }

    /// The same error, reporting `quota`.
    pub fn with_quota(mut self, quota: Option<QuotaHint>) -> Self {
        self.quota = quota;
        self
    }
}

impl ChatResponse {
    /// A canonical answer `body` with its token `usage`, when known.
    pub fn new(body: String, usage: Option<Usage>) -> Self {
        ChatResponse {
            body,
            usage,
            quota: None,
        }
    }

    /// The same answer, reporting `quota`.
    pub fn with_quota(mut self, quota: Option<QuotaHint>) -> Self {
        self.quota = quota;
        self
    }
}

impl HttpRequest {
    /// A `POST` of a JSON `body` to `path`, with `content-type: application/json`.
    pub fn post_json(path: &str, body: Vec<u8>) -> Self {
        HttpRequest {
            method: "POST".to_string(),
            path: path.to_string(),
            headers: alloc::vec![("content-type".to_string(), "application/json".to_string())],
            body,
        }
    }

    /// The same request with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

impl HttpResponse {
    /// The first header named `name`, compared case-insensitively, trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::headers::header(&self.headers, name)
    }

    /// The retry delay the response asked for ([`retry_after_ms`](crate::retry_after_ms)).
    pub fn retry_after_ms(&self) -> Option<u32> {
        crate::headers::retry_after_ms(&self.headers)
    }
}

#[doc(hidden)]
pub struct AdapterExport<A>(PhantomData<A>);

impl<A: Adapter> wit::Guest for AdapterExport<A> {
    fn metadata() -> AdapterMetadata {
        crate::run::metadata::<A>()
    }
    fn build_request(target: Target, request: String) -> Result<HttpRequest, BuildError> {
        crate::run::build_request::<A>(&target, &request)
    }
    fn parse_response(
        target: Target,
        response: HttpResponse,
    ) -> Result<ChatResponse, UpstreamError> {
        crate::run::parse_response::<A>(&target, &response)
    }
    fn classify_error(response: HttpResponse) -> UpstreamError {
        crate::run::classify_error::<A>(&response)
    }
    fn begin_stream(
        target: Target,
        request: String,
        headers: String,
    ) -> Result<StreamStart, UpstreamError> {
        crate::run::begin_stream::<A>(&target, &request, &headers)
    }
    fn parse_stream(state: Vec<u8>, events: StreamEvents) -> Result<StreamStep, UpstreamError> {
        crate::run::parse_stream_packed::<A>(&state, &events)
    }
    fn end_stream(state: Vec<u8>) -> Result<StreamStep, UpstreamError> {
        crate::run::end_stream::<A>(&state)
    }
}

/// Exports `$ty` (an [`Adapter`]) as this component's `adapter` interface.
/// Invoke it once, in the plugin crate's root; a crate exports one kind only.
#[macro_export]
macro_rules! export_adapter {
    ($ty:ty) => {
        // Native builds (unit tests of plugin logic) only check the trait:
        // the component export symbols are meaningful on wasm only.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn implements<T: $crate::Adapter>() {}
            implements::<$ty>();
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __SwitchyardAdapter = $crate::__private::AdapterExport<$ty>;
            $crate::__export_adapter_plugin_impl!(
                __SwitchyardAdapter with_types_in $crate::__private::adapter_bindings
            );
        };
    };
}
