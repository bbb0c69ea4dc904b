//! The local key manager's behaviour, one specification per test.

#![allow(clippy::unwrap_used)]

use roomshard_core::{
    EncryptionContext, Error, Grantee, KeyManager, KeySpec, KeyVersions, PublicKey, RoomId,
    SigningKeyId, room_key_alias,
};
use roomshard_kms::LocalKeyManager;
use roomshard_verify::{Algorithm, KeySet, Reason, TrustedKey, TrustedKeys};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn room(id: &str) -> RoomId {
    RoomId::new(id).unwrap()
}

fn mesh() -> Grantee {
    Grantee::new("mesh").unwrap()
}

fn manager(dir: &Path) -> LocalKeyManager {
    LocalKeyManager::open(dir, mesh()).unwrap()
}

/// A trusted key set holding `public` as key `platform`.
fn trusted_platform(public: &PublicKey) -> TrustedKeys {
    TrustedKeys::new(KeySet {
        keys: vec![TrustedKey {
            id: "platform".into(),
            alg: public.algorithm,
            public_key_pem: public.spki_pem.clone(),
            not_before: None,
            not_after: None,
            revoked: false,
        }],
    })
    .unwrap()
}

fn platform() -> SigningKeyId {
    SigningKeyId::new(LocalKeyManager::PLATFORM_SIGNING_KEY).unwrap()
}

async fn with_room(dir: &Path, id: &str) -> (LocalKeyManager, RoomId) {
    let keys = manager(dir);
    let room = room(id);
    keys.ensure_room_key(&room, &KeySpec::default())
        .await
        .unwrap();
    (keys, room)
}

fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.push(path.clone());
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn ensure_room_key_is_idempotent_and_grants_its_creator() {
    let dir = tempfile::tempdir().unwrap();
    let keys = manager(dir.path());
    let general = room("general");
    let first = keys
        .ensure_room_key(&general, &KeySpec::default())
        .await
        .unwrap();
    assert_eq!(first.alias, "room/general");
    assert_eq!(first.alias, room_key_alias(&general));
    let ctx = EncryptionContext::for_room(&general);
    let data_key = keys.generate_data_key(&general, &ctx).await.unwrap();

    let second = keys
        .ensure_room_key(&general, &KeySpec::default())
        .await
        .unwrap();
    assert_eq!(first, second);
    // Never a second key: what was wrapped before still decrypts, still version 1.
    let again = keys
        .decrypt_data_key(&general, &data_key.wrapped, &ctx)
        .await
        .unwrap();
    assert_eq!(again.expose(), data_key.plaintext.expose());
    assert_eq!(LocalKeyManager::key_version(&data_key.wrapped).unwrap(), 1);

    let grants = keys.list_grants(&general).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].grantee, mesh());
}

#[tokio::test]
async fn data_keys_are_fresh_256_bit_keys_that_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, general) = with_room(dir.path(), "general").await;
    let ctx = EncryptionContext::for_room(&general).with("roomshard:purpose", "media");
    let a = keys.generate_data_key(&general, &ctx).await.unwrap();
    let b = keys.generate_data_key(&general, &ctx).await.unwrap();
    assert_eq!(a.plaintext.len(), 32);
    assert_ne!(a.plaintext.expose(), b.plaintext.expose());
    assert_ne!(a.wrapped, b.wrapped);
    assert!(!a.wrapped.windows(32).any(|w| w == a.plaintext.expose()));
    let back = keys
        .decrypt_data_key(&general, &a.wrapped, &ctx)
        .await
        .unwrap();
    assert_eq!(back.expose(), a.plaintext.expose());
}

#[tokio::test]
async fn a_data_key_must_be_bound_to_its_room() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, general) = with_room(dir.path(), "general").await;
    let other = EncryptionContext::for_room(&room("other"));
    let err = keys.generate_data_key(&general, &other).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
}

#[tokio::test]
async fn wrong_encryption_context_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, general) = with_room(dir.path(), "general").await;
    let ctx = EncryptionContext::for_room(&general).with("roomshard:purpose", "media");
    let data_key = keys.generate_data_key(&general, &ctx).await.unwrap();

    for wrong in [
        EncryptionContext::for_room(&general),
        EncryptionContext::for_room(&general).with("roomshard:purpose", "db"),
        EncryptionContext::for_room(&room("other")).with("roomshard:purpose", "media"),
    ] {
        let err = keys
            .decrypt_data_key(&general, &data_key.wrapped, &wrong)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("encryption context"), "{err}");
    }
}

