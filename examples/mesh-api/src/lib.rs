//! An example Mesh API on roomshard (axum, PostgreSQL): what a host's request path looks like
//! when every query goes through the runtime router, and a decentralise runs beside the traffic.
//!
//! | route | what it does |
//! |---|---|
//! | `POST /rooms/{id}/messages`, `POST /messages` + `x-room-id` | stores a message `{"author_id", "body", "reply_to"?}`: 201 with its id and where it was written |
//! | `GET /rooms/{id}/messages`, `GET /messages` + `x-room-id` | the latest messages, newest first (`?limit=` ≤ 500, `?before=<id>` pages back) |
//! | `POST /rooms/{id}/decentralise` | starts the decentralise in the background: 202, or 409 while one runs |
//! | `GET /rooms/{id}/decentralise/status` | its progress events as server-sent events, from the start, ending with `done` or `failed` |
//!
//! Every request routes the room ([`Router::route`]) and runs in a routed transaction
//! ([`Route::begin`](roomshard::router::Route::begin)): the pooled rows of a pooled room, the
//! room's own schema once it is sovereign. While the room is in its read-only cutover the API
//! answers **503 with `Retry-After: 1`**; a client that retries loses nothing (the test drives
//! writes through a whole decentralise and checks each acknowledged one is in the shard). A
//! sealed room answers 423, a bad room id 400 (it never reaches SQL).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router as Http};
use futures::Stream;
use roomshard::router::{Router, RouterConfig};
use roomshard::{Error, RoomId, Roomshard};
use roomshard_core::{Identifier, ProgressEvent, ProgressSink};
use roomshard_postgres::{PgPools, PgShardStore};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use tokio::sync::broadcast;

/// The header naming the room on the routes without it in the path.
pub const ROOM_HEADER: &str = "x-room-id";
/// Most messages one `GET` returns.
pub const MAX_LIMIT: i64 = 500;

/// The API's state: the flows' handle, the router, and the decentralise jobs this process runs.
#[derive(Clone)]
pub struct Api {
    rs: Roomshard,
    router: Router<PgPools>,
    jobs: Arc<Mutex<HashMap<RoomId, Arc<Job>>>>,
    ids: Arc<AtomicI64>,
}

impl Api {
    /// The API over `rs`, whose shards are `store` (the router's pools open on its server).
    pub fn new(rs: Roomshard, store: Arc<PgShardStore>, config: RouterConfig) -> Self {
        let router = Router::new(rs.clone(), PgPools::new(store), config);
        // Message ids: microseconds since the epoch at start, then one up per message, so two
        // runs of the example never collide and ids grow with time.
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2));
        Api {
            rs,
            router,
            jobs: Arc::default(),
            ids: Arc::new(AtomicI64::new(start)),
        }
    }

    /// The router (for its metrics).
    pub fn router(&self) -> &Router<PgPools> {
        &self.router
    }
}

