//! The Prometheus endpoint over real HTTP: `GET /metrics` on a port chosen at run time returns
//! the registry in the text format; other paths and methods get proper errors; shutdown stops
//! the server; a taken address is a clear error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use blueshift_engine::metrics::{ErrorClass, Metrics, MetricsError, MetricsServer, RowCounts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` raw and returns (status code, headers lower-cased, body).
async fn http(addr: SocketAddr, request: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection after one response")
        .expect("read");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let code = parts.next().expect("a code").parse().expect("numeric");
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header: value");
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    (code, headers, body.to_owned())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n")
}

/// Samples of an exposition, keyed by `name{labels}`, after checking every line's shape.
fn samples(body: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut typed = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().expect("a name").to_owned());
        } else if line.starts_with("# HELP ") {
        } else {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let name = series.split('{').next().expect("a name");
            assert!(
                typed.iter().any(|t| name.starts_with(t.as_str())),
                "{line} before its TYPE"
            );
            out.insert(series.to_owned(), value.parse::<f64>().expect("a number"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_registry_over_http_until_shutdown() {
    let metrics = Metrics::new();
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(metrics.clone(), async move {
        let _ = stopped.await;
    }));

    // Recorded after the server started: every scrape reads the live values.
    metrics.transaction_applied(
        &RowCounts {
            inserted: 3,
            updated: 2,
            deleted: 1,
            truncated: 0,
        },
        Duration::from_millis(8),
    );
    metrics.set_lag_bytes(12_345);
    metrics.set_queue_depth("apply", 4);
    metrics.set_retained_wal(65_536);
    metrics.error(ErrorClass::Transient);
    metrics.spilled(2048);
    metrics.transaction_spilled();

    let (code, headers, body) = http(addr, &get("/metrics")).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{headers:?}"
    );
    assert_eq!(headers["content-length"], body.len().to_string());
    let s = samples(&body);
    assert_eq!(s["blueshift_applied_transactions_total"], 1.0);
    assert_eq!(s["blueshift_applied_rows_total{op=\"insert\"}"], 3.0);
    assert_eq!(s["blueshift_applied_rows_total{op=\"update\"}"], 2.0);
    assert_eq!(s["blueshift_applied_rows_total{op=\"delete\"}"], 1.0);
    assert_eq!(s["blueshift_applied_rows_total{op=\"truncate\"}"], 0.0);
    assert_eq!(s["blueshift_lag_bytes"], 12_345.0);
    // Nothing has streamed yet: green is not known to hold anything, so the lag counts from
    // the registry's start.
    assert!(s["blueshift_lag_seconds"] >= 0.0, "{body}");
    assert_eq!(s["blueshift_up"], 1.0);
    assert_eq!(s["blueshift_connected{side=\"blue\"}"], 0.0);
    assert_eq!(
        s["blueshift_queue_depth_transactions{queue=\"apply\"}"],
        4.0
    );
    assert_eq!(s["blueshift_slot_retained_wal_bytes"], 65_536.0);
    assert_eq!(s["blueshift_errors_total{class=\"transient\"}"], 1.0);
    assert_eq!(s["blueshift_errors_total{class=\"definite\"}"], 0.0);
    assert_eq!(s["blueshift_spilled_bytes_total"], 2048.0);
    assert_eq!(s["blueshift_spilled_transactions_total"], 1.0);
    assert_eq!(s["blueshift_apply_latency_seconds_count"], 1.0);
    assert_eq!(s["blueshift_apply_latency_seconds_sum"], 0.008);
    assert_eq!(
        s["blueshift_apply_latency_seconds_bucket{le=\"0.005\"}"],
        0.0
    );
    assert_eq!(
        s["blueshift_apply_latency_seconds_bucket{le=\"0.01\"}"],
        1.0
    );
    assert_eq!(
        s["blueshift_apply_latency_seconds_bucket{le=\"+Inf\"}"],
        1.0
    );
    assert!(body.contains("# TYPE blueshift_apply_latency_seconds histogram\n"));

    // A second scrape sees a later value; a query string is ignored.
    metrics.set_lag_bytes(0);
    let (code, _, body) = http(addr, &get("/metrics?x=1")).await;
    assert_eq!(code, 200);
    assert_eq!(samples(&body)["blueshift_lag_bytes"], 0.0);

    // HEAD: the head only, with the body's length.
    let (code, headers, body) =
        http(addr, "HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(code, 200);
    assert!(body.is_empty());
    assert!(headers["content-length"].parse::<usize>().unwrap() > 100);

    // Health: alive, but not ready before sync streams.
    let (code, _, body) = http(addr, &get("/healthz")).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _, body) = http(addr, &get("/readyz")).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("blue and green not connected"), "{body}");

    // Everything else.
    let (code, _, body) = http(addr, &get("/")).await;
    assert_eq!(code, 404);
    assert!(body.contains("/metrics"), "{body}");
    let (code, headers, _) =
        http(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(code, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (code, _, _) = http(addr, "nonsense\r\n\r\n").await;
    assert_eq!(code, 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let (code, _, _) = http(addr, &huge).await;
    assert_eq!(code, 431);

    // A client that connects and says nothing does not hold up a scrape.
    let _idle = TcpStream::connect(addr).await.expect("connect");
    let (code, _, _) = http(addr, &get("/metrics")).await;
    assert_eq!(code, 200);

    // Shutdown: the serve future ends, and the port is closed.
    stop.send(()).expect("server still running");
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("serve ends on shutdown")
        .expect("serve task");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_taken_address_names_itself_and_the_fix() {
    let first = MetricsServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr = first.local_addr();
    let err = MetricsServer::bind(addr).await.unwrap_err();
    assert!(
        matches!(&err, MetricsError::Bind { addr: a, .. } if *a == addr),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&addr.to_string()), "{text}");
    assert!(text.contains("--metrics-addr"), "{text}");
}
