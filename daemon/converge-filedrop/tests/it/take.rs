//! `take_file` on one file at a time: formats, ids, reports, failures.

use std::collections::BTreeSet;
use std::fs;

use chrono::{DateTime, Utc};
use converge_filedrop::{Outcome, Position, SinkError, TakeError, take_file};
use serde_json::{Value, json};

use crate::support::{MemorySink, briefs_csv, config, id_prefix, journal, names_in, write};

fn report_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn csv_rows_become_events() {
    let dir = tempfile::tempdir().unwrap();
    let content = "campaign_id,owner,note\nc-1,ana,first\nc-2,ben,\n\nc-3,cy,\"two\nlines\"\n";
    write(dir.path(), "brief.csv", content);
    let mtime: DateTime<Utc> = fs::metadata(dir.path().join("brief.csv"))
        .unwrap()
        .modified()
        .unwrap()
        .into();
    let config = config(dir.path(), |r| {
        r.subject = Some("campaign/{campaign_id}".into())
    });
    let sink = MemorySink::new();

    let report = take_file(&config, &dir.path().join("brief.csv"), &sink)
        .await
        .unwrap();

    assert_eq!(report.outcome, Outcome::Processed);
    assert_eq!((report.events, report.bad_rows, report.chunks), (3, 0, 1));
    assert_eq!(report.report, None);
    assert_eq!(
        report.moved_to,
        dir.path()
            .join("processed/brief.csv")
            .canonicalize()
            .unwrap()
    );
    assert_eq!(
        names_in(dir.path()),
        BTreeSet::from(["processed".into(), "failed".into()])
    );
    assert_eq!(
        names_in(&dir.path().join("processed")),
        BTreeSet::from(["brief.csv".into()])
    );

    let events = sink.events();
    let prefix = id_prefix(content);
    assert_eq!(
        sink.ids(),
        [
            format!("{prefix}:2"),
            format!("{prefix}:3"),
            format!("{prefix}:5")
        ]
    );
    for event in &events {
        assert_eq!(event.source, "converge-filedrop/briefs");
        assert_eq!(event.ty, "brief.imported");
        assert_eq!(event.time, Some(mtime));
    }
    assert_eq!(events[0].subject.as_deref(), Some("campaign/c-1"));
    assert_eq!(
        events[0].data,
        json!({"campaign_id": "c-1", "owner": "ana", "note": "first"})
    );
    // An empty cell is left out of `data`.
    assert_eq!(
        events[1].data,
        json!({"campaign_id": "c-2", "owner": "ben"})
    );
    assert_eq!(events[2].data["note"], "two\nlines");
}

