//! The reference **Mesh** room schema and a deterministic workload generator.
//!
//! [`schema`] declares Mesh's room-scoped tables the way a host hands them to roomshard
//! ([`RoomSchema`], built with [`Table`]). [`Workload`] generates a room's rows (as
//! [`CopyValue`]s, in descriptor order) and media objects (streamed, never held in memory) from a
//! seed: the same workload gives byte-identical output. The presets [`Workload::quick`] and
//! [`Workload::full`] are the standard workload of `BENCHMARKS.md`.
//!
//! ```
//! use roomshard_example_mesh::{Media, Workload};
//!
//! let w = Workload { messages: 50, media: Media::Sizes(vec![1000, 2000]), ..Workload::quick() };
//! let mut sql = Vec::new();
//! let counts = w.write_db_sql(&mut sql)?;
//! assert_eq!(counts[2], 50); // messages
//! # Ok::<(), roomshard_bundle::BundleError>(())
//! ```

use std::io::{self, Read, Seek, SeekFrom, Write};

use roomshard_bundle::{BundleError, BundleMeta, BundleWriter, CopyValue, DbSqlWriter};
use roomshard_bundle::{Finished, Signer, WriterOptions};
use roomshard_core::{Bytes, DumpSource, LogicalType, ObjectBody, RoomSchema, Stream, Table};
use roomshard_verify::format::RoomInfo;

/// The schema version recorded in bundles.
pub const SCHEMA_VERSION: &str = "mesh-1";

/// Table names, in descriptor (dump and bundle) order.
pub const TABLES: [&str; 5] = ["rooms", "members", "messages", "attachments", "reactions"];

const MIB: u64 = 1024 * 1024;

/// Mesh's room-scoped tables, in dependency order.
///
/// Every table carries `room_id` (the room key column: text, non-null), which roomshard rewrites
/// to the new room id on import. Choices:
///
/// - **rooms** — the room's own row (name, topic, creation time), keyed by the room id itself.
///   [`RoomSchema`] allows a table whose primary key is the room key column, so the row travels
///   with the room; it has no id column to remap because the importer assigns the room id.
///   Host-global data about the room (who may see it in a directory, billing…) stays outside.
/// - **members** — one row per user in the room. `id` is an id column (remapped on collision)
///   because messages and reactions reference it; `user_name` is the user's handle on the
///   exporting server (not remapped: users are host-global, the importer maps them by name).
/// - **messages** — `id` (remapped), `author_id` → `members.id`, `reply_to` → `messages.id`
///   (nullable: most messages are not replies), `body` nullable (deleted messages), `edited`.
/// - **attachments** — `id` (remapped), `message_id` → `messages.id`, `object_key` is a **media
///   column** (the key of the object under `media/` in the bundle, rewritten when media moves),
///   `url` is a nullable cached public URL (plain text: hosts regenerate it, roomshard does not
///   rewrite it).
/// - **reactions** — composite primary key (`message_id`, `member_id`, `emoji`): one reaction of
///   a kind per member per message; both references are rewritten on remap, no own id.
pub fn schema() -> RoomSchema {
    // The declarations below are fixed and valid (tested), so failure is a programming error.
    #[allow(clippy::expect_used)]
    build_schema().expect("the Mesh reference schema is valid")
}

