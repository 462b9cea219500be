//! A blue-green or canary deployment under way: new containers, health, traffic, the old
//! version standing by, the audit, and the rollback when any step fails.

use std::time::{Duration, Instant};

use bollard::Docker;
use orch_core::record::Outputs;
use orch_core::{PhaseContext, PhaseError, PhaseOutcome};

use crate::deploy::{
    DeploymentReport, StepResult, endpoint_of, fail, millis, short_id, state_dir_of, write_report,
};
use crate::engine::{self, ContainerSpec};
use crate::health::{fmt_duration, wait_healthy};
use crate::proxy::{Runtime, ServerStat, backend};
use crate::settings::{DeployPlan, Strategy, check_listen};
use crate::state::{Instance, Release, ServiceDir, ServiceState, now};
use crate::traffic::{Guard, ensure_proxy, split};

/// A deployment under way.
pub(crate) struct Deployment<'a> {
    pub(crate) ctx: &'a PhaseContext,
    pub(crate) plan: &'a DeployPlan,
    pub(crate) sd: ServiceDir,
    pub(crate) state: ServiceState,
    pub(crate) docker: Docker,
    pub(crate) endpoint: String,
    pub(crate) api: Runtime,
    pub(crate) image: String,
    pub(crate) image_info: engine::ImageInfo,
    pub(crate) listen: String,
}

impl<'a> Deployment<'a> {
    pub(crate) async fn prepare(
        ctx: &'a PhaseContext,
        plan: &'a DeployPlan,
    ) -> Result<Self, PhaseError> {
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

    pub(crate) async fn run(mut self) -> Result<PhaseOutcome, PhaseError> {
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
