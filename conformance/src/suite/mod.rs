//! The provider behaviour suite: plain async functions, one per documented behaviour, that any
//! [`KeyManager`](roomshard_core::KeyManager), [`MediaStore`](roomshard_core::MediaStore) or
//! [`ShardStore`](roomshard_core::ShardStore) — ours or a third party's — runs against itself;
//! and [`run_pools_suite`] for a SQL provider's [`ConnectionPools`](roomshard_core::ConnectionPools).
//!
//! # Why this shape
//! - **Plain functions** (the `object_store::integration` shape): a provider's own test calls
//!   [`run_key_manager_suite`], [`run_media_suite`] or [`run_shard_suite`] and asserts the
//!   [`Report`] has no failure, or calls one check directly while debugging it. No test
//!   framework, no runtime: the functions only `.await` the provider.
//! - **Capability-gated** (the OpenDAL shape): each check names the capability it needs. When
//!   the provider declares it, the behaviour is checked; when it does not, the check instead
//!   confirms that the method returns [`Error::Unsupported`]
//!   naming that method, and is reported *skipped* with the reason. A skip is therefore never a
//!   silent pass: it proves the provider refuses what it does not promise.
//! - **Sentences of the docs**: every check quotes the trait-doc sentence it verifies
//!   ("Behaviour" sections of `roomshard_core::traits`), so a failure points at the promise that
//!   was broken.
//! - **Isolated**: each check uses fresh room ids (a per-run random suffix), so checks run
//!   against shared backends without seeing each other's data.

mod control;
mod index;
mod keys;
mod media;
mod pools;
mod shard;

pub use control::*;
pub use index::*;
pub use keys::*;
pub use media::*;
pub use pools::*;
pub use shard::*;

use roomshard_core::{Error, RoomId};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a check failed: the broken promise, in words. Returned by every check function so `?`
/// works on provider calls (see [`Context`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, with the values involved.
    pub message: String,
}

impl Failure {
    /// A failure with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// What a check that did not fail found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The behaviour was checked and holds.
    Passed,
    /// The provider does not declare the capability, and the method returned
    /// `Error::Unsupported` as required; the reason says which capability.
    Skipped(String),
    /// The behaviour does not apply to this provider's declared capabilities and no method can
    /// confirm it (e.g. a size limit of "none"): the reason says why. Counted apart from skips.
    NotApplicable(String),
}

/// The result of one check function.
pub type CheckResult = Result<Verdict, Failure>;

/// How one check ended, as listed in a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Checked and holds.
    Passed,
    /// Failed, with why.
    Failed(String),
    /// Capability off and `Unsupported` confirmed, with which capability.
    Skipped(String),
    /// Does not apply, with why.
    NotApplicable(String),
}

/// One check in a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The check function's name.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

/// A check's future, borrowing the provider and the suite's configuration.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + 'a>>;

/// One check of a suite, as data: its name (the check function's) and how to run it against a
/// provider `P` with configuration `C`. A suite is a list of these ([`key_manager_checks`],
/// [`media_checks`], [`shard_checks`], [`control_plane_checks`]), so a third party can run all of
/// them with one call ([`run_checks`]), pick some by name, or list what a suite covers.
pub struct CheckSpec<P: ?Sized, C> {
    /// The check function's name, as reported.
    pub name: &'static str,
    /// Runs the check.
    pub run: for<'a> fn(&'a P, &'a C) -> CheckFuture<'a>,
}

/// The [`CheckSpec`] list of the given check functions of provider type `$p` and config `$c`.
macro_rules! checks {
    ($p:ty, $c:ty; $($check:ident),* $(,)?) => {
        vec![$(
            {
                fn run<'a>(p: &'a $p, c: &'a $c) -> $crate::suite::CheckFuture<'a> {
                    Box::pin($check(p, c))
                }
                $crate::suite::CheckSpec::<$p, $c> { name: stringify!($check), run }
            }
        ),*]
    };
}
pub(crate) use checks;

