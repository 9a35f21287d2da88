//! The replication connection against hand-written server bytes over a real socket: what a
//! real PostgreSQL cannot be made to send (malformed or hostile messages, authentication methods
//! blueshift does not support, a server that never answers), and the exact bytes blueshift sends
//! (startup parameters, password, standby status updates, CopyDone). Behaviour against real
//! servers is tested in `tests/tests/replication_connection.rs`.

use std::collections::HashMap;
use std::time::Duration;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::connection::{
    AuthError, ProtocolError, ReplicationConnection, ReplicationError,
};
use blueshift_decoder::stream::{ReplicationFrame, StartOptions, StatusOptions};
use blueshift_decoder::Lsn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const SECRET: &str = "Wire-Secret-42";

/// A one-connection server running `script`; returns its port.
async fn serve<F, Fut>(script: F) -> (u16, JoinHandle<()>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        script(socket).await;
    });
    (port, handle)
}

fn config(port: u16, extra: &str) -> ConnectConfig {
    ConnectConfig::from_conninfo_with_env(
        &format!("host=127.0.0.1 port={port} user=alice dbname=app connect_timeout=10 {extra}"),
        |_| None,
    )
    .unwrap()
}

/// `SSLRequest`'s code, sent first under the default `sslmode=prefer`.
const SSL_REQUEST_CODE: [u8; 4] = [0x04, 0xd2, 0x16, 0x2f];

/// Reads the startup packet (answering an `SSLRequest` before it with `N`, as a server without
/// TLS does); returns its parameters.
async fn read_startup(socket: &mut TcpStream) -> HashMap<String, String> {
    let mut len = socket.read_i32().await.unwrap();
    let mut body = vec![0; usize::try_from(len - 4).unwrap()];
    socket.read_exact(&mut body).await.unwrap();
    if len == 8 && body[..4] == SSL_REQUEST_CODE {
        socket.write_all(b"N").await.unwrap();
        len = socket.read_i32().await.unwrap();
        body = vec![0; usize::try_from(len - 4).unwrap()];
        socket.read_exact(&mut body).await.unwrap();
    }
    assert_eq!(body[..4], [0, 3, 0, 0], "protocol 3.0");
    let mut fields = body[4..]
        .split(|b| *b == 0)
        .map(|f| String::from_utf8(f.to_vec()).unwrap());
    let mut params = HashMap::new();
    while let Some(key) = fields.next().filter(|k| !k.is_empty()) {
        params.insert(key, fields.next().unwrap());
    }
    params
}

/// Reads one tagged message.
async fn read_message(socket: &mut TcpStream) -> (u8, Vec<u8>) {
    let tag = socket.read_u8().await.unwrap();
    let len = socket.read_i32().await.unwrap();
    let mut body = vec![0; usize::try_from(len - 4).unwrap()];
    socket.read_exact(&mut body).await.unwrap();
    (tag, body)
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn auth(code: i32, extra: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(extra);
    message(b'R', &body)
}

fn parameter(name: &str, value: &str) -> Vec<u8> {
    message(b'S', format!("{name}\0{value}\0").as_bytes())
}

/// AuthenticationOk, server_version, BackendKeyData and ReadyForQuery.
fn accept(version: &str) -> Vec<u8> {
    let mut out = auth(0, b"");
    out.extend(parameter("server_version", version));
    out.extend(parameter("server_encoding", "UTF8"));
    out.extend(message(b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]));
    out.extend(message(b'Z', b"I"));
    out
}

fn error_response(severity: &str, code: &str, text: &str) -> Vec<u8> {
    message(
        b'E',
        format!("S{severity}\0V{severity}\0C{code}\0M{text}\0\0").as_bytes(),
    )
}

