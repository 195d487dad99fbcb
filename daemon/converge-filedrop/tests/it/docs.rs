//! `docs/file-drops.md` cannot rot: its example config is parsed and
//! validated, and every config key is documented.

use std::path::Path;

use converge_filedrop::{RawDrop, validate_drops};
use serde::Deserialize;

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/file-drops.md");
    std::fs::read_to_string(path).unwrap()
}

/// The daemon embeds drops as `[[file_drops]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Embedding {
    file_drops: Vec<RawDrop>,
}

#[test]
fn the_example_config_is_valid() {
    let doc = doc();
    let start = doc.find("```toml\n").expect("a ```toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let parsed: Embedding = toml::from_str(&doc[start..end]).unwrap();
    assert!(parsed.file_drops.len() >= 2);
    let drops = validate_drops(parsed.file_drops, "file_drops", &|dir: &Path| {
        Path::new("/etc/converge").join(dir)
    })
    .unwrap();
    assert!(
        drops
            .iter()
            .any(|d| d.subject.is_some() && d.id_field.is_some())
    );
}

#[test]
fn every_key_is_documented() {
    let doc = doc();
    for key in [
        "name",
        "dir",
        "format",
        "type",
        "type_field",
        "subject",
        "id_field",
        "time_field",
        "settle",
        "settle_warn_after",
        "rescan",
        "max_row_bytes",
        "chunk_rows",
        "csv_delimiter",
    ] {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "`{key}` is not in the options table"
        );
    }
}

#[test]
fn unknown_keys_are_errors() {
    let err = toml::from_str::<Embedding>(
        "[[file_drops]]\nname = \"a\"\ndir = \"a\"\ntype = \"t\"\nsettel = \"2s\"\n",
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("unknown field `settel`"), "{err}");
}
