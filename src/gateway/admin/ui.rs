//! The admin console at `/admin/ui`: three static files (`console/` in the repository) compiled
//! into the wasm and served by the gateway itself on both hosts, so the page is identical on
//! workerd and Spin. The page needs no token to load; it asks for the admin token, keeps it in
//! sessionStorage and sends it only as an `Authorization` header to the admin API. A strict
//! Content-Security-Policy allows nothing but these same-origin files and API calls.

use http::Method;

use crate::gateway::admin::answer::RawBody;

const INDEX: &str = include_str!("../../../console/index.html");
const APP: &str = include_str!("../../../console/app.js");
const STYLE: &str = include_str!("../../../console/style.css");

const HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

/// The console file at `path`, for GET and HEAD.
pub fn asset(method: &Method, path: &str) -> Option<RawBody> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let (content_type, text) = match path {
        "/admin/ui" | "/admin/ui/" | "/admin/ui/index.html" => ("text/html; charset=utf-8", INDEX),
        "/admin/ui/app.js" => ("text/javascript; charset=utf-8", APP),
        "/admin/ui/style.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    let bytes = if method == Method::HEAD { Vec::new() } else { text.as_bytes().to_vec() };
    Some(RawBody { content_type, bytes, headers: HEADERS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_three_files_and_nothing_else() {
        let page = asset(&Method::GET, "/admin/ui").unwrap();
        assert!(page.content_type.starts_with("text/html"));
        let html = String::from_utf8(page.bytes).unwrap();
        assert!(html.contains("/admin/ui/app.js") && html.contains("/admin/ui/style.css"));
        assert!(page.headers.iter().any(|(k, v)| *k == "content-security-policy" && v.contains("script-src 'self'")));
        assert!(asset(&Method::GET, "/admin/ui/app.js").unwrap().content_type.starts_with("text/javascript"));
        assert!(asset(&Method::GET, "/admin/ui/style.css").is_some());
        assert!(asset(&Method::HEAD, "/admin/ui/").unwrap().bytes.is_empty());
        assert!(asset(&Method::POST, "/admin/ui").is_none());
        assert!(asset(&Method::GET, "/admin/ui/../config").is_none());
        assert!(asset(&Method::GET, "/admin/uix").is_none());
        // The page never puts the token in a URL, and never renders API data as HTML.
        let js = APP;
        assert!(js.contains("sessionStorage") && js.contains("authorization"));
        assert!(!js.contains("innerHTML") && !js.contains("?token") && !js.contains("&token"));
        assert!(INDEX.len() + APP.len() + STYLE.len() < 64 * 1024, "the console stays small");
    }
}
