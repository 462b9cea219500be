//! The HTTP routes: the JSON API, the event stream, `/metrics` and the page.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use orch_core::history;
use orch_core::{PhaseId, RunId};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::auth::{self, Token};
use crate::events::{self, EVENTS_FILE};
use crate::live::{LiveRun, Read};
use crate::metrics::Metrics;
use crate::runs::{Cancelled, Manager, Refused, StartRequest};

/// Shared state of the handlers.
pub(crate) struct App {
    pub(crate) manager: Arc<Manager>,
    pub(crate) token: Option<Token>,
}

type Shared = State<Arc<App>>;

fn error(status: u16, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(json!({ "error": message.into() }))).into_response()
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

/// `RUN_ID` from a path: a run id or `latest`; nothing that could name another directory.
fn run_param(raw: &str) -> Result<RunId, Refused> {
    RunId::parse(raw).map_err(|_| {
        Refused::new(
            400,
            format!("`{}` is not a run id ([A-Za-z0-9_-]+)", raw.escape_debug()),
        )
    })
}

/// A run id of the state directory (`latest` resolved).
fn resolve(m: &Manager, raw: &str) -> Result<RunId, Refused> {
    if raw == "latest" {
        return history::resolve(&m.state_dir, "latest")
            .map_err(|e| Refused::new(404, e.to_string()));
    }
    run_param(raw)
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page_index))
        .route("/assets/app.js", get(page_js))
        .route("/assets/app.css", get(page_css))
        .route("/api/login", post(login))
        .route("/api/pipeline", get(pipeline))
        .route("/api/runs", get(list_runs).post(start_run))
        .route("/api/runs/{run_id}", get(get_run))
        .route("/api/runs/{run_id}/events", get(run_events))
        .route("/api/runs/{run_id}/logs/{phase}", get(phase_log))
        .route("/api/runs/{run_id}/cancel", post(cancel_run))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(404, "no such page") })
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Every request: the Host check (without a token), the Origin check (requests that change
/// state), the token (API and metrics), and the security headers on the answer.
async fn guard(State(app): Shared, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let path = req.uri().path().to_owned();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let refused = if app.token.is_none() && !auth::host_is_loopback(host) {
        // A loopback server reached under another name: DNS rebinding.
        Some(error(
            403,
            format!("host `{}` is not a loopback name", host.escape_debug()),
        ))
    } else if let Some(why) = auth::cross_site(req.method(), headers) {
        Some(error(403, why))
    } else if let Some(token) = &app.token
        && (path.starts_with("/api/") || path == "/metrics")
        && path != "/api/login"
        && !token.allows(headers)
    {
        let mut r = error(
            401,
            "this server needs a token: Authorization: Bearer TOKEN",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"orch\""),
        );
        Some(r)
    } else {
        None
    };
    let mut response = match refused {
        Some(r) => r,
        None => next.run(req).await,
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn page_index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    )
}

async fn page_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    )
}

async fn page_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../assets/app.css"))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(app): Shared, Json(body): Json<Login>) -> Response {
    match &app.token {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(t) if t.matches(&body.token) => (
            StatusCode::NO_CONTENT,
            [(header::SET_COOKIE, t.set_cookie())],
        )
            .into_response(),
        Some(_) => error(401, "wrong token"),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Refused> + Send + 'static,
) -> Result<T, Refused> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Refused::new(500, e.to_string()))?
}

async fn pipeline(State(app): Shared) -> Result<Response, Refused> {
    let m = app.manager.clone();
    blocking(move || {
        let p = crate::runs::load_pipeline(&m.file, m.registry(), &Default::default())
            .map_err(|e| Refused::new(500, e))?;
        let phases: Vec<Value> = p
            .nodes()
            .iter()
            .map(|n| {
                json!({ "id": n.spec.id, "kind": n.spec.kind, "needs": n.spec.needs,
                        "tags": n.spec.tags, "description": n.spec.description })
            })
            .collect();
        Ok(Json(json!({
            "name": p.name(), "file": m.file, "state_dir": m.state_dir,
            "vars": p.spec().vars, "phases": phases,
        }))
        .into_response())
    })
    .await
}

