//! The traits are implementable with only their required methods, usable as `Arc<dyn …>`, and
//! their defaults refuse with `Unsupported` naming the provider.

use super::*;
use crate::body::ObjectBody;
use crate::body::tests::block_on;
use crate::capabilities::{
    IndexCapabilities, KeyCapabilities, MediaCapabilities, ShardCapabilities,
};
use crate::error::{Error, Result};
use crate::events::{NoProgress, ProgressEvent};
use crate::ids::{Identifier, ObjectKey, RoomId};
use crate::placement::{Location, Scope, ServerUrl};
use crate::schema::{RoomSchema, Table};
use async_trait::async_trait;
use roomshard_verify::format::LogicalType;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn room() -> RoomId {
    RoomId::new("general").expect("valid")
}

fn schema() -> RoomSchema {
    let t = Table::new("messages")
        .column("id", LogicalType::Int8)
        .primary_key()
        .id()
        .column("room_id", LogicalType::Text)
        .room_key()
        .build()
        .expect("valid");
    RoomSchema::new("v1", vec![t]).expect("valid")
}

fn assert_unsupported<T: std::fmt::Debug>(r: Result<T>, op: &str) {
    match r {
        Err(Error::Unsupported {
            operation,
            provider,
        }) => {
            assert_eq!(operation, op);
            assert_eq!(provider, "minimal");
        }
        other => panic!("{op}: expected Unsupported, got {other:?}"),
    }
}

/// A shard store with only the required methods, holding one table's rows in memory.
struct MinimalShards {
    rows: Mutex<Vec<&'static str>>,
}

#[async_trait]
impl ShardStore for MinimalShards {
    fn name(&self) -> &str {
        "minimal"
    }
    fn capabilities(&self) -> ShardCapabilities {
        ShardCapabilities::default()
    }
    fn locate_shard(&self, room: &RoomId, region: Option<&str>) -> Result<ServerUrl> {
        if region.is_some() {
            return Err(Error::unsupported("ensure_shard.region", self.name()));
        }
        Ok(ServerUrl::new(format!("memory:room_{room}")))
    }
    async fn ensure_shard(
        &self,
        room: &RoomId,
        at: &Location,
        _schema: &RoomSchema,
    ) -> Result<ShardRef> {
        let url = at
            .shard
            .clone()
            .ok_or_else(|| Error::invalid("location", "no shard"))?;
        Ok(ShardRef {
            url,
            namespace: format!("room_{room}"),
        })
    }
    async fn copy_room(&self, request: CopyRequest<'_>) -> Result<CopyOutcome> {
        request.validate()?;
        let rows = self.rows.lock().expect("not poisoned").len() as u64;
        request
            .checkpoints
            .save(&CopyCheckpoint {
                pass: request.pass,
                tables_done: vec!["messages".into()],
                current: None,
                provider_state: None,
            })
            .await?;
        request.progress.emit(ProgressEvent::Rows {
            table: "messages".into(),
            done: rows,
            total: Some(rows),
        });
        Ok(CopyOutcome {
            rows_written: rows,
            tables: vec![TableCount {
                table: "messages".into(),
                rows,
            }],
            ..Default::default()
        })
    }
    async fn parity(&self, _scope: &Scope, schema: &RoomSchema) -> Result<Parity> {
        Ok(Parity {
            tables: schema
                .tables()
                .iter()
                .map(|t| TableParity {
                    table: t.name.clone(),
                    rows: self.rows.lock().expect("not poisoned").len() as u64,
                    checksum: None,
                })
                .collect(),
        })
    }
    async fn drop_room(&self, _scope: &Scope, _schema: &RoomSchema) -> Result<()> {
        self.rows.lock().expect("not poisoned").clear();
        Ok(())
    }
}

struct MinimalMedia;