/// The API's routes (see the [crate docs](crate)).
pub fn app(api: Api) -> Http {
    Http::new()
        .route(
            "/rooms/{room}/messages",
            post(post_in_path).get(list_in_path),
        )
        .route("/messages", post(post_in_header).get(list_in_header))
        .route("/rooms/{room}/decentralise", post(start_decentralise))
        .route(
            "/rooms/{room}/decentralise/status",
            get(decentralise_status),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(api)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A roomshard error as an HTTP answer: `{"error": …, "retry": bool}` with the status its kind
/// calls for.
pub struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = match &e {
            Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Sealed { .. } => StatusCode::LOCKED,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry = status == StatusCode::SERVICE_UNAVAILABLE;
        let mut response = (
            status,
            Json(json!({"error": e.to_string(), "retry": retry})),
        )
            .into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// The room of a request: from the path, or else from the `x-room-id` header; both given and
/// different is a bad request.
fn room_of(path: Option<&str>, headers: &HeaderMap) -> ApiResult<RoomId> {
    let header = headers
        .get(ROOM_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::invalid(ROOM_HEADER, "not visible ASCII"))
        })
        .transpose()?;
    let id = match (path, header) {
        (Some(p), Some(h)) if p != h => {
            return Err(Error::invalid(
                "room",
                format!("the path names {p:?} but {ROOM_HEADER} names {h:?}"),
            )
            .into());
        }
        (Some(p), _) => p,
        (None, Some(h)) => h,
        (None, None) => {
            return Err(Error::invalid(
                "room",
                format!("name it in the path (/rooms/{{id}}/…) or the {ROOM_HEADER} header"),
            )
            .into());
        }
    };
    Ok(RoomId::new(id)?)
}

fn messages_table() -> Identifier {
    #[allow(clippy::expect_used)]
    Identifier::new("messages").expect("a valid identifier")
}

fn db_error(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| {
        let retry =
            roomshard_postgres::is_cutover_refusal(&e) || roomshard_postgres::is_moved_refusal(&e);
        Error::unavailable(format!("room database ({what})"), retry, e)
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

/// A message to store.
#[derive(Debug, Deserialize)]
pub struct NewMessage {
    /// The member writing it.
    pub author_id: i64,
    /// The text.
    pub body: String,
    /// The message it answers, if any.
    #[serde(default)]
    pub reply_to: Option<i64>,
}

/// A stored message.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    /// Its id.
    pub id: i64,
    /// The member who wrote it.
    pub author_id: i64,
    /// The text.
    pub body: Option<String>,
    /// The message it answers.
    pub reply_to: Option<i64>,
    /// When it was sent (RFC 3339, UTC).
    pub sent_at: String,
}

async fn post_in_path(
    State(api): State<Api>,
    Path(room): Path<String>,
    headers: HeaderMap,
    Json(msg): Json<NewMessage>,
) -> ApiResult<Response> {
    post_message(&api, room_of(Some(&room), &headers)?, msg).await
}

async fn post_in_header(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(msg): Json<NewMessage>,
) -> ApiResult<Response> {
    post_message(&api, room_of(None, &headers)?, msg).await
}

async fn post_message(api: &Api, room: RoomId, msg: NewMessage) -> ApiResult<Response> {
    let id = api.ids.fetch_add(1, Ordering::Relaxed);
    let mut tx = api.router.route(&room).await?.begin().await?;
    let sql = format!(
        "INSERT INTO {} (id, room_id, author_id, body, reply_to, sent_at, edited) \
         VALUES ($1, $2, $3, $4, $5, now(), false)",
        tx.qualify(&messages_table())
    );
    let written_to = if tx.is_shared() {
        "pooled"
    } else {
        "sovereign"
    };
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(room.as_str())
        .bind(msg.author_id)
        .bind(&msg.body)
        .bind(msg.reply_to)
        .execute(&mut *tx.conn)
        .await
        .map_err(db_error("storing a message"))?;
    tx.conn
        .commit()
        .await
        .map_err(db_error("storing a message"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "room": room.as_str(), "written_to": written_to})),
    )
        .into_response())
}

/// `GET …/messages` parameters.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// At most this many (default 50, at most [`MAX_LIMIT`]).
    pub limit: Option<i64>,
    /// Only messages with a smaller id (paging back).
    pub before: Option<i64>,
}

