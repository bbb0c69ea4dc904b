//! End-to-end tests of Mesh-Lite (`roomshard lite serve`, `roomshard_cli::lite`): a real home in
//! a temp dir with the Mesh schema, seeded rooms (a hand-written pooled room with an XSS body and
//! a real PNG, a generated 450-message room, a dedicated room that gets sealed), the router served
//! on 127.0.0.1:0 in-process, and plain HTTP/1.0 requests over a `TcpStream`.
//!
//! `lite_in_chromium` also drives headless Chromium through `tests/node/lite-chromium.mjs`
//! (playwright-core): it fails, never skips, when Chromium or the node modules are missing (run
//! `.ci/install.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use roomshard::home::{Home, HomeOptions};
use roomshard_core::traits::PutOptions;
use roomshard_core::{
    Bytes, DumpSource, IdRemap, KeySpec, ObjectBody, ObjectKey, Placement, PlacementChange,
    PlacementState, Profile, ProviderUrl, RemapPolicy, Result, RoomId, Scope, async_trait,
};
use roomshard_example_mesh::{Media, Workload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LITE_ROOM: &str = "lite-room";
const BIG_ROOM: &str = "mesh-demo";
const SEALED_ROOM: &str = "sealed-room";
const XSS_BODY: &str = "<script>alert(\"xss\")</script> & <b>not bold</b>";

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A [`DumpSource`] over hand-written COPY text, one chunk per table.
struct TextSource {
    tables: std::vec::IntoIter<(String, String)>,
    current: Option<String>,
}

impl TextSource {
    fn new(tables: Vec<(&str, String)>) -> Self {
        TextSource {
            tables: tables
                .into_iter()
                .map(|(n, t)| (n.to_string(), t))
                .collect::<Vec<_>>()
                .into_iter(),
            current: None,
        }
    }
}

#[async_trait]
impl DumpSource for TextSource {
    async fn next_table(&mut self) -> Result<Option<String>> {
        Ok(self.tables.next().map(|(name, rows)| {
            self.current = Some(rows);
            name
        }))
    }
    async fn next_rows(&mut self) -> Result<Option<Bytes>> {
        Ok(self
            .current
            .take()
            .filter(|r| !r.is_empty())
            .map(Bytes::from))
    }
}

/// The rows of a small room (`id_base` keeps its ids clear of other rooms in shared tables).
fn small_room_rows(room: &str, id_base: i64, name: &str) -> TextSource {
    let b = id_base;
    let rooms = format!(
        "{room}\t{name}\tTopic with <i>markup</i> & an ampersand\t2026-01-01 00:00:00+00\n"
    );
    let members = format!(
        "{}\t{room}\talice\tAlice <Admin>\t2026-01-01 00:00:01+00\towner\n\
         {}\t{room}\tbob\t\\N\t2026-01-01 00:00:02+00\tmember\n",
        b + 1,
        b + 2
    );
    let messages = format!(
        "{m1}\t{room}\t{a}\tHello from the lite room\t\\N\t2026-01-01 00:01:00+00\tf\n\
         {m2}\t{room}\t{bob}\t{XSS_BODY}\t{m1}\t2026-01-01 00:02:00+00\tt\n\
         {m3}\t{room}\t{a}\tHere is a picture\t\\N\t2026-01-01 00:03:00+00\tf\n\
         {m4}\t{room}\t{bob}\tAnd some notes\t\\N\t2026-01-01 00:04:00+00\tf\n\
         {m5}\t{room}\t{a}\t\\N\t\\N\t2026-01-01 00:05:00+00\tf\n",
        m1 = b + 1,
        m2 = b + 2,
        m3 = b + 3,
        m4 = b + 4,
        m5 = b + 5,
        a = b + 1,
        bob = b + 2,
    );
    let png_len = png().len();
    let attachments = format!(
        "{}\t{room}\t{}\tatt/pixel.png\tpixel.png\timage/png\t{png_len}\t\\N\n\
         {}\t{room}\t{}\tatt/notes one.txt\tnotes one.txt\ttext/plain\t{}\t\\N\n",
        b + 1,
        b + 3,
        b + 2,
        b + 4,
        NOTES.len()
    );
    let reactions = format!("{}\t{room}\t{}\t👍\n", b + 1, b + 2);
    TextSource::new(vec![
        ("rooms", rooms),
        ("members", members),
        ("messages", messages),
        ("attachments", attachments),
        ("reactions", reactions),
    ])
}

const NOTES: &[u8] = b"Meeting notes: bring <coffee> & cake.\n";

/// A real 24x24 RGB PNG (a colour gradient with a dark cross), encoded here: stored deflate
/// blocks, CRC-32 and Adler-32 computed in the test.
fn png() -> Vec<u8> {
    const W: u32 = 24;
    let mut raw = Vec::new();
    for y in 0..W {
        raw.push(0); // filter: none
        for x in 0..W {
            if x == y || x + y == W - 1 {
                raw.extend_from_slice(&[20, 20, 20]);
            } else {
                raw.extend_from_slice(&[(x * 10) as u8, (y * 10) as u8, 200]);
            }
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in chunks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == chunks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&W.to_be_bytes());
    ihdr.extend_from_slice(&W.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, no filter, no interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", zlib), (b"IEND", Vec::new())] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(&data);
        out.extend_from_slice(&crc_input);
        out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

async fn put(home: &Home, scope: &Scope, key: &str, bytes: Vec<u8>, ct: Option<&str>) {
    home.roomshard
        .media
        .put(
            scope,
            &ObjectKey::new(key).unwrap(),
            ObjectBody::from_bytes(bytes),
            &PutOptions {
                content_type: ct.map(str::to_string),
            },
        )
        .await
        .unwrap();
}

/// A served home: the temp dir (kept alive), the home, the server's address.
struct Served {
    _dir: tempfile::TempDir,
    home: Home,
    addr: SocketAddr,
}

/// Seeds a home with the pooled hand-written room, the generated 450-message room, and a
/// dedicated (sovereign) room, and serves the router on 127.0.0.1:0.
async fn served() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open(dir.path(), roomshard_example_mesh::schema(), home_options())
        .await
        .unwrap();
    let rs = &home.roomshard;

    // 1. Pooled, hand-written: XSS body, reply, deleted message, PNG + text attachment.
    let lite = Scope::Pooled(RoomId::new(LITE_ROOM).unwrap());
    rs.shards
        .restore(
            &lite,
            &rs.schema,
            &mut small_room_rows(LITE_ROOM, 900_000, "Lite <b>room</b>"),
            &IdRemap::default(),
        )
        .await
        .unwrap();
    put(&home, &lite, "att/pixel.png", png(), None).await;
    put(&home, &lite, "att/notes one.txt", NOTES.to_vec(), None).await;

    // 2. Pooled, generated by the Mesh workload: more messages than a page shows.
    let workload = Workload {
        seed: 7,
        room_id: BIG_ROOM.to_string(),
        messages: 450,
        media: Media::Sizes(vec![3_000, 200_000]),
    };
    let big = Scope::Pooled(RoomId::new(BIG_ROOM).unwrap());
    rs.shards
        .restore(
            &big,
            &rs.schema,
            &mut workload.dump_source(),
            &IdRemap {
                ids: RemapPolicy::OnCollision,
                media_keys: None,
            },
        )
        .await
        .unwrap();
    for m in workload.media_objects() {
        let mut bytes = Vec::new();
        m.reader().read_to_end(&mut bytes).unwrap();
        put(&home, &big, &m.key, bytes, None).await;
    }

    // 3. Dedicated and sovereign: own key (granted), bucket and shard, then a placement.
    let room = RoomId::new(SEALED_ROOM).unwrap();
    rs.keys
        .ensure_room_key(&room, &KeySpec::default())
        .await
        .unwrap();
    rs.keys.grant(&room, &rs.config.grantee).await.unwrap();
    let at = rs.locate(&room).unwrap();
    let bucket = rs
        .media
        .ensure_bucket(&room, &at, &rs.config.bucket_spec)
        .await
        .unwrap();
    rs.shards
        .ensure_shard(&room, &at, &rs.schema)
        .await
        .unwrap();
    let dedicated = Scope::Dedicated(room.clone(), at.clone());
    rs.shards
        .restore(
            &dedicated,
            &rs.schema,
            &mut small_room_rows(SEALED_ROOM, 0, "Sovereign room"),
            &IdRemap::default(),
        )
        .await
        .unwrap();
    put(&home, &dedicated, "att/pixel.png", png(), Some("image/png")).await;
    put(&home, &dedicated, "att/notes one.txt", NOTES.to_vec(), None).await;
    let placement = Placement {
        room: room.clone(),
        is_sharded: true,
        shard_url: at.shard.clone(),
        media_bucket: Some(bucket.name),
        kms_key_ref: None,
        profile: Profile::Sovereign,
        region: None,
        adopted: Default::default(),
        providers: Default::default(),
        state: PlacementState::Sovereign,
        version: 4,
    };
    rs.control
        .change_placement(PlacementChange::Insert(&placement), &test_entry(&room))
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = roomshard_cli::lite::router(home.clone()).unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Served {
        _dir: dir,
        home,
        addr,
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.0 client (no chunked encoding: an HTTP/1.0 response ends at close)

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

async fn get(addr: SocketAddr, path_and_query: &str) -> Resp {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("response within 30 s")
        .unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// The `src`/`href` values on a page that point at `/media/`, HTML-unescaped.
fn media_urls(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in page.match_indices(attr) {
            let rest = &page[i + attr.len()..];
            let value = &rest[..rest.find('"').unwrap()];
            let value = value.replace("&amp;", "&");
            if value.starts_with("/media/") && !out.contains(&value) {
                out.push(value);
            }
        }
    }
    out
}

fn url_for(urls: &[String], needle: &str) -> String {
    urls.iter()
        .find(|u| u.contains(needle))
        .unwrap_or_else(|| panic!("no media URL containing {needle:?} in {urls:?}"))
        .clone()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn index_lists_rooms_and_healthz_answers() {
    let s = served().await;
    let health = get(s.addr, "/healthz").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));

    let index = get(s.addr, "/").await;
    assert_eq!(index.status, 200);
    assert!(
        index
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let page = index.text();
    for room in [LITE_ROOM, BIG_ROOM, SEALED_ROOM] {
        assert!(
            page.contains(&format!("href=\"/rooms/{room}\"")),
            "{room} listed: {page}"
        );
    }
    assert!(page.contains("sovereign"), "{page}");
    assert!(
        page.contains("Lite &lt;b&gt;room&lt;/b&gt;"),
        "name escaped: {page}"
    );
    assert!(!page.contains("<b>room</b>"));
}

#[tokio::test]
async fn room_page_lists_messages_in_order_and_escapes_everything() {
    let s = served().await;
    let r = get(s.addr, &format!("/rooms/{LITE_ROOM}")).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    let page = r.text();
    let order: Vec<usize> = [
        "Hello from the lite room",
        "&lt;script&gt;alert(&quot;xss&quot;)&lt;/script&gt; &amp; &lt;b&gt;not bold&lt;/b&gt;",
        "Here is a picture",
        "And some notes",
        "(deleted)",
    ]
    .iter()
    .map(|t| {
        page.find(t)
            .unwrap_or_else(|| panic!("{t:?} on the page: {page}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {order:?}");
    // Nothing the room's data says becomes markup.
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<b>not bold"), "{page}");
    assert!(!page.contains("<i>markup"), "{page}");
    assert!(page.contains("Topic with &lt;i&gt;markup&lt;/i&gt; &amp; an ampersand"));
    assert!(page.contains("Lite &lt;b&gt;room&lt;/b&gt;"));
    // Authors by display name (falling back to the user name), the reply, the edit, reactions.
    assert!(page.contains("Alice &lt;Admin&gt;"), "{page}");
    assert!(page.contains(">bob<"), "{page}");
    assert!(
        page.contains("reply to <a href=\"#m900001\">#900001</a>"),
        "{page}"
    );
    assert!(page.contains("edited"));
    assert!(page.contains("👍 1"));
    // The image inline, the text file as a link, both signed.
    assert!(
        page.contains("<img src=\"/media/shared/lite-room/att/pixel.png?exp="),
        "{page}"
    );
    assert!(
        page.contains("/media/shared/lite-room/att/notes%20one.txt?exp="),
        "{page}"
    );
    assert!(
        page.contains("notes one.txt (text/plain, 38 bytes)"),
        "{page}"
    );
}

#[tokio::test]
async fn signed_urls_return_the_exact_bytes_with_type_and_length() {
    let s = served().await;
    let page = get(s.addr, &format!("/rooms/{LITE_ROOM}")).await.text();
    let urls = media_urls(&page);

    let img = get(s.addr, &url_for(&urls, "pixel.png")).await;
    assert_eq!(img.status, 200);
    assert_eq!(img.body, png());
    assert_eq!(img.header("content-type"), Some("image/png"));
    assert_eq!(
        img.header("content-length"),
        Some(png().len().to_string().as_str())
    );
    assert_eq!(img.header("x-content-type-options"), Some("nosniff"));

    let notes = get(s.addr, &url_for(&urls, "notes%20one.txt")).await;
    assert_eq!(notes.status, 200);
    assert_eq!(notes.body, NOTES);
    assert_eq!(
        notes.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    // A generated 200 kB object of the big room, streamed through.
    let workload_object = ObjectKey::new("att/000002.bin").unwrap();
    let signed = s
        .home
        .roomshard
        .media
        .presign_get(
            &Scope::Pooled(RoomId::new(BIG_ROOM).unwrap()),
            &workload_object,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let big = get(s.addr, signed.url()).await;
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 200_000);
    assert_eq!(big.header("content-length"), Some("200000"));
    assert_eq!(big.header("content-type"), Some("application/octet-stream"));

    // The dedicated (encrypted) room's image, decrypted on the way out.
    let page = get(s.addr, &format!("/rooms/{SEALED_ROOM}")).await;
    assert_eq!(page.status, 200);
    let url = url_for(
        &media_urls(&page.text()),
        "/media/rooms/sealed-room/att/pixel.png",
    );
    let img = get(s.addr, &url).await;
    assert_eq!((img.status, img.body == png()), (200, true));
    assert_eq!(img.header("content-type"), Some("image/png"));
}

#[tokio::test]
async fn tampered_and_expired_urls_are_refused_with_403() {
    let s = served().await;
    let page = get(s.addr, &format!("/rooms/{LITE_ROOM}")).await.text();
    let url = url_for(&media_urls(&page), "pixel.png");
    let (path, query) = url.split_once('?').unwrap();
    let exp: u64 = query
        .split('&')
        .find_map(|p| p.strip_prefix("exp="))
        .unwrap()
        .parse()
        .unwrap();
    let sig = query
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .unwrap();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    let tampered = [
        format!("{path}?exp={exp}&sig={flipped}"),
        format!("{}?{query}", path.replace("pixel.png", "notes%20one.txt")),
        format!("{}?{query}", path.replace("lite-room", BIG_ROOM)),
        format!("{}?{query}", path.replace("/shared/", "/rooms/")),
        format!("{path}?exp={}&sig={sig}", exp + 3600),
        format!("{path}?exp={exp}"),
        path.to_string(),
        format!("{url}&extra=1"),
    ];
    for bad in &tampered {
        let r = get(s.addr, bad).await;
        assert_eq!(r.status, 403, "{bad}: {}", r.text());
        assert!(
            r.text().contains("signed URL refused"),
            "{bad}: {}",
            r.text()
        );
        assert!(r.body.len() < 300, "a short plain reason, not the object");
    }
    let r = get(s.addr, &tampered[0]).await;
    assert!(
        r.text().contains("signature does not match"),
        "{}",
        r.text()
    );

    // Expired: a 1 s URL, used after it lapsed.
    let signed = s
        .home
        .roomshard
        .media
        .presign_get(
            &Scope::Pooled(RoomId::new(LITE_ROOM).unwrap()),
            &ObjectKey::new("att/pixel.png").unwrap(),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(s.addr, signed.url()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("expired"), "{}", r.text());

    // A valid signature for an object that is not there: 404.
    let missing = s
        .home
        .roomshard
        .media
        .presign_get(
            &Scope::Pooled(RoomId::new(LITE_ROOM).unwrap()),
            &ObjectKey::new("att/gone.png").unwrap(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(get(s.addr, missing.url()).await.status, 404);
}

#[tokio::test]
async fn sealed_room_answers_423_for_page_and_media() {
    let s = served().await;
    let rs = &s.home.roomshard;
    let room = RoomId::new(SEALED_ROOM).unwrap();
    let before = get(s.addr, &format!("/rooms/{SEALED_ROOM}")).await;
    assert_eq!(before.status, 200);
    assert!(before.text().contains("Sovereign room"));
    let url = url_for(&media_urls(&before.text()), "pixel.png");
    assert_eq!(get(s.addr, &url).await.status, 200);

    // Revoke Mesh: the placement still says sovereign, but nothing decrypts any more.
    rs.keys.revoke(&room, &rs.config.grantee).await.unwrap();
    let r = get(s.addr, &format!("/rooms/{SEALED_ROOM}")).await;
    assert_eq!(r.status, 423, "{}", r.text());
    assert!(r.text().contains("sealed"), "{}", r.text());
    assert!(!r.text().contains("Hello from the lite room"));
    let media = get(s.addr, &url).await;
    assert_eq!(media.status, 423, "{}", media.text());
    assert!(media.text().contains("sealed"));

    // And once the placement says sealed too, without touching the shard.
    let mut placement = rs.control.placement(&room).await.unwrap().unwrap();
    let version = placement.version;
    placement.transition(PlacementState::Sealed).unwrap();
    let change = PlacementChange::Update {
        next: &placement,
        expected_version: version,
    };
    rs.control
        .change_placement(change, &test_entry(&room))
        .await
        .unwrap();
    let r = get(s.addr, &format!("/rooms/{SEALED_ROOM}")).await;
    assert_eq!(r.status, 423);
    let index = get(s.addr, "/").await.text();
    assert!(index.contains("sealed"), "{index}");

    // Other rooms are unaffected.
    assert_eq!(
        get(s.addr, &format!("/rooms/{LITE_ROOM}")).await.status,
        200
    );
}

#[tokio::test]
async fn unknown_room_is_404_and_invalid_room_id_is_400() {
    let s = served().await;
    let r = get(s.addr, "/rooms/no-such-room").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("no-such-room"));
    let r = get(s.addr, "/rooms/Bad%20Room%3Cscript%3E").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(!r.text().contains("<script"), "{}", r.text());
    assert_eq!(get(s.addr, "/nowhere").await.status, 404);
    assert_eq!(
        get(s.addr, &format!("/rooms/{LITE_ROOM}?before=abc"))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn big_room_is_paginated() {
    let s = served().await;
    let r = get(s.addr, &format!("/rooms/{BIG_ROOM}")).await;
    assert_eq!(r.status, 200);
    let page = r.text();
    assert_eq!(page.matches("<li class=\"message\"").count(), 200);
    assert!(page.contains("450 messages, showing 200"), "{page}");
    assert!(page.contains("id=\"m450\"") && page.contains("id=\"m251\""));
    assert!(!page.contains("id=\"m250\""));
    assert!(
        page.contains("href=\"/rooms/mesh-demo?before=251\""),
        "{page}"
    );

    let older = get(s.addr, &format!("/rooms/{BIG_ROOM}?before=251"))
        .await
        .text();
    assert_eq!(older.matches("<li class=\"message\"").count(), 200);
    assert!(older.contains("id=\"m51\"") && older.contains("id=\"m250\""));
    let oldest = get(s.addr, &format!("/rooms/{BIG_ROOM}?before=51"))
        .await
        .text();
    assert_eq!(oldest.matches("<li class=\"message\"").count(), 50);
    assert!(!oldest.contains("older messages"));
}

/// The repository root (two levels above this crate).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lite_in_chromium() {
    let root = repo_root();
    let node_dir = root.join("tests/node");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run .ci/install.sh (installs Debian's chromium)"
    );
    assert!(
        node_dir
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "tests/node/node_modules/playwright-core is missing: run .ci/install.sh (npm ci in tests/node)"
    );
    let s = served().await;
    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let url = format!("http://{}/rooms/{LITE_ROOM}", s.addr);
    let expect = serde_json::json!([
        "Lite <b>room</b>",
        "Hello from the lite room",
        XSS_BODY,
        "Here is a picture",
        "And some notes",
        "Alice <Admin>",
    ]);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .args(["--test", "lite-chromium.mjs"])
            .current_dir(&node_dir)
            .env("LITE_URL", &url)
            .env("LITE_EXPECT_TEXT", expect.to_string())
            .env("ARTIFACT_DIR", &artifacts)
            .output()
            .expect("node is on PATH (run .ci/install.sh)")
    })
    .await
    .unwrap();
    let report = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "node --test failed: {report}");
    assert!(
        report.contains("# pass 1"),
        "the browser test ran: {report}"
    );
    assert!(root.join("target/test-artifacts/lite-room.png").exists());
}

#[tokio::test]
async fn serve_listens_on_the_given_address() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open(dir.path(), roomshard_example_mesh::schema(), home_options())
        .await
        .unwrap();
    // A free port: bind, note it, release it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = tokio::spawn(roomshard_cli::lite::serve(home, addr));
    let mut answered = None;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            answered = Some(get(addr, "/healthz").await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = answered.expect("serve() listens within 5 s");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let empty = get(addr, "/").await;
    assert!(empty.text().contains("No rooms in this home yet"));
    assert!(!server.is_finished());
    server.abort();
}

/// The home's providers: the embedded default, or with `ROOMSHARD_TEST_BACKEND=postgres` a fresh
/// database of this process's PostgreSQL 15 cluster for both the control plane and the shards
/// (scripts/test.sh runs these tests both ways), so the pages are shown to read either engine.
fn home_options() -> HomeOptions {
    let mut options = HomeOptions::default();
    match std::env::var("ROOMSHARD_TEST_BACKEND").as_deref() {
        Ok("postgres") => {
            let cluster = roomshard_interop_tests::pg::Cluster::shared();
            let url = cluster.url(&cluster.fresh_database("lite"));
            options.providers.control = Some(ProviderUrl::parse(&url, "--control").unwrap());
            options.providers.shards = Some(ProviderUrl::parse(&url, "--shards").unwrap());
        }
        Ok("sqlite") | Err(_) => {}
        Ok(other) => panic!("ROOMSHARD_TEST_BACKEND={other:?}: expected sqlite or postgres"),
    }
    options
}

/// The audit entry of a placement change a test makes to set the scene.
fn test_entry(room: &RoomId) -> roomshard_core::AuditEntry {
    roomshard_core::AuditEntry {
        at: roomshard::now_rfc3339(),
        actor: "test".into(),
        action: "test.placed".into(),
        room: Some(room.clone()),
        detail: serde_json::json!({}),
    }
}
