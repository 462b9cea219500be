//! A Compose file as discovery reads it: YAML (anchors, merges, duplicate keys), services,
//! builds, ports, `env_file`, interpolations. Any panic is a finding.

use std::path::Path;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let (file, problems) = orch_delivery::discover::read_compose_text(
            text,
            "compose.yaml",
            Path::new("/nonexistent"),
        );
        if let Some(f) = file {
            let _ = format!("{f:?}");
        }
        for p in problems {
            let _ = p.message.len();
        }
    });
}
