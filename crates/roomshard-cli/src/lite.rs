//! `roomshard lite serve`: **Mesh-Lite**, a read-only web viewer of a home's rooms.
//!
//! Server-rendered HTML, no JavaScript, every value HTML-escaped:
//!
//! - `GET /` lists rooms: every placement the control plane records (id, state, profile,
//!   sharded?), plus pooled rooms of the shared `rooms` table that have none yet.
//! - `GET /rooms/{room}` shows the room's name and topic, its latest messages (at most
//!   [`PAGE_MESSAGES`], older ones through `?before=<message id>`) with author, body, time, reply
//!   and reaction marks, and their attachments: images inline, other files as links, all through
//!   signed URLs that expire after [`MEDIA_URL_TTL`]. A sealed room answers 423 with a notice, an
//!   unknown room 404, an invalid room id 400.
//! - `GET /media/…` serves an object named by a signed URL (checked with the home's
//!   `LocalMediaStore::verify_signed_url`): 403 with the reason for a tampered or expired URL,
//!   423 for a sealed room, 404 for a missing object; the body is streamed from the media store
//!   (with its Content-Type and Content-Length), never held whole in memory.
//! - `GET /healthz` answers `ok`.
//!
//! The tables read are the Mesh reference schema's (`rooms`, `members`, `messages`,
//! `attachments`, `reactions`; see `examples/mesh`), in the room's current scope: the shared
//! tables (filtered by `room_id`) for a pooled room, its own shard for a dedicated one. A room
//! page reads them through the runtime router (`roomshard::router`, on `SqlitePools`), as a
//! Mesh host would: bounded pools per file, sealed rooms refused there.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use roomshard::home::{Home, HomeShards};
use roomshard::router::{Routed, Router as RoomRouter, RouterConfig};
use roomshard_core::Identifier;
use roomshard_core::{Error, MediaStore, ObjectKey, PlacementState, Result, RoomId, Scope};
use roomshard_postgres::PgPools;
use roomshard_sqlite::SqlitePools;
use serde::Deserialize;
use sqlx::{AssertSqlSafe, PgConnection, Row, SqliteConnection};

/// Most messages one room page shows (the latest ones; older pages via `?before=`).
pub const PAGE_MESSAGES: i64 = 200;
/// How long the signed media URLs on a room page stay valid.
pub const MEDIA_URL_TTL: Duration = Duration::from_secs(10 * 60);
/// Most rooms the index lists from the shared `rooms` table (placements are always listed).
const MAX_POOLED_LISTED: i64 = 1000;

/// The page CSP: no scripts at all, styles only inline, images from anywhere (signed media URLs
/// may point at another host when the home has a media base URL).
const PAGE_CSP: &str = "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; \
                        base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// Served objects are user content: never let one run as a page of this origin.
const MEDIA_CSP: &str = "default-src 'none'; sandbox";

/// Serves Mesh-Lite for `home` on `addr` until Ctrl-C, printing the URL once listening.
///
/// # Errors
/// [`Error::Unavailable`] if `addr` cannot be bound or the server fails.
pub async fn serve(home: Home, addr: SocketAddr) -> Result<()> {
    let app = router(home.clone())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("listening on {addr}"), false, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::unavailable(format!("listening on {addr}"), false, e))?;
    println!(
        "roomshard lite: serving {} at http://{local}/ (Ctrl-C to stop)",
        home.dir().display()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| Error::unavailable(format!("serving on {local}"), false, e))?;
    println!("roomshard lite: stopped");
    Ok(())
}

/// Resolves on Ctrl-C; if no signal handler can be installed, never (the process is then
/// stopped from outside).
async fn shutdown_signal() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("roomshard lite: cannot listen for Ctrl-C ({e}); stop the process instead");
        std::future::pending::<()>().await;
    }
}

/// What the pages share: the home, and the runtime router the room pages read rows through
/// (pooled and sovereign rooms alike, sealed rooms refused there).
#[derive(Clone)]
struct Lite {
    home: Home,
    rooms: Rooms,
}

/// The home's runtime router, on whichever engine its shards are.
#[derive(Clone)]
enum Rooms {
    Sqlite(RoomRouter<SqlitePools>),
    Postgres(RoomRouter<PgPools>),
}