#[tokio::test]
async fn json_arrays_and_single_objects_become_events() {
    let dir = tempfile::tempdir().unwrap();
    let array = r#"[{"campaign_id": "c-1", "budget": 1200.5, "channels": ["email", "paid"]},
                    {"campaign_id": "c-2", "budget": null}]"#;
    write(dir.path(), "schedule.json", array);
    write(dir.path(), "one.JSON", r#"{"campaign_id": "c-9"}"#);
    let config = config(dir.path(), |r| {
        r.subject = Some("campaign/{campaign_id}".into())
    });
    let sink = MemorySink::new();

    let report = take_file(&config, &dir.path().join("schedule.json"), &sink)
        .await
        .unwrap();
    assert_eq!((report.events, report.bad_rows), (2, 0));
    let report = take_file(&config, &dir.path().join("one.JSON"), &sink)
        .await
        .unwrap();
    assert_eq!(report.events, 1);

    let events = sink.events();
    let prefix = id_prefix(array);
    assert_eq!(events[0].id, format!("{prefix}:1"));
    assert_eq!(events[1].id, format!("{prefix}:2"));
    assert_eq!(events[0].data["channels"], json!(["email", "paid"]));
    assert_eq!(
        events[1].data,
        json!({"campaign_id": "c-2", "budget": null})
    );
    assert_eq!(
        events[2].id,
        format!("{}:1", id_prefix(r#"{"campaign_id": "c-9"}"#))
    );
    assert_eq!(events[2].subject.as_deref(), Some("campaign/c-9"));
}

#[tokio::test]
async fn ndjson_rows_and_cloudevents_become_events() {
    let dir = tempfile::tempdir().unwrap();
    let content = concat!(
        "{\"asset\": \"hero.png\", \"campaign_id\": \"c-1\"}\r\n",
        "\n",
        "{\"specversion\": \"1.0\", \"id\": \"crm-7\", \"source\": \"/crm\", \"type\": \"lead.created\", \"subject\": \"lead/7\"}\n",
        "{\"asset\": \"banner.png\", \"campaign_id\": \"c-2\"}",
    );
    write(dir.path(), "assets.jsonl", content);
    let config = config(dir.path(), |r| {
        r.event_type = Some("asset.listed".into());
        r.subject = Some("campaign/{campaign_id}".into());
    });
    let sink = MemorySink::new();

    let report = take_file(&config, &dir.path().join("assets.jsonl"), &sink)
        .await
        .unwrap();

    assert_eq!((report.events, report.bad_rows), (3, 0));
    let events = sink.events();
    let prefix = id_prefix(content);
    assert_eq!(events[0].id, format!("{prefix}:1"));
    assert_eq!(events[0].ty, "asset.listed");
    // A row that is already a CloudEvent is taken as it is.
    assert_eq!(
        (
            events[1].id.as_str(),
            events[1].source.as_str(),
            events[1].ty.as_str()
        ),
        ("crm-7", "/crm", "lead.created")
    );
    assert_eq!(events[2].id, format!("{prefix}:4"));
}

#[tokio::test]
async fn columns_give_ids_types_and_times() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "tasks.csv",
        "ref,kind,due\nT-1,task.created,2026-05-01T09:00:00Z\nT-2,,2026-05-02T09:00:00+02:00\n",
    );
    let config = config(dir.path(), |r| {
        r.id_field = Some("ref".into());
        r.type_field = Some("kind".into());
        r.event_type = Some("task.imported".into());
        r.time_field = Some("due".into());
    });
    let sink = MemorySink::new();
    take_file(&config, &dir.path().join("tasks.csv"), &sink)
        .await
        .unwrap();
    let events = sink.events();
    assert_eq!(sink.ids(), ["T-1", "T-2"]);
    assert_eq!(events[0].ty, "task.created");
    assert_eq!(events[1].ty, "task.imported");
    assert_eq!(
        events[1].time.unwrap().to_rfc3339(),
        "2026-05-02T07:00:00+00:00"
    );
}

#[tokio::test]
async fn the_same_file_dropped_twice_gives_the_same_ids_and_overwrites_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let content = briefs_csv(20);
    let config = config(dir.path(), |_| {});
    let (first, second) = (MemorySink::new(), MemorySink::new());

    write(dir.path(), "brief.csv", &content);
    let a = take_file(&config, &dir.path().join("brief.csv"), &first)
        .await
        .unwrap();
    write(dir.path(), "brief.csv", &content);
    let b = take_file(&config, &dir.path().join("brief.csv"), &second)
        .await
        .unwrap();

    assert_eq!(first.ids(), second.ids());
    assert_eq!(journal([&first, &second]).len(), 20);
    assert_eq!(a.sha256, b.sha256);
    assert_ne!(a.moved_to, b.moved_to);
    assert_eq!(
        names_in(&dir.path().join("processed")),
        BTreeSet::from(["brief.csv".into(), "brief-1.csv".into()])
    );
    assert_eq!(fs::read_to_string(&b.moved_to).unwrap(), content);
}

