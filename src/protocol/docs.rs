//! `GET /docs`: the OpenAPI description of every HTTP endpoint, generated from the
//! handlers' annotations (each route is registered together with its description, so
//! none can be missing), as JSON (`/docs/openapi.json`) and as a readable page rendered
//! here (no script, nothing fetched from elsewhere).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr, Tag};

use super::AppState;

/// The tags, in the order the page shows them.
const TAGS: [(&str, &str); 5] = [
    (
        "emithub",
        "EmitHub managed channels: create, start, pause, stop, broadcast, history.",
    ),
    (
        "native",
        "The native protocol: publish to channels, stats, presence members, WebSocket.",
    ),
    (
        "pusher",
        "Pusher protocol v7 (Laravel Echo, pusher-js, Pusher SDKs): signed HTTP API, channel auth, WebSocket.",
    ),
    (
        "rtc",
        "Typed frames (the real-time communication service): topics, direct messages, rooms, rate limits.",
    ),
    ("operations", "Health, readiness, Prometheus metrics, this description."),
];

/// Finishes the description collected from the routes: title, tags, the API token scheme
/// and the two documentation routes themselves.
pub(crate) fn finish(mut api: OpenApi) -> OpenApi {
    api.info.title = "rustaxum".into();
    api.info.version = env!("CARGO_PKG_VERSION").into();
    api.info.description = Some(
        "Real-time broadcasting: WebSocket protocols (native, Pusher v7, EmitHub) and their HTTP APIs. \
         Errors are JSON `{\"error\": code, \"message\": text}`."
            .into(),
    );
    api.tags = Some(
        TAGS.iter()
            .map(|(name, about)| {
                let mut tag = Tag::new(*name);
                tag.description = Some((*about).into());
                tag
            })
            .collect(),
    );
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_token",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("BROADCAST_API_TOKEN, required when it is set"))
                .build(),
        ),
    );
    for (path, summary, content_type) in [
        ("/docs", "This description, as a page.", "text/html"),
        (
            "/docs/openapi.json",
            "This description, as OpenAPI JSON.",
            "application/json",
        ),
    ] {
        let response = utoipa::openapi::ResponseBuilder::new()
            .description("OK")
            .content(
                content_type,
                utoipa::openapi::content::Content::new(None::<RefOr<utoipa::openapi::schema::Schema>>),
            )
            .build();
        let operation = utoipa::openapi::path::OperationBuilder::new()
            .summary(Some(summary))
            .tag("operations")
            .response("200", response)
            .build();
        api.paths
            .paths
            .insert(path.into(), PathItem::new(utoipa::openapi::HttpMethod::Get, operation));
    }
    api
}

/// `/docs` and `/docs/openapi.json`, serving `api`.
pub(crate) fn routes(api: &OpenApi) -> Router<AppState> {
    let json: Arc<str> = api.to_pretty_json().unwrap_or_default().into();
    let page: Arc<str> = render(api).into();
    Router::new()
        .route(
            "/docs/openapi.json",
            get(move || {
                let json = json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response() }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let page = page.clone();
                async move { Html(page.to_string()).into_response() as Response }
            }),
        )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Inline code spans (`x`) as <code>.
fn prose(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(text).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn operations(item: &PathItem) -> Vec<(&'static str, &Operation)> {
    [
        ("GET", &item.get),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|op| (m, op)))
    .collect()
}

fn schema_name(r: &RefOr<utoipa::openapi::schema::Schema>) -> String {
    match r {
        RefOr::Ref(r) => r.ref_location.rsplit('/').next().unwrap_or_default().to_string(),
        RefOr::T(_) => "JSON".into(),
    }
}