/// Runs every check of `checks` against `provider` (named `provider_name`) and reports each,
/// in order, as suite `suite`.
pub async fn run_checks<P: ?Sized, C>(
    suite: &str,
    provider_name: &str,
    checks: &[CheckSpec<P, C>],
    provider: &P,
    config: &C,
) -> Report {
    let mut r = Report::new(suite, provider_name);
    for check in checks {
        r.run(check.name, (check.run)(provider, config)).await;
    }
    r
}

/// Everything one suite run found about one provider: what a provider's test asserts on
/// ([`Report::failures`] is zero) and prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The suite (`key_manager`, `media`, `shard`).
    pub suite: String,
    /// The provider's `name()`.
    pub provider: String,
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl Report {
    /// An empty report for `suite` run against `provider`.
    pub fn new(suite: &str, provider: &str) -> Self {
        Report {
            suite: suite.to_string(),
            provider: provider.to_string(),
            checks: Vec::new(),
        }
    }

    /// Runs one check and records its outcome.
    pub async fn run<F>(&mut self, name: &'static str, check: F)
    where
        F: Future<Output = CheckResult>,
    {
        let outcome = match check.await {
            Ok(Verdict::Passed) => Outcome::Passed,
            Ok(Verdict::Skipped(why)) => Outcome::Skipped(why),
            Ok(Verdict::NotApplicable(why)) => Outcome::NotApplicable(why),
            Err(failure) => Outcome::Failed(failure.message),
        };
        self.checks.push(Check { name, outcome });
    }

    /// The failed checks.
    pub fn failed(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
            .collect()
    }

    /// How many checks failed: a conforming provider has zero.
    pub fn failures(&self) -> usize {
        self.failed().len()
    }

    /// How many checks passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    /// How many checks were skipped (capability off, `Unsupported` confirmed).
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.checks.iter().filter(|c| f(&c.outcome)).count()
    }

    /// The report as one JSON object — `suite`, `provider`, the counts, and every check with
    /// its `outcome` (`passed`, `failed`, `skipped`, `not_applicable`) and `detail` — for a third
    /// party's CI to store or compare.
    pub fn to_json(&self) -> serde_json::Value {
        let checks: Vec<serde_json::Value> = self
            .checks
            .iter()
            .map(|c| {
                let (outcome, detail) = match &c.outcome {
                    Outcome::Passed => ("passed", None),
                    Outcome::Failed(why) => ("failed", Some(why)),
                    Outcome::Skipped(why) => ("skipped", Some(why)),
                    Outcome::NotApplicable(why) => ("not_applicable", Some(why)),
                };
                serde_json::json!({ "name": c.name, "outcome": outcome, "detail": detail })
            })
            .collect();
        serde_json::json!({
            "suite": self.suite,
            "provider": self.provider,
            "passed": self.passed(),
            "failed": self.failures(),
            "skipped": self.skipped(),
            "not_applicable": self.checks.len() - self.passed() - self.failures() - self.skipped(),
            "conforms": self.failures() == 0,
            "checks": checks,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} suite against {}: {} passed, {} failed, {} skipped, {} not applicable",
            self.suite,
            self.provider,
            self.passed(),
            self.failures(),
            self.skipped(),
            self.checks.len() - self.passed() - self.failures() - self.skipped()
        )?;
        for c in &self.checks {
            match &c.outcome {
                Outcome::Passed => writeln!(f, "  pass  {}", c.name)?,
                Outcome::Failed(why) => writeln!(f, "  FAIL  {}: {why}", c.name)?,
                Outcome::Skipped(why) => writeln!(f, "  skip  {}: {why}", c.name)?,
                Outcome::NotApplicable(why) => writeln!(f, "  n/a   {}: {why}", c.name)?,
            }
        }
        Ok(())
    }
}

/// Adds what was being done to a provider error, turning it into a [`Failure`].
pub trait Context<T> {
    /// `Err(e)` becomes a failure saying `doing` failed with `e`.
    fn context(self, doing: &str) -> Result<T, Failure>;
}

impl<T> Context<T> for roomshard_core::Result<T> {
    fn context(self, doing: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(format!("{doing} failed: {e} ({e:?})")))
    }
}

