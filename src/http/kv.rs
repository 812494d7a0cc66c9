//! HTTP routes of a KV node, grouped by audience.
//!
//! | audience | route | handler's one message |
//! |---|---|---|
//! | client | `POST /put` | `KvNode::transact`: `Transact` → `StoreActor` (kind check), which sends `Put` → `ClockActor` |
//! | client | `POST /incr` | `KvNode::transact`, one increment |
//! | client | `POST /txn` | `KvNode::transact`: reads and check in one `Transact`, then one `Put` of all the operations |
//! | client | `GET /get?key=` | `Get` → `StoreActor` |
//! | client | `GET /status[?store=false]` | status gathered by `KvNode::status` |
//! | ops | `GET /health` (liveness), `GET /ready` (readiness), `GET /metrics` | `/ready`: `GetClockView` → `ClockActor` |
//! | peer (signed) | `POST /peer/replicate` | `Replicate` → `DeliveryBufferActor` |
//! | peer (signed) | `GET /peer/snapshot` | snapshot of `StoreActor` (for a node that lost its data) |
//! | admin (signed) | `POST /admin/fault` | `SetFault` → a `ReplicatorActor` |
//!
//! Client requests may carry a `Causal-Context` header; answers to `/put`,
//! `/incr`, `/txn` and `/get` always carry one. The bodies are the types of `wire::kv`;
//! `service::kv` starts the node's actors and serves these routes.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use crate::actors::kv::messages::{Get, Replicate};
use crate::actors::kv::KvNode;
use crate::causal::session::parse_context;
use crate::causal::{Op, VClock};
use crate::error::{Error, Result};
use crate::http::auth::PeerAuth;
use crate::http::error::{json_config, method_not_allowed, not_found, query_config, read_body};
use crate::http::{health, metrics_endpoint};
use crate::wire::kv::{
    FaultRequest, GetQuery, GetResponse, IncrRequest, IncrResponse, Limits, PutRequest,
    PutResponse, ReadValue, ReplicateAck, ReplicateRequest, StatusQuery, TxnRequest, TxnResponse,
    CAUSAL_CONTEXT,
};

/// Largest peer request body: a full batch of escaped writes.
const PEER_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Registers the routes. The caller provides `web::Data<KvNode>`,
/// `web::Data<PeerAuth>`, `web::Data<Limits>` and `web::Data<Registry>`.
pub fn configure(cfg: &mut web::ServiceConfig, limits: Limits) {
    cfg.app_data(json_config(limits.put_body_limit()))
        .app_data(query_config())
        .service(
            web::resource("/put")
                .route(web::post().to(put))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/incr")
                .route(web::post().to(incr))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/txn")
                .app_data(json_config(limits.txn_body_limit()))
                .route(web::post().to(txn))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/get")
                .route(web::get().to(get))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/status")
                .route(web::get().to(status))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/health")
                .route(web::get().to(health))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/ready")
                .route(web::get().to(ready))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/metrics")
                .route(web::get().to(metrics_endpoint))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/peer/replicate")
                .route(web::post().to(replicate))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/peer/snapshot")
                .route(web::get().to(snapshot))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/admin/fault")
                .route(web::post().to(fault))
                .default_service(web::to(method_not_allowed)),
        )
        .default_service(web::to(not_found));
}

/// The `Causal-Context` of a request, if any, validated for this cluster.
fn request_context(req: &HttpRequest, n: usize) -> Result<Option<VClock>> {
    match req.headers().get(CAUSAL_CONTEXT) {
        None => Ok(None),
        Some(raw) => {
            let raw = raw
                .to_str()
                .map_err(|_| Error::invalid("Causal-Context header is not ASCII"))?;
            parse_context(raw, n).map(Some)
        }
    }
}

fn with_context(mut resp: HttpResponse, context: &VClock) -> HttpResponse {
    if let Ok(value) = HeaderValue::from_str(&context.to_string()) {
        resp.headers_mut()
            .insert(HeaderName::from_static("causal-context"), value);
    }
    resp
}