/// The description as an HTML page: endpoints by tag, with parameters, bodies and
/// answers, then the schemas.
fn render(api: &OpenApi) -> String {
    let mut out = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>rustaxum API</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>\
         body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
         code{background:#f3f3f3;padding:0 .2em;border-radius:3px}\
         .op{border:1px solid #ddd;border-radius:6px;margin:.8rem 0;padding:.6rem .9rem}\
         .m{display:inline-block;min-width:4.5em;font-weight:700}.GET{color:#0a6}.POST{color:#06c}\
         .PUT{color:#a60}.PATCH{color:#a0a}.DELETE{color:#c22}table{border-collapse:collapse}\
         td,th{padding:.15rem .6rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}\
         </style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>{} {}</h1><p>{}</p><p>Machine-readable: <a href=\"/docs/openapi.json\">/docs/openapi.json</a> (OpenAPI 3.1).</p>",
        escape(&api.info.title),
        escape(&api.info.version),
        prose(api.info.description.as_deref().unwrap_or_default()),
    );
    for (tag, about) in TAGS {
        let _ = write!(out, "<h2 id=\"{tag}\">{tag}</h2><p>{}</p>", prose(about));
        for (path, item) in &api.paths.paths {
            for (method, op) in operations(item) {
                if !op.tags.as_ref().is_some_and(|t| t.iter().any(|t| t == tag)) {
                    continue;
                }
                render_operation(&mut out, method, path, op);
            }
        }
    }
    if let Some(components) = &api.components {
        out.push_str("<h2 id=\"schemas\">Schemas</h2>");
        for (name, schema) in &components.schemas {
            let json = serde_json::to_string_pretty(schema).unwrap_or_default();
            let _ = write!(
                out,
                "<details id=\"schema-{0}\"><summary><code>{0}</code></summary><pre>{1}</pre></details>",
                escape(name),
                escape(&json)
            );
        }
    }
    out.push_str("</body></html>");
    out
}

fn render_operation(out: &mut String, method: &str, path: &str, op: &Operation) {
    let _ = write!(
        out,
        "<div class=\"op\"><div><span class=\"m {method}\">{method}</span> <code>{}</code>{}</div>",
        escape(path),
        if op.security.is_some() {
            " &nbsp;🔑 <small>API token</small>"
        } else {
            ""
        }
    );
    for text in [op.summary.as_deref(), op.description.as_deref()].into_iter().flatten() {
        let _ = write!(out, "<p>{}</p>", prose(text));
    }
    if let Some(params) = op.parameters.as_ref().filter(|p| !p.is_empty()) {
        out.push_str("<table><tr><th>parameter</th><th>in</th><th>meaning</th></tr>");
        for p in params.iter().filter_map(|p| match p {
            RefOr::T(p) => Some(p),
            RefOr::Ref(_) => None,
        }) {
            let place = serde_json::to_value(&p.parameter_in).ok();
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                escape(&p.name),
                place.as_ref().and_then(|v| v.as_str()).unwrap_or_default(),
                prose(p.description.as_deref().unwrap_or_default())
            );
        }
        out.push_str("</table>");
    }
    if let Some(RefOr::T(body)) = &op.request_body {
        for (content_type, content) in &body.content {
            let schema = match content {
                RefOr::T(c) => c.schema.as_ref().map(schema_name).unwrap_or_default(),
                RefOr::Ref(r) => r.ref_location.clone(),
            };
            let _ = write!(
                out,
                "<p>Body: <code>{}</code> <a href=\"#schema-{1}\">{1}</a> {2}</p>",
                escape(content_type),
                escape(&schema),
                prose(body.description.as_deref().unwrap_or_default())
            );
        }
    }
    out.push_str("<table><tr><th>status</th><th>answer</th></tr>");
    for (status, response) in &op.responses.responses {
        let (description, schema) = match response {
            RefOr::T(r) => (
                r.description.clone(),
                r.content
                    .values()
                    .next()
                    .and_then(|c| match c {
                        RefOr::T(c) => c.schema.as_ref(),
                        RefOr::Ref(_) => None,
                    })
                    .map(schema_name)
                    .unwrap_or_default(),
            ),
            RefOr::Ref(r) => (String::new(), r.ref_location.clone()),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{} <a href=\"#schema-{2}\">{2}</a></td></tr>",
            escape(status),
            prose(&description),
            escape(&schema)
        );
    }
    out.push_str("</table></div>");
}
