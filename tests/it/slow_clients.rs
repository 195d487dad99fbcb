//! Slow clients: a sender that trickles its request head, or stalls in its
//! body, is cut off at `server.header_read_timeout` / `body_read_timeout`,
//! while other senders are served as usual.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Daemon, Workspace, event};

fn workspace() -> Workspace {
    let ws = Workspace::new(&[("quiet", "")], "");
    ws.edit_config(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nheader_read_timeout = \"500ms\"\nbody_read_timeout = \"500ms\"",
    );
    ws
}

async fn connect(daemon: &Daemon) -> TcpStream {
    TcpStream::connect(daemon.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the daemon closes the connection; what it sent, and when.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Instant) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after 10 s; got {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        Instant::now(),
    )
}

/// Meanwhile, an ordinary sender gets its 202 (the bound allows for a
/// busy test machine; a stalled sender would hold it for seconds).
async fn others_are_served(daemon: &Daemon, id: &str) {
    // A connection of its own: these daemons close an idle kept-alive
    // connection after their short header read timeout, and a pooled one
    // the shared client picked as it closed fails before any answer.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = Instant::now();
    let response = client
        .post(format!("{}/hooks/test", daemon.url))
        .header("content-type", "application/cloudevents+json")
        .body(event(id, "task.updated", "task/T-1", json!({})).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_trickling_its_headers_is_cut_off() {
    let ws = workspace();
    let daemon = ws.start();
    let mut stream = connect(&daemon).await;
    let started = Instant::now();
    stream
        .write_all(b"POST /hooks/test HTTP/1.1\r\nHost: converge\r\nX-Slow: ")
        .await
        .unwrap();
    // One byte every 100 ms: always sending, never finishing the head.
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        while writer.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    others_are_served(&daemon, "n-1").await;
    let mut answer = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    assert!(closed.is_ok(), "the connection stayed open");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "cut off after {took:?}"
    );
    trickle.abort();
    others_are_served(&daemon, "n-2").await;
    // Idle keep-alive connections of the other sender may count too.
    assert!(daemon.metric("converge_connections_timed_out_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_stalling_in_its_body_gets_408_and_is_cut_off() {
    let ws = workspace();
    let daemon = ws.start();
    let body = event("s-1", "task.updated", "task/T-1", json!({})).to_string();
    let mut stream = connect(&daemon).await;
    let started = Instant::now();
    let head = format!(
        "POST /hooks/test HTTP/1.1\r\nHost: converge\r\nContent-Type: application/cloudevents+json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    others_are_served(&daemon, "n-1").await;
    let (answer, closed_at) = read_until_closed(&mut stream).await;
    let took = closed_at - started;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "cut off after {took:?}"
    );
    // Nothing of it was journaled; the others were.
    assert_eq!(daemon.get("/v1/events/s-1").await.0, 404);
    assert_eq!(daemon.get("/v1/events/n-1").await.0, 200);
    others_are_served(&daemon, "n-2").await;
    assert_eq!(
        daemon
            .metric("converge_events_rejected_total{reason=\"SlowRequest\"}")
            .await,
        1.0
    );
}

/// A stalled request that sent `sent` bytes of a body of `length`.
async fn stalled_body(daemon: &Daemon, length: usize, sent: usize) -> TcpStream {
    let mut stream = connect(daemon).await;
    let head = format!(
        "POST /hooks/test HTTP/1.1\r\nHost: converge\r\nContent-Type: application/cloudevents+json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; sent]).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_past_the_shared_byte_budget_get_503_and_small_senders_still_get_in() {
    let ws = Workspace::new(&[("quiet", "")], "");
    ws.edit_config(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nmax_body_bytes_in_flight = 100000\nbody_read_timeout = \"3s\"",
    );
    let daemon = ws.start();
    // One sender stalls holding 60,000 bytes of the 100,000.
    let mut first = stalled_body(&daemon, 65_000, 60_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A second one's 50,000 bytes do not fit beside them: 503, closed.
    let mut second = stalled_body(&daemon, 65_000, 50_000).await;
    let (answer, _) = read_until_closed(&mut second).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("max_body_bytes_in_flight"), "{answer}");
    // An ordinary event fits in what is left.
    others_are_served(&daemon, "n-1").await;
    // The stalled one is cut off at its deadline, and gives its bytes back.
    let (answer, _) = read_until_closed(&mut first).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let mut third = stalled_body(&daemon, 65_000, 60_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    others_are_served(&daemon, "n-2").await;
    drop(third.shutdown().await);
    assert_eq!(
        daemon
            .metric("converge_events_rejected_total{reason=\"Busy\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_get_503_and_are_closed() {
    let ws = Workspace::new(&[("quiet", "")], "");
    ws.edit_config(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nmax_connections = 3\nheader_read_timeout = \"10s\"",
    );
    let daemon = ws.start();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect(&daemon).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fourth = connect(&daemon).await;
    let (answer, _) = read_until_closed(&mut fourth).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    assert!(answer.contains("server.max_connections"), "{answer}");
    // Once they close, there is room again.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    others_are_served(&daemon, "n-1").await;
    assert_eq!(
        daemon.metric("converge_connections_refused_total").await,
        1.0
    );
}

/// A head of 10,000 headers is refused whole (hyper's limit of 100
/// headers: `431`), its connection closed, and the daemon goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_head_of_ten_thousand_headers_is_refused_and_the_daemon_goes_on() {
    let ws = workspace();
    let daemon = ws.start();
    let mut stream = connect(&daemon).await;
    let mut head = String::from(
        "POST /hooks/test HTTP/1.1\r\nHost: converge\r\nContent-Type: application/cloudevents+json\r\n",
    );
    for i in 0..10_000 {
        head.push_str(&format!("X-Flood-{i}: {i}\r\n"));
    }
    head.push_str("Content-Length: 2\r\n\r\n{}");
    // The daemon may close while the head is still being written.
    let _ = stream.write_all(head.as_bytes()).await;
    let (answer, _) = read_until_closed(&mut stream).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    others_are_served(&daemon, "n-1").await;
}
