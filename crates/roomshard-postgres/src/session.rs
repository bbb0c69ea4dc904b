//! [`Session`]: one pooled connection inside one transaction, which goes back to the pool only
//! after a clean `COMMIT` or `ROLLBACK`.
//!
//! # Why a guard of our own
//! A COPY in progress owns the connection's protocol state: dropping sqlx's `PgCopyIn` without
//! `finish`/`abort` queues a `CopyFail` that the *next* user of the connection trips over, and
//! dropping a COPY-out stream early leaves unread rows in the socket. A future cancelled at any
//! `.await` (a client hanging up, a `select!` timeout) does exactly that. So every operation
//! that streams runs on a `Session`: if it ends any way but through [`commit`](Session::commit)
//! or [`rollback`](Session::rollback) — an error returned with `?`, a panic, a dropped future —
//! the connection is closed instead of returned (`close_on_drop`). The server then rolls the
//! transaction back and a pooled connection is never poisoned; the price is one reconnect after
//! a failure, which is cheap beside a wrong answer.

use crate::sql::db_err;
use roomshard_core::Result;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

/// How a [`Session`]'s transaction reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `READ WRITE`, read committed: writes.
    Write,
    /// `REPEATABLE READ, READ ONLY`: one snapshot across several statements (dump, parity).
    Snapshot,
}

/// A connection in a transaction; closed, not pooled, unless ended cleanly.
pub(crate) struct Session {
    conn: Option<PoolConnection<Postgres>>,
}

impl Session {
    /// Acquires a connection from `pool` and begins a transaction in `mode`.
    pub(crate) async fn begin(pool: &PgPool, mode: Mode, what: &str) -> Result<Session> {
        let conn = pool
            .acquire()
            .await
            .map_err(db_err(format!("connecting for {what}")))?;
        let mut session = Session { conn: Some(conn) };
        let begin = match mode {
            // roomshard's own writes pass a room's write fence (crate::track): the fence
            // holds the host's writes off, not the copy, restore or drop doing the cutover.
            Mode::Write => "BEGIN; SELECT set_config('roomshard.bypass_fence', 'on', true)",
            Mode::Snapshot => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        sqlx::raw_sql(begin)
            .execute(session.conn())
            .await
            .map_err(db_err(format!("beginning {what}")))?;
        Ok(session)
    }

    /// The connection, for statements inside the transaction.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        match self.conn.as_mut() {
            Some(c) => c,
            // Unreachable: only commit/rollback take the connection, and they consume self.
            None => unreachable!("a session's connection is present until it ends"),
        }
    }

    /// Commits and returns the connection to the pool.
    pub(crate) async fn commit(mut self, what: &str) -> Result<()> {
        sqlx::raw_sql("COMMIT")
            .execute(self.conn())
            .await
            .map_err(db_err(format!("committing {what}")))?;
        self.conn.take();
        Ok(())
    }

    /// Rolls back and returns the connection to the pool.
    pub(crate) async fn rollback(mut self, what: &str) -> Result<()> {
        sqlx::raw_sql("ROLLBACK")
            .execute(self.conn())
            .await
            .map_err(db_err(format!("ending {what}")))?;
        self.conn.take();
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            // Ended mid-transaction (an error, a panic or a cancelled future), perhaps mid-COPY:
            // never hand this connection to anyone else.
            conn.close_on_drop();
        }
    }
}