async fn list_in_path(
    State(api): State<Api>,
    Path(room): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<Message>>> {
    list_messages(&api, room_of(Some(&room), &headers)?, q).await
}

async fn list_in_header(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<Message>>> {
    list_messages(&api, room_of(None, &headers)?, q).await
}

async fn list_messages(api: &Api, room: RoomId, q: ListQuery) -> ApiResult<Json<Vec<Message>>> {
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let mut tx = api.router.route(&room).await?.begin().await?;
    let sql = format!(
        "SELECT id, author_id, body, reply_to, \
                to_char(sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
         FROM {} WHERE room_id = $1 AND ($2::int8 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        tx.qualify(&messages_table())
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(room.as_str())
        .bind(q.before)
        .bind(limit)
        .fetch_all(&mut *tx.conn)
        .await
        .map_err(db_error("reading messages"))?;
    tx.conn
        .commit()
        .await
        .map_err(db_error("reading messages"))?;
    let e = db_error("reading messages");
    let out = rows
        .into_iter()
        .map(|r| {
            Ok(Message {
                id: r.try_get(0).map_err(&e)?,
                author_id: r.try_get(1).map_err(&e)?,
                body: r.try_get(2).map_err(&e)?,
                reply_to: r.try_get(3).map_err(&e)?,
                sent_at: r.try_get(4).map_err(&e)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Json(out))
}

// ---------------------------------------------------------------------------------------------
// Decentralise in the background, progress as server-sent events

/// One line of a decentralise's status stream.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Status {
    /// A progress event of the flow.
    Progress {
        /// The event.
        progress: ProgressEvent,
    },
    /// The room is sovereign.
    Done {
        /// The placement's state and version.
        state: String,
        /// The placement version the receipt carries.
        version: u64,
    },
    /// The flow failed; the pooled copy is still authoritative.
    Failed {
        /// What went wrong.
        error: String,
    },
}

impl Status {
    fn name(&self) -> &'static str {
        match self {
            Status::Progress { .. } => "progress",
            Status::Done { .. } => "done",
            Status::Failed { .. } => "failed",
        }
    }

    fn is_final(&self) -> bool {
        !matches!(self, Status::Progress { .. })
    }
}

/// A decentralise this process runs: every status so far (so a late subscriber gets the whole
/// story) and a channel for the ones to come.
struct Job {
    history: Mutex<Vec<Status>>,
    live: broadcast::Sender<Status>,
}

impl Job {
    fn push(&self, s: Status) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.push(s.clone());
        // No subscriber is fine: the history keeps it.
        let _ = self.live.send(s);
    }

    fn finished(&self) -> bool {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .is_some_and(Status::is_final)
    }
}

impl ProgressSink for Job {
    fn emit(&self, event: ProgressEvent) {
        self.push(Status::Progress { progress: event });
    }
}

async fn start_decentralise(
    State(api): State<Api>,
    Path(room): Path<String>,
) -> ApiResult<Response> {
    let room = RoomId::new(room.as_str())?;
    let job = {
        let mut jobs = api.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.get(&room).is_some_and(|j| !j.finished()) {
            return Err(
                Error::conflict(format!("room {room}: a decentralise is already running")).into(),
            );
        }
        let job = Arc::new(Job {
            history: Mutex::new(Vec::new()),
            live: broadcast::channel(1024).0,
        });
        jobs.insert(room.clone(), job.clone());
        job
    };
    let status_url = format!("/rooms/{room}/decentralise/status");
    let body = json!({"room": room.as_str(), "status": status_url});
    tokio::spawn(async move {
        let outcome = roomshard::flows::decentralise(&api.rs, &room, job.as_ref()).await;
        api.router.invalidate(&room);
        job.push(match outcome {
            Ok(o) => Status::Done {
                state: o.placement.state.as_str().to_string(),
                version: o.placement.version,
            },
            Err(e) => Status::Failed {
                error: e.to_string(),
            },
        });
    });
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&status_url) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn decentralise_status(
    State(api): State<Api>,
    Path(room): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>> {
    let room = RoomId::new(room.as_str())?;
    let job = api
        .jobs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&room)
        .cloned()
        .ok_or_else(|| {
            Error::not_found(format!("a decentralise of room {room} in this process"))
        })?;
    // Subscribe while holding the history, so no status falls between the two.
    let (past, live) = {
        let history = job.history.lock().unwrap_or_else(|p| p.into_inner());
        (history.clone(), job.live.subscribe())
    };
    let done = past.last().is_some_and(Status::is_final);
    let replay = futures::stream::iter(past);
    let rest = futures::stream::unfold((live, done), |(mut live, done)| async move {
        if done {
            return None;
        }
        loop {
            match live.recv().await {
                Ok(s) => {
                    let done = s.is_final();
                    return Some((s, (live, done)));
                }
                // A slow subscriber skips what it missed rather than stall the flow.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures::StreamExt::map(futures::StreamExt::chain(replay, rest), |s| {
        let data = serde_json::to_string(&s).unwrap_or_else(|_| "{}".into());
        Ok(Event::default().event(s.name()).data(data))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}
