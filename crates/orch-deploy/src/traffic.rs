//! Traffic on a service's proxy: the proxy kept running, weights split between two sets
//! of servers, and the guard that puts traffic back when a deployment is dropped midway.

use std::collections::HashMap;
use std::path::PathBuf;

use orch_core::PhaseContext;

use crate::engine;
use crate::proxy::{self, Runtime, backend, server_weight};
use crate::state::{ServiceDir, ServiceState};

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
            orch_core::keep_alive(pid);
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
