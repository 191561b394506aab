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

/// The tags, in the order the page shows them: the native protocol first.
const TAGS: [(&str, &str); 5] = [
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
    (
        "emithub",
        "EmitHub managed channels: create, start, pause, stop, broadcast, history.",
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
         pre.example{background:#f7f7f7;padding:.5rem .7rem;border-radius:4px;overflow-x:auto}\
         nav ul{margin:.1rem 0}nav li{list-style:none}nav a{text-decoration:none}\
         </style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>{} {}</h1><p>{}</p><p>Machine-readable: <a href=\"/docs/openapi.json\">/docs/openapi.json</a> (OpenAPI 3.1).</p>",
        escape(&api.info.title),
        escape(&api.info.version),
        prose(api.info.description.as_deref().unwrap_or_default()),
    );
    // The table of contents: each protocol and its endpoints.
    out.push_str("<nav id=\"contents\"><h2>Contents</h2><ul>");
    for (tag, _) in TAGS {
        let _ = write!(out, "<li><a href=\"#{tag}\">{tag}</a><ul>");
        for (method, path, _) in tagged(api, tag) {
            let _ = write!(
                out,
                "<li><a href=\"#{}\"><code>{method} {}</code></a></li>",
                anchor(method, path),
                escape(path)
            );
        }
        out.push_str("</ul></li>");
    }
    out.push_str("<li><a href=\"#schemas\">schemas</a></li></ul></nav>");
    for (tag, about) in TAGS {
        let _ = write!(out, "<h2 id=\"{tag}\">{tag}</h2><p>{}</p>", prose(about));
        for (method, path, op) in tagged(api, tag) {
            render_operation(&mut out, api, method, path, op);
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

/// The operations of `tag`, in path order.
fn tagged<'a>(api: &'a OpenApi, tag: &str) -> Vec<(&'static str, &'a str, &'a Operation)> {
    let mut out = Vec::new();
    for (path, item) in &api.paths.paths {
        for (method, op) in operations(item) {
            if op.tags.as_ref().is_some_and(|t| t.iter().any(|t| t == tag)) {
                out.push((method, path.as_str(), op));
            }
        }
    }
    out
}

/// The page anchor of an operation: `get-api-broadcast-stats`.
fn anchor(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for c in path.chars() {
        id.push(if c.is_ascii_alphanumeric() { c } else { '-' });
    }
    id
}

/// An example value of a schema (its own `example`, else one built from its type), with
/// `$ref`s resolved in `schemas`; bounded in depth (schemas may be recursive).
fn example(schema: &serde_json::Value, schemas: &serde_json::Value, depth: usize) -> serde_json::Value {
    use serde_json::{json, Value};
    if depth > 6 {
        return Value::Null;
    }
    if let Some(e) = schema
        .get("example")
        .or_else(|| schema.get("examples").and_then(|e| e.get(0)))
    {
        return e.clone();
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or_default();
        return example(&schemas[name], schemas, depth + 1);
    }
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(|v| v.as_array())
            .and_then(|v| v.iter().find(|s| s.get("type").and_then(Value::as_str) != Some("null")))
        {
            return example(first, schemas, depth + 1);
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        let mut merged = serde_json::Map::new();
        for part in all {
            if let Value::Object(o) = example(part, schemas, depth + 1) {
                merged.extend(o);
            }
        }
        return Value::Object(merged);
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "",
    };
    match kind {
        "object" => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    let value = match (named_example(name), example(prop, schemas, depth + 1)) {
                        // A placeholder string or an untyped value reads better by name.
                        (Some(named), Value::String(s)) if s == "string" => named,
                        (Some(named), Value::Null) => named,
                        (_, value) => value,
                    };
                    out.insert(name.clone(), value);
                }
            }
            Value::Object(out)
        }
        "array" => json!([example(schema.get("items").unwrap_or(&Value::Null), schemas, depth + 1)]),
        "string" => match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => json!("2026-12-03T14:00:00Z"),
            Some("uuid") => json!("550e8400-e29b-41d4-a716-446655440000"),
            _ => json!("string"),
        },
        "integer" => json!(0),
        "number" => json!(0.0),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

/// What a field of this name usually holds, for examples.
fn named_example(name: &str) -> Option<serde_json::Value> {
    use serde_json::json;
    Some(match name {
        "channel" | "name" => json!("general"),
        "channels" => json!(["general"]),
        "event" => json!("announcement"),
        "data" | "payload" => json!({"message": "hello"}),
        "message" | "content" => json!("hello"),
        "socket_id" => json!("1234.5678"),
        "user_id" | "id" | "target_user" => json!("42"),
        "description" => json!("Calls queue numbers"),
        _ => return None,
    })
}

/// The first schema of a body or an answer, as JSON.
fn content_schema<'a>(
    mut content: impl Iterator<Item = (&'a String, &'a RefOr<utoipa::openapi::content::Content>)>,
) -> Option<(String, serde_json::Value)> {
    let (content_type, c) = content.next()?;
    let RefOr::T(c) = c else { return None };
    let schema = serde_json::to_value(c.schema.as_ref()?).ok()?;
    Some((content_type.clone(), schema))
}

/// A `curl` line for the operation, with an example body, and an example answer.
fn render_examples(out: &mut String, api: &OpenApi, method: &str, path: &str, op: &Operation) {
    let schemas = api
        .components
        .as_ref()
        .and_then(|c| serde_json::to_value(&c.schemas).ok())
        .unwrap_or_default();
    let websocket = op.responses.responses.contains_key("101");
    let mut curl = if websocket {
        format!("websocat 'ws://127.0.0.1:8080{path}'")
    } else {
        format!("curl -X {method} 'http://127.0.0.1:8080{path}'")
    };
    if op.security.is_some() && !websocket {
        curl.push_str(" \\\n  -H 'Authorization: Bearer $BROADCAST_API_TOKEN'");
    }
    if let Some(RefOr::T(body)) = &op.request_body {
        if let Some((content_type, schema)) = content_schema(body.content.iter()) {
            let value = example(&schema, &schemas, 0);
            let text = if content_type.contains("json") {
                value.to_string()
            } else {
                serde_urlencoded::to_string(
                    value
                        .as_object()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
                            )
                        })
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default()
            };
            let _ = write!(curl, " \\\n  -H 'content-type: {content_type}' -d '{text}'");
        }
    }
    let _ = write!(out, "<p>Example:</p><pre class=\"example\">{}</pre>", escape(&curl));
    let answer = op
        .responses
        .responses
        .iter()
        .find(|(status, _)| status.starts_with('2'));
    if let Some((status, RefOr::T(response))) = answer {
        let body = content_schema(response.content.iter())
            .map(|(_, schema)| example(&schema, &schemas, 0))
            .filter(|v| !v.is_null())
            .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default());
        let shown = body.unwrap_or_else(|| response.description.clone());
        let _ = write!(
            out,
            "<p>Answer {status}:</p><pre class=\"example\">{}</pre>",
            escape(&shown)
        );
    }
}

fn render_operation(out: &mut String, api: &OpenApi, method: &str, path: &str, op: &Operation) {
    let _ = write!(
        out,
        "<div class=\"op\" id=\"{}\"><div><span class=\"m {method}\">{method}</span> <code>{}</code>{}</div>",
        anchor(method, path),
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
    out.push_str("</table>");
    render_examples(out, api, method, path, op);
    out.push_str("</div>");
}