fn build_schema() -> roomshard_core::Result<RoomSchema> {
    use LogicalType::{Bool, Int8, Text, Timestamptz};
    let rooms = Table::new("rooms")
        .column("room_id", Text)
        .primary_key()
        .room_key()
        .column("name", Text)
        .not_null()
        .column("topic", Text)
        .column("created_at", Timestamptz)
        .not_null()
        .build()?;
    let members = Table::new("members")
        .column("id", Int8)
        .primary_key()
        .id()
        .column("room_id", Text)
        .room_key()
        .column("user_name", Text)
        .not_null()
        .column("display_name", Text)
        .column("joined_at", Timestamptz)
        .not_null()
        .column("role", Text)
        .not_null()
        .build()?;
    let messages = Table::new("messages")
        .column("id", Int8)
        .primary_key()
        .id()
        .column("room_id", Text)
        .room_key()
        .column("author_id", Int8)
        .not_null()
        .references("members", "id")
        .column("body", Text)
        .column("reply_to", Int8)
        .references("messages", "id")
        .column("sent_at", Timestamptz)
        .not_null()
        .column("edited", Bool)
        .not_null()
        .build()?;
    let attachments = Table::new("attachments")
        .column("id", Int8)
        .primary_key()
        .id()
        .column("room_id", Text)
        .room_key()
        .column("message_id", Int8)
        .not_null()
        .references("messages", "id")
        .column("object_key", Text)
        .not_null()
        .media()
        .column("file_name", Text)
        .not_null()
        .column("content_type", Text)
        .not_null()
        .column("size_bytes", Int8)
        .not_null()
        .column("url", Text)
        .build()?;
    let reactions = Table::new("reactions")
        .column("message_id", Int8)
        .primary_key()
        .references("messages", "id")
        .column("room_id", Text)
        .room_key()
        .column("member_id", Int8)
        .primary_key()
        .references("members", "id")
        .column("emoji", Text)
        .primary_key()
        .build()?;
    RoomSchema::new(
        SCHEMA_VERSION,
        vec![rooms, members, messages, attachments, reactions],
    )
}

/// Which media objects a workload has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Media {
    /// Exactly these sizes, in bytes; every fifth object is compressible text.
    Sizes(Vec<u64>),
    /// `count` objects of log-uniform size in `min..=max`.
    Count {
        /// Number of objects.
        count: u64,
        /// Smallest size in bytes.
        min: u64,
        /// Largest size in bytes.
        max: u64,
        /// Share of compressible (text) objects, 0–100; the rest are random bytes.
        compressible_percent: u8,
    },
    /// Objects of log-uniform size in `min..=max` adding up to exactly `bytes` (the last one takes
    /// the remainder).
    Total {
        /// Total media bytes.
        bytes: u64,
        /// Smallest size in bytes.
        min: u64,
        /// Largest size in bytes.
        max: u64,
        /// Share of compressible (text) objects, 0–100; the rest are random bytes.
        compressible_percent: u8,
    },
}

/// A room to generate: same fields ⇒ byte-identical rows and media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// PRNG seed.
    pub seed: u64,
    /// The room id written in every `room_id` column (a valid roomshard room id).
    pub room_id: String,
    /// Number of messages.
    pub messages: u64,
    /// The media objects.
    pub media: Media,
}

/// One media object: its key (as written in `attachments.object_key` and under `media/` in a
/// bundle), size and content kind. [`MediaObject::reader`] streams its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaObject {
    /// Object key, e.g. `att/000001.bin`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether the content is text (compressible) rather than random bytes.
    pub compressible: bool,
    seed: u64,
}

impl MediaObject {
    /// The object's content, generated as it is read (constant memory).
    pub fn reader(&self) -> MediaReader {
        MediaReader {
            rng: Rng::new(self.seed),
            left: self.size,
            compressible: self.compressible,
            text: String::new(),
            text_pos: 0,
        }
    }

    /// The object's content as an [`ObjectBody`] (length declared) for `MediaStore::put`,
    /// streamed in 64 KiB chunks from [`reader`](Self::reader).
    pub fn body(&self) -> ObjectBody {
        ObjectBody::new(
            MediaChunks {
                reader: self.reader(),
            },
            Some(self.size),
        )
    }

    /// The MIME type written in `attachments.content_type`.
    pub fn content_type(&self) -> &'static str {
        if self.compressible {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        }
    }
}

