//! The package verifier on arbitrary bytes (plain tar, or gzip when the bytes start with
//! its magic). Any panic is a finding; an archive it accepts must hold a manifest that
//! lists exactly the files it reports.

use std::path::Path;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(report) = orch_delivery::verify::verify_reader(data, Path::new("fuzz.tar")) {
            assert!(report.manifest_sha256.len() == 64, "{report:?}");
        }
    });
}