async fn put(
    req: HttpRequest,
    body: web::Json<PutRequest>,
    node: web::Data<KvNode>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse> {
    let context = request_context(&req, node.cluster_size)?;
    limits.check_put(&body)?;
    let PutRequest { key, value } = body.into_inner();
    let op = Op::Put {
        key: key.clone(),
        value: value.clone(),
    };
    let done = node.transact(Vec::new(), vec![op], context).await?;
    let resp = HttpResponse::Ok().json(PutResponse {
        key,
        value,
        vc: done.vc(),
        node: node.id,
    });
    Ok(with_context(resp, &done.context))
}

async fn incr(
    req: HttpRequest,
    body: web::Json<IncrRequest>,
    node: web::Data<KvNode>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse> {
    let context = request_context(&req, node.cluster_size)?;
    limits.check_key(&body.key)?;
    let IncrRequest { key, by } = body.into_inner();
    let op = Op::Incr {
        key: key.clone(),
        by,
    };
    let done = node.transact(Vec::new(), vec![op], context).await?;
    let resp = HttpResponse::Ok().json(IncrResponse {
        key,
        by,
        vc: done.vc(),
        node: node.id,
    });
    Ok(with_context(resp, &done.context))
}

async fn txn(
    req: HttpRequest,
    body: web::Json<TxnRequest>,
    node: web::Data<KvNode>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse> {
    let context = request_context(&req, node.cluster_size)?;
    let checked = limits.check_txn(body.into_inner())?;
    let reads = checked.reads.clone();
    let done = node.transact(checked.reads, checked.ops, context).await?;
    node.metrics.transactions.inc();
    let values = reads
        .into_iter()
        .zip(
            done.versions
                .iter()
                .map(|v| v.as_ref().map(ReadValue::from)),
        )
        .collect();
    let resp = HttpResponse::Ok().json(TxnResponse {
        values,
        vc: done.vc(),
        node: node.id,
    });
    Ok(with_context(resp, &done.context))
}

async fn get(
    req: HttpRequest,
    query: web::Query<GetQuery>,
    node: web::Data<KvNode>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse> {
    let context = request_context(&req, node.cluster_size)?;
    limits.check_key(&query.key)?;
    let key = query.into_inner().key;
    let done = node
        .store
        .send(Get {
            key: key.clone(),
            context,
        })
        .await??;
    let resp = match done.version {
        Some(v) => {
            let ReadValue { value, vc, kind } = ReadValue::from(&v);
            HttpResponse::Ok().json(GetResponse {
                key,
                value,
                vc,
                kind,
            })
        }
        None => Error::NotFound(format!("key {key:?} not found")).error_response(),
    };
    Ok(with_context(resp, &done.context))
}

/// `GET /ready`: 200 once the node serves `/get` and `/put`; until then
/// 503 saying what it waits for. (`/health` is liveness only.)
async fn ready(node: web::Data<KvNode>) -> Result<HttpResponse> {
    match node.not_ready().await? {
        None => Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))),
        Some(reason) => Err(Error::unavailable(reason)),
    }
}

async fn status(query: web::Query<StatusQuery>, node: web::Data<KvNode>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(node.status(query.store.unwrap_or(true)).await?))
}

async fn replicate(
    req: HttpRequest,
    payload: web::Payload,
    node: web::Data<KvNode>,
    auth: web::Data<PeerAuth>,
) -> Result<HttpResponse> {
    let body = read_body(payload, PEER_BODY_LIMIT).await?;
    let sender = auth.verify(&req, &body)?;
    let batch: ReplicateRequest = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("invalid replication batch: {e}")))?;
    if sender != batch.from.to_string() {
        return Err(Error::Unauthorized(format!(
            "signed by {sender:?} but claims to be node {}",
            batch.from
        )));
    }
    let ack = node
        .buffer
        .send(Replicate {
            from: batch.from,
            writes: batch.writes,
        })
        .await??;
    Ok(HttpResponse::Ok().json(ReplicateAck {
        received: ack.received,
        delivered: ack.delivered,
    }))
}

async fn snapshot(
    req: HttpRequest,
    node: web::Data<KvNode>,
    auth: web::Data<PeerAuth>,
) -> Result<HttpResponse> {
    auth.verify(&req, b"")?;
    Ok(HttpResponse::Ok().json(node.snapshot().await?))
}

async fn fault(
    req: HttpRequest,
    payload: web::Payload,
    node: web::Data<KvNode>,
    auth: web::Data<PeerAuth>,
) -> Result<HttpResponse> {
    let body = read_body(payload, 64 * 1024).await?;
    auth.verify(&req, &body)?;
    let request: FaultRequest = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("invalid fault request: {e}")))?;
    node.set_fault(request.clone()).await?;
    Ok(HttpResponse::Ok().json(request))
}