async fn list_runs(State(app): Shared) -> Result<Response, Refused> {
    let m = app.manager.clone();
    let mut out = m.memory_entries();
    let on_disk =
        blocking(move || history::list(&m.state_dir).map_err(|e| Refused::new(500, e.to_string())))
            .await?;
    for r in on_disk {
        let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
        v["status"] = json!(r.status_text());
        out.push(v);
    }
    Ok(Json(json!({ "runs": out })).into_response())
}

async fn start_run(
    State(app): Shared,
    body: Result<Json<StartRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Refused> {
    let Json(request) = body.map_err(|e| Refused::new(e.status().as_u16(), e.body_text()))?;
    let (id, position) = app.manager.start(request).await?;
    let mut r = (
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": id, "queued": position > 0, "position": position })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/runs/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

async fn get_run(State(app): Shared, Path(raw): Path<String>) -> Result<Response, Refused> {
    let id = resolve(&app.manager, &raw)?;
    if let Some(live) = app.manager.live(&id) {
        let mut v = live.view();
        if let Some(p) = app.manager.position(&id) {
            v["position"] = json!(p);
        }
        return Ok(Json(v).into_response());
    }
    let m = app.manager.clone();
    blocking(move || {
        let record = history::load(&m.state_dir, id.as_str()).map_err(|e| {
            let not_found = !m.state_dir.join("runs").join(id.as_str()).is_dir();
            Refused::new(if not_found { 404 } else { 500 }, e.to_string())
        })?;
        let mut v = serde_json::to_value(&record).map_err(|e| Refused::new(500, e.to_string()))?;
        let live = orch_core::lock_holder(&m.state_dir).is_some_and(|h| h.run_id == id.as_str());
        v["live"] = json!(live);
        Ok(Json(v).into_response())
    })
    .await
}

async fn phase_log(
    State(app): Shared,
    Path((raw, phase)): Path<(String, String)>,
) -> Result<Response, Refused> {
    let id = resolve(&app.manager, &raw)?;
    let phase = PhaseId::new(&phase).map_err(|_| {
        Refused::new(
            400,
            format!(
                "`{}` is not a phase id ([A-Za-z0-9_-]+)",
                phase.escape_debug()
            ),
        )
    })?;
    let m = app.manager.clone();
    let text = blocking(move || {
        let path = history::log_path(&m.state_dir, id.as_str(), phase.as_str())
            .map_err(|e| Refused::new(404, e.to_string()))?
            .ok_or_else(|| Refused::new(404, format!("phase `{phase}` wrote no log")))?;
        std::fs::read(&path).map_err(|e| Refused::new(500, format!("{}: {e}", path.display())))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

async fn cancel_run(State(app): Shared, Path(raw): Path<String>) -> Result<Response, Refused> {
    let id = run_param(&raw)?;
    Ok(match app.manager.cancel(&id)? {
        Cancelled::Stopping => (
            StatusCode::ACCEPTED,
            Json(json!({ "run_id": id, "status": "cancelling" })),
        )
            .into_response(),
        Cancelled::Dequeued => Json(json!({ "run_id": id, "status": "cancelled" })).into_response(),
    })
}

async fn metrics(State(app): Shared) -> Result<Response, Refused> {
    let m = app.manager.clone();
    let counts = blocking(move || Ok(m.counts())).await?;
    let text =
        app.manager
            .metrics
            .render(&counts, app.manager.queue_len(), app.manager.is_active());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[derive(Deserialize)]
struct EventsQuery {
    /// Start after this id (what `Last-Event-ID` says on a reconnect).
    after: Option<u64>,
}

/// Counts a connected event-stream client while it lives.
struct ClientGuard(Arc<Metrics>);

impl ClientGuard {
    fn new(m: Arc<Metrics>) -> Self {
        m.clients.fetch_add(1, Ordering::Relaxed);
        Self(m)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

fn sse(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // A reverse proxy (nginx) must pass events on as they come.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

/// Events of `id` after `Last-Event-ID` (or `?after=`): live from memory for this server's
/// runs, else replayed from `events.jsonl` (or rebuilt from the record and logs).
async fn run_events(
    State(app): Shared,
    Path(raw): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let id = resolve(&app.manager, &raw)?;
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| Refused::new(400, "Last-Event-ID is not an event id"))?,
        None => q.after.unwrap_or(0),
    };
    if let Some(live) = app.manager.live(&id) {
        if live.is_closed() && after >= live.head() {
            // Nothing more will come: 204 tells an EventSource not to reconnect.
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let guard = ClientGuard::new(app.manager.metrics.clone());
        let stream = live_stream(live, after, app.manager.shutdown_signal(), guard);
        return Ok(sse(Body::from_stream(stream)));
    }
    let m = app.manager.clone();
    let lines =
        blocking(move || replay(&m.state_dir.join("runs").join(id.as_str()), &m, &id)).await?;
    let rest: Vec<&(u64, String)> = lines.iter().filter(|(i, _)| *i > after).collect();
    if rest.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut body = String::from("retry: 1000\n\n");
    for (i, line) in rest {
        let _ = write!(body, "id: {i}\ndata: {line}\n\n");
    }
    body.push_str("event: end\ndata: {}\n\n");
    Ok(sse(Body::from(body)))
}

/// The events of a run that is not in memory, with their ids.
fn replay(
    run_dir: &std::path::Path,
    m: &Manager,
    id: &RunId,
) -> Result<Vec<(u64, String)>, Refused> {
    if !run_dir.is_dir() {
        return Err(Refused::new(404, format!("no run `{id}`")));
    }
    let file: PathBuf = run_dir.join(EVENTS_FILE);
    if let Ok(text) = std::fs::read_to_string(&file) {
        return Ok(text
            .lines()
            .filter_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                Some((v["id"].as_u64()?, l.to_owned()))
            })
            .collect());
    }
    let record =
        history::load(&m.state_dir, id.as_str()).map_err(|e| Refused::new(500, e.to_string()))?;
    Ok(events::from_record(&record, run_dir)
        .into_iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l))
        .collect())
}

struct StreamState {
    live: Arc<LiveRun>,
    after: u64,
    rx: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    done: bool,
    started: bool,
    _guard: ClientGuard,
}

/// Most events sent in one chunk.
const BATCH: usize = 1024;

/// How long a woken stream waits for more events before it sends what came.
const COALESCE: Duration = Duration::from_millis(25);

fn live_stream(
    live: Arc<LiveRun>,
    after: u64,
    shutdown: watch::Receiver<bool>,
    guard: ClientGuard,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let rx = live.watch();
    let state = StreamState {
        live,
        after,
        rx,
        shutdown,
        done: false,
        started: false,
        _guard: guard,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if !st.started {
            st.started = true;
            return Some((Ok(Bytes::from_static(b"retry: 1000\n\n")), st));
        }
        loop {
            st.rx.borrow_and_update();
            match st.live.read(st.after, BATCH) {
                Read::Events(evs) => {
                    let mut buf = String::new();
                    for (id, frame) in evs {
                        buf.push_str(&frame);
                        st.after = id;
                    }
                    return Some((Ok(Bytes::from(buf)), st));
                }
                Read::Lagged { head } => {
                    // Too far behind: the events it missed left memory. The client
                    // reloads the record and follows again from `head`.
                    st.done = true;
                    let msg = format!(
                        "event: lagged\ndata: {{\"after\":{},\"head\":{head}}}\n\n",
                        st.after
                    );
                    return Some((Ok(Bytes::from(msg)), st));
                }
                Read::Idle { closed: true } => {
                    st.done = true;
                    return Some((Ok(Bytes::from_static(b"event: end\ndata: {}\n\n")), st));
                }
                Read::Idle { closed: false } => {
                    tokio::select! {
                        r = st.rx.changed() => {
                            if r.is_err() {
                                return None;
                            }
                            // Let a burst gather: one chunk per burst, not per event, so
                            // many clients cost the process little while a run is busy.
                            tokio::time::sleep(COALESCE).await;
                        }
                        () = tokio::time::sleep(Duration::from_secs(15)) => {
                            return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st));
                        }
                        _ = st.shutdown.changed() => return None,
                    }
                }
            }
        }
    })
}