#[tokio::test]
async fn a_partly_bad_file_keeps_its_good_rows_and_names_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut content = b"campaign_id,owner\nc-1,ana\nc-2,ben,extra\n,cy\n".to_vec();
    content.extend_from_slice(b"c-4,\xff\xfe\n");
    content.extend_from_slice(format!("c-5,{}\n", "x".repeat(2000)).as_bytes());
    content.extend_from_slice(b"c-6,dee\n");
    write(dir.path(), "brief.csv", &content);
    let config = config(dir.path(), |r| {
        r.subject = Some("campaign/{campaign_id}".into());
        r.max_row_bytes = 1024;
    });
    let sink = MemorySink::new();

    let report = take_file(&config, &dir.path().join("brief.csv"), &sink)
        .await
        .unwrap();

    assert_eq!(report.outcome, Outcome::Processed);
    assert_eq!((report.events, report.bad_rows), (2, 4));
    let prefix = id_prefix(&content);
    assert_eq!(sink.ids(), [format!("{prefix}:2"), format!("{prefix}:7")]);
    let report_path = report.report.clone().unwrap();
    assert_eq!(
        report_path,
        dir.path()
            .join("processed/brief.csv.errors.json")
            .canonicalize()
            .unwrap()
    );
    let written = report_json(&report_path);
    assert_eq!(written["file"], "brief.csv");
    assert_eq!(written["outcome"], "processed");
    assert_eq!(written["events"], 2);
    assert_eq!(written["bad_rows"], 4);
    assert_eq!(written["sha256"], report.sha256);
    assert_eq!(written["file_error"], Value::Null);
    assert_eq!(
        written["errors"],
        json!([
            {"line": 3, "reason": "the row has 3 fields, the header has 2"},
            {"line": 4, "reason": "subject: column `campaign_id` is missing"},
            {"line": 5, "reason": "the value of column `owner` is not UTF-8 text"},
            {"line": 6, "reason": "the row is longer than max_row_bytes (1024 bytes)"},
        ])
    );
    assert_eq!(written["errors_not_listed"], 0);
    assert_eq!(report.errors[0].at, Position::Line(3));
}

#[tokio::test]
async fn files_with_nothing_readable_go_to_failed_with_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut garbage = b"PK\x03\x04\x14\x00\x06\x00".to_vec();
    garbage.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    write(dir.path(), "brief.csv", &garbage);
    write(dir.path(), "notes.json", "my notes");
    write(dir.path(), "list.ndjson", "one\ntwo\n[3]\n");
    write(dir.path(), "only-bad.csv", "owner\nana\nben\n");
    let config = config(dir.path(), |r| {
        r.subject = Some("campaign/{campaign_id}".into())
    });
    let sink = MemorySink::new();

    for (name, file_error) in [
        (
            "brief.csv",
            Some("the file looks binary (a NUL byte at offset 5), not CSV text"),
        ),
        (
            "notes.json",
            Some("not valid JSON: expected value at line 1 column 1"),
        ),
        ("list.ndjson", None),
        ("only-bad.csv", None),
    ] {
        let report = take_file(&config, &dir.path().join(name), &sink)
            .await
            .unwrap();
        assert_eq!(report.outcome, Outcome::Failed, "{name}");
        assert_eq!(report.events, 0);
        assert_eq!(report.file_error.as_deref(), file_error, "{name}");
        let written = report_json(report.report.as_ref().unwrap());
        assert_eq!(written["outcome"], "failed");
        assert!(
            report
                .moved_to
                .starts_with(dir.path().join("failed").canonicalize().unwrap())
        );
    }
    assert!(sink.events().is_empty());
    assert_eq!(
        names_in(&dir.path().join("failed")),
        BTreeSet::from(
            [
                "brief.csv",
                "brief.csv.errors.json",
                "notes.json",
                "notes.json.errors.json",
                "list.ndjson",
                "list.ndjson.errors.json",
                "only-bad.csv",
                "only-bad.csv.errors.json"
            ]
            .map(String::from)
        )
    );
    let list = report_json(&dir.path().join("failed/list.ndjson.errors.json"));
    assert_eq!(list["bad_rows"], 3);
    assert_eq!(
        list["errors"][2],
        json!({"line": 3, "reason": "the line is an array, not a JSON object"})
    );
}

