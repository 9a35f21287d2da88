//! Startup and authentication of a replication connection.
//!
//! Implements the start-up phase of
//! <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP>: the
//! `StartupMessage` with `replication=database` (and `search_path` pinned to
//! `pg_catalog, pg_temp`), then trust, cleartext, MD5 and SCRAM-SHA-256 — with channel binding,
//! `SCRAM-SHA-256-PLUS` over `tls-server-end-point`, when the connection is TLS
//! (<https://www.postgresql.org/docs/current/sasl-authentication.html>) — then the
//! `ParameterStatus` / `BackendKeyData` messages up to the first `ReadyForQuery`.
//!
//! `channel_binding` follows libpq: `require` fails, before any password is sent, unless the
//! server authenticates with `SCRAM-SHA-256-PLUS`; `prefer` binds when it can; `disable` never.
//!
//! The password is read only when the server asks for one (so the password file is opened only
//! then), goes straight into the outgoing message and is never logged.

use std::collections::HashMap;

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, ScramSha256, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::error::{AuthError, ReplicationError};
use super::message::{read_message, BackendMessage};
use super::transport::Transport;
use super::{log_notice, BackendKey, Session};
use crate::config::{ChannelBinding as BindingMode, ConnectConfig, Password};

/// The `search_path` of every session blueshift opens: nothing a user can create in is
/// searched, and `pg_temp` comes last so a temporary object cannot shadow a catalog one.
pub const PINNED_SEARCH_PATH: &str = "pg_catalog, pg_temp";

const DURING_AUTH: &str = "authenticating";
const DURING_STARTUP: &str = "waiting for the server to accept the connection";

/// What a connection starts up as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartupKind {
    /// `replication=database`: replication commands and plain SQL (the reader).
    Replication,
    /// A plain SQL session (an applier's, see [`super::session`]): no `replication` parameter,
    /// and `default_transaction_read_only=off`, so that it keeps writing on a database the
    /// cutover fenced read-only, as blueshift's tokio-postgres sessions do.
    Plain,
}

/// Sends the startup message, authenticates, and collects the session parameters.
pub(super) async fn startup(
    transport: &mut Transport,
    read_buf: &mut BytesMut,
    config: &ConnectConfig,
    kind: StartupKind,
) -> Result<Session, ReplicationError> {
    let mut params = vec![("user", config.user()), ("database", config.dbname())];
    match kind {
        StartupKind::Replication => params.push(("replication", "database")),
        StartupKind::Plain => params.push(("default_transaction_read_only", "off")),
    }
    params.extend([
        ("client_encoding", "UTF8"),
        // pgoutput sends values in the walsender session's output formats: pin them to what
        // any server parses back exactly, whatever blue's configuration says (as native
        // subscribers do).
        ("DateStyle", "ISO"),
        ("IntervalStyle", "postgres"),
        ("extra_float_digits", "3"),
        // After `options`: a client startup parameter overrides `-c` switches and the role's
        // and database's settings, so nothing shadows what blueshift's SQL calls.
        ("search_path", PINNED_SEARCH_PATH),
    ]);
    if let Some(name) = config.application_name() {
        params.push(("application_name", name));
    }
    if let Some(options) = config.options() {
        params.push(("options", options));
    }
    let mut out = BytesMut::new();
    frontend::startup_message(params, &mut out).map_err(|_| nul_byte("a startup parameter"))?;
    send(transport, &mut out, "sending the startup message").await?;

    authenticate(transport, read_buf, config).await?;
    tracing::debug!(server = %config, "authenticated");

    let mut parameters = HashMap::new();
    let mut backend_key = None;
    loop {
        match read_message(transport, read_buf, DURING_STARTUP).await? {
            BackendMessage::ParameterStatus { name, value } => {
                parameters.insert(name, value);
            }
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => backend_key = Some(BackendKey::new(process_id, secret_key)),
            BackendMessage::NoticeResponse(notice) => log_notice(&notice),
            BackendMessage::ErrorResponse(e) => return Err(e.into()),
            BackendMessage::ReadyForQuery { .. } => break,
            other => return Err(other.unexpected(DURING_STARTUP)),
        }
    }
    Session::new(config.to_string(), parameters, backend_key)
}

