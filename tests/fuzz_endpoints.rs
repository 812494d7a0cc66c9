//! Property tests that throw arbitrary input at every route of a KV node and
//! of the three grid services.
//!
//! Each case sends one request over a raw TCP connection (so bodies, query
//! strings and header values can be anything an HTTP/1.1 parser accepts):
//! random bytes, random JSON values, or near-valid JSON for the route with
//! fields of the wrong type, huge or non-finite numbers, odd unicode, extra
//! or repeated fields, or truncated text; an arbitrary query string; and
//! arbitrary headers, among them garbage `Causal-Context` values and forged
//! `X-Cluster-*` signature headers. After each case:
//!
//! The KV routes are `/put`, `/get`, `/status`, `/peer/replicate`,
//! `/peer/snapshot`, `/admin/fault`, `/health` and `/metrics`.
//!
//! * the server answered (no dropped connection) and still serves `/health`;
//! * every non-2xx answer is a 4xx or a documented 503, with the body
//!   `{"error": "<string>"}`;
//! * state is unchanged after a non-2xx answer: a KV node's delivered clock
//!   and store (from `/status`), a substation's admitted sessions (from its
//!   `/metrics`). A 2xx answer (a fuzzed body that happens to be valid) may
//!   change state; the expected state is then re-read.
//!
//! Framing headers (`Content-Length`, `Transfer-Encoding`, `Connection`,
//! `Host`, `Expect`, `Upgrade`, ...) are not fuzzed: they are consumed by the
//! HTTP codec before any route sees the request.

mod grid_support;
mod kv_support;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

/// Cases per property: enough to hit every route with every kind of input
/// many times, few enough for a fast suite. `FUZZ_CASES` overrides it for
/// a longer search.
const CASES: u32 = 192;

// ---------------------------------------------------------------- services

