//! The `deploy` kind, strategies `blue-green` and `canary`: new containers on a Docker
//! engine behind the service's HAProxy, health-checked before they get traffic, switched
//! at once or through canary steps judged from the proxy's own counters, and rolled back
//! automatically when anything fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use orch_core::record::Outputs;
use orch_core::{Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PlanContext};
use serde::Serialize;

use crate::engine::{self, ContainerSpec};
use crate::health::{fmt_duration, wait_healthy};
use crate::proxy::{self, Runtime, ServerStat, backend, server_weight};
use crate::settings::{Analysis, DeployPlan, Inconclusive, Strategy, check_listen};
use crate::state::{Instance, Release, ServiceDir, ServiceState, now};

/// The state dir of the run a phase belongs to (`STATE_DIR/runs/RUN_ID` → `STATE_DIR`).
pub fn state_dir_of(ctx: &PhaseContext) -> PathBuf {
    ctx.run_dir()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ctx.base_dir().join(".orch"))
}

/// The engine a phase runs on: its agent's endpoint when the agent is a Docker or Swarm
/// engine, else `DOCKER_HOST` or the default socket.
pub fn endpoint_of(ctx: &PhaseContext) -> String {
    let agent = ctx.agent();
    match agent.agent_type() {
        "docker" | "swarm" => agent.endpoint(),
        _ => engine::default_endpoint(),
    }
}

/// A failure before anything changed for users.
pub(crate) fn fail(message: impl Into<String>) -> PhaseError {
    PhaseError::failed(message)
}

/// The `deploy` kind.
#[derive(Clone, Debug)]
pub struct DeployPhase {
    plan: DeployPlan,
}

impl DeployPhase {
    /// A phase for checked settings.
    pub fn new(plan: DeployPlan) -> Self {
        Self { plan }
    }
}

#[async_trait]
impl Phase for DeployPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let p = &self.plan;
        let image = ctx.render(&p.image);
        let how = match p.strategy {
            Strategy::BlueGreen => "blue-green".to_owned(),
            Strategy::Canary => format!(
                "canary {}",
                p.steps
                    .iter()
                    .map(|s| format!("{s}%"))
                    .collect::<Vec<_>>()
                    .join(" → ")
            ),
            Strategy::Rolling => format!("rolling, {} at a time", p.parallelism),
        };
        let mut d = Description::new(format!(
            "deploy {image} to `{}` ({how}, {} replica{})",
            p.service,
            p.replicas,
            if p.replicas == 1 { "" } else { "s" }
        ));
        if !p.listen.is_empty() {
            d = d.detail("listen", ctx.render(&p.listen));
        }
        d = d
            .detail(
                "health",
                format!("GET {} on port {}", p.health.path, p.port),
            )
            .change(format!("service `{}` serves {image}", p.service));
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        match self.plan.strategy {
            Strategy::Rolling => crate::rolling::run(ctx, &self.plan).await,
            _ => Deployment::prepare(ctx, &self.plan).await?.run().await,
        }
    }
}

/// One canary step, as judged.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    /// Traffic share of the new version (percent).
    pub percent: u8,
    /// Length of the observation.
    pub window_ms: u64,
    /// Responses of the new version.
    pub requests: u64,
    /// Of which errors (>= 500, broken).
    pub errors: u64,
    /// `errors / requests` (0 when none).
    pub error_rate: f64,
    /// Responses of the old version in the same window.
    pub old_requests: u64,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
}

/// What a deployment leaves for reports: `STATE_DIR/runs/RUN_ID/deploy/PHASE.json`.
#[derive(Clone, Debug, Serialize)]
pub struct DeploymentReport {
    /// Format version of this file.
    pub format_version: u32,
    /// The service.
    pub service: String,
    /// The strategy.
    pub strategy: String,
    /// `deployed` or `rolled_back`.
    pub status: String,
    /// The image deployed.
    pub image: String,
    /// The image now serving.
    pub version: String,
    /// The image served before.
    pub previous: String,
    /// Where users reach it.
    pub url: String,
    /// Canary steps, in order.
    pub steps: Vec<StepResult>,
    /// Why it rolled back.
    pub reason: String,
    /// Milliseconds from "new version healthy" to "all traffic on it" (blue-green).
    pub switch_ms: Option<u64>,
    /// Milliseconds from "failure detected" to "all traffic back" (rollbacks).
    pub rollback_ms: Option<u64>,
    /// Drift the post-deployment audit found.
    pub drift: Vec<String>,
}

