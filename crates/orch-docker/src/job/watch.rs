//! Following one attempt's service: its task's state, its node and its logs.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{NodeState, TaskState};
use bollard::query_parameters::{ListNodesOptions, ListTasksOptionsBuilder, LogsOptionsBuilder};
use futures_util::{Stream as FutStream, StreamExt};
use orch_core::{PhaseContext, Stream};

use super::{End, LOG_DRAIN_LIMIT, MANAGER_SILENCE_LIMIT};
use crate::output::OutputLines;
use crate::swarm::call_error;

/// The hostname of a node, or its id when several nodes share that hostname.
pub(super) async fn node_name(docker: &Docker, id: &str) -> String {
    let Ok(nodes) = docker.list_nodes(None::<ListNodesOptions>).await else {
        return id.to_owned();
    };
    let host_of = |n: &bollard::models::Node| {
        n.description
            .as_ref()
            .and_then(|d| d.hostname.clone())
            .unwrap_or_default()
    };
    let Some(host) = nodes
        .iter()
        .find(|n| n.id.as_deref() == Some(id))
        .map(host_of)
        .filter(|h| !h.is_empty())
    else {
        return id.to_owned();
    };
    if nodes.iter().filter(|n| host_of(n) == host).count() > 1 {
        id.to_owned()
    } else {
        host
    }
}

/// Why watching stopped early.
pub(super) enum WatchStop {
    Cancelled,
    Manager(String),
}

type LogStream = Pin<Box<dyn FutStream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// Follows one service's task.
pub(super) struct Watch<'a> {
    pub(super) docker: &'a Docker,
    pub(super) service: &'a str,
    pub(super) ctx: &'a PhaseContext,
    pub(super) filter: OutputLines,
    /// Log frames forwarded so far, stdout and stderr.
    pub(super) frames: [usize; 2],
}

impl Watch<'_> {
    fn logs(&self, follow: bool) -> LogStream {
        let options = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .build();
        Box::pin(self.docker.service_logs(self.service, Some(options)))
    }

    /// Forwards a log frame; `skip` counts frames already forwarded (for the final read).
    fn frame(&mut self, log: LogOutput, skip: &mut [usize; 2]) {
        let (stream, message) = match log {
            LogOutput::StdErr { message } => (Stream::Stderr, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (Stream::Stdout, message)
            }
            LogOutput::StdIn { .. } => return,
        };
        let i = usize::from(stream == Stream::Stderr);
        if skip[i] > 0 {
            skip[i] -= 1;
            return;
        }
        self.frames[i] += 1;
        self.filter.push(self.ctx, stream, &message);
    }

    /// Watches the task until it ends; returns how, its id and its node.
    pub(super) async fn until_end(
        &mut self,
        placement_limit: Duration,
    ) -> Result<(End, String, Option<String>), WatchStop> {
        let start = Instant::now();
        let filters = HashMap::from([("service", vec![self.service])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut logs: Option<LogStream> = None;
        let mut logs_started = false;
        let mut task_id = String::new();
        let mut node_id: Option<String> = None;
        let mut last_answer = Instant::now();
        let mut last_node_check = Instant::now();
        let mut reason = String::new();
        let mut no_skip = [0usize; 2];
        loop {
            tokio::select! {
                biased;
                () = self.ctx.cancelled().cancelled() => return Err(WatchStop::Cancelled),
                item = async {
                    match logs.as_mut() {
                        Some(l) => l.next().await,
                        None => std::future::pending().await,
                    }
                } => match item {
                    Some(Ok(log)) => self.frame(log, &mut no_skip),
                    Some(Err(_)) | None => logs = None,
                },
                _ = poll.tick() => {
                    let tasks = match self.docker.list_tasks(Some(options.clone())).await {
                        Ok(t) => {
                            last_answer = Instant::now();
                            t
                        }
                        Err(e) if last_answer.elapsed() > MANAGER_SILENCE_LIMIT => {
                            return Err(WatchStop::Manager(call_error(
                                &format!("follow the task of swarm service {}", self.service),
                                &e,
                            )));
                        }
                        Err(_) => continue,
                    };
                    let Some(task) = tasks.into_iter().max_by_key(|t| {
                        t.version.as_ref().and_then(|v| v.index).unwrap_or(0)
                    }) else {
                        if start.elapsed() > placement_limit {
                            return Ok((End::Unplaced("Swarm made no task for the service".into()), task_id, None));
                        }
                        continue;
                    };
                    task_id = task.id.clone().unwrap_or_default();
                    let status = task.status.clone().unwrap_or_default();
                    let state = status.state.unwrap_or(TaskState::NEW);
                    let said = status
                        .err
                        .clone()
                        .filter(|e| !e.is_empty())
                        .or_else(|| status.message.clone())
                        .unwrap_or_default();
                    if task.node_id.as_deref().is_some_and(|n| !n.is_empty()) {
                        node_id = task.node_id.clone();
                    }
                    match state {
                        TaskState::NEW | TaskState::ALLOCATED | TaskState::PENDING => {
                            if !said.is_empty() {
                                reason = said;
                            }
                            if start.elapsed() > placement_limit {
                                let why = if reason.is_empty() { format!("the task is still `{state}`") } else { reason.clone() };
                                return Ok((End::Unplaced(why), task_id, None));
                            }
                        }
                        TaskState::COMPLETE => {
                            let code = status.container_status.and_then(|c| c.exit_code).unwrap_or(0);
                            return Ok((End::Exited(code), task_id, node_id));
                        }
                        TaskState::FAILED => {
                            match status.container_status.and_then(|c| c.exit_code) {
                                Some(code) if code != 0 => return Ok((End::Exited(code), task_id, node_id)),
                                _ => return Ok((End::Failed(said), task_id, node_id)),
                            }
                        }
                        TaskState::REJECTED => {
                            return Ok((End::Failed(format!("Swarm rejected it: {said}")), task_id, node_id));
                        }
                        TaskState::SHUTDOWN | TaskState::REMOVE | TaskState::ORPHANED => {
                            return Ok((End::Failed(format!("Swarm ended it (`{state}`): {said}")), task_id, node_id));
                        }
                        _ => {
                            // Assigned to a node: follow its logs, and watch the node.
                            if !logs_started {
                                logs = Some(self.logs(true));
                                logs_started = true;
                            }
                            if let Some(n) = &node_id
                                && last_node_check.elapsed() >= Duration::from_millis(500)
                            {
                                last_node_check = Instant::now();
                                if let Ok(node) = self.docker.inspect_node(n).await {
                                    let st = node.status.unwrap_or_default();
                                    if st.state == Some(NodeState::DOWN) {
                                        let why = st.message.filter(|m| !m.is_empty()).unwrap_or_else(|| "node state `down`".into());
                                        return Ok((End::NodeDown(why), task_id, node_id));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// After the task ended: reads its whole log once and forwards what the live stream
    /// had not delivered yet (Swarm's followed stream does not end with the task).
    pub(super) async fn drain(&mut self) {
        let mut skip = self.frames;
        let mut all = self.logs(false);
        let read = async {
            while let Some(item) = all.next().await {
                match item {
                    Ok(log) => self.frame(log, &mut skip),
                    Err(_) => break,
                }
            }
        };
        if tokio::time::timeout(LOG_DRAIN_LIMIT, read).await.is_err() {
            self.ctx.log(format!(
                "the task's log did not end within {}s after the task",
                LOG_DRAIN_LIMIT.as_secs()
            ));
        }
    }
}
