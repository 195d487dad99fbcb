//! Arbitrary bytes dropped as any format never panic, never stay in the
//! inbox, and only ever produce valid events.

use std::path::Path;

use converge_filedrop::take_file;
use proptest::prelude::*;

use crate::support::{MemorySink, config, write};

fn take_bytes(name: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), name, bytes);
    let config = config(dir.path(), |r| {
        r.subject = Some("campaign/{campaign_id}".into());
        r.max_row_bytes = 1024;
        r.chunk_rows = 3;
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let sink = MemorySink::new();
    let report = runtime
        .block_on(take_file(&config, &dir.path().join(name), &sink))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(!Path::new(&dir.path().join(name)).exists());
    prop_assert_eq!(report.events, sink.events().len() as u64);
    prop_assert!(sink.chunk_sizes().iter().all(|&n| n <= 3));
    if report.bad_rows > 0 || report.file_error.is_some() {
        prop_assert!(report.report.as_ref().is_some_and(|p| p.exists()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_as_any_format(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        for name in ["drop.csv", "drop.ndjson", "drop.json"] {
            take_bytes(name, &bytes)?;
        }
    }

    #[test]
    fn csv_like_text(text in "(campaign_id|owner|,|\"|\r|\n|c-1|é|\u{feff}){0,200}") {
        take_bytes("drop.csv", text.as_bytes())?;
    }

    #[test]
    fn ndjson_like_text(text in "(\\{|\\}|\"campaign_id\"|:|\"c-1\"|,|\n|\\[|\\]|1|\"specversion\"){0,200}") {
        take_bytes("drop.ndjson", text.as_bytes())?;
        take_bytes("drop.json", text.as_bytes())?;
    }
}
