//! Prints the `discovery.json` of a directory (default: the current one), and how long the
//! walk took on stderr.
//!
//! ```sh
//! cargo run -p orch-delivery --example inventory -- path/to/project
//! ```

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".to_owned());
    let started = std::time::Instant::now();
    let found =
        orch_delivery::discover::discover(&orch_delivery::discover::DiscoverOptions::new(dir))?;
    eprintln!(
        "{} services, {} compose files, {} env var names, {} problems in {:?}",
        found.services.len(),
        found.compose_files.len(),
        found.env_vars.len(),
        found.problems.len(),
        started.elapsed()
    );
    println!("{}", serde_json::to_string_pretty(&found)?);
    Ok(())
}
