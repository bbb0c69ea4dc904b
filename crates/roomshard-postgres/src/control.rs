//! [`PgControlPlane`]: roomshard's bookkeeping tables in the host's PostgreSQL database.
//! (Placeholder while the implementation lands.)

use sqlx::PgPool;

/// The control plane on PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgControlPlane {
    #[allow(dead_code)]
    pool: PgPool,
}

impl PgControlPlane {
    /// The control plane in `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        PgControlPlane { pool }
    }
}