#[tokio::test]
async fn tampered_or_foreign_blobs_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, general) = with_room(dir.path(), "general").await;
    let random = room("random");
    keys.ensure_room_key(&random, &KeySpec::default())
        .await
        .unwrap();
    let ctx = EncryptionContext::for_room(&general);
    let data_key = keys.generate_data_key(&general, &ctx).await.unwrap();

    // Every single flipped byte, header included, is caught.
    for i in 0..data_key.wrapped.len() {
        let mut tampered = data_key.wrapped.clone();
        tampered[i] ^= 0x01;
        let err = keys
            .decrypt_data_key(&general, &tampered, &ctx)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "byte {i}: {err}");
    }
    for blob in [
        &data_key.wrapped[..data_key.wrapped.len() - 1],
        &[][..],
        b"not a key",
    ] {
        let err = keys
            .decrypt_data_key(&general, blob, &ctx)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
    // Another room's key does not open it, even under that room's context.
    let err = keys
        .decrypt_data_key(
            &random,
            &data_key.wrapped,
            &EncryptionContext::for_room(&random),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn revoked_grant_seals_every_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, general) = with_room(dir.path(), "general").await;
    let ctx = EncryptionContext::for_room(&general);
    let data_key = keys.generate_data_key(&general, &ctx).await.unwrap();

    keys.revoke(&general, &mesh()).await.unwrap();
    keys.revoke(&general, &mesh()).await.unwrap(); // idempotent
    assert!(keys.list_grants(&general).await.unwrap().is_empty());

    let sealed = |r: Result<(), Error>, path: &str| match r {
        Err(Error::Sealed { room }) => assert_eq!(room, general, "{path}"),
        other => panic!("{path}: expected Sealed, got {other:?}"),
    };
    sealed(
        keys.generate_data_key(&general, &ctx).await.map(drop),
        "generate_data_key",
    );
    sealed(
        keys.decrypt_data_key(&general, &data_key.wrapped, &ctx)
            .await
            .map(drop),
        "decrypt_data_key",
    );
    sealed(keys.rotate(&general).await.map(drop), "rotate");
    sealed(
        keys.rewrap_data_key(&general, &data_key.wrapped, &ctx)
            .await
            .map(drop),
        "rewrap_data_key",
    );
    // A second manager on the same directory (another process) sees the seal too.
    let other_process = manager(dir.path());
    sealed(
        other_process
            .decrypt_data_key(&general, &data_key.wrapped, &ctx)
            .await
            .map(drop),
        "decrypt_data_key from another instance",
    );
    // Another grantee's grant does not unseal the room for this one.
    keys.grant(&general, &Grantee::new("backup").unwrap())
        .await
        .unwrap();
    sealed(
        keys.generate_data_key(&general, &ctx).await.map(drop),
        "generate_data_key with only another grantee",
    );

    // Re-grant: everything works again, the old data key included.
    keys.grant(&general, &mesh()).await.unwrap();
    let back = keys
        .decrypt_data_key(&general, &data_key.wrapped, &ctx)
        .await
        .unwrap();
    assert_eq!(back.expose(), data_key.plaintext.expose());
    keys.generate_data_key(&general, &ctx).await.unwrap();
    keys.rotate(&general).await.unwrap();
}