/// Services running on their own actix system in a background thread, so
/// the property runner (synchronous) can drive them with blocking sockets.
struct Services {
    urls: Vec<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Services {
    /// A 3-node KV cluster; `urls[0]` is the node under test.
    fn kv() -> Services {
        Services::spawn(|tx, stop| async move {
            let cluster = kv_support::Cluster::start(3, |c| {
                // A valid context ahead of the node waits this long, then 503.
                c.causal_wait_timeout_ms = 100;
            })
            .await;
            tx.send(cluster.urls.clone()).expect("report urls");
            let _ = stop.await;
            drop(cluster);
        })
    }

    /// A substation, a balancer over it and an entry service, in that order.
    fn grid() -> Services {
        Services::spawn(|tx, stop| async move {
            // Room for every request a fuzzed body could make valid.
            let sub = grid_support::start_substation("fuzz", 1.0e7, "127.0.0.1:0");
            let lb = grid_support::start_balancer(&[sub.url()], 100);
            let entry = grid_support::start_entry(&lb.url(), "127.0.0.1:0");
            grid_support::await_all_healthy(&grid_support::client(), &lb.url(), 1).await;
            tx.send(vec![sub.url(), lb.url(), entry.url()])
                .expect("report urls");
            let _ = stop.await;
            for s in [&entry, &lb, &sub] {
                s.handle.stop(false).await;
            }
        })
    }

    fn spawn<F, Fut>(body: F) -> Services
    where
        F: FnOnce(mpsc::Sender<Vec<String>>, tokio::sync::oneshot::Receiver<()>) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(body(tx, stop_rx));
        });
        let urls = rx
            .recv_timeout(grid_support::DEADLINE)
            .expect("services started");
        Services {
            urls,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn addr(&self, i: usize) -> &str {
        self.urls[i].trim_start_matches("http://")
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------- raw client

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection; `None` if the server closed
/// the connection without a parsable answer.
fn send(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (name, value) in headers {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    stream.write_all(&req).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

fn get_json(addr: &str, target: &str) -> Value {
    let a = send(addr, "GET", target, &[], b"").expect("answer");
    assert_eq!(
        a.status,
        200,
        "{target}: {}",
        String::from_utf8_lossy(&a.body)
    );
    serde_json::from_slice(&a.body).expect("JSON")
}

// ------------------------------------------------------------- strategies

/// A fuzzed request, minus the route it is sent to.
#[derive(Debug, Clone)]
struct Input {
    route: usize,
    method: Option<&'static str>,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// JSON text fragments that are valid JSON but hostile as field values.
const ODD_VALUES: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551616",
    "-9223372036854775809",
    "1.7976931348623157e308",
    "-0",
    "0",
    "-1",
    "0.5",
    "true",
    "null",
    "[]",
    "{}",
    "[1,2,3]",
    "{\"a\":{\"b\":[null]}}",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\udc00\\ud800\"",
    "\"🚗⚡️\"",
    "\"e\\u0301\u{202e}abc\"",
    "\"NaN\"",
    "\"Infinity\"",
    "\"1e3\"",
    "\"0,0,0\"",
];

fn odd_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(ODD_VALUES).prop_map(str::to_string),
        2 => any::<String>().prop_map(|s| Value::String(s).to_string()),
        1 => (1usize..6000).prop_map(|n| Value::String("k".repeat(n)).to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:e}")),
        1 => any::<i128>().prop_map(|n| n.to_string()),
    ]
}

/// Near-valid JSON for a route whose valid body has `fields` (name, a valid
/// value as JSON text): each field kept, replaced by an odd value, or
/// dropped; sometimes an extra or repeated field; sometimes truncated.
fn near_valid(fields: &'static [(&'static str, &'static str)]) -> BoxedStrategy<Vec<u8>> {
    let n = fields.len();
    (
        proptest::collection::vec((0u8..4, odd_value()), n),
        proptest::option::of(("[a-z_]{1,12}", odd_value())),
        any::<bool>(),
        proptest::option::of(any::<proptest::sample::Index>()),
    )
        .prop_map(move |(choices, extra, repeat, cut)| {
            let mut parts = Vec::new();
            for ((name, valid), (choice, odd)) in fields.iter().zip(choices) {
                match choice {
                    0 => parts.push(format!("\"{name}\":{valid}")),
                    1 | 2 => parts.push(format!("\"{name}\":{odd}")),
                    _ => {}
                }
            }
            if let Some((name, value)) = extra {
                parts.push(format!("\"{name}\":{value}"));
            }
            if repeat {
                if let Some((name, valid)) = fields.first() {
                    parts.push(format!("\"{name}\":{valid}"));
                }
            }
            let text = format!("{{{}}}", parts.join(","));
            let mut bytes = text.into_bytes();
            if let Some(cut) = cut {
                let at = cut.index(bytes.len() + 1);
                bytes.truncate(at);
            }
            bytes
        })
        .boxed()
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(prop_oneof!["[a-z_]{1,10}", ".{0,8}"], inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body(fields: &'static [(&'static str, &'static str)]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..600),
        2 => arb_json().prop_map(|v| v.to_string().into_bytes()),
        5 => near_valid(fields),
        1 => Just(Vec::new()),
    ]
}

/// A query string the request line can carry: unreserved and sub-delimiter
/// characters, percent escapes (valid or not), or arbitrary pairs encoded.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        3 => "[A-Za-z0-9._~!$&'()*+,;=:@/?%-]{0,40}".prop_map(|q| format!("?{q}")),
        3 => proptest::collection::vec((prop_oneof![Just("key".to_string()), Just("store".to_string()), ".{0,6}".prop_map(|s| s)], ".{0,20}"), 0..4)
            .prop_map(|pairs| {
                let enc = |s: &str| -> String {
                    s.bytes()
                        .map(|b| {
                            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                                (b as char).to_string()
                            } else {
                                format!("%{b:02X}")
                            }
                        })
                        .collect()
                };
                let q: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                    .collect();
                format!("?{}", q.join("&"))
            }),
    ]
}

/// Header names handled by the HTTP codec itself, never by a route.
const FRAMING: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "expect",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

/// A header value the HTTP/1.1 parser accepts: visible ASCII, spaces inside,
/// and non-ASCII bytes; never CR or LF.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![8 => 0x21u8..0x7f, 1 => Just(b' '), 1 => 0x80u8..=0xff],
        0..64,
    )
    .prop_map(|mut v| {
        // Leading and trailing spaces are stripped by the parser anyway.
        while v.first() == Some(&b' ') {
            v.remove(0);
        }
        v
    })
}

fn causal_context() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "(-?[0-9]{1,22},){0,5}-?[0-9]{0,22}".prop_map(String::into_bytes),
        "[0-9, ]{0,12}".prop_map(String::into_bytes),
        Just(b"0,0,0".to_vec()),
        Just(b"1,0,0".to_vec()),
        Just(b"18446744073709551615,0,0".to_vec()),
        Just(b",,".to_vec()),
        header_value(),
    ]
}

