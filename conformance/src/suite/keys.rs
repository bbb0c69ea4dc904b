//! Checks of [`KeyManager`]'s documented behaviour.

use super::{
    CheckResult, CheckSpec, Context, Failure, Kind, Report, Verdict, checks, ensure, expect_kind,
    expect_unsupported, fresh_room, now_unix_ms, run_checks,
};
use roomshard_core::{
    Algorithm, DataKey, EncryptionContext, Grantee, KeyManager, KeySpec, RoomId, SigningKeyId,
    room_key_alias,
};
use std::collections::BTreeMap;

/// What the key-manager suite needs to know beyond the trait.
#[derive(Clone, Debug, Default)]
pub struct KeySuiteConfig {
    /// The principal the manager runs as. Revoking its grant must seal the room
    /// ([`KeyManager`]'s type docs); `None` leaves that check not applicable.
    pub acting_as: Option<Grantee>,
    /// Signing keys the manager holds, to sign with and read public keys of.
    pub signing_keys: Vec<SigningKeyId>,
    /// Prefix of the room ids the suite creates (default `cf`).
    pub room_prefix: Option<String>,
}

impl KeySuiteConfig {
    fn room(&self) -> Result<RoomId, Failure> {
        fresh_room(self.room_prefix.as_deref().unwrap_or("cf"))
    }
}

/// The checks of the key_manager suite, in the order [`run_key_manager_suite`] runs them.
pub fn key_manager_checks() -> Vec<CheckSpec<dyn KeyManager, KeySuiteConfig>> {
    checks!(dyn KeyManager, KeySuiteConfig;
        ensure_room_key_is_idempotent, data_key_round_trip, data_key_context_must_name_its_room, data_key_of_missing_room_key_is_not_found, tampered_or_foreign_wrapped_key_is_corrupt, data_key_is_bound_to_its_context, grant_is_idempotent_and_listed, grants_beyond_the_limit_are_refused, revoke_seals_the_room_and_is_idempotent, rotate_keeps_old_data_keys_working, wrapped_key_version_follows_rotation, rewrap_keeps_the_data_key_under_the_current_version, sign_verifies_under_the_public_key, unknown_signing_key_is_not_found, schedule_deletion_checks_its_window_and_is_idempotent, cancel_deletion_makes_the_key_serve_again, discard_room_key_leaves_nothing_usable,
    )
}