#[tokio::test]
async fn empty_and_header_only_files_are_processed_with_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("empty.csv", ""),
        ("header.csv", "campaign_id,owner\r\n"),
        ("empty.json", ""),
        ("array.json", " [ ] "),
        ("blank.ndjson", "\n\n"),
    ] {
        write(dir.path(), name, content);
    }
    let config = config(dir.path(), |_| {});
    let sink = MemorySink::new();
    for name in [
        "empty.csv",
        "header.csv",
        "empty.json",
        "array.json",
        "blank.ndjson",
    ] {
        let report = take_file(&config, &dir.path().join(name), &sink)
            .await
            .unwrap();
        assert_eq!(
            (report.outcome, report.events, report.chunks, report.report),
            (Outcome::Processed, 0, 0, None),
            "{name}"
        );
    }
    assert_eq!(sink.attempts(), 0);
    assert_eq!(names_in(&dir.path().join("processed")).len(), 5);
}

#[tokio::test]
async fn a_too_large_json_element_ends_the_reading_but_keeps_the_rows_before() {
    let dir = tempfile::tempdir().unwrap();
    let content = format!(r#"[{{"a":1}},{{"a":"{}"}},{{"a":3}}]"#, "x".repeat(5000));
    write(dir.path(), "big.json", &content);
    let config = config(dir.path(), |r| r.max_row_bytes = 1024);
    let sink = MemorySink::new();
    let report = take_file(&config, &dir.path().join("big.json"), &sink)
        .await
        .unwrap();
    assert_eq!((report.outcome, report.events), (Outcome::Processed, 1));
    let file_error = report.file_error.unwrap();
    assert!(
        file_error.starts_with("element 2 is larger than max_row_bytes (1024 bytes)"),
        "{file_error}"
    );
    assert!(file_error.contains("NDJSON"));
    assert!(report.report.is_some());
}

#[tokio::test]
async fn a_forced_format_reads_any_extension() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "export.txt", "{\"a\":1}\n{\"a\":2}\n");
    let sink = MemorySink::new();
    let unforced = config(dir.path(), |_| {});
    assert!(matches!(
        take_file(&unforced, &dir.path().join("export.txt"), &sink).await,
        Err(TakeError::Ignored { .. })
    ));
    let forced = config(dir.path(), |r| r.format = Some("ndjson".into()));
    let report = take_file(&forced, &dir.path().join("export.txt"), &sink)
        .await
        .unwrap();
    assert_eq!(report.events, 2);
}

/// The restart case: the sink fails after some chunks (the daemon died), the
/// file stays, and a new run takes it whole with the same ids.
#[tokio::test]
async fn a_file_interrupted_midway_is_taken_again_whole_with_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let content = briefs_csv(2_000);
    write(dir.path(), "brief.csv", &content);
    let config = config(dir.path(), |r| r.chunk_rows = 100);

    let first = MemorySink::failing_after(4);
    let err = take_file(&config, &dir.path().join("brief.csv"), &first)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TakeError::Sink {
                source: SinkError::Failed(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(first.chunk_sizes(), [100; 4]);
    assert!(
        dir.path().join("brief.csv").exists(),
        "the file stays in the inbox"
    );
    assert!(names_in(&dir.path().join("processed")).is_empty());

    let second = MemorySink::new();
    let report = take_file(&config, &dir.path().join("brief.csv"), &second)
        .await
        .unwrap();
    assert_eq!(
        (report.outcome, report.events, report.chunks),
        (Outcome::Processed, 2_000, 20)
    );

    let prefix = id_prefix(&content);
    let expected: BTreeSet<String> = (2..=2_001).map(|line| format!("{prefix}:{line}")).collect();
    let first_ids: BTreeSet<String> = first.ids().into_iter().collect();
    let second_ids: BTreeSet<String> = second.ids().into_iter().collect();
    assert_eq!(second_ids, expected);
    assert!(first_ids.is_subset(&second_ids));
    // What the journal would hold after deduplicating on (source, id).
    assert_eq!(journal([&first, &second]).len(), 2_000);
    // The events themselves are identical, not only their ids.
    assert_eq!(first.events()[..], second.events()[..400]);
}

#[tokio::test]
async fn a_large_file_streams_in_bounded_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 200_000;
    write(dir.path(), "schedule.csv", briefs_csv(rows));
    let config = config(dir.path(), |_| {});
    let sink = MemorySink::new();

    let report = take_file(&config, &dir.path().join("schedule.csv"), &sink)
        .await
        .unwrap();

    assert_eq!(report.events, rows as u64);
    let sizes = sink.chunk_sizes();
    assert_eq!(sizes.iter().max(), Some(&500));
    assert_eq!(sizes.len(), rows / 500);
    assert_eq!(report.chunks, sizes.len() as u64);
    let ids: BTreeSet<String> = sink.ids().into_iter().collect();
    assert_eq!(ids.len(), rows);
}

