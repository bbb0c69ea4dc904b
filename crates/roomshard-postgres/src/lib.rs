//! roomshard on PostgreSQL.
//!
//! - [`PgShardStore`]: a [`ShardStore`](roomshard_core::ShardStore) whose pooled scope is the
//!   host's shared tables (in one schema of its database, `public` by default) and whose
//!   dedicated shards are one schema `room_<id>` per sovereign room on the same server.
//! - [`PgControlPlane`]: roomshard's [`ControlPlane`](roomshard_core::ControlPlane) tables in
//!   the same database, created by the migrations this crate ships.
//! - [`PgPools`]: the runtime router's bounded pools per server, with the guard that keeps
//!   routed requests off a room mid-cutover.
//! - [`connect`]: opens a pool from a `postgres://` URL with the session settings both rely on
//!   (UTC, ISO dates, hex `bytea`, shortest floats), so COPY text is the same on every server.

mod chunks;
mod control;
mod pools;
mod restore;
mod session;
mod shard;
mod sql;
mod track;

pub use control::PgControlPlane;
pub use pools::{DEFAULT_ACQUIRE_TIMEOUT, PgPools, ROUTER_APPLICATION_NAME};
pub use shard::{DEFAULT_BATCH_ROWS, META_TABLE, PgShardStore};
pub use track::{
    CHANGE_LOG_TABLE, CUTOVER_SQLSTATE, INSTALL_LOCK_WAIT, MOVED_SQLSTATE, RETIRED_TABLE,
    TRACKED_TABLE, is_cutover_refusal, is_moved_refusal,
};

use roomshard_core::{Error, ProviderUrl, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// Settings every roomshard connection runs with: COPY text and parity checksums depend on them,
/// so they are fixed per connection rather than left to the server's defaults.
pub(crate) const SESSION_OPTIONS: [(&str, &str); 5] = [
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("bytea_output", "hex"),
    ("extra_float_digits", "1"),
    ("client_encoding", "UTF8"),
];

/// Connection options for `url` (a `postgres://` or `postgresql://` URL) with
/// [`SESSION_OPTIONS`] applied and roomshard's own query parameters (`schema`, `max_connections`)
/// removed, since libpq-style parsers reject parameters they do not know.
///
/// # Errors
/// [`Error::Invalid`] naming `role` for another scheme or a URL sqlx cannot parse (the password
/// is never shown).
pub fn connect_options(url: &ProviderUrl) -> Result<PgConnectOptions> {
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(url.unknown_scheme(&["postgres", "postgresql"]));
    }
    let text = strip_query(url.expose(), &["schema", "max_connections"]);
    let options = PgConnectOptions::from_str(&text).map_err(|e| {
        Error::invalid(
            url.role(),
            format!(
                "{url}: not a PostgreSQL URL sqlx can use ({})",
                redact(&e.to_string())
            ),
        )
    })?;
    Ok(options.options(SESSION_OPTIONS))
}

/// Opens a pool of at most `max_connections` for `url` (see [`connect_options`]).
///
/// # Errors
/// [`Error::Invalid`] for a bad URL; [`Error::Unavailable`] when the server cannot be reached.
pub async fn connect(url: &ProviderUrl, max_connections: u32) -> Result<PgPool> {
    let options = connect_options(url)?;
    // One direct connection first, without the pool's retries: a wrong host, port, password or
    // database is reported in seconds, with the server's own words, instead of after the pool's
    // acquire timeout.
    let what = || format!("PostgreSQL at {url}");
    let probe = tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| {
            Error::unavailable(
                what(),
                true,
                format!("no answer within {}s", PROBE_TIMEOUT.as_secs()),
            )
        })?
        .map_err(|e| Error::unavailable(what(), true, e))?;
    let _ = probe.close().await;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy_with(options))
}

/// How long [`connect`] waits for the server's first answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `url` without the query parameters named in `drop`.
pub(crate) fn strip_query(url: &str, drop: &[&str]) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let key = kv.split_once('=').map_or(*kv, |(k, _)| k);
            !kv.is_empty() && !drop.contains(&key)
        })
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// A parser message with anything after `:` and before `@` (a password) removed.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find('@') {
        let head = &rest[..at];
        match head.rfind("://").map(|i| i + 3) {
            Some(start) => match head[start..].find(':') {
                Some(colon) => {
                    out.push_str(&head[..start + colon + 1]);
                    out.push_str("***@");
                }
                None => {
                    out.push_str(head);
                    out.push('@');
                }
            },
            None => {
                out.push_str(head);
                out.push('@');
            }
        }
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roomshard_parameters_are_removed_before_sqlx_parses_the_url() {
        assert_eq!(
            strip_query("postgres://h/db?schema=room_a&sslmode=disable", &["schema"]),
            "postgres://h/db?sslmode=disable"
        );
        assert_eq!(
            strip_query("postgres://h/db?schema=x", &["schema"]),
            "postgres://h/db"
        );
        assert_eq!(
            strip_query("postgres://h/db", &["schema"]),
            "postgres://h/db"
        );
    }

    #[test]
    fn a_password_never_reaches_an_error() {
        let url = ProviderUrl::parse(
            "postgres://u:hunter2@127.0.0.1:5432/db?sslmode=bogus",
            "--shards",
        )
        .expect("parses as a URL");
        let e = connect_options(&url).expect_err("bad sslmode");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
    }
}
