//! `GET /docs`: the OpenAPI description of every HTTP endpoint, generated from the code.

use crate::common::*;
use serde_json::Value;

/// Every route the server serves (method, path), as a user of the API would list them.
const ENDPOINTS: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/docs"),
    ("get", "/docs/openapi.json"),
    ("post", "/api/broadcast"),
    ("get", "/api/broadcast/stats"),
    ("get", "/api/broadcast/nodes"),
    ("get", "/api/broadcast/channels"),
    ("get", "/api/broadcast/channels/{name}/users"),
    ("get", "/ws"),
    ("get", "/ws/{channel}"),
    ("get", "/app/{key}"),
    ("post", "/apps/{app_id}/events"),
    ("post", "/apps/{app_id}/batch_events"),
    ("get", "/apps/{app_id}/channels"),
    ("get", "/apps/{app_id}/channels/{name}"),
    ("get", "/apps/{app_id}/channels/{name}/users"),
    ("post", "/apps/{app_id}/users/{user_id}/terminate_connections"),
    ("post", "/broadcasting/auth"),
    ("post", "/broadcasting/user-auth"),
    ("post", "/pusher/user-auth"),
    ("post", "/api/v1/channels"),
    ("get", "/api/v1/channels"),
    ("get", "/api/v1/channels/{id}"),
    ("patch", "/api/v1/channels/{id}"),
    ("delete", "/api/v1/channels/{id}"),
    ("put", "/api/v1/channels/{id}/start"),
    ("put", "/api/v1/channels/{id}/pause"),
    ("put", "/api/v1/channels/{id}/stop"),
    ("post", "/api/v1/channels/{id}/broadcast"),
    ("get", "/api/v1/channels/{id}/messages"),
    ("get", "/api/v1/channels/{id}/ws"),
    ("post", "/api/v1/backup"),
    ("get", "/api/v1/health"),
    ("get", "/api/v1/ready"),
    ("get", "/rtc/ws"),
    ("get", "/info"),
    ("get", "/api/broadcast/channels/{name}/history"),
    ("get", "/dashboard"),
    ("get", "/dashboard/ws"),
    ("get", "/favicon.ico"),
];

#[tokio::test]
async fn every_endpoint_is_described_and_the_description_is_consistent() {
    let server = start().await;
    let (status, api) = server.get("/docs/openapi.json").await;
    assert_eq!(status, 200);
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(api["info"]["title"], "rustaxum");
    assert_eq!(api["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = api["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let mut expected: Vec<(String, String)> = ENDPOINTS.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    documented.sort();
    expected.sort();
    assert_eq!(documented, expected);

    // Every operation says what it does and what it answers; every schema it names exists.
    let schemas = api["components"]["schemas"].as_object().unwrap();
    let mut refs = Vec::new();
    collect_refs(&api["paths"], &mut refs);
    collect_refs(&api["components"]["schemas"], &mut refs);
    for r in &refs {
        let name = r.strip_prefix("#/components/schemas/").expect(r);
        assert!(schemas.contains_key(name), "{r} is named but not described");
    }
    for (method, path) in &expected {
        let op = &paths[path][method];
        assert!(
            !op["summary"].as_str().unwrap_or_default().is_empty(),
            "{method} {path} has no summary"
        );
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
        assert!(op["tags"][0].is_string(), "{method} {path} has no tag");
    }
    // The EmitHub channel is described as the API answers it.
    let channel = &schemas["ManagedChannel"]["properties"];
    for field in [
        "id",
        "name",
        "description",
        "status",
        "created_at",
        "updated_at",
        "settings",
    ] {
        assert!(channel.get(field).is_some(), "ManagedChannel.{field}");
    }
    assert_eq!(
        schemas["ChannelStatus"]["enum"],
        serde_json::json!(["Created", "Active", "Paused", "Stopped"])
    );
    assert_eq!(
        paths["/api/v1/channels"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ManagedChannel"
    );
    assert_eq!(
        paths["/api/v1/channels/{id}/broadcast"]["post"]["security"][0]["api_token"],
        serde_json::json!([])
    );
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_docs_page_is_readable_html_listing_every_endpoint() {
    let server = start().await;
    let resp = reqwest::get(server.url("/docs")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = resp.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"));
    for (method, path) in ENDPOINTS {
        let row = format!(
            "<span class=\"m {0}\">{0}</span> <code>{1}</code>",
            method.to_uppercase(),
            path
        );
        assert!(page.contains(&row), "{method} {path} is not on the page");
    }
    assert!(page.contains("Pauses an Active channel"));
    assert!(!page.contains("<script"), "nothing to run, nothing fetched");
}

// Issue 25: a table of contents by protocol (native first) and an example request and
// answer for every endpoint.
#[tokio::test]
async fn the_docs_page_has_contents_by_protocol_and_an_example_for_every_endpoint() {
    let server = start().await;
    let page = reqwest::get(server.url("/docs")).await.unwrap().text().await.unwrap();
    let nav = &page[page.find("<nav id=\"contents\">").expect("contents")..page.find("</nav>").unwrap()];
    let order: Vec<usize> = ["#native", "#pusher", "#rtc", "#emithub", "#operations"]
        .iter()
        .map(|t| {
            nav.find(&format!("href=\"{t}\""))
                .unwrap_or_else(|| panic!("{t} in contents"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "native first, then pusher, rtc, emithub, operations"
    );
    for (method, path) in ENDPOINTS {
        let id = format!(
            "{}{}",
            method,
            path.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
        );
        assert!(
            nav.contains(&format!("href=\"#{id}\"")),
            "{method} {path} not in contents"
        );
        let start = page.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("{id}"));
        let section = &page[start..start + page[start..].find("</div>\n").unwrap_or(page.len() - start).min(20_000)];
        let op_end = section.find("<div class=\"op\"").unwrap_or(section.len());
        let section = &section[..op_end];
        assert!(
            section.contains("<pre class=\"example\">"),
            "{method} {path} has no example"
        );
    }
    // The publish example carries a body built from the schema, and the token header.
    let publish = page.find("id=\"post-api-broadcast\"").expect("POST /api/broadcast");
    let example = &page[publish..];
    let example = &example[..example.find("Answer").unwrap()];
    assert!(
        example.contains("curl -X POST 'http://127.0.0.1:8080/api/broadcast'"),
        "{example}"
    );
    assert!(
        example.contains("Authorization: Bearer $BROADCAST_API_TOKEN"),
        "{example}"
    );
    assert!(
        example.contains("-d '{") && example.contains("&quot;event&quot;"),
        "{example}"
    );
}