/// Runs every key-manager check against `km` and reports each.
pub async fn run_key_manager_suite(
    km: &(dyn KeyManager + 'static),
    config: &KeySuiteConfig,
) -> Report {
    run_checks("key_manager", km.name(), &key_manager_checks(), km, config).await
}

async fn new_room(km: &dyn KeyManager, config: &KeySuiteConfig) -> Result<RoomId, Failure> {
    let room = config.room()?;
    km.ensure_room_key(&room, &KeySpec::default())
        .await
        .context("ensure_room_key")?;
    Ok(room)
}

/// A fresh room with a key, its encryption context and one data key made under it.
async fn room_with_data_key(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> Result<(RoomId, EncryptionContext, DataKey), Failure> {
    let room = new_room(km, config).await?;
    let ctx = EncryptionContext::for_room(&room);
    let key = km
        .generate_data_key(&room, &ctx)
        .await
        .context("generate_data_key")?;
    Ok((room, ctx, key))
}

/// "Idempotent: an existing key under the alias is returned unchanged; never a second key for
/// one room", reachable under the alias `room/<id>` (`alias/room/<id>` for a KMS).
pub async fn ensure_room_key_is_idempotent(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let room = config.room()?;
    let mut tags = BTreeMap::new();
    tags.insert("suite".to_string(), "conformance".to_string());
    let first = km
        .ensure_room_key(
            &room,
            &KeySpec {
                tags: tags.clone(),
                ..KeySpec::default()
            },
        )
        .await
        .context("first ensure_room_key")?;
    let second = km
        .ensure_room_key(
            &room,
            &KeySpec {
                tags: tags.clone(),
                ..KeySpec::default()
            },
        )
        .await
        .context("second ensure_room_key")?;
    ensure(first == second, || {
        format!("ensure_room_key returned {first:?}, then {second:?}: a second key for one room")
    })?;
    let alias = room_key_alias(&room);
    ensure(first.alias.ends_with(&alias), || {
        format!("alias {:?} does not end with {alias:?}", first.alias)
    })?;
    ensure(!first.id.is_empty(), || "the key id is empty".to_string())?;
    Ok(Verdict::Passed)
}

/// A data key is 256 bits; its wrapped copy unwraps to the same plaintext; two data keys differ.
pub async fn data_key_round_trip(km: &dyn KeyManager, config: &KeySuiteConfig) -> CheckResult {
    let room = new_room(km, config).await?;
    let ctx = EncryptionContext::for_room(&room).with("roomshard:purpose", "conformance");
    let a = km
        .generate_data_key(&room, &ctx)
        .await
        .context("generate_data_key")?;
    ensure(a.plaintext.len() == 32, || {
        format!(
            "a data key must be 256 bits, got {} bytes",
            a.plaintext.len()
        )
    })?;
    ensure(
        !a.wrapped.windows(32).any(|w| w == a.plaintext.expose()),
        || "the wrapped key contains the plaintext".to_string(),
    )?;
    let unwrapped = km
        .decrypt_data_key(&room, &a.wrapped, &ctx)
        .await
        .context("decrypt_data_key")?;
    ensure(unwrapped.expose() == a.plaintext.expose(), || {
        "decrypt_data_key returned other bytes than generate_data_key's plaintext".to_string()
    })?;
    let b = km
        .generate_data_key(&room, &ctx)
        .await
        .context("second generate_data_key")?;
    ensure(b.plaintext.expose() != a.plaintext.expose(), || {
        "two data keys are equal".to_string()
    })?;
    ensure(
        !format!("{a:?}").contains(&format!("{:?}", a.plaintext.expose())),
        || "Debug of a DataKey shows its plaintext".to_string(),
    )?;
    Ok(Verdict::Passed)
}

/// "`context` must contain `EncryptionContext::ROOM` equal to `room`, else `Error::Invalid`".
pub async fn data_key_context_must_name_its_room(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let room = new_room(km, config).await?;
    let other = config.room()?;
    expect_kind(
        km.generate_data_key(&room, &EncryptionContext::for_room(&other))
            .await,
        Kind::Invalid,
        "generate_data_key with another room's context",
    )?;
    Ok(Verdict::Passed)
}

/// "A missing room key is `Error::NotFound`".
pub async fn data_key_of_missing_room_key_is_not_found(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let room = config.room()?;
    expect_kind(
        km.generate_data_key(&room, &EncryptionContext::for_room(&room))
            .await,
        Kind::NotFound,
        "generate_data_key for a room without a key",
    )?;
    Ok(Verdict::Passed)
}

/// "A wrapped key that fails authentication — tampered, another room's … — is
/// `Error::Corrupt`".
pub async fn tampered_or_foreign_wrapped_key_is_corrupt(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let room = new_room(km, config).await?;
    let other = new_room(km, config).await?;
    let ctx = EncryptionContext::for_room(&room);
    let key = km
        .generate_data_key(&room, &ctx)
        .await
        .context("generate_data_key")?;
    for i in [key.wrapped.len() / 2, key.wrapped.len().saturating_sub(1)] {
        let mut tampered = key.wrapped.clone();
        if let Some(b) = tampered.get_mut(i) {
            *b ^= 0x01;
        }
        expect_kind(
            km.decrypt_data_key(&room, &tampered, &ctx).await,
            Kind::Corrupt,
            &format!("decrypt_data_key of a wrapped key with byte {i} flipped"),
        )?;
    }
    expect_kind(
        km.decrypt_data_key(&other, &key.wrapped, &EncryptionContext::for_room(&other))
            .await,
        Kind::Corrupt,
        "decrypt_data_key of another room's wrapped key",
    )?;
    Ok(Verdict::Passed)
}

/// "With `encryption_context`, the wrapped key decrypts only under an equal context."
pub async fn data_key_is_bound_to_its_context(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    if !km.capabilities().encryption_context {
        return Ok(Verdict::NotApplicable(
            "capability `encryption_context` is off: the binding is not promised (no method \
             to confirm Unsupported)"
                .into(),
        ));
    }
    let room = new_room(km, config).await?;
    let ctx = EncryptionContext::for_room(&room).with("roomshard:purpose", "media");
    let key = km
        .generate_data_key(&room, &ctx)
        .await
        .context("generate_data_key")?;
    for (label, wrong) in [
        (
            "another value",
            EncryptionContext::for_room(&room).with("roomshard:purpose", "rows"),
        ),
        ("an entry missing", EncryptionContext::for_room(&room)),
        ("an extra entry", ctx.clone().with("roomshard:extra", "x")),
    ] {
        expect_kind(
            km.decrypt_data_key(&room, &key.wrapped, &wrong).await,
            Kind::Corrupt,
            &format!("decrypt_data_key under a context with {label}"),
        )?;
    }
    Ok(Verdict::Passed)
}

/// `grants`: "Idempotent: granting an existing grantee returns the existing grant's id", and
/// `list_grants` shows it.
pub async fn grant_is_idempotent_and_listed(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let room = new_room(km, config).await?;
    let grantee = grantee("conformance-reader")?;
    if !km.capabilities().grants {
        expect_unsupported(km.list_grants(&room).await, "list_grants", "grants")?;
        return expect_unsupported(km.grant(&room, &grantee).await, "grant", "grants");
    }
    let first = km.grant(&room, &grantee).await.context("grant")?;
    let again = km.grant(&room, &grantee).await.context("second grant")?;
    ensure(first == again, || {
        format!("granting twice gave grant ids {first:?} and {again:?}")
    })?;
    let grants = km.list_grants(&room).await.context("list_grants")?;
    let held: Vec<_> = grants.iter().filter(|g| g.grantee == grantee).collect();
    ensure(held.len() == 1 && held[0].id == first, || {
        format!("list_grants should show one grant {first:?} for the grantee, got {grants:?}")
    })?;
    Ok(Verdict::Passed)
}

/// "More grants than `max_grants_per_key` is `Error::QuotaExceeded`" (run when the limit is at
/// most 1024, so the check stays quick).
pub async fn grants_beyond_the_limit_are_refused(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let caps = km.capabilities();
    if !caps.grants {
        let room = config.room()?;
        return expect_unsupported(km.grant(&room, &grantee("x")?).await, "grant", "grants");
    }
    let Some(limit) = caps.max_grants_per_key else {
        return Ok(Verdict::NotApplicable(
            "max_grants_per_key is None (unbounded)".into(),
        ));
    };
    if limit > 1024 {
        return Ok(Verdict::NotApplicable(format!(
            "max_grants_per_key is {limit}; filling it would be slow"
        )));
    }
    let room = new_room(km, config).await?;
    let existing = km.list_grants(&room).await.context("list_grants")?.len() as u64;
    for n in existing..limit {
        km.grant(&room, &grantee(&format!("conformance-{n}"))?)
            .await
            .context(&format!("grant {n} of {limit}"))?;
    }
    expect_kind(
        km.grant(&room, &grantee("conformance-one-too-many")?).await,
        Kind::QuotaExceeded,
        &format!("grant number {} with max_grants_per_key {limit}", limit + 1),
    )?;
    Ok(Verdict::Passed)
}

/// `revoke`: once the acting principal's grant is revoked, `generate_data_key` and
/// `decrypt_data_key` return `Error::Sealed`; "Idempotent: revoking a grantee without a grant is
/// `Ok`"; with `grants`, granting again unseals.
pub async fn revoke_seals_the_room_and_is_idempotent(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let room = new_room(km, config).await?;
    if !km.capabilities().revoke {
        return expect_unsupported(km.revoke(&room, &grantee("x")?).await, "revoke", "revoke");
    }
    km.revoke(&room, &grantee("conformance-never-granted")?)
        .await
        .context("revoke of a grantee without a grant")?;
    let Some(me) = &config.acting_as else {
        return Ok(Verdict::NotApplicable(
            "the suite was not told the principal the manager acts as (acting_as)".into(),
        ));
    };
    let ctx = EncryptionContext::for_room(&room);
    let key = km
        .generate_data_key(&room, &ctx)
        .await
        .context("generate_data_key before revoke")?;
    km.revoke(&room, me).await.context("revoke")?;
    km.revoke(&room, me).await.context("revoke again")?;
    expect_kind(
        km.generate_data_key(&room, &ctx).await,
        Kind::Sealed,
        "generate_data_key after the acting principal's grant was revoked",
    )?;
    expect_kind(
        km.decrypt_data_key(&room, &key.wrapped, &ctx).await,
        Kind::Sealed,
        "decrypt_data_key after the acting principal's grant was revoked",
    )?;
    if km.capabilities().grants {
        km.grant(&room, me).await.context("grant again")?;
        let back = km
            .decrypt_data_key(&room, &key.wrapped, &ctx)
            .await
            .context("decrypt_data_key after the grant was restored")?;
        ensure(back.expose() == key.plaintext.expose(), || {
            "after re-granting, the data key unwrapped to other bytes".to_string()
        })?;
    }
    Ok(Verdict::Passed)
}

/// `rotate`: "New data keys use it; data keys wrapped before still decrypt."
pub async fn rotate_keeps_old_data_keys_working(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let room = new_room(km, config).await?;
    if !km.capabilities().rotate {
        return expect_unsupported(km.rotate(&room).await, "rotate", "rotate");
    }
    let ctx = EncryptionContext::for_room(&room);
    let old = km
        .generate_data_key(&room, &ctx)
        .await
        .context("generate_data_key before rotate")?;
    let key_ref = km.rotate(&room).await.context("rotate")?;
    ensure(key_ref.alias.ends_with(&room_key_alias(&room)), || {
        format!("rotate returned a key ref with alias {:?}", key_ref.alias)
    })?;
    let new = km
        .generate_data_key(&room, &ctx)
        .await
        .context("generate_data_key after rotate")?;
    for (label, key) in [("before", &old), ("after", &new)] {
        let back = km
            .decrypt_data_key(&room, &key.wrapped, &ctx)
            .await
            .context(&format!("decrypt_data_key of a key wrapped {label} rotate"))?;
        ensure(back.expose() == key.plaintext.expose(), || {
            format!("a key wrapped {label} rotate unwrapped to other bytes")
        })?;
    }
    Ok(Verdict::Passed)
}

/// `key_versions`: "`wrapped.wrapped <= wrapped.current`; after `rotate`, a key wrapped before it
/// reports the older version and one wrapped after it the current one"; a blob that is not a
/// wrapped data key is `Corrupt`.
pub async fn wrapped_key_version_follows_rotation(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let (room, ctx, old) = room_with_data_key(km, config).await?;
    if !km.capabilities().key_versions {
        return expect_unsupported(
            km.wrapped_key_version(&room, &old.wrapped).await,
            "wrapped_key_version",
            "key_versions",
        );
    }
    let before = km
        .wrapped_key_version(&room, &old.wrapped)
        .await
        .context("wrapped_key_version of a fresh data key")?;
    ensure(
        before.is_current() && before.wrapped == before.current,
        || format!("a data key wrapped just now reports {before:?}, not the current version"),
    )?;
    expect_kind(
        km.wrapped_key_version(&room, b"not a wrapped key").await,
        Kind::Corrupt,
        "wrapped_key_version of bytes that are no wrapped key",
    )?;
    if !km.capabilities().rotate {
        return Ok(Verdict::Passed);
    }
    km.rotate(&room).await.context("rotate")?;
    let after = km
        .wrapped_key_version(&room, &old.wrapped)
        .await
        .context("wrapped_key_version after rotate")?;
    ensure(
        !after.is_current() && after.wrapped == before.wrapped && after.current > before.current,
        || format!("after rotate a key wrapped before it reports {after:?} (before: {before:?})"),
    )?;
    let new = km
        .generate_data_key(&room, &ctx)
        .await
        .context("generate_data_key after rotate")?;
    let fresh = km
        .wrapped_key_version(&room, &new.wrapped)
        .await
        .context("wrapped_key_version of a key wrapped after rotate")?;
    ensure(fresh.is_current() && fresh.current == after.current, || {
        format!(
            "a key wrapped after rotate reports {fresh:?}, current is {}",
            after.current
        )
    })?;
    Ok(Verdict::Passed)
}

/// `rewrap`: "The result decrypts with `decrypt_data_key` under `context` to the same bytes as
/// `wrapped`; with `key_versions` it reports the current version", before and after a rotation,
/// and a tampered blob is `Corrupt` as for `decrypt_data_key`.
pub async fn rewrap_keeps_the_data_key_under_the_current_version(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let (room, ctx, old) = room_with_data_key(km, config).await?;
    let caps = km.capabilities();
    if !caps.rewrap {
        return expect_unsupported(
            km.rewrap_data_key(&room, &old.wrapped, &ctx).await,
            "rewrap_data_key",
            "rewrap",
        );
    }
    if caps.rotate {
        km.rotate(&room).await.context("rotate")?;
    }
    let rewrapped = km
        .rewrap_data_key(&room, &old.wrapped, &ctx)
        .await
        .context("rewrap_data_key")?;
    let back = km
        .decrypt_data_key(&room, &rewrapped, &ctx)
        .await
        .context("decrypt_data_key of a re-wrapped key")?;
    ensure(back.expose() == old.plaintext.expose(), || {
        "a re-wrapped data key unwraps to other bytes than the original".to_string()
    })?;
    if caps.key_versions {
        let v = km
            .wrapped_key_version(&room, &rewrapped)
            .await
            .context("wrapped_key_version of a re-wrapped key")?;
        ensure(v.is_current(), || {
            format!("a re-wrapped key reports {v:?}, not the current version")
        })?;
    }
    let mut tampered = old.wrapped.clone();
    if let Some(b) = tampered.last_mut() {
        *b ^= 0x01;
    }
    expect_kind(
        km.rewrap_data_key(&room, &tampered, &ctx).await,
        Kind::Corrupt,
        "rewrap_data_key of a tampered wrapped key",
    )?;
    Ok(Verdict::Passed)
}

/// `sign_p256` / `sign_ed25519`: signatures in the bundle format's encodings verify under the
/// published public key, for any message size ("Signs the exact bytes given, whatever their
/// size").
pub async fn sign_verifies_under_the_public_key(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let caps = km.capabilities();
    if !caps.sign_p256 && !caps.sign_ed25519 {
        let key = signing_key_id("conformance-any")?;
        expect_unsupported(km.public_key(&key).await, "public_key", "sign_*")?;
        return expect_unsupported(km.sign(&key, b"m").await, "sign", "sign_p256/sign_ed25519");
    }
    if config.signing_keys.is_empty() {
        return Ok(Verdict::NotApplicable(
            "the suite was given no signing key ids (signing_keys)".into(),
        ));
    }
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    for key in &config.signing_keys {
        let public = km
            .public_key(key)
            .await
            .context(&format!("public_key {key}"))?;
        let declared = match public.algorithm {
            Algorithm::EcdsaP256Sha256 => caps.sign_p256,
            Algorithm::Ed25519 => caps.sign_ed25519,
        };
        ensure(declared, || {
            format!(
                "key {key} is {:?}, a capability the manager does not declare",
                public.algorithm
            )
        })?;
        for message in [&b""[..], b"roomshard conformance", &big] {
            let signature = km
                .sign(key, message)
                .await
                .context(&format!("sign {} bytes with {key}", message.len()))?;
            verify(&public.spki_pem, public.algorithm, message, &signature).map_err(|e| {
                Failure::new(format!(
                    "a signature of {} bytes by {key} does not verify: {e}",
                    message.len()
                ))
            })?;
        }
    }
    Ok(Verdict::Passed)
}

/// "An unknown key is `Error::NotFound`" (for `sign`).
pub async fn unknown_signing_key_is_not_found(
    km: &dyn KeyManager,
    _config: &KeySuiteConfig,
) -> CheckResult {
    let caps = km.capabilities();
    let key = signing_key_id("conformance-no-such-key")?;
    if !caps.sign_p256 && !caps.sign_ed25519 {
        return expect_unsupported(km.sign(&key, b"m").await, "sign", "sign_p256/sign_ed25519");
    }
    expect_kind(
        km.sign(&key, b"m").await,
        Kind::NotFound,
        "sign with an unknown key",
    )?;
    Ok(Verdict::Passed)
}

/// `schedule_deletion`: "`pending_days` outside `min_deletion_days..=max_deletion_days` is
/// `Error::Invalid`"; "Idempotent: scheduling an already scheduled key returns the existing
/// date"; "A missing key is `Error::NotFound`"; and `ensure_room_key` on a key scheduled for
/// deletion is `Error::Conflict`.
pub async fn schedule_deletion_checks_its_window_and_is_idempotent(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let caps = km.capabilities();
    let room = new_room(km, config).await?;
    if !caps.schedule_deletion {
        return expect_unsupported(
            km.schedule_deletion(&room, 30).await,
            "schedule_deletion",
            "schedule_deletion",
        );
    }
    let min = caps.min_deletion_days.unwrap_or(1);
    let max = caps.max_deletion_days.unwrap_or(min.max(30));
    let days = |d: u64| u32::try_from(d).unwrap_or(u32::MAX);
    if min > 0 {
        expect_kind(
            km.schedule_deletion(&room, days(min - 1)).await,
            Kind::Invalid,
            &format!("schedule_deletion with {} days (min {min})", min - 1),
        )?;
    }
    if caps.max_deletion_days.is_some() {
        expect_kind(
            km.schedule_deletion(&room, days(max + 1)).await,
            Kind::Invalid,
            &format!("schedule_deletion with {} days (max {max})", max + 1),
        )?;
    }
    let missing = config.room()?;
    expect_kind(
        km.schedule_deletion(&missing, days(min)).await,
        Kind::NotFound,
        "schedule_deletion of a room without a key",
    )?;
    let before = now_unix_ms();
    let first = km
        .schedule_deletion(&room, days(min))
        .await
        .context("schedule_deletion")?;
    let expected = before + min * 86_400_000;
    ensure(
        first.deletion_at_unix_ms + 60_000 >= expected
            && first.deletion_at_unix_ms <= now_unix_ms() + min * 86_400_000 + 60_000,
        || {
            format!(
                "deletion scheduled at {} ms, expected about {expected} ({min} days from now)",
                first.deletion_at_unix_ms
            )
        },
    )?;
    let again = km
        .schedule_deletion(&room, days(max))
        .await
        .context("schedule_deletion again")?;
    ensure(again == first, || {
        format!("scheduling again returned {again:?}, not the existing {first:?}")
    })?;
    expect_kind(
        km.ensure_room_key(&room, &KeySpec::default()).await,
        Kind::Conflict,
        "ensure_room_key of a key scheduled for deletion",
    )?;
    Ok(Verdict::Passed)
}

/// `cancel_deletion`: "Returns `true` when a deletion was pending and is now cancelled; `false`
/// when none was (idempotent). Afterwards `ensure_room_key` returns the key and data keys work";
/// "A missing key is `Error::NotFound`".
pub async fn cancel_deletion_makes_the_key_serve_again(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let caps = km.capabilities();
    let room = new_room(km, config).await?;
    if !caps.cancel_deletion {
        return expect_unsupported(
            km.cancel_deletion(&room).await,
            "cancel_deletion",
            "cancel_deletion",
        );
    }
    if !caps.schedule_deletion {
        return Err(Failure::new(
            "cancel_deletion is declared without schedule_deletion",
        ));
    }
    let context = EncryptionContext::for_room(&room);
    let before = km
        .generate_data_key(&room, &context)
        .await
        .context("generate_data_key")?;
    ensure(
        !km.cancel_deletion(&room).await.context("cancel_deletion")?,
        || "cancel_deletion of a key with no deletion pending returned true".to_string(),
    )?;
    let days = u32::try_from(caps.min_deletion_days.unwrap_or(7)).unwrap_or(u32::MAX);
    km.schedule_deletion(&room, days)
        .await
        .context("schedule_deletion")?;
    ensure(
        km.cancel_deletion(&room).await.context("cancel_deletion")?,
        || "cancel_deletion of a scheduled key returned false".to_string(),
    )?;
    ensure(
        !km.cancel_deletion(&room)
            .await
            .context("cancel_deletion again")?,
        || "a second cancel_deletion returned true".to_string(),
    )?;
    km.ensure_room_key(&room, &KeySpec::default())
        .await
        .context("ensure_room_key after cancel_deletion")?;
    let plain = km
        .decrypt_data_key(&room, &before.wrapped, &context)
        .await
        .context("decrypt_data_key of a data key made before the deletion was scheduled")?;
    ensure(plain.expose() == before.plaintext.expose(), || {
        "the data key changed across schedule + cancel".to_string()
    })?;
    let missing = config.room()?;
    expect_kind(
        km.cancel_deletion(&missing).await,
        Kind::NotFound,
        "cancel_deletion of a room without a key",
    )?;
    Ok(Verdict::Passed)
}

/// `discard_room_key`: afterwards the key is gone or pending deletion — a data key it wrapped no
/// longer decrypts (`NotFound` or `Conflict`) — and "Idempotent: a missing key is `Ok`".
pub async fn discard_room_key_leaves_nothing_usable(
    km: &dyn KeyManager,
    config: &KeySuiteConfig,
) -> CheckResult {
    let caps = km.capabilities();
    let room = new_room(km, config).await?;
    if !caps.discard_room_key {
        return expect_unsupported(
            km.discard_room_key(&room).await,
            "discard_room_key",
            "discard_room_key",
        );
    }
    if caps.grants
        && let Some(grantee) = &config.acting_as
    {
        km.grant(&room, grantee).await.context("grant")?;
    }
    let context = EncryptionContext::for_room(&room);
    let data_key = km
        .generate_data_key(&room, &context)
        .await
        .context("generate_data_key")?;
    km.discard_room_key(&room)
        .await
        .context("discard_room_key")?;
    let after = km
        .decrypt_data_key(&room, &data_key.wrapped, &context)
        .await;
    ensure(
        matches!(
            after,
            Err(roomshard_core::Error::NotFound { .. } | roomshard_core::Error::Conflict { .. })
        ),
        || format!("a data key of a discarded room key still decrypts (or fails oddly): {after:?}"),
    )?;
    km.discard_room_key(&room)
        .await
        .context("discard_room_key again")?;
    let missing = config.room()?;
    km.discard_room_key(&missing)
        .await
        .context("discard_room_key of a room without a key")?;
    Ok(Verdict::Passed)
}

fn grantee(name: &str) -> Result<Grantee, Failure> {
    Grantee::new(name).map_err(|e| Failure::new(format!("grantee {name:?}: {e}")))
}

fn signing_key_id(name: &str) -> Result<SigningKeyId, Failure> {
    SigningKeyId::new(name).map_err(|e| Failure::new(format!("signing key id {name:?}: {e}")))
}

/// Verifies a signature the way a bundle verifier does (`docs/bundle-format.md` §5): DER ECDSA
/// P-256 over SHA-256 of the message, or Ed25519 over the message.
fn verify(
    spki_pem: &str,
    algorithm: Algorithm,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    match algorithm {
        Algorithm::EcdsaP256Sha256 => {
            use p256::ecdsa::signature::Verifier as _;
            use p256::pkcs8::DecodePublicKey as _;
            let key = p256::ecdsa::VerifyingKey::from_public_key_pem(spki_pem)
                .map_err(|e| format!("public key: {e}"))?;
            let sig = p256::ecdsa::Signature::from_der(signature)
                .map_err(|e| format!("not a DER ECDSA signature: {e}"))?;
            key.verify(message, &sig).map_err(|e| e.to_string())
        }
        Algorithm::Ed25519 => {
            use ed25519_dalek::Verifier as _;
            use ed25519_dalek::pkcs8::DecodePublicKey as _;
            let key = ed25519_dalek::VerifyingKey::from_public_key_pem(spki_pem)
                .map_err(|e| format!("public key: {e}"))?;
            let sig = ed25519_dalek::Signature::from_slice(signature)
                .map_err(|e| format!("not a 64-byte Ed25519 signature: {e}"))?;
            key.verify(message, &sig).map_err(|e| e.to_string())
        }
    }
}