/// A routed connection of either engine. The pages' SQL is written once for both: `$n`
/// parameters (SQLite reads them as positions too), timestamps `CAST(… AS TEXT)`, booleans
/// through `CASE`, so one statement decodes the same on either.
enum Db<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

/// Runs `$body` with `$c` bound to the concrete connection of `$db` (a `&mut Db`): the same
/// code, type-checked once per engine.
macro_rules! on_db {
    ($db:expr, $c:ident => $body:expr) => {
        match $db {
            Db::Sqlite($c) => $body,
            Db::Postgres($c) => $body,
        }
    };
}

/// Reads what `read` reads from `room`'s rows, routed to wherever the room lives now.
macro_rules! with_room {
    ($rooms:expr, $room:expr, |$db:ident, $t:ident| $read:expr) => {
        match $rooms {
            Rooms::Sqlite(r) => {
                let mut routed = r.route($room).await?.begin().await?;
                let $t = Tables::of(&routed)?;
                let mut $db = Db::Sqlite(&mut *routed.conn);
                $read
            }
            Rooms::Postgres(r) => {
                let mut routed = r.route($room).await?.begin().await?;
                let $t = Tables::of(&routed)?;
                let mut $db = Db::Postgres(&mut *routed.conn);
                $read
            }
        }
    };
}

/// Mesh-Lite's routes over `home` (see the [module docs](self)); bind it anywhere, e.g. on
/// `127.0.0.1:0` in tests. Serves a home on the embedded default and one on PostgreSQL alike.
///
/// # Errors
/// None today; kept fallible for providers that cannot be served.
pub fn router(home: Home) -> Result<Router> {
    let rooms = match &home.shards {
        HomeShards::Sqlite(s) => Rooms::Sqlite(RoomRouter::new(
            home.roomshard.clone(),
            SqlitePools::new(s.clone()),
            RouterConfig::default(),
        )),
        HomeShards::Postgres(s) => Rooms::Postgres(RoomRouter::new(
            home.roomshard.clone(),
            PgPools::new(s.clone()),
            RouterConfig::default(),
        )),
    };
    Ok(Router::new()
        .route("/", get(index))
        .route("/rooms/{room}", get(room_page))
        .route("/media/{*path}", get(media))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { page_error(StatusCode::NOT_FOUND, "Not found", "No such page.") })
        .with_state(Lite { home, rooms }))
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A roomshard error answered as an HTML page with the status its kind calls for.
struct PageError(Error);

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        PageError(e)
    }
}

/// The status code for an error kind (shared by pages and media).
fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Sealed { .. } => StatusCode::LOCKED,
        Error::PermissionDenied { .. } => StatusCode::FORBIDDEN,
        Error::Invalid { .. } => StatusCode::BAD_REQUEST,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        match &self.0 {
            Error::Sealed { room } => sealed_page(room),
            e if status.is_server_error() => {
                eprintln!("roomshard lite: {e}");
                page_error(status, "Error", &e.to_string())
            }
            e => page_error(
                status,
                status.canonical_reason().unwrap_or("Error"),
                &e.to_string(),
            ),
        }
    }
}

fn sealed_page(room: &RoomId) -> Response {
    let body = format!(
        "<div class=\"sealed\"><h2>This room is sealed</h2><p>Room <code>{}</code> is sealed: \
         its owner revoked this server's key grant, so its messages and media can no longer be \
         read or served here. Nothing is shown until the owner restores the grant.</p></div>",
        esc(room.as_str())
    );
    html(
        StatusCode::LOCKED,
        &format!("Room {} — sealed", room.as_str()),
        &body,
    )
}

fn page_error(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = format!(
        "<div class=\"error\"><h2>{} {}</h2><p>{}</p></div>",
        status.as_u16(),
        esc(title),
        esc(detail)
    );
    html(status, title, &body)
}

// ---------------------------------------------------------------------------------------------
// HTML