/// Answers authentication requests until `AuthenticationOk`.
async fn authenticate(
    transport: &mut Transport,
    read_buf: &mut BytesMut,
    config: &ConnectConfig,
) -> Result<(), ReplicationError> {
    let mut out = BytesMut::new();
    let binding_mode = config.tls().channel_binding();
    let require_binding = |reason: &'static str| {
        if binding_mode == BindingMode::Require {
            Err(ReplicationError::from(AuthError::ChannelBindingRequired {
                reason,
            }))
        } else {
            Ok(())
        }
    };
    let mut bound = false;
    let password = |method: &'static str| {
        config.password_for_auth().ok_or_else(|| {
            ReplicationError::from(AuthError::PasswordRequired {
                method,
                user: config.user().to_owned(),
            })
        })
    };
    loop {
        match read_message(transport, read_buf, DURING_AUTH).await? {
            BackendMessage::AuthenticationOk => {
                if !bound {
                    require_binding("the server authenticated the client without it")?;
                }
                return Ok(());
            }
            BackendMessage::AuthenticationCleartextPassword => {
                tracing::debug!(method = "password", "server requested authentication");
                require_binding("the server requested password authentication")?;
                let password = password("password")?;
                frontend::password_message(password.expose().as_bytes(), &mut out)
                    .map_err(|_| nul_byte("the password"))?;
                send(transport, &mut out, DURING_AUTH).await?;
            }
            BackendMessage::AuthenticationMd5Password { salt } => {
                tracing::debug!(method = "md5", "server requested authentication");
                require_binding("the server requested md5 authentication")?;
                let password = password("md5")?;
                let hash = md5_hash(config.user().as_bytes(), password.expose().as_bytes(), salt);
                frontend::password_message(hash.as_bytes(), &mut out)
                    .expect("an MD5 hash is hex, without NUL");
                send(transport, &mut out, DURING_AUTH).await?;
            }
            BackendMessage::AuthenticationSasl { mechanisms } => {
                tracing::debug!(method = "sasl", mechanisms = ?mechanisms, "server requested authentication");
                if !mechanisms
                    .iter()
                    .any(|m| m == SCRAM_SHA_256 || m == SCRAM_SHA_256_PLUS)
                {
                    return Err(AuthError::NoSaslMechanism {
                        offered: mechanisms.join(", "),
                    }
                    .into());
                }
                let (binding, mechanism) = choose_binding(binding_mode, transport, &mechanisms)?;
                let password = password(mechanism)?;
                bound = mechanism == SCRAM_SHA_256_PLUS;
                tracing::debug!(mechanism, "authenticating with scram");
                scram(transport, read_buf, &mut out, &password, binding, mechanism).await?;
            }
            BackendMessage::AuthenticationUnsupported { method } => {
                return Err(AuthError::UnsupportedMethod { method }.into());
            }
            BackendMessage::NoticeResponse(notice) => log_notice(&notice),
            BackendMessage::ErrorResponse(e) => return Err(e.into()),
            other => return Err(other.unexpected(DURING_AUTH)),
        }
    }
}

/// The SCRAM mechanism and channel binding to use, as libpq chooses them: `-PLUS` when the
/// connection is TLS, the server offers it, and `channel_binding` is not `disable`.
fn choose_binding(
    mode: BindingMode,
    transport: &Transport,
    mechanisms: &[String],
) -> Result<(ChannelBinding, &'static str), ReplicationError> {
    let offers_plus = mechanisms.iter().any(|m| m == SCRAM_SHA_256_PLUS);
    let data = match mode {
        BindingMode::Disable => None,
        BindingMode::Prefer | BindingMode::Require => transport.channel_binding(),
    };
    let chosen = match data {
        Some(data) if offers_plus => (
            ChannelBinding::tls_server_end_point(data),
            SCRAM_SHA_256_PLUS,
        ),
        // We could bind but the server does not offer it: say so ('y'), so that a server that
        // does support it detects a downgrade.
        Some(_) => (ChannelBinding::unrequested(), SCRAM_SHA_256),
        None => (ChannelBinding::unsupported(), SCRAM_SHA_256),
    };
    if chosen.1 == SCRAM_SHA_256 && !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
        // Only -PLUS is offered, and this connection cannot bind (no TLS).
        return Err(AuthError::NoSaslMechanism {
            offered: mechanisms.join(", "),
        }
        .into());
    }
    if mode == BindingMode::Require && chosen.1 != SCRAM_SHA_256_PLUS {
        let reason = if !transport.is_tls() {
            "the connection does not use TLS"
        } else if !offers_plus {
            "the server does not offer SCRAM-SHA-256-PLUS"
        } else {
            "the server's certificate has no hash algorithm to bind to (Ed25519 or RSA-PSS)"
        };
        return Err(AuthError::ChannelBindingRequired { reason }.into());
    }
    Ok(chosen)
}

/// The SCRAM-SHA-256(-PLUS) exchange, up to and including the server's final message.
async fn scram(
    transport: &mut Transport,
    read_buf: &mut BytesMut,
    out: &mut BytesMut,
    password: &Password,
    binding: ChannelBinding,
    mechanism: &'static str,
) -> Result<(), ReplicationError> {
    let scram_err = |source| ReplicationError::from(AuthError::Scram { source });
    let mut scram = ScramSha256::new(password.expose().as_bytes(), binding);
    frontend::sasl_initial_response(mechanism, scram.message(), out)
        .expect("the mechanism name has no NUL and the message is short");
    send(transport, out, DURING_AUTH).await?;

    match read_message(transport, read_buf, DURING_AUTH).await? {
        BackendMessage::AuthenticationSaslContinue { data } => {
            scram.update(&data).map_err(scram_err)?
        }
        BackendMessage::ErrorResponse(e) => return Err(e.into()),
        other => return Err(other.unexpected("waiting for AuthenticationSASLContinue")),
    }
    frontend::sasl_response(scram.message(), out).expect("a SCRAM client-final message is short");
    send(transport, out, DURING_AUTH).await?;

    match read_message(transport, read_buf, DURING_AUTH).await? {
        BackendMessage::AuthenticationSaslFinal { data } => scram.finish(&data).map_err(scram_err),
        BackendMessage::ErrorResponse(e) => Err(e.into()),
        other => Err(other.unexpected("waiting for AuthenticationSASLFinal")),
    }
}

/// Encoding failed: a text with a NUL byte (set after the configuration was parsed).
fn nul_byte(what: &str) -> ReplicationError {
    ReplicationError::InvalidOption {
        problem: format!("{what} contains a NUL byte, which PostgreSQL cannot accept"),
    }
}

/// Writes and flushes `out`, then clears it.
async fn send(
    transport: &mut Transport,
    out: &mut BytesMut,
    during: &'static str,
) -> Result<(), ReplicationError> {
    transport
        .write_all(out)
        .await
        .map_err(ReplicationError::io(during))?;
    transport
        .flush()
        .await
        .map_err(ReplicationError::io(during))?;
    out.clear();
    Ok(())
}
