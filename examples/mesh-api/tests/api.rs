//! The example Mesh API on a real PostgreSQL 15 (started by the harness): messages by path and
//! by header, bad room ids, and host writes through a background decentralise, none lost, with
//! its progress streamed as server-sent events.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use roomshard::home::{Home, HomeOptions, HomeShards};
use roomshard::router::RouterConfig;
use roomshard_core::ProviderUrl;
use roomshard_example_mesh::{Media, Workload, schema};
use roomshard_example_mesh_api::{Api, Message, Status, app};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Served {
    _dir: tempfile::TempDir,
    home: Home,
    app: axum::Router,
}

async fn served(room: &str) -> Served {
    let cluster = roomshard_interop_tests::pg::Cluster::shared();
    let url = cluster.url(&cluster.fresh_database("api"));
    let dir = tempfile::tempdir().unwrap();
    let mut options = HomeOptions::default();
    options.providers.control = Some(ProviderUrl::parse(&url, "--control").unwrap());
    options.providers.shards = Some(ProviderUrl::parse(&url, "--shards").unwrap());
    let home = Home::open(dir.path(), schema(), options).await.unwrap();
    let w = Workload {
        seed: 11,
        room_id: room.to_string(),
        messages: 300,
        media: Media::Sizes(vec![100, 5_000]),
    };
    let rs = &home.roomshard;
    w.seed_pooled(rs.shards.as_ref(), &rs.schema).await.unwrap();
    let HomeShards::Postgres(store) = &home.shards else {
        unreachable!()
    };
    let api = Api::new(rs.clone(), store.clone(), RouterConfig::default());
    Served {
        _dir: dir,
        app: app(api),
        home,
    }
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

fn post(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_by_path_and_by_header_and_bad_rooms_refused() {
    let s = served("general").await;
    let (status, body) = call(
        &s.app,
        post(
            "/rooms/general/messages",
            json!({"author_id": 1, "body": "by path"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["written_to"], "pooled");
    let by_path = body["id"].as_i64().unwrap();

    let req = Request::post("/messages")
        .header("content-type", "application/json")
        .header("x-room-id", "general")
        .body(Body::from(
            json!({"author_id": 2, "body": "by header"}).to_string(),
        ))
        .unwrap();
    let (status, body) = call(&s.app, req).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let by_header = body["id"].as_i64().unwrap();

    let req = Request::get("/messages?limit=2")
        .header("x-room-id", "general")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&s.app, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let latest: Vec<Message> = serde_json::from_value(body).unwrap();
    assert_eq!(
        latest.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![by_header, by_path],
        "newest first"
    );
    assert_eq!(latest[0].body.as_deref(), Some("by header"));

    // A hostile room id never reaches SQL; path and header must agree; one is needed.
    for uri in [
        "/rooms/x';DROP%20TABLE%20messages;--/messages",
        "/rooms/%C3%A9t%C3%A9/messages",
    ] {
        let (status, body) = call(&s.app, post(uri, json!({"author_id": 1, "body": "x"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
    }
    let req = Request::post("/rooms/general/messages")
        .header("content-type", "application/json")
        .header("x-room-id", "other")
        .body(Body::from(json!({"author_id": 1, "body": "x"}).to_string()))
        .unwrap();
    let (status, body) = call(&s.app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("x-room-id"),
        "{body}"
    );
    let (status, _) = call(
        &s.app,
        post("/messages", json!({"author_id": 1, "body": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(
        &s.app,
        Request::get("/rooms/general/decentralise/status")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no job yet: {body}");
}

/// Reads a server-sent-event stream to its end: `(event name, data)` pairs.
async fn sse(app: &axum::Router, uri: &str) -> Vec<(String, Value)> {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let bytes = tokio::time::timeout(Duration::from_secs(120), resp.into_body().collect())
        .await
        .expect("the status stream ends")
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.split("\n\n")
        .filter(|block| block.contains("data:"))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            (
                field("event:"),
                serde_json::from_str(&field("data:")).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_background_decentralise_are_never_lost() {
    let s = served("lively").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, stop) = (s.app.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut acked, mut retried, mut sovereign) = (Vec::new(), 0u64, 0u64);
            let mut n = 0u64;
            // Until the flow is over and 20 more writes have landed in the room's own schema.
            while !(stop.load(Ordering::SeqCst) && sovereign >= 20) {
                n += 1;
                let body = json!({"author_id": 1, "body": format!("write {n}")});
                loop {
                    let (status, resp) =
                        call(&app, post("/rooms/lively/messages", body.clone())).await;
                    match status {
                        StatusCode::CREATED => {
                            acked.push(resp["id"].as_i64().unwrap());
                            if resp["written_to"] == "sovereign" && stop.load(Ordering::SeqCst) {
                                sovereign += 1;
                            }
                            break;
                        }
                        StatusCode::SERVICE_UNAVAILABLE => {
                            assert_eq!(resp["retry"], true, "{resp}");
                            retried += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        other => panic!("write {n}: {other} {resp}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (acked, retried)
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, body) = call(&s.app, post("/rooms/lively/decentralise", json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "/rooms/lively/decentralise/status");
    // A second start while it runs is refused: the job is registered before the 202, and the
    // flow (provisioning a schema, copying 300 messages) outlasts one local request.
    let (again, body) = call(&s.app, post("/rooms/lively/decentralise", json!({}))).await;
    assert_eq!(again, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already running"),
        "{body}"
    );

    let events = sse(&s.app, "/rooms/lively/decentralise/status").await;
    stop.store(true, Ordering::SeqCst);
    let (acked, retried) = writer.await.unwrap();

    let (last_name, last) = events.last().expect("some status events");
    assert_eq!(last_name, "done", "the stream ends with done: {last}");
    let last: Status = serde_json::from_value(last.clone()).unwrap();
    assert!(
        matches!(&last, Status::Done { state, .. } if state == "sovereign"),
        "{last:?}"
    );
    let phases: Vec<String> = events
        .iter()
        .filter_map(|(_, v)| v["progress"]["phase"].as_str().map(str::to_string))
        .collect();
    for phase in ["copy", "cutover", "receipt"] {
        assert!(
            phases.iter().any(|p| p == phase),
            "no {phase} phase in {phases:?}"
        );
    }

    // Every acknowledged write is in the room's own schema, and the pooled rows are gone.
    let HomeShards::Postgres(store) = &s.home.shards else {
        unreachable!()
    };
    let in_shard: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM room_lively.messages WHERE id = ANY($1) ORDER BY id")
            .bind(&acked)
            .fetch_all(store.pool())
            .await
            .unwrap();
    let mut want = acked.clone();
    want.sort_unstable();
    assert_eq!(in_shard.len(), want.len(), "acknowledged writes lost");
    assert_eq!(in_shard, want);
    let pooled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM public.messages WHERE room_id = 'lively'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(pooled, 0);
    // And the API reads them back from there.
    let (status, body) = call(
        &s.app,
        Request::get("/rooms/lively/messages?limit=500")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<Message> = serde_json::from_value(body).unwrap();
    assert_eq!(
        listed[0].id,
        *want.last().unwrap(),
        "newest first, the last write on top"
    );
    eprintln!(
        "{} writes acknowledged during the decentralise ({retried} answered 503 and retried), \
         {} status events",
        acked.len(),
        events.len()
    );
    assert!(acked.len() > 40, "the writer kept writing: {}", acked.len());
}