/// Escapes text for HTML element content and (double- or single-quoted) attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:1rem auto;\
padding:0 1rem;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;\
padding:.25rem .5rem;text-align:left}ol.messages{list-style:none;padding:0}\
ol.messages li{border-bottom:1px solid #eee;padding:.5rem 0}.meta{color:#666;font-size:.85em}\
.body{white-space:pre-wrap;overflow-wrap:anywhere}.deleted{color:#999;font-style:italic}\
.reply{color:#36c;font-size:.85em}.att img{max-width:16rem;max-height:16rem;\
border:1px solid #ccc;image-rendering:pixelated;min-width:4rem;display:block}\
.sealed{border:2px solid #b00;background:#fee;padding:1rem}.error{border:2px solid #c60;\
padding:1rem}.react{font-size:.85em}";

/// A complete page.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} — Mesh-Lite</title><style>{STYLE}</style></head><body>\
         <header><a href=\"/\">Mesh-Lite</a></header><main>{body}</main></body></html>",
        esc(title)
    );
    let mut response = (status, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Pages carry short-lived signed URLs: never serve a stale copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// ---------------------------------------------------------------------------------------------
// GET /

async fn index(
    State(Lite { home, rooms }): State<Lite>,
) -> std::result::Result<Response, PageError> {
    let mut placements = home.roomshard.control.placements().await?;
    placements.sort_by(|a, b| a.room.as_str().cmp(b.room.as_str()));
    let known: HashSet<String> = placements.iter().map(|p| p.room.to_string()).collect();

    // Names of pooled rooms (and pooled rooms without a placement yet) from the shared table,
    // reached through the route of a pooled room.
    let anchor = RoomId::new("lite")?;
    let names = with_room!(&rooms, &anchor, |db, t| pooled_names(&mut db, &t).await?);
    let mut body = String::from("<h1>Rooms</h1>");
    if placements.is_empty() && names.is_empty() {
        body.push_str("<p>No rooms in this home yet.</p>");
    } else {
        body.push_str(
            "<table class=\"rooms\"><thead><tr><th>Room</th><th>Name</th><th>State</th>\
             <th>Profile</th><th>Sharded</th></tr></thead><tbody>",
        );
        for p in &placements {
            let name = if p.is_sharded {
                "" // its row lives in its own shard; open the room to see it
            } else {
                names.get(p.room.as_str()).map_or("", String::as_str)
            };
            row_html(
                &mut body,
                p.room.as_str(),
                name,
                p.state.as_str(),
                p.profile.as_str(),
                p.is_sharded,
            );
        }
        for (id, name) in &names {
            if !known.contains(id) && RoomId::new(id.as_str()).is_ok() {
                row_html(&mut body, id, name, "pooled", "standard", false);
            }
        }
        body.push_str("</tbody></table>");
    }
    Ok(html(StatusCode::OK, "Rooms", &body))
}

fn row_html(out: &mut String, id: &str, name: &str, state: &str, profile: &str, sharded: bool) {
    let _ = write!(
        out,
        "<tr><td><a href=\"/rooms/{id}\">{id}</a></td><td>{name}</td><td class=\"state-{state}\">\
         {state}</td><td>{profile}</td><td>{}</td></tr>",
        if sharded { "yes" } else { "no" },
        id = esc(id),
        name = esc(name),
        state = esc(state),
        profile = esc(profile),
    );
}

// ---------------------------------------------------------------------------------------------
// GET /rooms/{room}

/// Query of a room page.
#[derive(Debug, Deserialize)]
struct PageQuery {
    /// Show the messages older than this message id.
    before: Option<i64>,
}

/// One message as shown.
struct MessageRow {
    id: i64,
    author: String,
    body: Option<String>,
    reply_to: Option<i64>,
    sent_at: String,
    edited: bool,
}

/// One attachment as shown.
struct AttachmentRow {
    message_id: i64,
    object_key: String,
    file_name: String,
    content_type: String,
    size_bytes: i64,
}

fn db_error(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::unavailable(format!("room database ({what})"), false, e)
}

async fn room_page(
    State(Lite { home, rooms }): State<Lite>,
    Path(room): Path<String>,
    Query(query): Query<PageQuery>,
) -> std::result::Result<Response, PageError> {
    let room = RoomId::new(room.as_str())?;
    let placement = home.roomshard.control.placement(&room).await?;
    let scope = match &placement {
        Some(p) if p.state == PlacementState::Sealed => {
            return Err(Error::Sealed { room: room.clone() }.into());
        }
        Some(p) => p.scope(),
        None => Scope::Pooled(room.clone()),
    };
    let page = with_room!(&rooms, &room, |db, t| read_page(
        &mut db,
        &t,
        &room,
        query.before
    )
    .await?);
    let Page {
        info,
        total,
        mut messages,
        attachments,
        reactions,
    } = page;
    let (name, topic, created_at) = match info {
        Some((name, topic, created_at)) => {
            (name.unwrap_or_else(|| room.to_string()), topic, created_at)
        }
        None if placement.is_none() => {
            return Err(Error::not_found(format!("room {room}")).into());
        }
        None => (room.to_string(), None, None),
    };
    let has_older = messages.len() as i64 > PAGE_MESSAGES;
    if has_older {
        messages.truncate(PAGE_MESSAGES as usize);
    }
    messages.reverse(); // oldest first
    let first = messages.first().map_or(0, |m| m.id);

    // Sign each attachment's URL once (a sealed dedicated room fails here with Error::Sealed).
    let mut urls: BTreeMap<String, String> = BTreeMap::new();
    for list in attachments.values() {
        for a in list {
            if urls.contains_key(&a.object_key) {
                continue;
            }
            let url = match ObjectKey::new(a.object_key.as_str()) {
                Ok(key) => home
                    .roomshard
                    .media
                    .presign_get(&scope, &key, MEDIA_URL_TTL)
                    .await?
                    .url()
                    .to_string(),
                Err(_) => String::new(), // not a valid key: listed without a link
            };
            urls.insert(a.object_key.clone(), url);
        }
    }

    let mut body = String::new();
    let _ = write!(body, "<h1 class=\"room-name\">{}</h1>", esc(&name));
    if let Some(topic) = topic.as_deref().filter(|t| !t.is_empty()) {
        let _ = write!(body, "<p class=\"topic body\">{}</p>", esc(topic));
    }
    let state = placement
        .as_ref()
        .map_or("pooled (no placement recorded)", |p| p.state.as_str());
    let _ = write!(
        body,
        "<p class=\"meta\">Room <code>{}</code> · {} · {} · created {} · {} messages{}</p>",
        esc(room.as_str()),
        esc(state),
        esc(&scope.to_string()),
        esc(created_at.as_deref().unwrap_or("?")),
        total,
        if total > messages.len() as i64 {
            format!(", showing {}", messages.len())
        } else {
            String::new()
        }
    );
    if has_older {
        let _ = write!(
            body,
            "<p><a class=\"older\" href=\"/rooms/{}?before={first}\">← older messages</a></p>",
            esc(room.as_str())
        );
    }
    if messages.is_empty() {
        body.push_str("<p>No messages.</p>");
    }
    body.push_str("<ol class=\"messages\">");
    for m in &messages {
        message_html(&mut body, m, &attachments, &reactions, &urls);
    }
    body.push_str("</ol>");
    if query.before.is_some() {
        let _ = write!(
            body,
            "<p><a class=\"newest\" href=\"/rooms/{}\">newest messages →</a></p>",
            esc(room.as_str())
        );
    }
    Ok(html(StatusCode::OK, &name, &body))
}

/// The Mesh tables' names as SQL on a routed connection (`"main"."messages"` in the global
/// database, `"messages"` in a shard file).
struct Tables {
    rooms: String,
    members: String,
    messages: String,
    attachments: String,
    reactions: String,
}

impl Tables {
    fn of<C>(routed: &Routed<C>) -> Result<Self> {
        let name = |t: &str| Ok::<_, Error>(routed.qualify(&Identifier::new(t)?));
        Ok(Tables {
            rooms: name("rooms")?,
            members: name("members")?,
            messages: name("messages")?,
            attachments: name("attachments")?,
            reactions: name("reactions")?,
        })
    }
}

/// What a room page shows, read in one routed transaction.
struct Page {
    /// Name, topic and creation time from the room's row, if it has one.
    info: Option<(Option<String>, Option<String>, Option<String>)>,
    /// Messages in the room.
    total: i64,
    /// Up to one page and one more, newest first.
    messages: Vec<MessageRow>,
    attachments: BTreeMap<i64, Vec<AttachmentRow>>,
    reactions: BTreeMap<i64, Vec<(String, i64)>>,
}

/// Reads a room page: the room's row, its message count, a page of messages before `before`
/// (newest first, one more than a page to tell whether older ones exist), and the attachments
/// and reactions of the messages shown.
async fn read_page(
    db: &mut Db<'_>,
    t: &Tables,
    room: &RoomId,
    before: Option<i64>,
) -> Result<Page> {
    let info_sql = format!(
        "SELECT name, topic, CAST(created_at AS TEXT) FROM {} WHERE room_id = $1",
        t.rooms
    );
    let count_sql = format!("SELECT count(*) FROM {} WHERE room_id = $1", t.messages);
    let (info, total) = on_db!(db, c => {
        let e = db_error("reading the room");
        let info = sqlx::query(AssertSqlSafe(info_sql))
            .bind(room.as_str())
            .fetch_optional(&mut **c)
            .await
            .map_err(&e)?
            .map(|row| {
                Ok::<_, Error>((
                    row.try_get::<Option<String>, _>(0).map_err(&e)?,
                    row.try_get::<Option<String>, _>(1).map_err(&e)?,
                    row.try_get::<Option<String>, _>(2).map_err(&e)?,
                ))
            })
            .transpose()?;
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(count_sql))
            .bind(room.as_str())
            .fetch_one(&mut **c)
            .await
            .map_err(db_error("counting messages"))?;
        (info, total)
    });
    let messages = fetch_messages(db, t, room, before).await?;
    let shown: Vec<&MessageRow> = messages.iter().take(PAGE_MESSAGES as usize).collect();
    let ids: HashSet<i64> = shown.iter().map(|m| m.id).collect();
    let (first, last) = (
        shown.iter().map(|m| m.id).min().unwrap_or(0),
        shown.iter().map(|m| m.id).max().unwrap_or(-1),
    );
    let attachments = fetch_attachments(db, t, room, first, last, &ids).await?;
    let reactions = fetch_reactions(db, t, room, first, last, &ids).await?;
    Ok(Page {
        info,
        total,
        messages,
        attachments,
        reactions,
    })
}

/// Names of the pooled rooms in the shared `rooms` table, by room id.
async fn pooled_names(db: &mut Db<'_>, t: &Tables) -> Result<BTreeMap<String, String>> {
    let sql = format!(
        "SELECT room_id, name FROM {} ORDER BY room_id LIMIT $1",
        t.rooms
    );
    let rows = on_db!(db, c => {
        let e = db_error("listing rooms");
        sqlx::query(AssertSqlSafe(sql))
            .bind(MAX_POOLED_LISTED)
            .fetch_all(&mut **c)
            .await
            .map_err(&e)?
            .into_iter()
            .map(|row| {
                let id: String = row.try_get(0).map_err(&e)?;
                let name: Option<String> = row.try_get(1).map_err(&e)?;
                Ok::<_, Error>((id, name.unwrap_or_default()))
            })
            .collect::<Result<Vec<_>>>()?
    });
    Ok(rows.into_iter().collect())
}

async fn fetch_messages(
    db: &mut Db<'_>,
    t: &Tables,
    room: &RoomId,
    before: Option<i64>,
) -> Result<Vec<MessageRow>> {
    // Keyset pagination on the primary key; the first page is everything below i64::MAX.
    let sql = format!(
        "SELECT m.id, m.body, m.reply_to, CAST(m.sent_at AS TEXT), \
         CAST(CASE WHEN m.edited THEN 1 ELSE 0 END AS BIGINT), m.author_id, \
         a.display_name, a.user_name FROM {} m LEFT JOIN {} a \
         ON a.id = m.author_id AND a.room_id = m.room_id WHERE m.room_id = $1 \
         AND m.id < $3 ORDER BY m.id DESC LIMIT $2",
        t.messages, t.members
    );
    on_db!(db, c => {
        let e = db_error("reading messages");
        sqlx::query(AssertSqlSafe(sql))
            .bind(room.as_str())
            .bind(PAGE_MESSAGES + 1)
            .bind(before.unwrap_or(i64::MAX))
            .fetch_all(&mut **c)
            .await
            .map_err(&e)?
            .into_iter()
            .map(|row| {
                let author_id: i64 = row.try_get(5).map_err(&e)?;
                let display: Option<String> = row.try_get(6).map_err(&e)?;
                let user: Option<String> = row.try_get(7).map_err(&e)?;
                Ok(MessageRow {
                    id: row.try_get(0).map_err(&e)?,
                    body: row.try_get(1).map_err(&e)?,
                    reply_to: row.try_get(2).map_err(&e)?,
                    sent_at: row.try_get(3).map_err(&e)?,
                    edited: row.try_get::<Option<i64>, _>(4).map_err(&e)?.unwrap_or(0) != 0,
                    author: display
                        .filter(|d| !d.trim().is_empty())
                        .or(user)
                        .unwrap_or_else(|| format!("member #{author_id}")),
                })
            })
            .collect()
    })
}

async fn fetch_attachments(
    db: &mut Db<'_>,
    t: &Tables,
    room: &RoomId,
    first: i64,
    last: i64,
    shown: &HashSet<i64>,
) -> Result<BTreeMap<i64, Vec<AttachmentRow>>> {
    let sql = format!(
        "SELECT message_id, object_key, file_name, content_type, size_bytes FROM {} \
         WHERE room_id = $1 AND message_id BETWEEN $2 AND $3 ORDER BY id",
        t.attachments
    );
    let rows: Vec<AttachmentRow> = on_db!(db, c => {
        let e = db_error("reading attachments");
        sqlx::query(AssertSqlSafe(sql))
            .bind(room.as_str())
            .bind(first)
            .bind(last)
            .fetch_all(&mut **c)
            .await
            .map_err(&e)?
            .into_iter()
            .map(|row| {
                Ok(AttachmentRow {
                    message_id: row.try_get(0).map_err(&e)?,
                    object_key: row.try_get(1).map_err(&e)?,
                    file_name: row.try_get(2).map_err(&e)?,
                    content_type: row.try_get(3).map_err(&e)?,
                    size_bytes: row.try_get(4).map_err(&e)?,
                })
            })
            .collect::<Result<_>>()?
    });
    let mut out: BTreeMap<i64, Vec<AttachmentRow>> = BTreeMap::new();
    for a in rows.into_iter().filter(|a| shown.contains(&a.message_id)) {
        out.entry(a.message_id).or_default().push(a);
    }
    Ok(out)
}

async fn fetch_reactions(
    db: &mut Db<'_>,
    t: &Tables,
    room: &RoomId,
    first: i64,
    last: i64,
    shown: &HashSet<i64>,
) -> Result<BTreeMap<i64, Vec<(String, i64)>>> {
    let sql = format!(
        "SELECT message_id, emoji, count(*) FROM {} WHERE room_id = $1 \
         AND message_id BETWEEN $2 AND $3 GROUP BY message_id, emoji ORDER BY message_id, emoji",
        t.reactions
    );
    let rows: Vec<(i64, String, i64)> = on_db!(db, c => {
        let e = db_error("reading reactions");
        sqlx::query(AssertSqlSafe(sql))
            .bind(room.as_str())
            .bind(first)
            .bind(last)
            .fetch_all(&mut **c)
            .await
            .map_err(&e)?
            .into_iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(&e)?,
                    row.try_get(1).map_err(&e)?,
                    row.try_get(2).map_err(&e)?,
                ))
            })
            .collect::<Result<_>>()?
    });
    let mut out: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
    for (message, emoji, n) in rows.into_iter().filter(|r| shown.contains(&r.0)) {
        out.entry(message).or_default().push((emoji, n));
    }
    Ok(out)
}