impl Workload {
    /// The standard `quick` workload: 10k messages and 64 MiB of media (64 KiB–8 MiB, ~20 %
    /// compressible).
    pub fn quick() -> Self {
        Workload {
            seed: 1,
            room_id: "mesh-demo".to_string(),
            messages: 10_000,
            media: Media::Total {
                bytes: 64 * MIB,
                min: 64 * 1024,
                max: 8 * MIB,
                compressible_percent: 20,
            },
        }
    }

    /// The standard `full` workload: 1M messages and 1 GiB of media.
    pub fn full() -> Self {
        Workload {
            messages: 1_000_000,
            media: Media::Total {
                bytes: 1024 * MIB,
                min: 64 * 1024,
                max: 8 * MIB,
                compressible_percent: 20,
            },
            ..Workload::quick()
        }
    }

    /// Number of members: one per 50 messages, between 5 and 500.
    pub fn members(&self) -> u64 {
        (self.messages / 50).clamp(5, 500)
    }

    fn rng(&self, stream: u64) -> Rng {
        Rng::new(self.seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// The media objects, sorted by key (the order a bundle wants them in).
    pub fn media_objects(&self) -> Vec<MediaObject> {
        let mut rng = self.rng(1);
        let mut out = Vec::new();
        let mut push = |rng: &mut Rng, size: u64, compressible: bool| {
            let ext = if compressible { "txt" } else { "bin" };
            out.push(MediaObject {
                key: format!("att/{:06}.{ext}", out.len() + 1),
                size,
                compressible,
                seed: rng.next_u64(),
            });
        };
        let log_uniform = |rng: &mut Rng, min: u64, max: u64| {
            let (lo, hi) = (min.max(1) as f64, max.max(min).max(1) as f64);
            ((lo * (hi / lo).powf(rng.unit())) as u64).clamp(min, max.max(min))
        };
        match &self.media {
            Media::Sizes(sizes) => {
                for (i, &size) in sizes.iter().enumerate() {
                    push(&mut rng, size, i % 5 == 4);
                }
            }
            &Media::Count {
                count,
                min,
                max,
                compressible_percent,
            } => {
                for _ in 0..count {
                    let size = log_uniform(&mut rng, min, max);
                    let c = rng.below(100) < u64::from(compressible_percent);
                    push(&mut rng, size, c);
                }
            }
            &Media::Total {
                bytes,
                min,
                max,
                compressible_percent,
            } => {
                let mut total = 0u64;
                while total < bytes {
                    let mut size = log_uniform(&mut rng, min, max);
                    let left = bytes - total;
                    if left < size.saturating_add(min) {
                        size = left;
                    }
                    let c = rng.below(100) < u64::from(compressible_percent);
                    push(&mut rng, size, c);
                    total += size;
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The rows of `table` (one of [`TABLES`]), each a `Vec<CopyValue>` in the table's column
    /// order, generated lazily. `None` for an unknown table.
    pub fn rows(&self, table: &str) -> Option<Box<dyn Iterator<Item = Vec<CopyValue>> + Send>> {
        let room = self.room_id.clone();
        let text = move || CopyValue::Text(room.clone());
        let members = self.members();
        let messages = self.messages;
        Some(match table {
            "rooms" => Box::new(std::iter::once(vec![
                text(),
                CopyValue::Text("Mesh demo room 🌐".into()),
                CopyValue::Text("Generated for tests\tand benchmarks\\n".into()),
                CopyValue::Timestamptz(timestamp(0, None)),
            ])),
            "members" => {
                let mut rng = self.rng(2);
                Box::new((1..=members).map(move |i| {
                    let display = if rng.chance(0.1) {
                        CopyValue::Null
                    } else {
                        let mut s = String::new();
                        let len = 3 + rng.below(20) as usize;
                        body_text(&mut rng, len, &mut s);
                        CopyValue::Text(s)
                    };
                    let role = match i {
                        1 => "owner",
                        _ if rng.chance(0.05) => "admin",
                        _ => "member",
                    };
                    vec![
                        CopyValue::Int8(i as i64),
                        text(),
                        CopyValue::Text(format!("user{i:04}")),
                        display,
                        CopyValue::Timestamptz(timestamp(i, None)),
                        CopyValue::Text(role.into()),
                    ]
                }))
            }
            "messages" => {
                let mut rng = self.rng(3);
                Box::new((1..=messages).map(move |i| {
                    let body = if rng.chance(0.03) {
                        CopyValue::Null
                    } else {
                        // 20–2000 characters, skewed short.
                        let chars = (20.0 * 100f64.powf(rng.unit().powi(3))) as usize;
                        let mut s = String::new();
                        body_text(&mut rng, chars.clamp(20, 2000), &mut s);
                        CopyValue::Text(s)
                    };
                    let reply = if i > 1 && rng.chance(0.3) {
                        CopyValue::Int8(1 + rng.below(i - 1) as i64)
                    } else {
                        CopyValue::Null
                    };
                    let micros = rng.chance(0.5).then(|| rng.below(1_000_000) as u32);
                    vec![
                        CopyValue::Int8(i as i64),
                        text(),
                        CopyValue::Int8(1 + rng.below(members) as i64),
                        body,
                        reply,
                        CopyValue::Timestamptz(timestamp(1000 + i * 7, micros)),
                        CopyValue::Bool(rng.chance(0.05)),
                    ]
                }))
            }
            "attachments" => {
                let mut rng = self.rng(4);
                let objects = self.media_objects();
                Box::new(objects.into_iter().enumerate().map(move |(k, m)| {
                    let message = 1 + rng.below(messages.max(1)) as i64;
                    let url = if rng.chance(0.25) {
                        CopyValue::Null
                    } else {
                        CopyValue::Text(format!("https://mesh.example/media/{}", m.key))
                    };
                    let name = format!(
                        "{} {k}.{}",
                        if m.compressible { "notes" } else { "photo ☀" },
                        if m.compressible { "txt" } else { "bin" }
                    );
                    vec![
                        CopyValue::Int8(k as i64 + 1),
                        text(),
                        CopyValue::Int8(message),
                        CopyValue::Text(m.key.clone()),
                        CopyValue::Text(name),
                        CopyValue::Text(m.content_type().into()),
                        CopyValue::Int8(m.size as i64),
                        url,
                    ]
                }))
            }
            "reactions" => {
                let mut rng = self.rng(5);
                Box::new((1..=messages).flat_map(move |i| {
                    let n = if rng.chance(0.4) { 1 + rng.below(3) } else { 0 };
                    let first = rng.below(members);
                    (0..n)
                        .map(|j| {
                            // Distinct members per message keep the composite key unique.
                            let member = (first + j) % members + 1;
                            let emoji = EMOJI[rng.below(EMOJI.len() as u64) as usize];
                            vec![
                                CopyValue::Int8(i as i64),
                                text(),
                                CopyValue::Int8(member as i64),
                                CopyValue::Text(emoji.into()),
                            ]
                        })
                        .collect::<Vec<_>>()
                }))
            }
            _ => return None,
        })
    }

    /// The room's rows as a [`DumpSource`] for `ShardStore::restore`: every table of [`TABLES`]
    /// in order, rows in COPY text (encoded as [`DbSqlWriter::write_row`] does), in chunks of
    /// about 64 KiB, generated as they are read. This is how a host seeds a pooled room:
    ///
    /// ```text
    /// rs.shards.restore(&Scope::Pooled(room), &schema(), &mut w.dump_source(),
    ///     &IdRemap { ids: RemapPolicy::OnCollision, media_keys: None }).await?;
    /// ```
    ///
    /// Ids start at 1 in every workload, so a second room seeded into the same shared tables
    /// collides; [`RemapPolicy::OnCollision`](roomshard_core::RemapPolicy::OnCollision) gives
    /// those rows new ids. Media keys do not embed the room id, so they need no rewrite.
    pub fn dump_source(&self) -> WorkloadSource {
        WorkloadSource {
            workload: self.clone(),
            next_table: 0,
            rows: None,
        }
    }

    /// Seeds the room's rows into `shards`' pooled scope, as [`dump_source`](Self::dump_source)
    /// describes (ids remapped on collision).
    ///
    /// # Errors
    /// The shard store's.
    pub async fn seed_pooled(
        &self,
        shards: &dyn roomshard_core::ShardStore,
        schema: &RoomSchema,
    ) -> roomshard_core::Result<roomshard_core::RestoreOutcome> {
        let room = roomshard_core::RoomId::new(self.room_id.as_str())?;
        shards
            .restore(
                &roomshard_core::Scope::Pooled(room),
                schema,
                &mut self.dump_source(),
                &roomshard_core::IdRemap {
                    ids: roomshard_core::RemapPolicy::OnCollision,
                    media_keys: None,
                },
            )
            .await
    }

    /// Writes the room's `db.sql` to `out`, table by table. Returns the row count per table (in
    /// [`TABLES`] order).
    pub fn write_db_sql<W: Write>(&self, out: W) -> Result<Vec<u64>, BundleError> {
        let schema = schema();
        let mut sql = DbSqlWriter::new(out, &self.room_id, schema.tables())?;
        for name in TABLES {
            sql.begin_table(name)?;
            for row in self.rows(name).into_iter().flatten() {
                sql.write_row(&row)?;
            }
        }
        let (mut out, counts) = sql.finish()?;
        out.flush()?;
        Ok(counts)
    }

    /// The bundle metadata for this room, exported at `created_at` (`YYYY-MM-DDTHH:MM:SSZ`).
    pub fn bundle_meta(&self, created_at: &str) -> BundleMeta {
        BundleMeta {
            room: RoomInfo {
                id: self.room_id.clone(),
                name: Some("Mesh demo room".into()),
            },
            source_instance: "mesh.example".into(),
            schema_version: SCHEMA_VERSION.into(),
            created_at: created_at.into(),
            tables: schema().tables().to_vec(),
            exporter: None,
        }
    }

    /// Writes a signed `room_<id>.tar.zst` to `out`: `db.sql` is first spooled to `spool` (a
    /// temporary file, or a `Cursor<Vec<u8>>` for small rooms) because the bundle needs its size
    /// up front; media are streamed.
    pub fn write_bundle<W: Write, S: Read + Write + Seek>(
        &self,
        out: W,
        mut spool: S,
        signer: &dyn Signer,
        created_at: &str,
    ) -> Result<Finished<W>, BundleError> {
        let counts = self.write_db_sql(&mut spool)?;
        let size = spool.stream_position()?;
        spool.seek(SeekFrom::Start(0))?;
        let mut writer =
            BundleWriter::new(out, self.bundle_meta(created_at), WriterOptions::default())?;
        writer.add_db_sql(size, io::BufReader::new(&mut spool))?;
        for m in self.media_objects() {
            writer.add_media(&m.key, m.size, m.reader())?;
        }
        writer.finish(&counts, signer)
    }
}

/// Rows of a [`Workload`] as a [`DumpSource`] (see [`Workload::dump_source`]).
pub struct WorkloadSource {
    workload: Workload,
    next_table: usize,
    rows: Option<Box<dyn Iterator<Item = Vec<CopyValue>> + Send>>,
}

impl std::fmt::Debug for WorkloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadSource")
            .field("room", &self.workload.room_id)
            .field("next_table", &self.next_table)
            .finish_non_exhaustive()
    }
}

/// Rows per [`WorkloadSource`] chunk stop once the chunk reaches this many bytes.
const SOURCE_CHUNK_BYTES: usize = 64 * 1024;

#[roomshard_core::async_trait]
impl DumpSource for WorkloadSource {
    async fn next_table(&mut self) -> roomshard_core::Result<Option<String>> {
        let Some(name) = TABLES.get(self.next_table) else {
            self.rows = None;
            return Ok(None);
        };
        self.next_table += 1;
        self.rows = self.workload.rows(name);
        Ok(Some((*name).to_string()))
    }

    async fn next_rows(&mut self) -> roomshard_core::Result<Option<Bytes>> {
        let Some(rows) = self.rows.as_mut() else {
            return Ok(None);
        };
        let mut chunk = String::with_capacity(SOURCE_CHUNK_BYTES + 4096);
        while chunk.len() < SOURCE_CHUNK_BYTES {
            match rows.next() {
                Some(row) => roomshard_bundle::encode_copy_row(&row, &mut chunk)
                    .map_err(|e| roomshard_core::Error::invalid("generated row", e.to_string()))?,
                None => {
                    self.rows = None;
                    break;
                }
            }
        }
        Ok((!chunk.is_empty()).then(|| Bytes::from(chunk)))
    }
}

/// A [`MediaReader`] as a stream of 64 KiB chunks (see [`MediaObject::body`]).
struct MediaChunks {
    reader: MediaReader,
}

impl Stream for MediaChunks {
    type Item = roomshard_core::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let want = self.reader.left.min(64 * 1024) as usize;
        if want == 0 {
            return std::task::Poll::Ready(None);
        }
        let mut buf = vec![0u8; want];
        let result = self
            .reader
            .read_exact(&mut buf)
            .map(|()| Bytes::from(buf))
            .map_err(|e| roomshard_core::Error::corrupt("generated media", e.to_string()));
        std::task::Poll::Ready(Some(result))
    }
}

/// Streams a media object's deterministic content.
#[derive(Debug)]
pub struct MediaReader {
    rng: Rng,
    left: u64,
    compressible: bool,
    text: String,
    text_pos: usize,
}

impl Read for MediaReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let buf = &mut buf[..n];
        if self.compressible {
            let mut done = 0;
            while done < n {
                if self.text_pos == self.text.len() {
                    self.text.clear();
                    body_text(&mut self.rng, 4000, &mut self.text);
                    self.text.push('\n');
                    self.text_pos = 0;
                }
                let k = (self.text.len() - self.text_pos).min(n - done);
                buf[done..done + k]
                    .copy_from_slice(&self.text.as_bytes()[self.text_pos..self.text_pos + k]);
                self.text_pos += k;
                done += k;
            }
        } else {
            self.rng.fill(buf);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

const EMOJI: [&str; 8] = ["👍", "❤️", "😂", "🎉", "🙏", "👀", "🔥", "🇫🇷"];

const WORDS: [&str; 24] = [
    "the",
    "room",
    "shard",
    "hello",
    "bonjour",
    "naïve",
    "café",
    "Grüße",
    "日本語",
    "中文",
    "Ελληνικά",
    "русский",
    "עברית",
    "مرحبا",
    "🚀",
    "👍🏽",
    "tab\there",
    "line\nbreak",
    "back\\slash",
    "quote'\"",
    "CR\r",
    "∑∞",
    "ok",
    "meeting",
];

/// Appends `chars` characters (exactly) of word salad with unicode, emoji, tabs, newlines and
/// backslashes to `out` (after clearing it).
fn body_text(rng: &mut Rng, chars: usize, out: &mut String) {
    out.clear();
    let mut n = 0;
    while n < chars {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        for c in w.chars().chain(std::iter::once(' ')) {
            if n == chars {
                break;
            }
            out.push(c);
            n += 1;
        }
    }
}

/// `2026-01-01 00:00:00+00` plus `secs`, optionally with microseconds.
fn timestamp(secs: u64, micros: Option<u32>) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 20_454 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    match micros {
        Some(us) => format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{us:06}+00"),
        None => format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}+00"),
    }
}

/// xoshiro256** seeded by SplitMix64: small, fast, and fixed here so output never changes with a
/// dependency's version.
#[derive(Clone, Debug)]
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`n` > 0; slight modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