#[tokio::test]
async fn grants_are_per_grantee_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, general) = with_room(dir.path(), "general").await;
    let backup = Grantee::new("arn:aws:iam::1:role/backup").unwrap();
    let id = keys.grant(&general, &backup).await.unwrap();
    assert_eq!(keys.grant(&general, &backup).await.unwrap(), id);
    let grants = keys.list_grants(&general).await.unwrap();
    assert_eq!(grants.len(), 2);
    assert!(grants.iter().any(|g| g.grantee == backup && g.id == id));

    keys.revoke(&general, &backup).await.unwrap();
    let grants = keys.list_grants(&general).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].grantee, mesh());
    // Revoking someone else leaves this manager's access alone.
    keys.generate_data_key(&general, &EncryptionContext::for_room(&general))
        .await
        .unwrap();

    let missing = room("missing");
    let err = keys.grant(&missing, &backup).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_missing_room_key_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let keys = manager(dir.path());
    let nowhere = room("nowhere");
    let err = keys
        .generate_data_key(&nowhere, &EncryptionContext::for_room(&nowhere))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn rotation_keeps_old_blobs_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, general) = with_room(dir.path(), "general").await;
    let ctx = EncryptionContext::for_room(&general);
    let old = keys.generate_data_key(&general, &ctx).await.unwrap();
    assert!(
        keys.wrapped_key_version(&general, &old.wrapped)
            .await
            .unwrap()
            .is_current()
    );

    let before = keys
        .ensure_room_key(&general, &KeySpec::default())
        .await
        .unwrap();
    assert_eq!(keys.rotate(&general).await.unwrap(), before);
    let new = keys.generate_data_key(&general, &ctx).await.unwrap();
    assert_eq!(LocalKeyManager::key_version(&old.wrapped).unwrap(), 1);
    assert_eq!(LocalKeyManager::key_version(&new.wrapped).unwrap(), 2);

    let back = keys
        .decrypt_data_key(&general, &old.wrapped, &ctx)
        .await
        .unwrap();
    assert_eq!(back.expose(), old.plaintext.expose());

    // Lazy re-wrap: callers ask, then replace the stored blob; the data key is unchanged.
    assert!(
        !keys
            .wrapped_key_version(&general, &old.wrapped)
            .await
            .unwrap()
            .is_current()
    );
    assert!(
        keys.wrapped_key_version(&general, &new.wrapped)
            .await
            .unwrap()
            .is_current()
    );
    let rewrapped = keys
        .rewrap_data_key(&general, &old.wrapped, &ctx)
        .await
        .unwrap();
    assert_eq!(LocalKeyManager::key_version(&rewrapped).unwrap(), 2);
    assert_eq!(
        keys.wrapped_key_version(&general, &rewrapped)
            .await
            .unwrap(),
        KeyVersions {
            wrapped: 2,
            current: 2
        }
    );
    let same = keys
        .decrypt_data_key(&general, &rewrapped, &ctx)
        .await
        .unwrap();
    assert_eq!(same.expose(), old.plaintext.expose());
    // The re-wrapped blob keeps its context binding.
    let err = keys
        .decrypt_data_key(
            &general,
            &rewrapped,
            &ctx.clone().with("roomshard:purpose", "x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");

    keys.rotate(&general).await.unwrap();
    assert!(dir.path().join("rooms/general/v3.key").is_file());
    keys.decrypt_data_key(&general, &old.wrapped, &ctx)
        .await
        .unwrap();
}

