//! Any dropped file, read as CSV, JSON and NDJSON: reading must never
//! panic, every bad row has a reason, and no row forges a converge source.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use converge_filedrop::{DropConfig, Format, RawDrop, read_bytes, validate};
use libfuzzer_sys::fuzz_target;

fn config() -> &'static DropConfig {
    static CONFIG: OnceLock<DropConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let raw = RawDrop {
            event_type: Some("row.imported".into()),
            subject: Some("campaign/{campaign_id}".into()),
            max_row_bytes: 4096,
            ..RawDrop::new("fuzz", "drops")
        };
        validate(raw, "file_drops[0]", &|dir: &Path| dir.to_path_buf()).expect("a valid drop")
    })
}

fuzz_target!(|bytes: &[u8]| {
    for format in [Format::Csv, Format::Json, Format::Ndjson] {
        let (events, bad, _) = read_bytes(config(), format, bytes);
        for row in &bad {
            assert!(!row.reason.is_empty());
        }
        // Rows that are CloudEvents pass through, but never from a source
        // converge reserves for itself.
        for event in &events {
            assert!(!event.source.starts_with("converge/"), "{}", event.source);
        }
    }
});