#[async_trait]
impl MediaStore for MinimalMedia {
    fn name(&self) -> &str {
        "minimal"
    }
    fn capabilities(&self) -> MediaCapabilities {
        MediaCapabilities::default()
    }
    fn locate_bucket(&self, room: &RoomId) -> Result<String> {
        Ok(format!("rooms/{room}"))
    }
    async fn ensure_bucket(
        &self,
        _room: &RoomId,
        at: &Location,
        spec: &BucketSpec,
    ) -> Result<BucketRef> {
        if let Some(op) = spec.unsupported_by(&self.capabilities()) {
            return Err(Error::unsupported(op, self.name()));
        }
        Ok(BucketRef {
            name: at
                .bucket
                .clone()
                .ok_or_else(|| Error::invalid("location", "no bucket"))?,
            region: None,
        })
    }
    async fn put(
        &self,
        _scope: &Scope,
        key: &ObjectKey,
        body: ObjectBody,
        _options: &PutOptions,
    ) -> Result<ObjectMeta> {
        let bytes = body.collect(1024).await?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: bytes.len() as u64,
            etag: None,
            last_modified_unix_ms: None,
            content_type: None,
        })
    }
    async fn get(&self, _scope: &Scope, key: &ObjectKey) -> Result<GetObject> {
        Err(Error::not_found(format!("object {key}")))
    }
    async fn head(&self, _scope: &Scope, key: &ObjectKey) -> Result<ObjectMeta> {
        Err(Error::not_found(format!("object {key}")))
    }
    async fn list(&self, _scope: &Scope, _request: &ListRequest) -> Result<ListPage> {
        Ok(ListPage::default())
    }
    async fn delete(&self, _scope: &Scope, _key: &ObjectKey) -> Result<()> {
        Ok(())
    }
    async fn usage(&self, _scope: &Scope) -> Result<Usage> {
        Ok(Usage::default())
    }
    async fn drop_bucket(&self, _room: &RoomId, _at: &Location) -> Result<()> {
        Ok(())
    }
}

struct MinimalKeys;

#[async_trait]
impl KeyManager for MinimalKeys {
    fn name(&self) -> &str {
        "minimal"
    }
    fn capabilities(&self) -> KeyCapabilities {
        KeyCapabilities::default()
    }
    async fn ensure_room_key(&self, room: &RoomId, _spec: &KeySpec) -> Result<KeyRef> {
        Ok(KeyRef {
            id: format!("local:{room}"),
            alias: room_key_alias(room),
        })
    }
    async fn generate_data_key(
        &self,
        room: &RoomId,
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        if !context.is_for(room) {
            return Err(Error::invalid("encryption context", "names another room"));
        }
        Err(Error::Sealed { room: room.clone() })
    }
    async fn decrypt_data_key(
        &self,
        room: &RoomId,
        _wrapped: &[u8],
        _context: &EncryptionContext,
    ) -> Result<SecretBytes> {
        Err(Error::Sealed { room: room.clone() })
    }
}

struct MinimalIndex;

#[async_trait]
impl Indexer for MinimalIndex {
    fn name(&self) -> &str {
        "minimal"
    }
    fn capabilities(&self) -> IndexCapabilities {
        IndexCapabilities::default()
    }
}

#[test]
fn traits_are_dyn_compatible_and_shareable() {
    fn shareable<T: Send + Sync + 'static>(_: &T) {}
    let shards: Arc<dyn ShardStore> = Arc::new(MinimalShards {
        rows: Mutex::new(Vec::new()),
    });
    let media: Arc<dyn MediaStore> = Arc::new(MinimalMedia);
    let keys: Arc<dyn KeyManager> = Arc::new(MinimalKeys);
    let index: Arc<dyn Indexer> = Arc::new(MinimalIndex);
    shareable(&shards);
    shareable(&media);
    shareable(&keys);
    shareable(&index);
}

#[test]
fn optional_shard_methods_default_to_unsupported() {
    let store = MinimalShards {
        rows: Mutex::new(Vec::new()),
    };
    let scope = Scope::Dedicated(room(), Location::default());
    let schema = schema();
    struct NullSink;
    #[async_trait]
    impl DumpSink for NullSink {
        async fn begin_table(
            &mut self,
            _t: &roomshard_verify::format::TableDescriptor,
        ) -> Result<()> {
            Ok(())
        }
        async fn rows(&mut self, _chunk: bytes::Bytes) -> Result<()> {
            Ok(())
        }
        async fn end_table(&mut self, _rows: u64) -> Result<()> {
            Ok(())
        }
    }
    struct EmptySource;
    #[async_trait]
    impl DumpSource for EmptySource {
        async fn next_table(&mut self) -> Result<Option<String>> {
            Ok(None)
        }
        async fn next_rows(&mut self) -> Result<Option<bytes::Bytes>> {
            Ok(None)
        }
    }
    block_on(async {
        assert_unsupported(store.dump(&scope, &schema, &mut NullSink).await, "dump");
        assert_unsupported(
            store
                .restore(&scope, &schema, &mut EmptySource, &IdRemap::default())
                .await,
            "restore",
        );
        assert_unsupported(store.size_bytes(&scope, &schema).await, "size_bytes");
        assert_unsupported(store.route(&scope).await, "route");
        assert_unsupported(store.read_outbox(&room(), 0, 10).await, "read_outbox");
        assert_unsupported(store.trim_outbox(&room(), 0).await, "trim_outbox");
    });
}