#[tokio::test]
async fn signature_verifies_with_the_trusted_key_set() {
    let dir = tempfile::tempdir().unwrap();
    let keys = manager(dir.path());
    let public = keys.public_key(&platform()).await.unwrap();
    assert_eq!(public.algorithm, Algorithm::EcdsaP256Sha256);
    assert!(public.spki_pem.starts_with("-----BEGIN PUBLIC KEY-----"));

    let message = br#"{"format":"roomshard-bundle"}"#;
    let signature = keys.sign(&platform(), message).await.unwrap();
    let trusted = trusted_platform(&public);
    let at = "2026-01-01T00:00:00Z";
    trusted
        .verify(
            "platform",
            Algorithm::EcdsaP256Sha256,
            at,
            message,
            &signature,
            Reason::SignatureInvalid,
        )
        .unwrap();
    let err = trusted
        .verify(
            "platform",
            Algorithm::EcdsaP256Sha256,
            at,
            b"another message",
            &signature,
            Reason::SignatureInvalid,
        )
        .unwrap_err();
    assert_eq!(err.reason, Reason::SignatureInvalid);

    // The key survives reopening the directory.
    let reopened = manager(dir.path());
    assert_eq!(reopened.public_key(&platform()).await.unwrap(), public);
    let signature = reopened.sign(&platform(), message).await.unwrap();
    trusted
        .verify(
            "platform",
            Algorithm::EcdsaP256Sha256,
            at,
            message,
            &signature,
            Reason::SignatureInvalid,
        )
        .unwrap();

    let unknown = SigningKeyId::new("../signing/platform").unwrap();
    let err = keys.sign(&unknown, message).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn key_files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let (keys, general) = with_room(&keys_dir, "general").await;
    keys.grant(&general, &Grantee::new("backup").unwrap())
        .await
        .unwrap();
    keys.rotate(&general).await.unwrap();
    keys.schedule_deletion(&room("general"), 7).await.unwrap();

    let files = all_files(&keys_dir);
    for expected in [
        "signing/platform.pem",
        "rooms/general/v1.key",
        "rooms/general/v2.key",
        "rooms/general/grants.json",
        "rooms/general/meta.json",
    ] {
        assert!(keys_dir.join(expected).is_file(), "{expected}");
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&keys_dir), 0o700);
    for path in files {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), want, "{}", path.display());
        assert!(
            !path.to_string_lossy().ends_with(".tmp"),
            "temp file left: {}",
            path.display()
        );
    }
    assert_eq!(
        std::fs::metadata(keys_dir.join("rooms/general/v1.key"))
            .unwrap()
            .len(),
        32
    );
    let pem = std::fs::read_to_string(keys_dir.join("signing/platform.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
}

#[tokio::test]
async fn debug_never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, general) = with_room(dir.path(), "general").await;
    let ctx = EncryptionContext::for_room(&general);
    let data_key = keys.generate_data_key(&general, &ctx).await.unwrap();
    let unwrapped = keys
        .decrypt_data_key(&general, &data_key.wrapped, &ctx)
        .await
        .unwrap();

    let room_key = std::fs::read(dir.path().join("rooms/general/v1.key")).unwrap();
    let pem = std::fs::read_to_string(dir.path().join("signing/platform.pem")).unwrap();
    let pem_body: String = pem.lines().nth(1).unwrap().to_owned();

    let shown = [
        format!("{keys:?}"),
        format!("{keys:#?}"),
        format!("{data_key:?}"),
        format!("{data_key:#?}"),
        format!("{unwrapped:?}"),
    ];
    for secret in [room_key.as_slice(), data_key.plaintext.expose()] {
        let forms = [
            hex::encode(secret),
            format!("{secret:?}"),
            format!("{secret:x?}"),
            format!("{:?}", &secret[..4])
                .trim_end_matches(']')
                .to_owned(),
        ];
        for text in &shown {
            for form in &forms {
                assert!(!text.contains(form.as_str()), "{text} shows {form}");
            }
        }
    }
    for text in &shown {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(!text.contains(&pem_body), "{text}");
    }
    assert!(shown[2].contains("redacted"), "{}", shown[2]);
    // Error messages carry no key material either.
    let err = keys
        .decrypt_data_key(&general, b"RSK1\0\0\0\x01garbage", &ctx)
        .await
        .unwrap_err();
    assert!(!err.to_string().contains(&hex::encode(&room_key)));
}

#[tokio::test]
async fn room_id_injection_cannot_escape_the_key_dir() {
    // Every name that could reach outside `rooms/` is refused before any provider sees it.
    for hostile in [
        "..",
        "../etc",
        "../../signing",
        "a/b",
        "a\\b",
        "/etc/passwd",
        ".hidden",
        "general\0",
        "General",
        "",
        "général",
        "a b",
    ] {
        assert!(RoomId::new(hostile).is_err(), "{hostile:?} accepted");
        let json = serde_json::to_string(hostile).unwrap();
        assert!(
            serde_json::from_str::<RoomId>(&json).is_err(),
            "{hostile:?} deserialised"
        );
    }

    // Whatever valid ids do, files stay under `<dir>/rooms/<id>/`.
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let keys = manager(&keys_dir);
    for id in ["a", "0-_", "room-with_dashes-0123456789"] {
        let room = room(id);
        keys.ensure_room_key(&room, &KeySpec::default())
            .await
            .unwrap();
        keys.rotate(&room).await.unwrap();
    }
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, ["keys"]);
    for path in all_files(&keys_dir) {
        let rel = path.strip_prefix(&keys_dir).unwrap();
        let top = rel.components().next().unwrap().as_os_str();
        assert!(top == "rooms" || top == "signing", "{}", rel.display());
        if top == "rooms" {
            assert!(rel.components().count() <= 3, "{}", rel.display());
        }
    }
}