/// Writes the report of a deployment into the run directory (a failure is logged).
pub(crate) fn write_report(ctx: &PhaseContext, report: &DeploymentReport) {
    let path = ctx
        .run_dir()
        .join("deploy")
        .join(format!("{}.json", ctx.phase_id()));
    if let Err(e) = ctx.write_json(&path, report) {
        ctx.log(format!("cannot write the deployment report: {e}"));
    }
}

/// The proxy of a service, running: found, or started (again) from the state.
pub(crate) async fn ensure_proxy(
    ctx: Option<&PhaseContext>,
    sd: &ServiceDir,
    state: &mut ServiceState,
) -> Result<Runtime, String> {
    let say = |line: String| match ctx {
        Some(c) => c.log(line),
        None => eprintln!("{line}"),
    };
    let api = Runtime::new(sd.socket());
    if let Some(pid) = proxy::running_pid(sd) {
        if api.command("show info").await.is_ok() {
            orch_core::process::keep_alive(pid);
            state.proxy_pid = Some(pid);
            return Ok(api);
        }
        say(format!(
            "the proxy of `{}` (pid {pid}) does not answer on {}: restarting it",
            state.service,
            sd.socket().display()
        ));
        proxy::stop(pid).await;
    } else if let Some(pid) = state.proxy_pid {
        say(format!(
            "the proxy of `{}` (pid {pid}) was not running: restarting it from {} (listen {}, {} serving, {} standing by)",
            state.service,
            sd.state_file().display(),
            state.listen,
            state
                .current
                .as_ref()
                .map_or("nothing".into(), |r| r.image.clone()),
            state
                .previous
                .as_ref()
                .map_or("nothing".into(), |r| r.image.clone()),
        ));
    }
    let pid = proxy::start(sd, state).await.map_err(|e| e.to_string())?;
    say(format!(
        "proxy for `{}` listening on {} (haproxy pid {pid}, socket {})",
        state.service,
        state.listen,
        sd.socket().display()
    ));
    state.proxy_pid = Some(pid);
    sd.save(state).map_err(|e| e.to_string())?;
    Ok(api)
}

