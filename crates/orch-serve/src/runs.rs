//! Starting runs: the queue (persisted in `STATE_DIR/serve/queue.json`), the worker that
//! runs one at a time with the engine, and cancelling.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use orch_core::errors::chain;
use orch_core::history;
use orch_core::record::rfc3339;
use orch_core::{
    LoadError, LoadOptions, Pipeline, Registry, ResumeFrom, RunError, RunId, RunOptions, RunRecord,
    Runner, Selection, Selector,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Notify, watch};

use crate::errors::ServeError;
use crate::live::{LiveRun, LiveSink, Read};
use crate::metrics::Metrics;

/// What runs after each run's record is written (the CLI writes the same reports as
/// `orch run` with it). Called on a blocking thread.
pub type AfterRun = Arc<dyn Fn(&RunRecord, &Path) + Send + Sync>;

/// The body of `POST /api/runs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Overrides of `[vars]`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Run only these phases (ID or `tag:T`) and what they need.
    #[serde(default)]
    pub only: Vec<String>,
    /// Do not run these phases (ID or `tag:T`).
    #[serde(default)]
    pub skip: Vec<String>,
    /// Continue this run (a run id, or `latest`), like `orch run --resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// One entry of the persisted queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Queued {
    run_id: RunId,
    #[serde(flatten)]
    request: StartRequest,
    queued_at: String,
}

/// Why a request was refused: an HTTP status and a message.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl Refused {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// What cancelling did.
pub(crate) enum Cancelled {
    /// The running run was asked to stop (a second request kills its phases).
    Stopping,
    /// A queued run was taken off the queue.
    Dequeued,
}

struct Inner {
    queue: VecDeque<Queued>,
    runs: HashMap<RunId, Arc<LiveRun>>,
    active: Option<RunId>,
}

/// Runs started through the API.
pub(crate) struct Manager {
    pub(crate) file: PathBuf,
    pub(crate) state_dir: PathBuf,
    registry: Registry,
    after_run: Option<AfterRun>,
    grace: Duration,
    window: usize,
    pub(crate) metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
    wake: Notify,
    shutdown: watch::Sender<bool>,
}

