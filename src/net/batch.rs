//! Coalescing forwarder: requests that queue up behind one in flight go on
//! together, as one HTTP request.
//!
//! Each hop of a charge request (entry → balancer → substation) costs both
//! processes a loopback TCP round trip: two `sendto`, two `recvfrom` and the
//! kernel's work behind them, about half of each process's CPU per request
//! (docs/grid-performance.md). A [`Batcher`] sends a request at once when
//! fewer than `in_flight` batches are outstanding towards its target, so an
//! idle grid adds no latency; otherwise the request waits for a batch to
//! come back, and everything that queued meanwhile (up to `max_items`) goes
//! in the next one. Under load one round trip then carries many requests;
//! the queue can never outgrow what arrived during one round trip.
//!
//! The wire format is `wire::batch`: a JSON array of requests (the callers'
//! already encoded bodies, joined), answered by one `BatchAnswer` per item.
//! Each item gets the `Forwarded` its single request would have got. When
//! the batch as a whole fails (unreachable, timed out, unreadable), every
//! item in it gets that failure: callers retry or give up per item as
//! before. A batch refused as a whole with a 4xx (an older peer without the
//! batch route) is a failure of the peer, not of the items.
//!
//! Items are answered in the batch's own order, but a batch is answered
//! only when its slowest item is: a request that the balancer retries on
//! another substation holds back the others of its batch for that long.
//!
//! Like `awc::Client`, a batcher is not `Send`: one per target per worker or
//! actor, on that thread (it spawns its sending task there).

use std::cell::RefCell;
use std::rc::Rc;

use awc::http::Uri;
use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::grid::{post_json, Forwarded};
use crate::wire::batch::{encode_array, BatchAnswer};

/// How requests are coalesced (`FORWARD_BATCH_MAX`,
/// `FORWARD_BATCHES_IN_FLIGHT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most requests per batch; 1 turns batching off (the callers then use
    /// the single-request routes).
    pub max_items: usize,
    /// Batches outstanding towards one target before requests queue.
    pub in_flight: usize,
}

impl BatchConfig {
    /// Default: up to 64 requests per batch, 2 batches in flight.
    pub const DEFAULT: BatchConfig = BatchConfig {
        max_items: 64,
        in_flight: 2,
    };

    /// Whether requests are batched at all.
    pub fn enabled(&self) -> bool {
        self.max_items > 1
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig::DEFAULT
    }
}

type Pending = (Bytes, oneshot::Sender<Forwarded<Bytes>>);

struct Queue {
    client: awc::Client,
    uri: Uri,
    config: BatchConfig,
    waiting: Vec<Pending>,
    in_flight: usize,
}

/// Coalesces requests to one batch route (`uri`). Cloning shares the queue.
#[derive(Clone)]
pub struct Batcher {
    queue: Rc<RefCell<Queue>>,
}

impl Batcher {
    /// A batcher posting to `uri` (a batch route) with `client`.
    pub fn new(client: awc::Client, uri: Uri, config: BatchConfig) -> Self {
        Batcher {
            queue: Rc::new(RefCell::new(Queue {
                client,
                uri,
                config: BatchConfig {
                    max_items: config.max_items.max(1),
                    in_flight: config.in_flight.max(1),
                },
                waiting: Vec::new(),
                in_flight: 0,
            })),
        }
    }

    /// Queues one encoded request; resolves to its own answer. The request
    /// is sent even if the returned future is dropped.
    pub fn submit(&self, item: Bytes) -> impl std::future::Future<Output = Forwarded<Bytes>> {
        let (tx, rx) = oneshot::channel();
        self.queue.borrow_mut().waiting.push((item, tx));
        start_sender(&self.queue);
        async move {
            rx.await
                .unwrap_or_else(|_| Forwarded::Failed("batch sender stopped".into()))
        }
    }
}

/// Starts a sending task unless enough are running. The task takes the
/// queue when it first runs, so requests that arrive in the same turn of
/// the event loop share its first batch, and it keeps sending while
/// requests wait.
fn start_sender(queue: &Rc<RefCell<Queue>>) {
    {
        let mut q = queue.borrow_mut();
        if q.waiting.is_empty() || q.in_flight >= q.config.in_flight {
            return;
        }
        q.in_flight += 1;
    }
    let queue = queue.clone();
    actix_rt::spawn(async move {
        loop {
            let (client, uri, batch) = {
                let mut q = queue.borrow_mut();
                if q.waiting.is_empty() {
                    q.in_flight -= 1;
                    return;
                }
                let n = q.waiting.len().min(q.config.max_items);
                let batch: Vec<Pending> = q.waiting.drain(..n).collect();
                (q.client.clone(), q.uri.clone(), batch)
            };
            let (items, senders): (Vec<Bytes>, Vec<_>) = batch.into_iter().unzip();
            let answers = send_batch(&client, uri, &items).await;
            for (tx, answer) in senders.into_iter().zip(answers) {
                // The caller may have gone; its request was still made.
                let _ = tx.send(answer);
            }
        }
    });
}