fn now_ms() -> u64 {
    causal_grid::auth::now_ms()
}

fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
    prop_oneof![
        3 => causal_context().prop_map(|v| ("causal-context".to_string(), v)),
        1 => prop_oneof![Just("0"), Just("1"), Just("2"), Just("admin"), Just("")]
            .prop_map(|n| ("x-cluster-node".to_string(), n.as_bytes().to_vec())),
        1 => prop_oneof![
                (-60_000i64..60_000).prop_map(|d| (now_ms() as i64 + d).to_string()),
                "[0-9]{0,25}".prop_map(|s| s),
                Just("-1".to_string()),
            ]
            .prop_map(|t| ("x-cluster-timestamp".to_string(), t.into_bytes())),
        1 => "[0-9a-f]{0,40}".prop_map(|n| ("x-cluster-nonce".to_string(), n.into_bytes())),
        1 => prop_oneof!["[0-9a-f]{64}", "[0-9a-fA-Fxz]{0,80}"]
            .prop_map(|s| ("x-cluster-signature".to_string(), s.into_bytes())),
        1 => prop_oneof![
                Just("application/json".to_string()),
                Just("text/plain".to_string()),
                Just("application/x-www-form-urlencoded".to_string()),
                Just("application/json; charset=latin1".to_string()),
                "[a-z/+;= -]{0,30}".prop_map(|s| s),
            ]
            .prop_map(|c| ("content-type".to_string(), c.into_bytes())),
        2 => ("[a-z][a-z0-9-]{0,20}", header_value())
            .prop_filter("framing header", |(n, _)| !FRAMING.contains(&n.as_str())),
    ]
}

fn input(routes: &'static [Route]) -> impl Strategy<Value = Input> {
    (0..routes.len())
        .prop_flat_map(move |route| {
            (
                Just(route),
                proptest::option::weighted(0.15, proptest::sample::select(METHODS)),
                query(),
                proptest::collection::vec(header(), 0..6),
                body(routes[route].fields),
            )
        })
        .prop_map(|(route, method, query, headers, body)| Input {
            route,
            method,
            query,
            headers,
            body,
        })
}

/// A route: its service (index into `Services::urls`), method, path, and
/// the fields of a valid body (for near-valid mutations).
struct Route {
    service: usize,
    method: &'static str,
    path: &'static str,
    fields: &'static [(&'static str, &'static str)],
}

const PUT_FIELDS: &[(&str, &str)] = &[("key", "\"x\""), ("value", "\"15\"")];
const REPLICATE_FIELDS: &[(&str, &str)] = &[
    ("from", "1"),
    (
        "writes",
        "[{\"origin\":1,\"seq\":1,\"vc\":[0,1,0],\"key\":\"x\",\"value\":\"1\",\"ts_ms\":0}]",
    ),
];
const FAULT_FIELDS: &[(&str, &str)] = &[
    ("peer", "1"),
    ("kind", "\"drop\""),
    ("duration_ms", "100000"),
];
const CHARGE_FIELDS: &[(&str, &str)] = &[
    ("vehicle_id", "\"ev\""),
    ("power_kw", "11"),
    ("energy_kwh", "20"),
];
const NONE: &[(&str, &str)] = &[];

const KV_ROUTES: &[Route] = &[
    Route {
        service: 0,
        method: "POST",
        path: "/put",
        fields: PUT_FIELDS,
    },
    Route {
        service: 0,
        method: "GET",
        path: "/get",
        fields: PUT_FIELDS,
    },
    Route {
        service: 0,
        method: "GET",
        path: "/status",
        fields: NONE,
    },
    Route {
        service: 0,
        method: "POST",
        path: "/peer/replicate",
        fields: REPLICATE_FIELDS,
    },
    Route {
        service: 0,
        method: "GET",
        path: "/peer/snapshot",
        fields: NONE,
    },
    Route {
        service: 0,
        method: "POST",
        path: "/admin/fault",
        fields: FAULT_FIELDS,
    },
    Route {
        service: 0,
        method: "GET",
        path: "/health",
        fields: NONE,
    },
    Route {
        service: 0,
        method: "GET",
        path: "/metrics",
        fields: NONE,
    },
];

