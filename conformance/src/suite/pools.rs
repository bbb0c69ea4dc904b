//! Checks of [`ConnectionPools`]' documented behaviour: the bounded pools a SQL provider gives
//! the runtime router, run against the provider's pools and the [`ShardStore`] whose route
//! handles they serve.
//!
//! Generic over the provider's pool type, so these are called directly rather than listed as
//! [`CheckSpec`](super::CheckSpec)s: [`run_pools_suite`] runs them all.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context as TaskContext, Poll};

use roomshard_core::{Admission, ConnectionPools, Scope, ShardStore};

use super::shard::{dedicated, new_shard};
use super::{
    CheckResult, Context, Failure, Kind, Report, ShardSuiteConfig, Verdict, ensure, expect_kind,
};

/// Runs every pools check against `pools`, whose servers are those of `store`'s route handles.
pub async fn run_pools_suite<P: ConnectionPools>(
    pools: &P,
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> Report {
    let mut r = Report::new("pools", pools.name());
    r.run(
        "a_pool_never_holds_more_than_its_budget",
        a_pool_never_holds_more_than_its_budget(pools, store, config),
    )
    .await;
    r.run(
        "an_unknown_server_is_not_found",
        an_unknown_server_is_not_found(pools),
    )
    .await;
    r.run(
        "the_guard_refuses_a_fenced_room_and_a_retired_one",
        the_guard_refuses_a_fenced_room_and_a_retired_one(pools, store, config),
    )
    .await;
    r
}

/// Pending once, then ready: lets the other futures of a `join_all` run while this one holds
/// what it acquired (no runtime needed).
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn admitted<C>(a: Admission<C>, doing: &str) -> Result<C, Failure> {
    match a {
        Admission::Admitted(c) => Ok(c),
        Admission::InCutover => Err(Failure::new(format!("{doing}: refused as in cutover"))),
        Admission::Moved => Err(Failure::new(format!("{doing}: refused as moved"))),
    }
}

/// "opens a pool … that never holds more than `budget` connections at once" and
/// "`close_pool` waits until every connection of the pool has closed": six requests at once
/// on a pool of two, each holding its connection across a few yields.
pub async fn a_pool_never_holds_more_than_its_budget<P: ConnectionPools>(
    pools: &P,
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    const BUDGET: u32 = 2;
    let room = new_shard(store, config).await?;
    let handle = store
        .route(&dedicated(store, &room)?)
        .await
        .context("route")?;
    let pool = pools
        .open_pool(&handle.pool, BUDGET)
        .await
        .context("open_pool")?;
    let peak = AtomicU32::new(0);
    let requests = (0..6).map(|_| async {
        let conn = admitted(
            pools.acquire(&pool, &handle).await.context("acquire")?,
            "acquire",
        )?;
        for _ in 0..4 {
            peak.fetch_max(pools.open_connections(&pool), Ordering::SeqCst);
            YieldNow(false).await;
        }
        drop(conn);
        Ok::<_, Failure>(())
    });
    for r in futures::future::join_all(requests).await {
        r?;
    }
    let peak = peak.load(Ordering::SeqCst);
    ensure(peak <= BUDGET, || {
        format!("a pool of budget {BUDGET} held {peak} connections")
    })?;
    ensure(peak >= 1, || "no connection was ever counted open".into())?;
    pools.close_pool(pool.clone()).await;
    let open = pools.open_connections(&pool);
    ensure(open == 0, || {
        format!("{open} connections still open after close_pool")
    })?;
    store
        .drop_room(&dedicated(store, &room)?, &super::shard::schema()?)
        .await
        .context("drop_room")?;
    Ok(Verdict::Passed)
}

/// "an unknown server is `NotFound`".
pub async fn an_unknown_server_is_not_found<P: ConnectionPools>(pools: &P) -> CheckResult {
    expect_kind(
        pools
            .open_pool("no-such-server.invalid", 1)
            .await
            .map(|_| ()),
        Kind::NotFound,
        "open_pool of a server no route names",
    )?;
    Ok(Verdict::Passed)
}

/// "a provider that `guards_moves` checks in the database … that the room is not fenced for
/// its cutover (`InCutover`) and that the handle's copy is still the room's (`Moved`)"; one
/// that does not admits both (the router reads the placement instead).
pub async fn the_guard_refuses_a_fenced_room_and_a_retired_one<P: ConnectionPools>(
    pools: &P,
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    if !config.pooled_tables {
        return Ok(Verdict::NotApplicable(
            "no pooled tables (ShardSuiteConfig::pooled_tables is false)".into(),
        ));
    }
    if !pools.guards_moves() {
        return Ok(Verdict::NotApplicable(
            "guards_moves is false: the router reads the placement on every request".into(),
        ));
    }
    let caps = store.capabilities();
    if !(caps.write_fence && caps.change_log) {
        return Err(Failure::new(
            "guards_moves needs the store's write_fence and change_log (retire_pooled)",
        ));
    }
    let schema = super::shard::schema()?;
    let room = config.room()?;
    let handle = store
        .route(&Scope::Pooled(room.clone()))
        .await
        .context("route of a pooled room")?;
    let pool = pools
        .open_pool(&handle.pool, 2)
        .await
        .context("open_pool")?;
    admitted(
        pools.acquire(&pool, &handle).await.context("acquire")?,
        "a pooled room, neither fenced nor retired",
    )?;
    let fence = store
        .fence_writes(&room, &schema, std::time::Duration::from_secs(5))
        .await
        .context("fence_writes")?;
    let fenced = pools.acquire(&pool, &handle).await.context("acquire")?;
    ensure(matches!(fenced, Admission::InCutover), || {
        format!("a fenced room was answered {:?}", fenced.kind())
    })?;
    fence.lift().await.context("lift")?;
    store
        .retire_pooled(&room, &schema, true)
        .await
        .context("retire_pooled")?;
    let retired = pools.acquire(&pool, &handle).await.context("acquire")?;
    ensure(matches!(retired, Admission::Moved), || {
        format!(
            "a retired room's pooled route was answered {:?}",
            retired.kind()
        )
    })?;
    store
        .retire_pooled(&room, &schema, false)
        .await
        .context("un-retire")?;
    admitted(
        pools.acquire(&pool, &handle).await.context("acquire")?,
        "the room un-retired",
    )?;
    pools.close_pool(pool).await;
    Ok(Verdict::Passed)
}

trait AdmissionKind {
    fn kind(&self) -> &'static str;
}

impl<C> AdmissionKind for Admission<C> {
    fn kind(&self) -> &'static str {
        match self {
            Admission::Admitted(_) => "Admitted",
            Admission::InCutover => "InCutover",
            Admission::Moved => "Moved",
        }
    }
}
