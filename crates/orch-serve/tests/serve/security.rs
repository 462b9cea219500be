//! Tokens, loopback binding, cross-site requests, path traversal, escaping.

use serde_json::{Value, json};

use crate::support::*;

const PIPELINE: &str = r#"
[pipeline]
name = "hostile"

[phases.shout]
run = "echo '<script>alert(1)</script>'; echo '<img src=x onerror=alert(2)>'"
"#;

fn with_token(dir: &std::path::Path) -> orch_serve::ServeOptions {
    let file = dir.join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let mut o = options(dir);
    o.token_file = Some(file);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_file_every_api_request_needs_the_token() {
    let dir = project(PIPELINE);
    let o = with_token(dir.path());
    let s = TestServer::with(dir, o).await;
    for path in [
        "/api/runs",
        "/api/pipeline",
        "/metrics",
        "/api/runs/latest/events",
    ] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"orch\"");
        for bad in ["", "wrong", &TOKEN[..TOKEN.len() - 1], &format!("{TOKEN}x")] {
            let r = s
                .http
                .get(s.url(path))
                .bearer_auth(bad)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 401, "{path} with {bad:?}");
        }
    }
    let r = s
        .http
        .post(s.url("/api/runs"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s
        .http
        .get(s.url("/api/runs"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The page itself carries no data: it loads, and asks for the token.
    let r = s.http.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // The page's login: a wrong token is refused; the right one sets an HttpOnly cookie
    // that holds a digest, not the token.
    let r = s
        .http
        .post(s.url("/api/login"))
        .json(&json!({ "token": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s
        .http
        .post(s.url("/api/login"))
        .json(&json!({ "token": TOKEN }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(TOKEN), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let r = s
        .http
        .get(s.url("/api/runs"))
        .header("Cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = s
        .http
        .get(s.url("/api/runs"))
        .header("Cookie", "orch_token=00")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn a_non_loopback_address_is_refused_without_a_token() {
    let dir = project(PIPELINE);
    for bind in ["0.0.0.0:0", "[::]:0"] {
        let mut o = options(dir.path());
        o.bind = bind.into();
        let err = orch_serve::Server::bind(o)
            .await
            .expect_err(bind)
            .to_string();
        assert!(
            err.contains("not a loopback address") && err.contains("--token-file"),
            "{err}"
        );
    }
    let mut o = with_token(dir.path());
    o.bind = "0.0.0.0:0".into();
    assert!(orch_serve::Server::bind(o).await.is_ok());
    // A token shorter than 16 characters is refused.
    std::fs::write(dir.path().join("short"), "abc\n").unwrap();
    let mut o = options(dir.path());
    o.token_file = Some(dir.path().join("short"));
    let err = orch_serve::Server::bind(o)
        .await
        .expect_err("short")
        .to_string();
    assert!(err.contains("at least 16"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_cannot_start_or_cancel_runs() {
    let s = TestServer::start(PIPELINE).await;
    let cases: [(&str, &str); 4] = [
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
        ("Origin", "http://127.0.0.1:1"),
        ("Sec-Fetch-Site", "cross-site"),
    ];
    for (h, v) in cases {
        for path in ["/api/runs", "/api/runs/20200101T000000Z-0000/cancel"] {
            let r = s
                .http
                .post(s.url(path))
                .header(h, v)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 403, "{path} {h}: {v}");
            assert!(r.headers().get("access-control-allow-origin").is_none());
        }
    }
    let (_, list) = s.get_json("/api/runs").await;
    assert_eq!(list["runs"], json!([]), "nothing started");
    // No CORS: a preflight gets no allow headers.
    let r = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/api/runs"))
        .header("Origin", "http://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_ne!(r.status().as_u16(), 200);
    // The page's own origin passes.
    let r = s
        .http
        .post(s.url("/api/runs"))
        .header("Origin", format!("http://{}", s.addr))
        .header("Sec-Fetch-Site", "same-origin")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // A loopback server reached under another name (DNS rebinding) answers nothing.
    let (status, _) = raw(s.addr, "/api/runs", "").await;
    assert_eq!(status, 200);
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream
        .write_all(b"GET /api/runs HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_cannot_leave_the_state_dir() {
    let s = TestServer::start(PIPELINE).await;
    let id = s.start_run(json!({})).await;
    s.events(&id).await;
    // A file a traversal would reach.
    std::fs::write(s.dir.path().join("secret.txt"), "TOP-SECRET").unwrap();
    let paths = [
        format!("/api/runs/{id}/logs/..%2F..%2F..%2Fsecret.txt"),
        format!("/api/runs/{id}/logs/%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt"),
        format!("/api/runs/{id}/logs/..%252F..%252Fsecret.txt"),
        format!("/api/runs/{id}/logs/shout.log"),
        format!("/api/runs/{id}/logs/%2e%2e"),
        "/api/runs/..%2F..%2F/logs/secret.txt".to_owned(),
        "/api/runs/%2e%2e/events".to_owned(),
        "/api/runs/..%2f..%2fsecret.txt".to_owned(),
        "/api/runs/../../secret.txt".to_owned(),
        format!("/api/runs/{id}/logs/../../../../secret.txt"),
        "/api/runs/%00/events".to_owned(),
        "/api/runs/a%5Cb".to_owned(),
    ];
    for p in &paths {
        let (status, body) = raw(s.addr, p, "").await;
        assert!(status == 400 || status == 404, "{p}: {status} {body}");
        assert!(!body.contains("TOP-SECRET"), "{p}: {body}");
    }
    let (status, body) = raw(
        s.addr,
        &format!("/api/runs/{id}/logs/..%2F..%2Fsecret.txt"),
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a phase id"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_log_text_is_served_as_data() {
    let s = TestServer::start(PIPELINE).await;
    let id = s.start_run(json!({})).await;
    let events = s.events(&id).await;
    let line = events
        .iter()
        .find(|e| e.data["type"] == "phase_output")
        .unwrap();
    // In the stream it is a JSON string: data, never markup.
    assert_eq!(line.data["line"], "<script>alert(1)</script>");
    let r = s
        .http
        .get(s.url(&format!("/api/runs/{id}/logs/shout")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // The page allows no inline script and no foreign origin, whatever text it shows.
    let r = s.http.get(s.url("/")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let page: String = r.text().await.unwrap();
    let js = s
        .http
        .get(s.url("/assets/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/assets/app.js"));
    // The script never writes server text as HTML.
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(!js.contains(sink), "app.js uses {sink}");
    }
    let (_, v): (u16, Value) = s.get_json("/api/runs").await;
    assert_eq!(v["runs"][0]["status"], "succeeded");
}
