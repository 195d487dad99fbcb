//! `run` on a real folder: the write-then-rename convention, settling,
//! restarts, retries and shutdown.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use converge_filedrop::{DropConfig, EventSink, RunError, SinkError, run};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{
    MemorySink, briefs_csv, config, id_prefix, journal, names_in, wait_until, write,
};

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
}

impl Running {
    fn start<S: EventSink + 'static>(config: DropConfig, sink: S) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, sink, shutdown.clone()));
        Running { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("run stops after shutdown")
            .unwrap()
            .unwrap();
    }
}

fn processed(dir: &Path) -> BTreeSet<String> {
    names_in(&dir.join("processed"))
}

/// Longer than several settle periods and rescans of the test config.
async fn let_it_look() {
    tokio::time::sleep(Duration::from_millis(1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_names_are_ignored_until_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(MemorySink::new());
    let running = Running::start(config(dir.path(), |_| {}), Arc::clone(&sink));

    write(dir.path(), ".brief.csv", briefs_csv(3));
    write(dir.path(), "schedule.csv.tmp", briefs_csv(3));
    write(dir.path(), "assets.csv.part", briefs_csv(3));
    write(dir.path(), "list.csv.partial", briefs_csv(3));
    write(dir.path(), "readme.txt", "not an export");
    let_it_look().await;
    assert!(sink.events().is_empty());

    fs::rename(dir.path().join(".brief.csv"), dir.path().join("brief.csv")).unwrap();
    wait_until("brief.csv is processed", || {
        processed(dir.path()).contains("brief.csv")
    })
    .await;
    assert_eq!(sink.events().len(), 3);
    for name in [
        "schedule.csv.tmp",
        "assets.csv.part",
        "list.csv.partial",
        "readme.txt",
    ] {
        assert!(dir.path().join(name).exists(), "{name} is left alone");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_place_is_taken_once_it_has_settled() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(MemorySink::new());
    // The writer appends far more often than the settle period.
    let config = config(dir.path(), |r| r.settle = "1s".into());
    let running = Running::start(config, Arc::clone(&sink));

    let path = dir.path().join("brief.csv");
    let writer = std::thread::spawn(move || {
        let mut file = fs::File::create(&path).unwrap();
        file.write_all(b"campaign_id,owner,channel\n").unwrap();
        for i in 0..40 {
            writeln!(file, "c-{i},ana,email").unwrap();
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    writer.join().unwrap();

    wait_until("brief.csv is processed", || {
        processed(dir.path()).contains("brief.csv")
    })
    .await;
    // Taken once, whole: every id comes from the complete file's hash.
    let content = fs::read(dir.path().join("processed/brief.csv")).unwrap();
    let prefix = id_prefix(&content);
    let ids = sink.ids();
    assert_eq!(ids.len(), 40);
    assert!(ids.iter().all(|id| id.starts_with(&prefix)), "{ids:?}");
    running.stop().await;
}

/// A daemon killed in the middle of a file: the first run's sink fails after
/// two chunks and the run is stopped; a new run takes the file whole, and the
/// journal's (source, id) dedup leaves each row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_file_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let content = briefs_csv(1_000);
    write(dir.path(), "brief.csv", &content);
    let config = config(dir.path(), |r| r.chunk_rows = 100);

    let first = Arc::new(MemorySink::failing_after(2));
    let running = Running::start(config.clone(), Arc::clone(&first));
    wait_until("the third append was refused", || first.attempts() >= 3).await;
    running.stop().await;
    assert_eq!(first.chunk_sizes(), [100, 100]);
    assert!(dir.path().join("brief.csv").exists());

    let second = Arc::new(MemorySink::new());
    let running = Running::start(config, Arc::clone(&second));
    wait_until("brief.csv is processed", || {
        processed(dir.path()).contains("brief.csv")
    })
    .await;
    running.stop().await;

    let prefix = id_prefix(&content);
    let expected: BTreeSet<String> = (2..=1_001).map(|line| format!("{prefix}:{line}")).collect();
    assert_eq!(second.ids().into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(journal([first.as_ref(), second.as_ref()]).len(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_is_retried_within_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "brief.csv", briefs_csv(250));
    let sink = Arc::new(MemorySink::failing_once_at(2));
    let running = Running::start(
        config(dir.path(), |r| r.chunk_rows = 100),
        Arc::clone(&sink),
    );
    wait_until("brief.csv is processed", || {
        processed(dir.path()).contains("brief.csv")
    })
    .await;
    running.stop().await;
    assert_eq!(journal([&sink.inner]).len(), 250);
    // The first chunk was appended twice; the journal keeps it once.
    assert_eq!(sink.inner.events().len(), 350);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_and_subfolders_are_never_followed() {
    use std::os::unix::fs::symlink;

    let outside = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.csv", briefs_csv(5));
    symlink(
        outside.path().join("secret.csv"),
        dir.path().join("link.csv"),
    )
    .unwrap();
    symlink(outside.path(), dir.path().join("elsewhere")).unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    write(&dir.path().join("sub"), "inner.csv", briefs_csv(5));

    let sink = Arc::new(MemorySink::new());
    let running = Running::start(config(dir.path(), |_| {}), Arc::clone(&sink));
    write(dir.path(), "brief.csv", briefs_csv(2));
    wait_until("brief.csv is processed", || {
        processed(dir.path()).contains("brief.csv")
    })
    .await;
    let_it_look().await;
    running.stop().await;

    assert_eq!(sink.events().len(), 2);
    assert_eq!(
        processed(dir.path()),
        BTreeSet::from(["brief.csv".to_string()])
    );
    assert!(fs::symlink_metadata(dir.path().join("link.csv")).is_ok());
    assert!(dir.path().join("sub/inner.csv").exists());
    assert_eq!(
        names_in(outside.path()),
        BTreeSet::from(["secret.csv".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_already_there_at_start_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.csv", briefs_csv(3));
    write(dir.path(), "b.ndjson", "{\"campaign_id\":\"c-1\"}\n");
    write(dir.path(), "c.json", "not json");
    let sink = Arc::new(MemorySink::new());
    let running = Running::start(config(dir.path(), |_| {}), Arc::clone(&sink));
    wait_until("all three are moved", || {
        processed(dir.path()).len() == 2 && names_in(&dir.path().join("failed")).len() == 2
    })
    .await;
    running.stop().await;
    assert_eq!(sink.events().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_sink_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "brief.csv", briefs_csv(3));
    let sink = MemorySink::failing_with(0, SinkError::Closed);
    let shutdown = CancellationToken::new();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        run(config(dir.path(), |_| {}), sink, shutdown),
    )
    .await
    .expect("run ends when the sink is closed");
    result.unwrap();
    assert!(dir.path().join("brief.csv").exists());
}

#[tokio::test]
async fn a_missing_folder_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("nope"), |_| {});
    let err = run(config, MemorySink::new(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("file drop `briefs`: folder `"),
        "{err}"
    );
}
