//! The run journal reader: framing, checksums, the torn-tail rule, record decoding. Any
//! panic is a finding; so is a journal whose records read back differently once written
//! again, or whose lengths do not add up.

use std::path::Path;

use orch_core::test_support::journal;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let path = Path::new("/nonexistent/journal");
        let Ok(contents) = journal::parse(data, path) else {
            return;
        };
        assert_eq!(contents.valid_len + contents.torn, data.len() as u64);
        let mut again = journal::header().to_vec();
        for entry in &contents.entries {
            journal::encode(entry, &mut again);
        }
        let reread = journal::parse(&again, path).expect("a journal written again reads back");
        assert_eq!(reread.entries, contents.entries);
        assert_eq!(reread.torn, 0);
    });
}
