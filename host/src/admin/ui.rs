//! The operator dashboard at `/ui`: static files compiled into the binary
//! (`host/ui/`), so the release build serves it with no other step.
//!
//! The files themselves carry no data and are served without the token:
//! the page asks for the token, keeps it in the tab's session storage
//! (never in a URL) and sends it as `Authorization: Bearer` with every
//! call to the admin API, which checks it as for any other client. A
//! strict Content-Security-Policy allows only these files' own scripts
//! and styles and calls to this origin.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page's scripts, styles and calls come from this origin only; no
/// inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static str,
}

/// A script module of `host/ui/`.
macro_rules! script {
    ($name:literal) => {
        Asset {
            path: concat!("/ui/", $name),
            mime: "text/javascript; charset=utf-8",
            body: include_str!(concat!("../../ui/", $name)),
        }
    };
}

const ASSETS: &[Asset] = &[
    script!("app.js"),
    script!("charts.js"),
    script!("pages.js"),
    script!("widgets.js"),
    script!("overview.js"),
    script!("fleet.js"),
    script!("records.js"),
    script!("plugins.js"),
    Asset {
        path: "/ui/style.css",
        mime: "text/css; charset=utf-8",
        body: include_str!("../../ui/style.css"),
    },
    Asset {
        path: "/ui/icon.svg",
        mime: "image/svg+xml",
        body: include_str!("../../ui/icon.svg"),
    },
];

const INDEX: &str = include_str!("../../ui/index.html");

fn serve(mime: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary may serve new files under the same names.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The dashboard's routes. `token_required` tells the page whether to ask
/// for a token before its first call (so a gateway without one opens
/// straight away).
pub(super) fn router<S: Clone + Send + Sync + 'static>(token_required: bool) -> Router<S> {
    let mut r = Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui",
            get(|| async { serve("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/",
            get(|| async { serve("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/auth.json",
            get(move || async move {
                let mut r = axum::Json(serde_json::json!({ "token_required": token_required }))
                    .into_response();
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }),
        );
    for a in ASSETS {
        let (mime, body) = (a.mime, a.body);
        r = r.route(a.path, get(move || async move { serve(mime, body) }));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_embedded_files_and_no_inline_code() {
        // Every file is used: by the page, or imported by a script.
        for a in ASSETS {
            let name = a.path.trim_start_matches("/ui/");
            let imported = ASSETS
                .iter()
                .any(|b| b.body.contains(&format!("from \"./{name}\"")));
            assert!(INDEX.contains(a.path) || imported, "nothing uses {name}");
        }
        // Every module a script imports is served.
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for (_, rest) in a
                .body
                .match_indices("from \"./")
                .map(|(i, _)| a.body.split_at(i + 8))
            {
                let name = &rest[..rest.find('"').unwrap()];
                assert!(
                    ASSETS.iter().any(|b| b.path == format!("/ui/{name}")),
                    "{} imports {name}, which is not served",
                    a.path
                );
            }
        }
        // The CSP forbids inline scripts and styles: none may be written.
        assert!(!INDEX.contains("<script>"), "an inline script");
        assert!(!INDEX.contains("style="), "an inline style");
        assert!(!INDEX.contains("<style"), "an inline style sheet");
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            assert!(
                !a.body.contains("style=\""),
                "{}: inline style attribute",
                a.path
            );
            assert!(!a.body.contains("eval("), "{}: eval", a.path);
        }
    }
}