#[tokio::test]
async fn bad_rows_past_the_listing_limit_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut content = String::from("a,b\n");
    for _ in 0..1500 {
        content.push_str("ragged\n");
    }
    content.push_str("1,2\n");
    write(dir.path(), "many.csv", &content);
    let config = config(dir.path(), |_| {});
    let report = take_file(&config, &dir.path().join("many.csv"), &MemorySink::new())
        .await
        .unwrap();
    assert_eq!(
        (report.outcome, report.events, report.bad_rows),
        (Outcome::Processed, 1, 1500)
    );
    assert_eq!(report.errors.len(), converge_filedrop::MAX_LISTED_ERRORS);
    let written = report_json(report.report.as_ref().unwrap());
    assert_eq!(written["errors"].as_array().unwrap().len(), 1000);
    assert_eq!(written["errors_not_listed"], 500);
}

#[cfg(unix)]
#[tokio::test]
async fn path_tricks_are_not_taken() {
    use std::os::unix::fs::symlink;

    let outside = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.csv", "campaign_id\nc-1\n");
    symlink(
        outside.path().join("secret.csv"),
        dir.path().join("link.csv"),
    )
    .unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    write(&dir.path().join("sub"), "inner.csv", "campaign_id\nc-2\n");
    write(dir.path(), ".hidden.csv", "campaign_id\nc-3\n");
    write(dir.path(), "brief.csv.part", "campaign_id\nc-4\n");
    let config = config(dir.path(), |_| {});
    let sink = MemorySink::new();

    for path in [
        dir.path().join("link.csv"),
        dir.path().join("sub"),
        dir.path().join("sub/inner.csv"),
        outside.path().join("secret.csv"),
        dir.path()
            .join("sub/../../")
            .join(outside.path().file_name().unwrap())
            .join("secret.csv"),
        dir.path().join(".hidden.csv"),
        dir.path().join("brief.csv.part"),
        dir.path().join(".."),
    ] {
        let result = take_file(&config, &path, &sink).await;
        assert!(
            matches!(result, Err(TakeError::Ignored { .. })),
            "{}: {result:?}",
            path.display()
        );
    }
    assert!(sink.events().is_empty());
    assert!(outside.path().join("secret.csv").exists());
    assert!(dir.path().join("sub/inner.csv").exists());
    assert!(fs::symlink_metadata(dir.path().join("link.csv")).is_ok());

    // Another spelling of a path inside the folder is fine.
    write(dir.path(), "brief.csv", "campaign_id\nc-5\n");
    let roundabout = dir.path().join("sub/../brief.csv");
    let report = take_file(&config, &roundabout, &sink).await.unwrap();
    assert_eq!(report.events, 1);
}

#[cfg(unix)]
#[tokio::test]
async fn a_processed_folder_that_is_a_symlink_is_refused() {
    use std::os::unix::fs::symlink;

    let outside = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    symlink(outside.path(), dir.path().join("processed")).unwrap();
    write(dir.path(), "brief.csv", "campaign_id\nc-1\n");
    let config = config(dir.path(), |_| {});
    let result = take_file(&config, &dir.path().join("brief.csv"), &MemorySink::new()).await;
    assert!(matches!(result, Err(TakeError::Io { .. })), "{result:?}");
    assert!(dir.path().join("brief.csv").exists());
    assert!(names_in(outside.path()).is_empty());
}

#[tokio::test]
async fn a_vanished_file_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), |_| {});
    let result = take_file(&config, &dir.path().join("gone.csv"), &MemorySink::new()).await;
    assert!(matches!(result, Err(TakeError::Vanished(_))), "{result:?}");
}