#[test]
fn optional_media_key_and_index_methods_default_to_unsupported() {
    let scope = Scope::Dedicated(room(), Location::default());
    let key = ObjectKey::new("a.png").expect("valid");
    let grantee = Grantee::new("mesh").expect("valid");
    let signer = SigningKeyId::new("p256-1").expect("valid");
    let group = ConsumerGroup::new("search").expect("valid");
    block_on(async {
        let media = MinimalMedia;
        assert_unsupported(media.copy(&scope, &key, &scope, &key).await, "copy");
        assert_unsupported(
            media
                .presign_get(&scope, &key, Duration::from_secs(60))
                .await,
            "presign_get",
        );
        assert_unsupported(
            media
                .ensure_bucket(&room(), &Location::default(), &BucketSpec::default())
                .await,
            "ensure_bucket.lifecycle_ia_days",
        );

        let keys = MinimalKeys;
        assert_unsupported(keys.grant(&room(), &grantee).await, "grant");
        assert_unsupported(keys.revoke(&room(), &grantee).await, "revoke");
        assert_unsupported(keys.list_grants(&room()).await, "list_grants");
        assert_unsupported(keys.rotate(&room()).await, "rotate");
        assert_unsupported(keys.sign(&signer, b"m").await, "sign");
        assert_unsupported(keys.public_key(&signer).await, "public_key");
        assert_unsupported(
            keys.schedule_deletion(&room(), 7).await,
            "schedule_deletion",
        );
        assert_unsupported(keys.cancel_deletion(&room()).await, "cancel_deletion");
        assert_unsupported(keys.discard_room_key(&room()).await, "discard_room_key");
        assert_unsupported(
            keys.wrapped_key_version(&room(), b"blob").await,
            "wrapped_key_version",
        );
        assert_unsupported(
            keys.rewrap_data_key(&room(), b"blob", &EncryptionContext::for_room(&room()))
                .await,
            "rewrap_data_key",
        );

        let index = MinimalIndex;
        let event = crate::events::ChangeEvent {
            id: crate::events::EventId::new("general:1").expect("valid"),
            room: room(),
            kind: crate::events::ChangeKind::Sealed,
            table: None,
            key: None,
            at_unix_ms: 0,
            payload: serde_json::Value::Null,
        };
        assert_unsupported(index.publish(&event).await, "publish");
        assert_unsupported(index.consume(&group, 10).await, "consume");
        assert_unsupported(index.ack(&group, &[]).await, "ack");
        assert_unsupported(index.lag(&group).await, "lag");
    });
}

#[test]
fn sealed_key_manager_reports_sealed_not_permission_denied() {
    let keys = MinimalKeys;
    let ctx = EncryptionContext::for_room(&room());
    let err = block_on(keys.generate_data_key(&room(), &ctx)).expect_err("sealed");
    assert!(matches!(err, Error::Sealed { ref room } if room.as_str() == "general"));
    assert_eq!(
        err.to_string(),
        "room general is sealed (its key grant was revoked)"
    );
}