/// `pipeline` loaded with `vars`; errors as text (rendered diagnostics).
pub(crate) fn load_pipeline(
    file: &Path,
    registry: &Registry,
    vars: &BTreeMap<String, String>,
) -> Result<Pipeline, String> {
    let options = LoadOptions {
        vars: vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    Pipeline::load(file, registry, &options).map_err(|e| match e {
        LoadError::Invalid(d) => d.render(),
        other => chain(&other),
    })
}

fn selection(r: &StartRequest) -> Selection {
    Selection {
        only: r.only.iter().map(|s| Selector::parse(s)).collect(),
        skip: r.skip.iter().map(|s| Selector::parse(s)).collect(),
        from: Vec::new(),
    }
}

impl Manager {
    /// A manager for `file`'s runs in `state_dir`; the persisted queue is read back.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        file: PathBuf,
        state_dir: PathBuf,
        registry: Registry,
        after_run: Option<AfterRun>,
        grace: Duration,
        window: usize,
    ) -> Result<Arc<Self>, ServeError> {
        let m = Arc::new(Self {
            file,
            state_dir,
            registry,
            after_run,
            grace,
            window,
            metrics: Arc::new(Metrics::default()),
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                runs: HashMap::new(),
                active: None,
            }),
            wake: Notify::new(),
            shutdown: watch::channel(false).0,
        });
        let path = m.queue_path();
        let queued: Vec<Queued> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ServeError::State {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(ServeError::State { path, source }),
        };
        for q in queued {
            let live = match load_pipeline(&m.file, &m.registry, &q.request.vars) {
                Ok(p) => m.new_live(&q.run_id, Some(&p), &q.request.vars),
                Err(msg) => {
                    // Kept in memory only, so that its id answers with the reason.
                    let live = m.new_live(&q.run_id, None, &q.request.vars);
                    live.fail("failed", &format!("cannot load the pipeline: {msg}"));
                    m.lock().runs.insert(q.run_id.clone(), live);
                    continue;
                }
            };
            let mut inner = m.lock();
            inner.runs.insert(q.run_id.clone(), live);
            inner.queue.push_back(q);
        }
        m.persist_queue()?;
        Ok(m)
    }

    /// The kinds the server's pipelines are loaded with.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn new_live(
        &self,
        id: &RunId,
        p: Option<&Pipeline>,
        vars: &BTreeMap<String, String>,
    ) -> Arc<LiveRun> {
        let vars = vars.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        LiveRun::new(id.clone(), p, &vars, self.window, self.metrics.clone())
    }

    fn queue_path(&self) -> PathBuf {
        self.state_dir.join("serve").join("queue.json")
    }

    /// Writes the queue (to a temporary file renamed over the old one).
    fn persist_queue(&self) -> Result<(), ServeError> {
        let entries: Vec<Queued> = self.lock().queue.iter().cloned().collect();
        let path = self.queue_path();
        let err = |source| ServeError::State {
            path: path.clone(),
            source,
        };
        if entries.is_empty() && !path.exists() {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes =
            serde_json::to_vec_pretty(&entries).map_err(|e| err(std::io::Error::other(e)))?;
        std::fs::write(&tmp, bytes).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// A run of this server (queued, running, just finished, or refused at start).
    pub(crate) fn live(&self, id: &RunId) -> Option<Arc<LiveRun>> {
        self.lock().runs.get(id).cloned()
    }

    /// Where `id` is in the queue (1 = next), if queued.
    pub(crate) fn position(&self, id: &RunId) -> Option<usize> {
        self.lock()
            .queue
            .iter()
            .position(|q| &q.run_id == id)
            .map(|i| i + 1)
    }

    /// Runs waiting to start.
    pub(crate) fn queue_len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether a run of this server is running.
    pub(crate) fn is_active(&self) -> bool {
        self.lock().active.is_some()
    }

    /// Runs known only in memory (queued, or refused when they came to start), newest
    /// first, as list entries.
    pub(crate) fn memory_entries(&self) -> Vec<Value> {
        let inner = self.lock();
        let mut out: Vec<Value> = inner
            .queue
            .iter()
            .rev()
            .enumerate()
            .map(|(i, q)| {
                json!({
                    "run_id": q.run_id, "status": "queued", "live": true,
                    "queued_at": q.queued_at, "position": inner.queue.len() - i,
                    "pipeline": inner.runs.get(&q.run_id).map(|r| r.view()["pipeline"].clone()),
                })
            })
            .collect();
        for (id, r) in &inner.runs {
            let status = r.status();
            if status != "queued"
                && Some(id) != inner.active.as_ref()
                && !self
                    .state_dir
                    .join("runs")
                    .join(id.as_str())
                    .join("run.json")
                    .exists()
            {
                let v = r.view();
                out.push(json!({
                    "run_id": id, "status": status, "live": false,
                    "pipeline": v["pipeline"], "error": v["error"],
                }));
            }
        }
        out
    }

    /// Checks a start request and queues it; the worker starts it when the workspace
    /// is free. Returns its id and its place in the queue.
    pub(crate) async fn start(
        self: &Arc<Self>,
        request: StartRequest,
    ) -> Result<(RunId, usize), Refused> {
        if let Some(r) = &request.resume
            && r != "latest"
        {
            let id = RunId::parse(r).map_err(|e| Refused::new(400, e.to_string()))?;
            if !self.state_dir.join("runs").join(id.as_str()).is_dir() {
                return Err(Refused::new(404, format!("no run `{id}` to resume")));
            }
        }
        let me = self.clone();
        let req = request.clone();
        let pipeline = tokio::task::spawn_blocking(move || {
            let p = load_pipeline(&me.file, &me.registry, &req.vars)
                .map_err(|m| Refused::new(400, m))?;
            selection(&req)
                .apply(&p)
                .map_err(|e| Refused::new(400, e.to_string()))?;
            Ok::<_, Refused>(p)
        })
        .await
        .map_err(|e| Refused::new(500, e.to_string()))??;
        let (id, position) = {
            let mut inner = self.lock();
            let mut id = RunId::generate();
            while inner.runs.contains_key(&id)
                || self.state_dir.join("runs").join(id.as_str()).exists()
            {
                id = RunId::generate();
            }
            let live = self.new_live(&id, Some(&pipeline), &request.vars);
            inner.runs.insert(id.clone(), live);
            inner.queue.push_back(Queued {
                run_id: id.clone(),
                request,
                queued_at: rfc3339(std::time::SystemTime::now()),
            });
            let position = inner.queue.len() + usize::from(inner.active.is_some()) - 1;
            (id, position)
        };
        if let Err(e) = self.persist_queue() {
            tracing::warn!("{}", chain(&e));
        }
        self.wake.notify_one();
        Ok((id, position))
    }

    /// Stops the running run `id`, or takes a queued one off the queue.
    pub(crate) fn cancel(&self, id: &RunId) -> Result<Cancelled, Refused> {
        let live = {
            let mut inner = self.lock();
            if inner.active.as_ref() == Some(id)
                && let Some(r) = inner.runs.get(id)
                // Its end is already out (reports are being written): nothing to stop.
                && matches!(r.status().as_str(), "running" | "queued")
            {
                r.control.interrupt();
                return Ok(Cancelled::Stopping);
            }
            match inner.queue.iter().position(|q| &q.run_id == id) {
                Some(i) => {
                    inner.queue.remove(i);
                    inner.runs.get(id).cloned()
                }
                None => None,
            }
        };
        if let Some(live) = live {
            if let Err(e) = self.persist_queue() {
                tracing::warn!("{}", chain(&e));
            }
            live.set(&[("status", json!("cancelled"))]);
            live.push(
                json!({ "type": "run_finished", "run_id": id, "status": "cancelled",
                              "duration_ms": 0, "at": rfc3339(std::time::SystemTime::now()) }),
            );
            live.close();
            return Ok(Cancelled::Dequeued);
        }
        if self.live(id).is_some() {
            return Err(Refused::new(409, format!("run {id} is not running")));
        }
        if let Some(h) = orch_core::lock_holder(&self.state_dir)
            && h.run_id == id.as_str()
        {
            return Err(Refused::new(
                409,
                format!(
                    "run {id} was not started by this server (process {}): stop it there",
                    h.pid
                ),
            ));
        }
        if self.state_dir.join("runs").join(id.as_str()).is_dir() {
            Err(Refused::new(409, format!("run {id} is not running")))
        } else {
            Err(Refused::new(404, format!("no run `{id}`")))
        }
    }

    /// A receiver that turns true when the server shuts down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stops the worker: the running run is interrupted (its phases get the grace period);
    /// queued runs stay in the queue file for the next start.
    pub(crate) fn shut_down(&self) {
        self.shutdown.send_replace(true);
        let inner = self.lock();
        if let Some(r) = inner.active.as_ref().and_then(|id| inner.runs.get(id)) {
            r.control.stop();
        }
    }

    /// Starts queued runs one at a time until shutdown.
    pub(crate) async fn worker(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            if *shutdown.borrow_and_update() {
                return;
            }
            let notified = self.wake.notified();
            let next = self.lock().queue.front().cloned();
            let Some(next) = next else {
                tokio::select! {
                    () = notified => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            };
            // One run per workspace: while `orch run` holds it, wait.
            if let Some(h) = orch_core::lock_holder(&self.state_dir) {
                if let Some(r) = self.live(&next.run_id) {
                    r.set(&[(
                        "waiting_for",
                        json!(format!(
                            "run {} (process {}) holds the workspace",
                            h.run_id, h.pid
                        )),
                    )]);
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            {
                let mut inner = self.lock();
                if inner.queue.front().map(|q| &q.run_id) != Some(&next.run_id) {
                    continue; // Cancelled meanwhile.
                }
                inner.queue.pop_front();
                inner.active = Some(next.run_id.clone());
            }
            if let Err(e) = self.persist_queue() {
                tracing::warn!("{}", chain(&e));
            }
            let requeue = self.run_one(&next).await;
            {
                let mut inner = self.lock();
                inner.active = None;
                if requeue {
                    inner.queue.push_front(next);
                }
            }
            if requeue {
                if let Err(e) = self.persist_queue() {
                    tracing::warn!("{}", chain(&e));
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// Runs one queued run to its end. `true`: the workspace was taken meanwhile, queue
    /// it again.
    async fn run_one(self: &Arc<Self>, q: &Queued) -> bool {
        let Some(live) = self.live(&q.run_id) else {
            return false;
        };
        let me = self.clone();
        let vars = q.request.vars.clone();
        let loaded =
            tokio::task::spawn_blocking(move || load_pipeline(&me.file, &me.registry, &vars))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
        let pipeline = match loaded {
            Ok(p) => p,
            Err(msg) => {
                live.fail("failed", &format!("cannot load the pipeline: {msg}"));
                return false;
            }
        };
        let resume = q.request.resume.as_deref().map(|r| match RunId::parse(r) {
            Ok(id) => ResumeFrom::Run(id),
            Err(_) => ResumeFrom::Latest,
        });
        let options = RunOptions {
            selection: selection(&q.request),
            grace: self.grace,
            state_dir: Some(self.state_dir.clone()),
            run_id: Some(q.run_id.clone()),
            resume,
            ..RunOptions::default()
        };
        let notifier = orch_notify::Notifier::new(&pipeline, &self.state_dir);
        let mut runner = Runner::new(Arc::new(pipeline), options);
        runner.subscribe(Arc::new(LiveSink(live.clone())));
        if let Some(n) = &notifier {
            runner.subscribe(n.clone());
        }
        let run_dir = self.state_dir.join("runs").join(q.run_id.as_str());
        let writer = tokio::spawn(write_events(live.clone(), run_dir.clone()));
        let result = runner.run(live.control.clone()).await;
        if let Some(n) = notifier {
            n.finish().await;
        }
        match result {
            Ok(record) => {
                if let Some(after) = self.after_run.clone() {
                    let dir = run_dir.clone();
                    let _ = tokio::task::spawn_blocking(move || after(&record, &dir)).await;
                }
                live.close();
            }
            Err(RunError::Locked { .. }) => {
                writer.abort();
                return true;
            }
            Err(e) => live.fail("failed", &chain(&e)),
        }
        let _ = writer.await;
        // From now on the run is read from its files (same event ids).
        if run_dir.join("run.json").exists() {
            self.lock().runs.remove(&q.run_id);
        }
        false
    }

    /// Runs of the state directory by status (for `/metrics`).
    pub(crate) fn counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        if let Ok(runs) = history::list(&self.state_dir) {
            for r in runs {
                *out.entry(r.status_text().to_owned()).or_default() += 1;
            }
        }
        out
    }
}

/// Appends the run's events to `RUN_DIR/events.jsonl` as they come (a reader of its own:
/// the run never waits for the disk).
async fn write_events(live: Arc<LiveRun>, run_dir: PathBuf) {
    let path = run_dir.join(crate::events::EVENTS_FILE);
    let mut rx = live.watch();
    let mut after = 0;
    let mut file: Option<tokio::io::BufWriter<tokio::fs::File>> = None;
    loop {
        rx.borrow_and_update();
        match live.read(after, 1024) {
            Read::Events(evs) => {
                if file.is_none() {
                    // The engine made the run directory before its first event; a run that
                    // never started has none, and gets no file.
                    if !run_dir.is_dir() {
                        after = evs.last().map_or(after, |e| e.0);
                        continue;
                    }
                    match tokio::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .await
                    {
                        Ok(f) => file = Some(tokio::io::BufWriter::new(f)),
                        Err(e) => {
                            tracing::warn!("cannot write {}: {e}", path.display());
                            return;
                        }
                    }
                }
                if let Some(f) = &mut file {
                    for (id, e) in &evs {
                        let _ = f.write_all(crate::events::frame_json(e).as_bytes()).await;
                        let _ = f.write_all(b"\n").await;
                        after = *id;
                    }
                }
            }
            Read::Lagged { head } => {
                tracing::warn!(
                    "{}: events {}..={head} left memory before they were written",
                    path.display(),
                    after + 1
                );
                after = head;
            }
            Read::Idle { closed } => {
                if let Some(f) = &mut file {
                    let _ = f.flush().await;
                }
                if closed {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}