const GRID_ROUTES: &[Route] = &[
    Route {
        service: 0,
        method: "POST",
        path: "/charge",
        fields: CHARGE_FIELDS,
    },
    Route {
        service: 0,
        method: "GET",
        path: "/health",
        fields: NONE,
    },
    Route {
        service: 0,
        method: "GET",
        path: "/metrics",
        fields: NONE,
    },
    Route {
        service: 1,
        method: "POST",
        path: "/route",
        fields: CHARGE_FIELDS,
    },
    Route {
        service: 1,
        method: "GET",
        path: "/status",
        fields: NONE,
    },
    Route {
        service: 1,
        method: "GET",
        path: "/health",
        fields: NONE,
    },
    Route {
        service: 1,
        method: "GET",
        path: "/metrics",
        fields: NONE,
    },
    Route {
        service: 2,
        method: "POST",
        path: "/request_charge",
        fields: CHARGE_FIELDS,
    },
    Route {
        service: 2,
        method: "GET",
        path: "/health",
        fields: NONE,
    },
    Route {
        service: 2,
        method: "GET",
        path: "/metrics",
        fields: NONE,
    },
];

// -------------------------------------------------------------- properties

/// Sends `input` to its route and checks the answer's shape; returns it.
fn exercise(services: &Services, routes: &[Route], input: &Input) -> Result<Answer, TestCaseError> {
    let route = &routes[input.route];
    let method = input.method.unwrap_or(route.method);
    let target = format!("{}{}", route.path, input.query);
    let addr = services.addr(route.service);
    let answer = send(addr, method, &target, &input.headers, &input.body);
    let Some(answer) = answer else {
        return Err(TestCaseError::fail(format!(
            "{method} {target}: connection closed without an answer"
        )));
    };
    let health = send(addr, "GET", "/health", &[], b"").map(|a| a.status);
    prop_assert_eq!(
        health,
        Some(200),
        "service unhealthy after {} {}",
        method,
        target
    );
    if !(200..300).contains(&answer.status) {
        prop_assert!(
            (400..500).contains(&answer.status) || answer.status == 503,
            "{} {} answered {}: {}",
            method,
            target,
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        let body: Option<Value> = serde_json::from_slice(&answer.body).ok();
        prop_assert!(
            body.as_ref().is_some_and(
                |b| b["error"].is_string() && b.as_object().is_some_and(|o| o.len() == 1)
            ),
            "{} {} answered {} without a JSON error body: {:?} {}",
            method,
            target,
            answer.status,
            answer.header("content-type"),
            String::from_utf8_lossy(&answer.body)
        );
        if answer.status == 503 {
            prop_assert!(
                answer.header("retry-after").is_some(),
                "503 without Retry-After"
            );
        }
    }
    Ok(answer)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: std::env::var("FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        failure_persistence: None,
        ..Config::default()
    })
}

/// A KV node's observable state: its delivered clock and its store.
fn kv_state(services: &Services) -> (Value, Value) {
    let s = get_json(services.addr(0), "/status");
    (s["vc"].clone(), s["store"].clone())
}

/// Sends arbitrary requests to `routes` and checks, after each, that a
/// refused request (not 2xx) left `observe`'s view of the state unchanged.
fn refused_requests_change_nothing<S: PartialEq + std::fmt::Debug>(
    services: &Services,
    routes: &'static [Route],
    observe: impl Fn(&Services) -> S,
) {
    let expected = RefCell::new(observe(services));
    runner()
        .run(&input(routes), |input| {
            let answer = exercise(services, routes, &input)?;
            let now = observe(services);
            if (200..300).contains(&answer.status) {
                *expected.borrow_mut() = now;
            } else {
                prop_assert_eq!(
                    &now,
                    &*expected.borrow(),
                    "state changed by a refused request ({})",
                    answer.status
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn kv_node_survives_arbitrary_input_and_keeps_its_state() {
    refused_requests_change_nothing(&Services::kv(), KV_ROUTES, kv_state);
}

/// Sessions a substation has admitted so far.
fn sessions_started(services: &Services) -> u64 {
    let a = send(services.addr(0), "GET", "/metrics", &[], b"").expect("metrics");
    let text = String::from_utf8_lossy(&a.body);
    causal_grid::grid::LoadSample::from_exposition(&text)
        .expect("substation metrics")
        .started
        .expect("started counter")
}

#[test]
fn grid_services_survive_arbitrary_input_and_admit_nothing_invalid() {
    // The observed state is the number of sessions admitted.
    refused_requests_change_nothing(&Services::grid(), GRID_ROUTES, sessions_started);
}