/// Sets the weights of two sets of servers so that `new` gets `percent` of the traffic.
/// The new side is raised first and the old side lowered after, so the total never drops
/// to zero.
pub(crate) async fn split(
    api: &Runtime,
    service: &str,
    old: &[String],
    new: &[String],
    percent: u32,
) -> Result<(), String> {
    let be = backend(service);
    let wn = server_weight(percent, new.len());
    let wo = server_weight(100 - percent.min(100), old.len());
    let (first, second) = if percent >= 50 {
        ((new, wn), (old, wo))
    } else {
        ((old, wo), (new, wn))
    };
    for (servers, w) in [first, second] {
        for s in servers {
            api.set_weight(&be, s, w).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Sums counters over a set of servers.
fn sum(stats: &[ServerStat], names: &[String]) -> (u64, u64) {
    stats
        .iter()
        .filter(|s| names.contains(&s.server))
        .fold((0, 0), |(t, e), s| (t + s.total(), e + s.errors()))
}

/// A deployment under way.
struct Deployment<'a> {
    ctx: &'a PhaseContext,
    plan: &'a DeployPlan,
    sd: ServiceDir,
    state: ServiceState,
    docker: Docker,
    endpoint: String,
    api: Runtime,
    image: String,
    image_info: engine::ImageInfo,
    listen: String,
}

impl<'a> Deployment<'a> {
    async fn prepare(ctx: &'a PhaseContext, plan: &'a DeployPlan) -> Result<Self, PhaseError> {
        let image = ctx
            .render(&plan.image)
            .map_err(|e| fail(format!("cannot render `image`: {e}")))?;
        let listen = ctx
            .render(&plan.listen)
            .map_err(|e| fail(format!("cannot render `listen`: {e}")))?;
        check_listen(&listen).map_err(fail)?;
        let sd = ServiceDir::new(&state_dir_of(ctx), &plan.service);
        let mut state = match sd.load().map_err(|e| fail(e.to_string()))? {
            Some(s) => {
                if s.swarm.is_some() {
                    return Err(fail(format!(
                        "service `{}` runs as a Swarm service (strategy rolling); it cannot switch to `{}`: run `orch deploy stop {}` first",
                        plan.service,
                        plan.strategy.as_str(),
                        plan.service
                    )));
                }
                if s.listen != listen && s.current.is_some() {
                    return Err(fail(format!(
                        "service `{}` listens on {} (its state in {}), but the phase says `listen` = \"{listen}\": keep {} or end the service first with `orch deploy stop {}`",
                        plan.service,
                        s.listen,
                        sd.state_file().display(),
                        s.listen,
                        plan.service
                    )));
                }
                s
            }
            None => ServiceState::new(&plan.service, &listen, plan.port, plan.health.clone()),
        };
        if state.current.is_none() {
            state.listen = listen.clone();
            state.port = plan.port;
            state.health = plan.health.clone();
        }
        let endpoint = endpoint_of(ctx);
        let docker = engine::connect(&endpoint).await.map_err(fail)?;
        state.engine = endpoint.clone();
        ctx.log(format!("engine {endpoint}; looking up {image}"));
        let image_info = engine::ensure_image(&docker, &image).await.map_err(fail)?;
        let api = ensure_proxy(Some(ctx), &sd, &mut state)
            .await
            .map_err(fail)?;
        Ok(Self {
            ctx,
            plan,
            sd,
            state,
            docker,
            endpoint,
            api,
            image,
            image_info,
            listen,
        })
    }

    fn url(&self) -> String {
        format!("http://{}/", self.listen)
    }

    fn outputs(&self, status: &str, version: &str, previous: &str) -> Outputs {
        Outputs::from([
            ("status".to_owned(), status.to_owned()),
            ("version".to_owned(), version.to_owned()),
            ("previous".to_owned(), previous.to_owned()),
            ("url".to_owned(), self.url()),
            ("service".to_owned(), self.plan.service.clone()),
            (
                "strategy".to_owned(),
                self.plan.strategy.as_str().to_owned(),
            ),
        ])
    }

    /// The current release's containers that the engine runs.
    async fn serving(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(cur) = &self.state.current {
            for c in &cur.containers {
                if let Ok(Some(s)) =
                    engine::status(&self.docker, &c.name, cur.port_or(self.state.port)).await
                    && s.running
                {
                    out.push(c.name.clone());
                }
            }
        }
        out
    }

    async fn run(mut self) -> Result<PhaseOutcome, PhaseError> {
        let ctx = self.ctx;
        let plan = self.plan;
        let old = self.serving().await;
        let previous_image = self
            .state
            .current
            .as_ref()
            .map(|r| r.image.clone())
            .unwrap_or_default();
        if let Some(cur) = &self.state.current
            && cur.image_id == self.image_info.id
            && !old.is_empty()
            && old.len() == cur.containers.len()
        {
            ctx.log(format!(
                "`{}` already serves {} (image {}) from {} container(s): nothing to change",
                plan.service,
                self.image,
                short_id(&self.image_info.id),
                old.len()
            ));
            let prev = self
                .state
                .previous
                .as_ref()
                .map(|r| r.image.clone())
                .unwrap_or_default();
            let outputs = self.outputs("deployed", &self.image.clone(), &prev);
            self.sd.save(&self.state).map_err(|e| fail(e.to_string()))?;
            return Ok(PhaseOutcome {
                outputs,
                ..PhaseOutcome::default()
            });
        }

        self.state.generation += 1;
        self.state.strategy = plan.strategy.as_str().to_owned();
        self.sd.save(&self.state).map_err(|e| fail(e.to_string()))?;
        let generation = self.state.generation;
        let version = engine::version_label(&self.image, &self.image_info.id);
        let names: Vec<String> = (1..=plan.replicas)
            .map(|i| format!("{}-{version}-g{generation}-{i}", plan.service))
            .collect();
        let mut guard = Guard::new(
            self.endpoint.clone(),
            self.sd.socket(),
            backend(&plan.service),
            old.clone(),
            names.clone(),
        );

        // 1. New containers.
        let mut env: Vec<String> = Vec::new();
        for (k, v) in &plan.env {
            let v = ctx
                .render(v)
                .map_err(|e| fail(format!("cannot render `env.{k}`: {e}")))?;
            env.push(format!("{k}={v}"));
        }
        let mut instances: Vec<Instance> = Vec::new();
        for name in &names {
            let _ = engine::remove(&self.docker, name).await;
            let spec = ContainerSpec {
                name,
                image: &self.image_info.id,
                service: &plan.service,
                version: &version,
                run_id: ctx.run_id().as_str(),
                port: plan.port,
                env: env.clone(),
            };
            match engine::start_container(&self.docker, &spec).await {
                Ok(i) => {
                    ctx.log(format!(
                        "started {} from {} (port {} on 127.0.0.1:{})",
                        i.name, self.image, plan.port, i.host_port
                    ));
                    instances.push(i);
                }
                Err(e) => {
                    return self
                        .roll_back(&mut guard, &old, &names, &previous_image, e, Vec::new())
                        .await;
                }
            }
        }

        // 2. Health, checked by orch on each container, then by the proxy.
        let checks = instances
            .iter()
            .map(|i| wait_healthy(&self.docker, &i.name, i.host_port, plan.port, &plan.health));
        let results = futures_util::future::join_all(checks).await;
        if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
            return self
                .roll_back(
                    &mut guard,
                    &old,
                    &names,
                    &previous_image,
                    e.clone(),
                    Vec::new(),
                )
                .await;
        }
        ctx.log(format!(
            "{} container(s) of {version} healthy (GET {} passed {} times in a row)",
            instances.len(),
            plan.health.path,
            plan.health.healthy
        ));
        let be = backend(&plan.service);
        for i in &instances {
            if let Err(e) = self
                .api
                .add_server(&be, &i.name, i.host_port, &plan.health)
                .await
            {
                return self
                    .roll_back(
                        &mut guard,
                        &old,
                        &names,
                        &previous_image,
                        e.to_string(),
                        Vec::new(),
                    )
                    .await;
            }
        }
        if let Err(e) = self.wait_proxy_up(&names).await {
            return self
                .roll_back(&mut guard, &old, &names, &previous_image, e, Vec::new())
                .await;
        }
        let healthy_at = Instant::now();

        // 3. Traffic.
        let mut steps = Vec::new();
        let mut switch_ms = None;
        if old.is_empty() {
            split(&self.api, &plan.service, &[], &names, 100)
                .await
                .map_err(fail)?;
            switch_ms = Some(millis(healthy_at.elapsed()));
            ctx.log(format!(
                "first deployment of `{}` (nothing served before): all traffic on {version}",
                plan.service
            ));
        } else {
            match plan.strategy {
                Strategy::BlueGreen | Strategy::Rolling => {
                    if let Err(e) = split(&self.api, &plan.service, &old, &names, 100).await {
                        return self
                            .roll_back(&mut guard, &old, &names, &previous_image, e, steps)
                            .await;
                    }
                    let took = healthy_at.elapsed();
                    switch_ms = Some(millis(took));
                    ctx.log(format!(
                        "switched all traffic to {version} {} after it was healthy",
                        fmt_duration(took)
                    ));
                }
                Strategy::Canary => {
                    for &percent in &plan.steps {
                        if let Err(e) =
                            split(&self.api, &plan.service, &old, &names, u32::from(percent)).await
                        {
                            return self
                                .roll_back(&mut guard, &old, &names, &previous_image, e, steps)
                                .await;
                        }
                        ctx.log(format!(
                            "canary step {percent}%: {version} gets {percent}% of the traffic for {}",
                            fmt_duration(plan.analysis.interval)
                        ));
                        let result = self.analyse(percent, &old, &names, &plan.analysis).await;
                        let step = match result {
                            Ok(s) => s,
                            Err(e) => {
                                return self
                                    .roll_back(&mut guard, &old, &names, &previous_image, e, steps)
                                    .await;
                            }
                        };
                        ctx.log(format!(
                            "canary step {percent}%: {} ({} responses of {version}, {} errors, error rate {:.3}; {} responses of the old version)",
                            step.verdict, step.requests, step.errors, step.error_rate, step.old_requests
                        ));
                        let verdict = step.verdict.clone();
                        let reason = match verdict.as_str() {
                            "fail" => Some(format!(
                                "canary step {percent}% failed: error rate {:.3} > max_error_rate {} ({} errors in {} responses of {version} in {})",
                                step.error_rate,
                                plan.analysis.max_error_rate,
                                step.errors,
                                step.requests,
                                fmt_duration(Duration::from_millis(step.window_ms))
                            )),
                            "inconclusive" => Some(format!(
                                "canary step {percent}% was inconclusive: {} responses of {version} in {}, fewer than min_requests {} (too little traffic never passes a step)",
                                step.requests,
                                fmt_duration(Duration::from_millis(step.window_ms)),
                                plan.analysis.min_requests
                            )),
                            _ => None,
                        };
                        steps.push(step);
                        if let Some(reason) = reason {
                            return self
                                .roll_back(&mut guard, &old, &names, &previous_image, reason, steps)
                                .await;
                        }
                    }
                }
            }
        }

        // 4. The old version drains, then stands by (weight 0) for `orch rollback`; the
        // version before it goes away.
        if !old.is_empty() && !plan.drain.is_zero() {
            ctx.log(format!(
                "old version draining for {}",
                fmt_duration(plan.drain)
            ));
            tokio::time::sleep(plan.drain).await;
        }
        if let Some(gone) = self.state.previous.take() {
            for c in &gone.containers {
                if let Err(e) = self.api.remove_server(&be, &c.name).await {
                    ctx.log(format!("cannot take {} out of the proxy: {e}", c.name));
                }
                if let Err(e) = engine::remove(&self.docker, &c.name).await {
                    ctx.log(e);
                }
            }
            ctx.log(format!(
                "removed the containers of {} (two versions back)",
                gone.image
            ));
        }
        let release = Release {
            image: self.image.clone(),
            image_id: self.image_info.id.clone(),
            digests: self.image_info.digests.clone(),
            version: version.clone(),
            port: plan.port,
            containers: instances,
            deployed_at: now(),
            run_id: ctx.run_id().to_string(),
        };
        self.state.previous = self.state.current.take();
        self.state.current = Some(release);
        self.state.port = plan.port;
        self.state.health = plan.health.clone();
        self.state.record("deployed", &self.image, "");
        self.sd.save(&self.state).map_err(|e| fail(e.to_string()))?;
        guard.disarm();

        // 5. Audit: what runs against what was deployed.
        let drift = crate::audit::audit(&self.docker, &self.api, &self.state).await;
        for d in &drift {
            ctx.log(format!("drift: {d}"));
        }
        if drift.is_empty() {
            ctx.log(format!(
                "audit: {} runs as deployed (containers, image {}, ports, health)",
                plan.service,
                short_id(&self.image_info.id)
            ));
        }
        let mut outputs = self.outputs("deployed", &self.image.clone(), &previous_image);
        outputs.insert("drift".into(), drift.len().to_string());
        outputs.insert(
            "steps".into(),
            serde_json::to_string(&steps).unwrap_or_default(),
        );
        if let Some(ms) = switch_ms {
            outputs.insert("switch_ms".into(), ms.to_string());
        }
        write_report(
            ctx,
            &DeploymentReport {
                format_version: 1,
                service: plan.service.clone(),
                strategy: plan.strategy.as_str().into(),
                status: "deployed".into(),
                image: self.image.clone(),
                version: self.image.clone(),
                previous: previous_image.clone(),
                url: self.url(),
                steps,
                reason: String::new(),
                switch_ms,
                rollback_ms: None,
                drift,
            },
        );
        ctx.log(format!(
            "`{}` serves {} at {}",
            plan.service,
            self.image,
            self.url()
        ));
        Ok(PhaseOutcome {
            outputs,
            ..PhaseOutcome::default()
        })
    }

    /// Waits until the proxy's own checks see every new server up (bounded by
    /// `health.within`).
    async fn wait_proxy_up(&self, names: &[String]) -> Result<(), String> {
        let be = backend(&self.plan.service);
        let deadline = tokio::time::Instant::now() + self.plan.health.within;
        loop {
            let servers = self.api.servers(&be).await.map_err(|e| e.to_string())?;
            let pending: Vec<&ServerStat> = servers
                .iter()
                .filter(|s| names.contains(&s.server))
                .filter(|s| !(s.is_up() && s.check_status == "L7OK"))
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let s = pending[0];
                return Err(format!(
                    "the proxy's health check did not pass for {} within {}: {} ({} {})",
                    s.server,
                    fmt_duration(self.plan.health.within),
                    s.status,
                    s.check_status,
                    s.check_code
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Watches one canary step: the new version's responses (by status class) in the
    /// proxy's counters over the window. Fails as soon as the error rate passes the limit
    /// with at least `min_requests` seen.
    async fn analyse(
        &self,
        percent: u8,
        old: &[String],
        new: &[String],
        a: &Analysis,
    ) -> Result<StepResult, String> {
        let be = backend(&self.plan.service);
        let before = self.api.servers(&be).await.map_err(|e| e.to_string())?;
        let (n0, e0) = sum(&before, new);
        let (o0, _) = sum(&before, old);
        let started = Instant::now();
        let mut windows = 1u32;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.api.servers(&be).await.map_err(|e| e.to_string())?;
            let (n1, e1) = sum(&now, new);
            let (o1, _) = sum(&now, old);
            let requests = n1.saturating_sub(n0);
            let errors = e1.saturating_sub(e0);
            let rate = if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            };
            let elapsed = started.elapsed();
            let result = |verdict: &str| StepResult {
                percent,
                window_ms: millis(elapsed),
                requests,
                errors,
                error_rate: rate,
                old_requests: o1.saturating_sub(o0),
                verdict: verdict.to_owned(),
            };
            if requests >= a.min_requests && rate > a.max_error_rate {
                return Ok(result("fail"));
            }
            if elapsed >= a.interval * windows {
                if requests >= a.min_requests {
                    return Ok(result("pass"));
                }
                if a.inconclusive == Inconclusive::Extend && windows < a.max_windows {
                    windows += 1;
                    self.ctx.log(format!(
                        "canary step {percent}%: {requests} responses so far, fewer than min_requests {}: extending to window {windows} of {}",
                        a.min_requests, a.max_windows
                    ));
                    continue;
                }
                return Ok(result("inconclusive"));
            }
        }
    }

    /// Puts all traffic back on the old version, takes the new containers out (their logs
    /// go to the phase log) and fails the phase with `status = rolled_back`.
    async fn roll_back(
        mut self,
        guard: &mut Guard,
        old: &[String],
        new: &[String],
        previous_image: &str,
        reason: String,
        steps: Vec<StepResult>,
    ) -> Result<PhaseOutcome, PhaseError> {
        let ctx = self.ctx;
        let detected = Instant::now();
        ctx.log(format!("rolling back: {reason}"));
        let be = backend(&self.plan.service);
        let mut problems = Vec::new();
        if !old.is_empty()
            && let Err(e) = split(&self.api, &self.plan.service, old, &[], 0).await
        {
            problems.push(e);
        }
        for n in new {
            if let Err(e) = self.api.set_weight(&be, n, 0).await
                && !e.to_string().contains("No such server")
            {
                problems.push(e.to_string());
            }
        }
        let rollback_ms = millis(detected.elapsed());
        if old.is_empty() {
            ctx.log(format!(
                "nothing served `{}` before this deployment: it serves nothing now",
                self.plan.service
            ));
        } else {
            ctx.log(format!(
                "all traffic back on {previous_image} {} after the failure was detected",
                fmt_duration(Duration::from_millis(rollback_ms))
            ));
        }
        for n in new {
            let logs = engine::logs(&self.docker, n, 200).await;
            if logs.trim().is_empty() {
                ctx.log(format!("--- logs of {n}: it wrote nothing ---"));
            } else {
                ctx.log(format!("--- logs of {n} (last 200 lines) ---"));
                for line in logs.lines() {
                    ctx.log(format!("[{n}] {line}"));
                }
                ctx.log(format!("--- end of the logs of {n} ---"));
            }
            if let Err(e) = self.api.remove_server(&be, n).await {
                problems.push(e.to_string());
            }
            if let Err(e) = engine::remove(&self.docker, n).await {
                problems.push(e);
            }
        }
        guard.disarm();
        for p in &problems {
            ctx.log(format!("during the rollback: {p}"));
        }
        self.state.record("rolled_back", &self.image, &reason);
        if let Err(e) = self.sd.save(&self.state) {
            ctx.log(format!("cannot save the state: {e}"));
        }
        let mut outputs = self.outputs("rolled_back", previous_image, previous_image);
        outputs.insert("rollback_ms".into(), rollback_ms.to_string());
        outputs.insert(
            "steps".into(),
            serde_json::to_string(&steps).unwrap_or_default(),
        );
        outputs.insert("reason".into(), reason.clone());
        write_report(
            ctx,
            &DeploymentReport {
                format_version: 1,
                service: self.plan.service.clone(),
                strategy: self.plan.strategy.as_str().into(),
                status: "rolled_back".into(),
                image: self.image.clone(),
                version: previous_image.to_owned(),
                previous: previous_image.to_owned(),
                url: self.url(),
                steps,
                reason: reason.clone(),
                switch_ms: None,
                rollback_ms: Some(rollback_ms),
                drift: Vec::new(),
            },
        );
        let serving = if old.is_empty() {
            "nothing serves it (first deployment)".to_owned()
        } else {
            format!("{previous_image} keeps serving")
        };
        Err(PhaseError::FailedWithOutputs {
            message: format!(
                "deployment of {} to `{}` rolled back: {reason}; {serving}",
                self.image, self.plan.service
            ),
            outputs,
        })
    }
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `sha256:0123456789ab`.
pub(crate) fn short_id(id: &str) -> String {
    id.chars().take(19).collect()
}

/// Puts traffic back and removes the new containers when a deployment's future is dropped
/// (the phase timed out or the run was aborted) before it finished or rolled back.
///
/// The work is synchronous, on a thread of its own with its own runtime, so it happens
/// even while the dropping runtime shuts down.
pub(crate) struct Guard {
    armed: bool,
    endpoint: String,
    socket: PathBuf,
    backend: String,
    old: Vec<String>,
    new: Vec<String>,
}

impl Guard {
    pub(crate) fn new(
        endpoint: String,
        socket: PathBuf,
        backend: String,
        old: Vec<String>,
        new: Vec<String>,
    ) -> Self {
        Self {
            armed: true,
            endpoint,
            socket,
            backend,
            old,
            new,
        }
    }

    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let endpoint = std::mem::take(&mut self.endpoint);
        let socket = std::mem::take(&mut self.socket);
        let be = std::mem::take(&mut self.backend);
        let old = std::mem::take(&mut self.old);
        let new = std::mem::take(&mut self.new);
        let work = move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let api = Runtime::new(socket);
                let w = server_weight(100, old.len());
                for s in &old {
                    let _ = api.set_weight(&be, s, w).await;
                }
                for s in &new {
                    let _ = api.set_weight(&be, s, 0).await;
                    let _ = api.remove_server(&be, s).await;
                }
                if let Ok(docker) = engine::connect(&endpoint).await {
                    for s in &new {
                        let _ = engine::remove(&docker, s).await;
                    }
                }
            });
        };
        if let Ok(handle) = std::thread::Builder::new()
            .name("orch-deploy-guard".into())
            .spawn(work)
        {
            let _ = handle.join();
        }
    }
}

/// Weights of every server in a backend, by name (for status and tests).
pub async fn weights(api: &Runtime, service: &str) -> Result<HashMap<String, u32>, String> {
    Ok(api
        .servers(&backend(service))
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|s| (s.server, s.weight))
        .collect())
}
