//! Runs a pipeline built in code, mixing a `command` phase with a phase of your own.
//!
//! `cargo run -p orch-core --example embed`

use std::sync::Arc;

use async_trait::async_trait;
use orch_core::{
    Description, Event, Phase, PhaseContext, PhaseError, PhaseId, PhaseOutcome, PhaseSpec,
    Pipeline, PlanContext, RunControl, RunEvent, RunOptions, RunSpec, Runner,
};

/// Counts the lines of a file named by a var.
struct CountLines;

#[async_trait]
impl Phase for CountLines {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        Description::new(format!("count lines of {}", ctx.render("${{ vars.file }}")))
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let path = ctx
            .resolve("${{ vars.file }}")
            .map_err(|e| PhaseError::from_error(&e))?;
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| PhaseError::failed(format!("cannot read {}: {e}", path.display())))?;
        let lines = text.lines().count();
        ctx.log(format!("{} has {lines} lines", path.display()));
        Ok(PhaseOutcome::with_outputs([("lines", lines.to_string())]))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join("orch-embed-example");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("notes.txt"), "one\ntwo\nthree\n")?;

    let pipeline = Pipeline::builder("embedded", &dir)
        .jobs(2)
        .var("file", "notes.txt")
        .custom(
            PhaseSpec::new(PhaseId::new("count")?, "count-lines"),
            Arc::new(CountLines),
        )
        .phase(
            PhaseSpec::command(
                PhaseId::new("report")?,
                RunSpec::Shell("echo \"notes has ${{ phases.count.outputs.lines }} lines\"".into()),
            )
            .needs([PhaseId::new("count")?]),
        )
        .build()?;

    let mut runner = Runner::new(Arc::new(pipeline), RunOptions::default());
    runner.subscribe(Arc::new(|e: &Event| match &e.kind {
        RunEvent::PhaseOutput { phase, line, .. } => println!("[{phase}] {line}"),
        RunEvent::PhaseFinished { phase, status, .. } => println!("{phase}: {status}"),
        _ => {}
    }));
    let record = runner.run(RunControl::new()).await?;
    println!("run {} {}", record.run_id, record.status);
    assert_eq!(record.phases["count"].outputs["lines"], "3");
    Ok(())
}