/// Posts `items` as one batch and splits the answer, one `Forwarded` per
/// item, in order.
pub async fn send_batch(client: &awc::Client, uri: Uri, items: &[Bytes]) -> Vec<Forwarded<Bytes>> {
    let n = items.len();
    let body = Bytes::from(encode_array(items.iter().map(|b| &b[..])));
    let shown = uri.clone();
    let all = |f: Forwarded<Bytes>| vec![f; n];
    match post_json(client, uri, body).await {
        Forwarded::Granted(bytes) => match split_answers(&bytes, n) {
            Ok(answers) => answers,
            Err(why) => all(Forwarded::Failed(format!("{shown}: {why}"))),
        },
        Forwarded::Invalid(m) => all(Forwarded::Failed(format!(
            "{shown} did not take the batch: {m}"
        ))),
        other => all(other),
    }
}

/// The per-item answers of a batch of `n`.
fn split_answers(body: &[u8], n: usize) -> Result<Vec<Forwarded<Bytes>>, String> {
    let answers: Vec<BatchAnswer<Box<RawValue>>> =
        serde_json::from_slice(body).map_err(|e| format!("unreadable batch answer: {e}"))?;
    if answers.len() != n {
        return Err(format!("{} answers for {n} requests", answers.len()));
    }
    Ok(answers.into_iter().map(answer).collect())
}

fn answer(a: BatchAnswer<Box<RawValue>>) -> Forwarded<Bytes> {
    let message = || a.error.clone().unwrap_or_default();
    match (a.status, &a.grant) {
        (200, Some(g)) => Forwarded::Granted(Bytes::copy_from_slice(g.get().as_bytes())),
        (200, None) => Forwarded::Failed("a granted item without its grant".into()),
        (503, _) => Forwarded::Refused(message()),
        (400..=499, _) => Forwarded::Invalid(message()),
        (code, _) => Forwarded::Failed(format!("item answered {code}: {}", message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_split_in_order() {
        let body = br#"[{"status":200,"grant":{"seq":1}},{"status":503,"error":"full"},
            {"status":400,"error":"bad"},{"status":500,"error":"bug"},{"status":200}]"#;
        let got = split_answers(body, 5).unwrap();
        assert_eq!(
            got[0],
            Forwarded::Granted(Bytes::from_static(br#"{"seq":1}"#))
        );
        assert_eq!(got[1], Forwarded::Refused("full".into()));
        assert_eq!(got[2], Forwarded::Invalid("bad".into()));
        assert!(matches!(&got[3], Forwarded::Failed(m) if m.contains("500")));
        assert!(matches!(got[4], Forwarded::Failed(_)));
        assert!(split_answers(body, 4).is_err());
        assert!(split_answers(b"{}", 1).is_err());
    }

    /// A batch route that echoes every item as its grant, records batch
    /// sizes, and holds its first batch until `release` is notified.
    fn echo_server(
        sizes: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
        release: std::sync::Arc<tokio::sync::Notify>,
    ) -> (actix_web::dev::ServerHandle, std::net::SocketAddr) {
        use actix_web::{web, App, HttpResponse, HttpServer};
        let server = HttpServer::new(move || {
            let (sizes, release) = (sizes.clone(), release.clone());
            App::new().route(
                "/batch",
                web::post().to(move |items: web::Json<Vec<serde_json::Value>>| {
                    let (sizes, release) = (sizes.clone(), release.clone());
                    async move {
                        let first = {
                            let mut s = sizes.lock().unwrap();
                            s.push(items.len());
                            s.len() == 1
                        };
                        if first {
                            release.notified().await;
                        }
                        let answers: Vec<_> = items
                            .into_inner()
                            .into_iter()
                            .map(|v| BatchAnswer {
                                status: 200,
                                grant: Some(v),
                                error: None,
                            })
                            .collect();
                        HttpResponse::Ok().json(answers)
                    }
                }),
            )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        (handle, addr)
    }

    #[actix_rt::test]
    async fn requests_queued_behind_a_batch_go_together() {
        use std::time::{Duration, Instant};
        let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        let (handle, addr) = echo_server(sizes.clone(), release.clone());
        let uri: Uri = format!("http://{addr}/batch").parse().unwrap();
        let client = awc::Client::new();
        let batcher = Batcher::new(
            client,
            uri,
            BatchConfig {
                max_items: 4,
                in_flight: 1,
            },
        );
        let item = |i: usize| Bytes::from(format!("{{\"n\":{i}}}"));
        let mut waiting = vec![actix_rt::spawn(batcher.submit(item(0)))];
        // The first request goes alone, at once, and is held by the server.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sizes.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the first request was not sent");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        for i in 1..10 {
            waiting.push(actix_rt::spawn(batcher.submit(item(i))));
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            *sizes.lock().unwrap(),
            vec![1],
            "queued requests were sent early"
        );
        release.notify_one();
        for (i, w) in waiting.into_iter().enumerate() {
            assert_eq!(w.await.unwrap(), Forwarded::Granted(item(i)));
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 4, 4, 1]);
        handle.stop(false).await;
    }

    #[actix_rt::test]
    async fn an_unreachable_target_fails_every_item() {
        // A port nothing listens on: bind one, then let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let uri: Uri = format!("http://127.0.0.1:{port}/batch").parse().unwrap();
        let batcher = Batcher::new(awc::Client::new(), uri, BatchConfig::DEFAULT);
        let a = batcher.submit(Bytes::from_static(b"1"));
        let b = batcher.submit(Bytes::from_static(b"2"));
        assert!(matches!(a.await, Forwarded::Unreachable(_)));
        assert!(matches!(b.await, Forwarded::Unreachable(_)));
    }
}