fn message_html(
    out: &mut String,
    m: &MessageRow,
    attachments: &BTreeMap<i64, Vec<AttachmentRow>>,
    reactions: &BTreeMap<i64, Vec<(String, i64)>>,
    urls: &BTreeMap<String, String>,
) {
    let _ = write!(
        out,
        "<li class=\"message\" id=\"m{id}\"><div class=\"meta\"><b class=\"author\">{author}</b> \
         · <time>{sent}</time> · <a href=\"#m{id}\">#{id}</a>{edited}</div>",
        id = m.id,
        author = esc(&m.author),
        sent = esc(&m.sent_at),
        edited = if m.edited { " · edited" } else { "" },
    );
    if let Some(reply) = m.reply_to {
        let _ = write!(
            out,
            "<div class=\"reply\">↪ reply to <a href=\"#m{reply}\">#{reply}</a></div>"
        );
    }
    match &m.body {
        Some(body) => {
            let _ = write!(out, "<div class=\"body\">{}</div>", esc(body));
        }
        None => out.push_str("<div class=\"body deleted\">(deleted)</div>"),
    }
    for a in attachments.get(&m.id).into_iter().flatten() {
        let url = urls.get(&a.object_key).map_or("", String::as_str);
        let label = format!(
            "{} ({}, {} bytes)",
            a.file_name, a.content_type, a.size_bytes
        );
        out.push_str("<div class=\"att\">");
        if url.is_empty() {
            let _ = write!(out, "Attachment: {} (invalid object key)", esc(&label));
        } else if is_image(&a.content_type, &a.object_key) {
            let _ = write!(
                out,
                "<a href=\"{url}\"><img src=\"{url}\" alt=\"{name}\" title=\"{label}\"></a>",
                url = esc(url),
                name = esc(&a.file_name),
                label = esc(&label),
            );
        } else {
            let _ = write!(
                out,
                "Attachment: <a href=\"{}\">{}</a>",
                esc(url),
                esc(&label)
            );
        }
        out.push_str("</div>");
    }
    if let Some(list) = reactions.get(&m.id) {
        out.push_str("<div class=\"react\">");
        for (emoji, n) in list {
            let _ = write!(out, "<span>{} {n}</span> ", esc(emoji));
        }
        out.push_str("</div>");
    }
    out.push_str("</li>");
}

