//! Provider adapters: translate between the canonical request/response
//! (OpenAI chat-completions JSON) and one upstream's HTTP dialect.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::marker::PhantomData;

use crate::bindings::adapter::exports::switchyard::plugin::adapter as wit;
use crate::types::{Metadata, Usage};

pub use wit::{
    AuthScheme, ChatResponse, ChunkBatch, ErrorClass, HttpRequest, HttpResponse, Target,
    UpstreamError,
};

/// A provider adapter. All functions are stateless: the host may call them on
/// any instance, in any order, and replaces instances at will; per-stream state
/// lives in [`Adapter::Parser`].
pub trait Adapter {
    /// Parses one streamed upstream response.
    type Parser: StreamParser;

    /// Name, version, kind ([`PluginKind::Adapter`](crate::PluginKind)) and capability tags.
    fn metadata() -> Metadata;

    /// Canonical request JSON in, upstream HTTP request out. An `Err` is the
    /// caller's fault (e.g. not JSON) and is returned to the client as is.
    /// Never attach the API key here: say how in [`HttpRequest::auth`] and
    /// the host attaches it, so secrets never enter the sandbox.
    fn build_request(target: &Target, request: &str) -> Result<HttpRequest, String>;

    /// A 2xx upstream response in, canonical `chat.completion` out. Return an
    /// [`UpstreamError`] when the body is unusable, so the host can try the
    /// next deployment instead of passing garbage on.
    fn parse_response(
        target: &Target,
        response: &HttpResponse,
    ) -> Result<ChatResponse, UpstreamError>;

    /// A non-2xx upstream response in, its [`ErrorClass`] out: the class
    /// decides whether the host retries elsewhere, cools the deployment down or
    /// returns the error to the caller.
    fn classify_error(response: &HttpResponse) -> UpstreamError;
}

/// Incremental parser of one upstream stream, created per streamed request.
pub trait StreamParser: 'static {
    /// Starts parsing a stream from `target`, answering `request` (the
    /// canonical request JSON, e.g. to see which `stream_options` the caller set).
    fn new(target: Target, request: &str) -> Self;

    /// Consumes raw body bytes as they arrive. They are split anywhere (not at
    /// event or even UTF-8 boundaries), so buffer incomplete input.
    fn feed(&mut self, bytes: &[u8]) -> Result<ChunkBatch, UpstreamError>;

    /// The upstream closed the body: flush what is buffered, and return an
    /// error if the stream ended before it completed, so a truncated answer is
    /// never presented as a success.
    fn finish(&mut self) -> Result<ChunkBatch, UpstreamError>;
}

impl UpstreamError {
    /// An upstream error of `class` with a human-readable `message`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        UpstreamError {
            class,
            message: message.into(),
        }
    }
}

impl ChunkBatch {
    /// A batch with no chunks, no usage and not done.
    pub fn empty() -> Self {
        ChunkBatch {
            chunks: Vec::new(),
            usage: None,
            done: false,
        }
    }
}

impl HttpRequest {
    /// A `POST` of a JSON `body` to `path`, with `content-type: application/json`.
    pub fn post_json(path: &str, body: Vec<u8>, auth: AuthScheme) -> Self {
        HttpRequest {
            method: "POST".to_string(),
            path: path.to_string(),
            headers: alloc::vec![("content-type".to_string(), "application/json".to_string())],
            body,
            auth,
        }
    }
}

impl HttpResponse {
    /// The first header named `name` (compare lower case: the host lower-cases names).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl ChatResponse {
    /// A canonical answer `body` with its token `usage`, when known.
    pub fn new(body: String, usage: Option<Usage>) -> Self {
        ChatResponse { body, usage }
    }
}

#[doc(hidden)]
pub struct AdapterExport<A>(PhantomData<A>);

impl<A: Adapter> wit::Guest for AdapterExport<A> {
    type StreamParser = ParserExport<A::Parser>;

    fn metadata() -> Metadata {
        A::metadata()
    }
    fn build_request(target: Target, request: String) -> Result<HttpRequest, String> {
        A::build_request(&target, &request)
    }
    fn parse_response(
        target: Target,
        response: HttpResponse,
    ) -> Result<ChatResponse, UpstreamError> {
        A::parse_response(&target, &response)
    }
    fn classify_error(response: HttpResponse) -> UpstreamError {
        A::classify_error(&response)
    }
}

/// The WIT resource methods take `&self`; the host never calls one resource
/// re-entrantly, so a `RefCell` gives the parser its `&mut self`.
#[doc(hidden)]
pub struct ParserExport<P>(RefCell<P>);

impl<P: StreamParser> wit::GuestStreamParser for ParserExport<P> {
    fn new(target: Target, request: String) -> Self {
        ParserExport(RefCell::new(P::new(target, &request)))
    }
    fn feed(&self, bytes: Vec<u8>) -> Result<ChunkBatch, UpstreamError> {
        self.0.borrow_mut().feed(&bytes)
    }
    fn finish(&self) -> Result<ChunkBatch, UpstreamError> {
        self.0.borrow_mut().finish()
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