#[tokio::test]
async fn scheduled_deletion_blocks_further_use() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, general) = with_room(dir.path(), "general").await;
    let ctx = EncryptionContext::for_room(&general);
    let data_key = keys.generate_data_key(&general, &ctx).await.unwrap();

    for days in [0, 6, 31] {
        let err = keys.schedule_deletion(&general, days).await.unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{days}: {err}");
    }
    let scheduled = keys.schedule_deletion(&general, 7).await.unwrap();
    assert_eq!(scheduled.key.alias, "room/general");
    // Idempotent: the existing date is returned.
    assert_eq!(
        keys.schedule_deletion(&general, 30).await.unwrap(),
        scheduled
    );

    let conflict = |r: Result<(), Error>, path: &str| {
        assert!(
            matches!(r, Err(Error::Conflict { .. })),
            "{path}: expected Conflict, got {r:?}"
        );
    };
    conflict(
        keys.generate_data_key(&general, &ctx).await.map(drop),
        "generate_data_key",
    );
    conflict(
        keys.decrypt_data_key(&general, &data_key.wrapped, &ctx)
            .await
            .map(drop),
        "decrypt_data_key",
    );
    conflict(keys.rotate(&general).await.map(drop), "rotate");
    conflict(
        keys.ensure_room_key(&general, &KeySpec::default())
            .await
            .map(drop),
        "ensure_room_key",
    );

    let err = keys
        .schedule_deletion(&room("missing"), 7)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn capabilities_declare_what_is_implemented() {
    let dir = tempfile::tempdir().unwrap();
    let keys = manager(dir.path());
    let caps = keys.capabilities();
    assert_eq!(keys.name(), "local");
    assert!(caps.grants && caps.revoke && caps.rotate && caps.sign_p256);
    assert!(caps.encryption_context && caps.schedule_deletion);
    assert!(!caps.sign_ed25519);
    assert_eq!(caps.min_deletion_days, Some(7));
    assert_eq!(caps.max_deletion_days, Some(30));
    assert!(caps.max_grants_per_key.is_some());
}

#[tokio::test]
async fn an_ed25519_directory_signs_ed25519_and_never_switches_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let grantee = mesh();
    let keys = LocalKeyManager::open_with_signing(dir.path(), grantee.clone(), Algorithm::Ed25519)
        .unwrap();
    assert_eq!(keys.signing_algorithm(), Algorithm::Ed25519);
    let caps = keys.capabilities();
    assert!(caps.sign_ed25519 && !caps.sign_p256, "{caps:?}");
    let public = keys.public_key(&platform()).await.unwrap();
    assert_eq!(public.algorithm, Algorithm::Ed25519);

    let message = br#"{"format":"roomshard-bundle"}"#;
    let signature = keys.sign(&platform(), message).await.unwrap();
    assert_eq!(signature.len(), 64, "Ed25519 signatures are 64 raw bytes");
    let trusted = trusted_platform(&public);
    let at = "2026-01-01T00:00:00Z";
    trusted
        .verify(
            "platform",
            Algorithm::Ed25519,
            at,
            message,
            &signature,
            Reason::SignatureInvalid,
        )
        .unwrap();
    let mut tampered = message.to_vec();
    tampered[0] ^= 1;
    assert!(
        trusted
            .verify(
                "platform",
                Algorithm::Ed25519,
                at,
                &tampered,
                &signature,
                Reason::SignatureInvalid
            )
            .is_err()
    );

    // Reopened plainly, the directory keeps its Ed25519 key; asked for P-256 it refuses.
    let reopened = LocalKeyManager::open(dir.path(), grantee.clone()).unwrap();
    assert_eq!(reopened.signing_algorithm(), Algorithm::Ed25519);
    assert_eq!(reopened.public_key(&platform()).await.unwrap(), public);
    let err =
        LocalKeyManager::open_with_signing(dir.path(), grantee.clone(), Algorithm::EcdsaP256Sha256)
            .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("is ed25519, not ecdsa-p256-sha256"),
        "{err}"
    );
    // And a P-256 directory refuses to become Ed25519.
    let other = tempfile::tempdir().unwrap();
    LocalKeyManager::open(other.path(), grantee.clone()).unwrap();
    let err =
        LocalKeyManager::open_with_signing(other.path(), grantee, Algorithm::Ed25519).unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
}