/// Whether an attachment is shown inline as an image (raster types only: an SVG is a link).
fn is_image(content_type: &str, key: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    if ct.starts_with("image/") {
        return !ct.starts_with("image/svg");
    }
    matches!(
        guess_content_type(key),
        "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "image/avif"
    )
}

// ---------------------------------------------------------------------------------------------
// GET /media/…

/// A media error: a plain-text reason with the status of its kind.
fn media_error(e: &Error) -> Response {
    let status = status_of(e);
    if status.is_server_error() {
        eprintln!("roomshard lite: media: {e}");
    }
    let mut response = (status, format!("{e}\n")).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn media(State(Lite { home, .. }): State<Lite>, uri: Uri) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let granted = match home.media.verify_signed_url(&path_and_query, now) {
        Ok(granted) => granted,
        Err(e) => return media_error(&e),
    };
    // A dedicated grant reads from wherever the room's placement says its bucket is now.
    let location = if granted.dedicated {
        match home.roomshard.control.placement(&granted.room).await {
            Ok(p) => p.map(|p| p.location()),
            Err(e) => return media_error(&e),
        }
    } else {
        None
    };
    let Some(scope) = granted.scope(location) else {
        return media_error(&roomshard::Error::not_found(format!(
            "the bucket of room {}",
            granted.room
        )));
    };
    let key = granted.key;
    let object = match home.media.get(&scope, &key).await {
        Ok(object) => object,
        Err(e) => return media_error(&e),
    };
    let content_type = object
        .meta
        .content_type
        .as_deref()
        .and_then(|ct| HeaderValue::from_str(ct).ok())
        .unwrap_or_else(|| HeaderValue::from_static(guess_content_type(key.as_str())));
    let size = object.meta.size;
    let mut response = Response::new(Body::from_stream(object.body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(MEDIA_CSP),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=60"),
    );
    response
}

/// A content type from a key's extension, for objects stored without one.
pub fn guess_content_type(key: &str) -> &'static str {
    let name = key.rsplit('/').next().unwrap_or(key);
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "svg" => "image/svg+xml",
        "txt" | "md" | "log" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x&y')</script>\""),
            "&lt;script&gt;alert(&#39;x&amp;y&#39;)&lt;/script&gt;&quot;"
        );
    }

    #[test]
    fn guesses_types_from_extensions() {
        assert_eq!(guess_content_type("att/a.PNG"), "image/png");
        assert_eq!(
            guess_content_type("att/000001.txt"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(guess_content_type("att/noext"), "application/octet-stream");
        assert_eq!(guess_content_type("a.b/c"), "application/octet-stream");
        assert!(is_image("image/png", "x"));
        assert!(!is_image("image/svg+xml", "x.svg"));
        assert!(is_image("application/octet-stream", "p.png"));
    }
}