#[test]
fn copy_request_refuses_renames_and_self_copies() {
    let schema = schema();
    let request = |source: Scope, server: Option<ServerUrl>, target: Scope| CopyRequest {
        schema: &schema,
        source: CopySource {
            scope: source,
            server,
        },
        target,
        pass: CopyPass::Bulk,
        resume_from: None,
        checkpoints: &NoCheckpoints,
        progress: &NoProgress,
    };
    let other = RoomId::new("other").expect("valid");
    let rename = request(
        Scope::Pooled(room()),
        None,
        Scope::Dedicated(other, Location::default()),
    );
    assert!(matches!(rename.validate(), Err(Error::Invalid { .. })));
    let onto_itself = request(
        Scope::Dedicated(room(), Location::default()),
        None,
        Scope::Dedicated(room(), Location::default()),
    );
    assert!(matches!(onto_itself.validate(), Err(Error::Invalid { .. })));
    let moving = request(
        Scope::Dedicated(room(), Location::default()),
        Some(ServerUrl::new("postgres://db2/mesh")),
        Scope::Dedicated(room(), Location::default()),
    );
    assert!(moving.validate().is_ok());

    let store = MinimalShards {
        rows: Mutex::new(vec!["1\tgeneral\n"]),
    };
    let saved = Mutex::new(Vec::new());
    struct Saving<'a>(&'a Mutex<Vec<CopyCheckpoint>>);
    #[async_trait]
    impl CheckpointSink for Saving<'_> {
        async fn save(&self, c: &CopyCheckpoint) -> Result<()> {
            self.0.lock().expect("not poisoned").push(c.clone());
            Ok(())
        }
    }
    let sink = Saving(&saved);
    let outcome = block_on(store.copy_room(CopyRequest {
        checkpoints: &sink,
        ..request(
            Scope::Pooled(room()),
            None,
            Scope::Dedicated(room(), Location::default()),
        )
    }))
    .expect("copies");
    assert_eq!(outcome.rows_written, 1);
    assert_eq!(saved.lock().expect("not poisoned").len(), 1);
}

#[test]
fn parity_mismatches_name_the_tables() {
    let p = |rows: u64, checksum: Option<&str>| TableParity {
        table: "messages".into(),
        rows,
        checksum: checksum.map(str::to_owned),
    };
    let a = Parity {
        tables: vec![p(3, Some("aa"))],
    };
    assert!(a.mismatched_tables(&a).is_empty());
    let counts_only = Parity {
        tables: vec![p(3, None)],
    };
    assert!(a.mismatched_tables(&counts_only).is_empty());
    let other_sum = Parity {
        tables: vec![p(3, Some("bb"))],
    };
    assert_eq!(a.mismatched_tables(&other_sum), ["messages"]);
    let other_count = Parity {
        tables: vec![p(4, None)],
    };
    assert_eq!(a.mismatched_tables(&other_count), ["messages"]);
    let extra = Parity {
        tables: vec![
            p(3, Some("aa")),
            TableParity {
                table: "reactions".into(),
                rows: 0,
                checksum: None,
            },
        ],
    };
    assert_eq!(a.mismatched_tables(&extra), ["reactions"]);
}

#[test]
fn route_handle_only_emits_quoted_names() {
    let table = Identifier::new("messages").expect("valid");
    let dedicated = RouteHandle {
        pool: "db1".into(),
        namespace: Namespace::Schema(room().schema_name()),
    };
    assert_eq!(dedicated.qualify(&table), "\"room_general\".\"messages\"");
    let shared = RouteHandle {
        pool: "db1".into(),
        namespace: Namespace::Shared {
            schema: Identifier::new("public").expect("valid"),
            room: room(),
        },
    };
    assert_eq!(shared.qualify(&table), "\"public\".\"messages\"");
    let isolated = RouteHandle {
        pool: "rooms/general.db".into(),
        namespace: Namespace::Isolated,
    };
    assert_eq!(isolated.qualify(&table), "\"messages\"");
}

#[test]
fn key_rewrite_keeps_keys_valid() {
    let rewrite = KeyRewrite {
        from_prefix: "rooms/general/".into(),
        to_prefix: "rooms/general-2/".into(),
    };
    assert_eq!(
        rewrite
            .apply("rooms/general/a.png")
            .expect("valid")
            .as_str(),
        "rooms/general-2/a.png"
    );
    assert_eq!(
        rewrite.apply("other/a.png").expect("valid").as_str(),
        "other/a.png"
    );
    let escape = KeyRewrite {
        from_prefix: "rooms/".into(),
        to_prefix: "../".into(),
    };
    assert!(escape.apply("rooms/a.png").is_err());
}