/// The error kinds of [`roomshard_core::Error`], for stating which one a behaviour requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Error::NotFound`.
    NotFound,
    /// `Error::AlreadyExists`.
    AlreadyExists,
    /// `Error::Conflict`.
    Conflict,
    /// `Error::Unsupported`.
    Unsupported,
    /// `Error::PermissionDenied`.
    PermissionDenied,
    /// `Error::Sealed`.
    Sealed,
    /// `Error::Invalid`.
    Invalid,
    /// `Error::Corrupt`.
    Corrupt,
    /// `Error::QuotaExceeded`.
    QuotaExceeded,
    /// `Error::Unavailable`.
    Unavailable,
}

impl Kind {
    /// The kind of `e`, or `None` for a kind added after this suite was written.
    pub fn of(e: &Error) -> Option<Kind> {
        Some(match e {
            Error::NotFound { .. } => Kind::NotFound,
            Error::AlreadyExists { .. } => Kind::AlreadyExists,
            Error::Conflict { .. } => Kind::Conflict,
            Error::Unsupported { .. } => Kind::Unsupported,
            Error::PermissionDenied { .. } => Kind::PermissionDenied,
            Error::Sealed { .. } => Kind::Sealed,
            Error::Invalid { .. } => Kind::Invalid,
            Error::Corrupt { .. } => Kind::Corrupt,
            Error::QuotaExceeded { .. } => Kind::QuotaExceeded,
            Error::Unavailable { .. } => Kind::Unavailable,
            _ => return None,
        })
    }
}

/// Requires `result` to be an error of `kind`; `doing` says what was attempted and which
/// documented sentence requires the kind.
pub fn expect_kind<T: fmt::Debug>(
    result: roomshard_core::Result<T>,
    kind: Kind,
    doing: &str,
) -> Result<Error, Failure> {
    match result {
        Ok(v) => Err(Failure::new(format!(
            "{doing}: expected Error::{kind:?}, got Ok({v:?})"
        ))),
        Err(e) if Kind::of(&e) == Some(kind) => Ok(e),
        Err(e) => Err(Failure::new(format!(
            "{doing}: expected Error::{kind:?}, got {e} ({e:?})"
        ))),
    }
}

/// The verdict of a capability-gated check whose capability is off: `result` must be
/// `Error::Unsupported` naming `operation` (the method, as the trait's default returns it), or
/// `operation.<option>` for a refused option of the method.
pub fn expect_unsupported<T: fmt::Debug>(
    result: roomshard_core::Result<T>,
    operation: &str,
    capability: &str,
) -> CheckResult {
    match result {
        // `method` or `method.option` (as `ensure_bucket.kms_key`) both name the method.
        Err(Error::Unsupported { operation: op, .. })
            if op == operation
                || op
                    .strip_prefix(operation)
                    .is_some_and(|rest| rest.starts_with('.')) =>
        {
            Ok(Verdict::Skipped(format!(
                "capability `{capability}` is off; {op} returned Unsupported"
            )))
        }
        Err(Error::Unsupported { operation: op, .. }) => Err(Failure::new(format!(
            "capability `{capability}` is off and {operation} returned Unsupported, but naming \
             operation {op:?} instead of {operation:?}"
        ))),
        other => Err(Failure::new(format!(
            "capability `{capability}` is off, so {operation} must return Error::Unsupported; \
             got {other:?}"
        ))),
    }
}

/// Fails with `message` unless `condition` holds.
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), Failure> {
    if condition {
        Ok(())
    } else {
        Err(Failure::new(message()))
    }
}

/// A room id no other check or run uses: `<prefix>-<run>-<n>`, so checks can run against a
/// shared backend and never see each other's keys, objects or rows.
pub fn fresh_room(prefix: &str) -> Result<RoomId, Failure> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{prefix}-{:x}-{n}", nanos & 0xffff_ffff_ffff);
    RoomId::new(id.clone()).map_err(|e| Failure::new(format!("room id {id:?}: {e}")))
}

/// Milliseconds since the Unix epoch, for checking expiry and deletion times.
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