async fn connect_err(port: u16, extra: &str) -> ReplicationError {
    ReplicationConnection::connect(&config(port, extra))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn startup_parameters_and_cleartext_password() {
    let (port, server) = serve(|mut s| async move {
        let params = read_startup(&mut s).await;
        assert_eq!(params["user"], "alice");
        assert_eq!(params["database"], "app");
        assert_eq!(params["replication"], "database");
        assert_eq!(params["client_encoding"], "UTF8");
        assert_eq!(params["application_name"], "wire test");
        assert_eq!(params["options"], "-c wal_sender_timeout=5s");
        // search_path pinned, after options so it wins over a `-c search_path` there.
        assert_eq!(params["search_path"], "pg_catalog, pg_temp");
        s.write_all(&auth(3, b"")).await.unwrap();
        let (tag, body) = read_message(&mut s).await;
        assert_eq!(tag, b'p');
        assert_eq!(body, format!("{SECRET}\0").as_bytes());
        s.write_all(&accept("15.19")).await.unwrap();
        let (tag, _) = read_message(&mut s).await;
        assert_eq!(tag, b'X', "Terminate");
    })
    .await;
    let conn = ReplicationConnection::connect(&config(
        port,
        &format!(
            "application_name='wire test' options='-c wal_sender_timeout=5s' password={SECRET}"
        ),
    ))
    .await
    .unwrap();
    assert_eq!(conn.server_major(), 15);
    assert_eq!(conn.backend_key().unwrap().process_id(), 12345);
    assert!(!format!("{conn:?}").contains(SECRET));
    conn.close().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn md5_password_is_hashed() {
    let (port, server) = serve(|mut s| async move {
        read_startup(&mut s).await;
        s.write_all(&auth(5, b"\x01\x02\x03\x04")).await.unwrap();
        let (tag, body) = read_message(&mut s).await;
        assert_eq!(tag, b'p');
        let expected =
            postgres_protocol::authentication::md5_hash(b"alice", SECRET.as_bytes(), [1, 2, 3, 4]);
        assert_eq!(body, format!("{expected}\0").as_bytes());
        s.write_all(&accept("14.22")).await.unwrap();
    })
    .await;
    let conn = ReplicationConnection::connect(&config(port, &format!("password={SECRET}")))
        .await
        .unwrap();
    assert_eq!(conn.server_major(), 14);
    server.await.unwrap();
}

#[tokio::test]
async fn unsupported_authentication_is_named() {
    for (code, method) in [
        (2, "Kerberos V5"),
        (7, "GSSAPI"),
        (9, "SSPI"),
        (6, "SCM credential"),
    ] {
        let (port, _server) = serve(move |mut s| async move {
            read_startup(&mut s).await;
            s.write_all(&auth(code, b"")).await.unwrap();
            let _ = s.read_u8().await;
        })
        .await;
        let err = connect_err(port, "").await;
        assert!(
            matches!(&err, ReplicationError::Auth(AuthError::UnsupportedMethod { method: m }) if *m == method),
            "{err:?}"
        );
        assert!(err.to_string().contains("pg_hba.conf"), "{err}");
    }

    // SASL without plain SCRAM-SHA-256 (channel binding needs TLS).
    let (port, _server) = serve(|mut s| async move {
        read_startup(&mut s).await;
        s.write_all(&auth(10, b"SCRAM-SHA-256-PLUS\0\0"))
            .await
            .unwrap();
        let _ = s.read_u8().await;
    })
    .await;
    let err = connect_err(port, &format!("password={SECRET}")).await;
    assert!(
        matches!(
            err,
            ReplicationError::Auth(AuthError::NoSaslMechanism { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("SCRAM-SHA-256-PLUS"));
}

#[tokio::test]
async fn password_required_without_one() {
    for code in [3, 5, 10] {
        let (port, _server) = serve(move |mut s| async move {
            read_startup(&mut s).await;
            let extra: &[u8] = match code {
                5 => b"salt",
                10 => b"SCRAM-SHA-256\0\0",
                _ => b"",
            };
            s.write_all(&auth(code, extra)).await.unwrap();
            let _ = s.read_u8().await;
        })
        .await;
        let err = connect_err(port, "passfile=/nonexistent/pgpass").await;
        assert!(
            matches!(
                err,
                ReplicationError::Auth(AuthError::PasswordRequired { .. })
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("\"alice\"") && text.contains("~/.pgpass"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn scram_server_signature_is_checked() {
    // A server that answers the client-first message with a proper server-first message but then
    // a wrong signature: the client refuses it, and the password is nowhere in the error.
    let (port, _server) = serve(|mut s| async move {
        read_startup(&mut s).await;
        s.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await.unwrap();
        let (tag, body) = read_message(&mut s).await;
        assert_eq!(tag, b'p');
        let text = String::from_utf8_lossy(&body).into_owned();
        let nonce = text.split("r=").nth(1).unwrap().to_owned();
        let server_first = format!("r={nonce}SERVER,s=c2FsdHNhbHQ=,i=4096");
        s.write_all(&auth(11, server_first.as_bytes()))
            .await
            .unwrap();
        let (tag, _) = read_message(&mut s).await;
        assert_eq!(tag, b'p');
        s.write_all(&auth(12, b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="))
            .await
            .unwrap();
        let _ = s.read_u8().await;
    })
    .await;
    let err = connect_err(port, &format!("password={SECRET}")).await;
    assert!(
        matches!(err, ReplicationError::Auth(AuthError::Scram { .. })),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains(SECRET));
}

#[tokio::test]
async fn server_errors_at_startup() {
    let (port, _server) = serve(|mut s| async move {
        read_startup(&mut s).await;
        s.write_all(&error_response(
            "FATAL",
            "53300",
            "sorry, too many clients already",
        ))
        .await
        .unwrap();
    })
    .await;
    let err = connect_err(port, "").await;
    assert_eq!(err.sqlstate(), Some("53300"));
    assert_eq!(
        err.to_string(),
        "FATAL: sorry, too many clients already (SQLSTATE 53300)"
    );
    assert!(!err.is_io());

    // No server_version at all.
    let (port, _server) = serve(|mut s| async move {
        read_startup(&mut s).await;
        let mut out = auth(0, b"");
        out.extend(message(b'Z', b"I"));
        s.write_all(&out).await.unwrap();
    })
    .await;
    let err = connect_err(port, "").await;
    assert!(
        matches!(
            err,
            ReplicationError::Protocol(ProtocolError::BadParameter {
                parameter: "server_version",
                ..
            })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn malformed_server_bytes_are_errors() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown tag", message(b'!', b"")),
        ("length below 4", b"R\x00\x00\x00\x02".to_vec()),
        ("negative length", b"R\xff\xff\xff\xf0".to_vec()),
        ("2 GB length", b"R\x7f\xff\xff\xff".to_vec()),
        ("unknown auth code", auth(99, b"")),
        ("truncated md5 salt", auth(5, b"ab")),
        ("trailing bytes", {
            let mut m = auth(0, b"x");
            m.extend(message(b'Z', b"I"));
            m
        }),
        ("error without code", message(b'E', b"SERROR\0Mno code\0\0")),
    ];
    for (what, bytes) in cases {
        let (port, _server) = serve(move |mut s| async move {
            read_startup(&mut s).await;
            s.write_all(&bytes).await.unwrap();
            let _ = s.read_u8().await;
        })
        .await;
        let err = connect_err(port, "").await;
        assert!(
            matches!(err, ReplicationError::Protocol(_)),
            "{what}: {err:?}"
        );
    }

    // A message cut short by the server closing: Closed, not a hang or a panic.
    let (port, _server) = serve(|mut s| async move {
        read_startup(&mut s).await;
        s.write_all(b"R\x00\x00\x00\x08\x00").await.unwrap();
    })
    .await;
    let err = connect_err(port, "").await;
    assert!(matches!(err, ReplicationError::Closed { .. }), "{err:?}");
    assert!(err.is_io());
}

#[tokio::test]
async fn connect_timeout_and_refused() {
    let (port, server) = serve(|s| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    })
    .await;
    let started = std::time::Instant::now();
    let err = ReplicationConnection::connect(
        &ConnectConfig::from_conninfo_with_env(
            &format!("host=127.0.0.1 port={port} connect_timeout=2"),
            |_| None,
        )
        .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ReplicationError::Timeout { .. }), "{err:?}");
    assert!(err.is_io());
    assert!(
        started.elapsed() >= Duration::from_secs(2) && started.elapsed() < Duration::from_secs(10)
    );
    server.abort();

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = connect_err(port, "").await;
    assert!(matches!(err, ReplicationError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// The stream side: frames parsed, a keepalive asking for a reply answered at once with the
/// right positions, bad frames rejected, and finish's CopyDone handshake.
#[tokio::test]
async fn stream_status_updates_and_bad_frames() {
    fn keepalive(wal_end: u64, reply: bool) -> Vec<u8> {
        let mut body = vec![b'k'];
        body.extend_from_slice(&wal_end.to_be_bytes());
        body.extend_from_slice(&1_000_000i64.to_be_bytes());
        body.push(u8::from(reply));
        message(b'd', &body)
    }
    fn status_positions(body: &[u8]) -> (u64, u64, u64, u8) {
        assert_eq!(body.len(), 34);
        assert_eq!(body[0], b'r');
        let at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().unwrap());
        (at(1), at(9), at(17), body[33])
    }

    let (port, server) = serve(|mut s| async move {
        read_startup(&mut s).await;
        s.write_all(&accept("16.4")).await.unwrap();
        let (tag, body) = read_message(&mut s).await;
        assert_eq!(tag, b'Q');
        let command = String::from_utf8(body).unwrap();
        assert_eq!(
            command,
            "START_REPLICATION SLOT \"wire_slot\" LOGICAL 0/10 (proto_version '4', publication_names '\"p\"')\0"
        );
        s.write_all(&message(b'W', &[0, 0, 0])).await.unwrap();
        // The status task's first update comes at once: nothing received yet.
        let (tag, body) = read_message(&mut s).await;
        assert_eq!(tag, b'd');
        let (written, _, _, reply) = status_positions(&body);
        assert_eq!((written, reply), (0, 0));
        // A keepalive asking for a reply: answered at once (the interval is an hour).
        s.write_all(&keepalive(0x500, true)).await.unwrap();
        let (tag, body) = read_message(&mut s).await;
        assert_eq!(tag, b'd');
        assert_eq!(status_positions(&body), (0x500, 0x300, 0x200, 0));
        // finish: a final status, then CopyDone; answer with the server's end of the copy.
        let (_, body) = read_message(&mut s).await;
        assert_eq!(status_positions(&body), (0x500, 0x400, 0x200, 0));
        let (tag, _) = read_message(&mut s).await;
        assert_eq!(tag, b'c', "CopyDone");
        let mut out = keepalive(0x600, false);
        out.extend(message(b'c', b""));
        out.extend(message(b'C', b"COPY 0\0"));
        out.extend(message(b'C', b"START_REPLICATION\0"));
        out.extend(message(b'Z', b"I"));
        s.write_all(&out).await.unwrap();
        let (tag, _) = read_message(&mut s).await;
        assert_eq!(tag, b'X', "Terminate");
    })
    .await;
    let conn = ReplicationConnection::connect(&config(port, ""))
        .await
        .unwrap();
    let mut stream = conn
        .start_replication(
            "wire_slot",
            Lsn(0x10),
            StartOptions::new(["p"]),
            StatusOptions {
                interval: Duration::from_secs(3600),
            },
        )
        .await
        .unwrap();
    let feedback = stream.feedback();
    feedback.set_flushed(Lsn(0x300));
    feedback.set_applied(Lsn(0x200));
    let frame = stream.next().await.unwrap().unwrap();
    assert_eq!(
        frame,
        ReplicationFrame::Keepalive {
            wal_end: Lsn(0x500),
            server_time: 1_000_000,
            reply_requested: true
        }
    );
    assert_eq!(feedback.written(), Lsn(0x500));
    // Let the reply go out before the flush position changes again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    feedback.set_flushed(Lsn(0x400));
    stream.close().await.unwrap();
    server.await.unwrap();

    // Bad frames inside CopyData end the stream with a protocol error.
    for frame in [
        b"z".to_vec(),
        b"k\x00\x01".to_vec(),
        b"w\x00\x00\x00\x00".to_vec(),
        Vec::new(),
    ] {
        let (port, _server) = serve(move |mut s| async move {
            read_startup(&mut s).await;
            s.write_all(&accept("15.19")).await.unwrap();
            read_message(&mut s).await;
            let mut out = message(b'W', &[0, 0, 0]);
            out.extend(message(b'd', &frame));
            s.write_all(&out).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let conn = ReplicationConnection::connect(&config(port, ""))
            .await
            .unwrap();
        let mut stream = conn
            .start_replication(
                "wire_slot",
                Lsn(0),
                StartOptions::new(["p"]),
                StatusOptions::default(),
            )
            .await
            .unwrap();
        let err = stream.next().await.unwrap_err();
        assert!(matches!(err, ReplicationError::Protocol(_)), "{err:?}");
        assert!(stream.next().await.unwrap().is_none());
        // A broken stream closes at once, without waiting for the server.
        tokio::time::timeout(Duration::from_secs(2), stream.close())
            .await
            .expect("close does not wait")
            .unwrap();
    }
}
