//! `RouterActor`: the balancer's routing state and its forwarding.
//!
//! Owns the pure `grid::Router` (decisions) and an `awc::Client` (forwarding).
//! A `Route` message becomes an actor future (`ResponseActFuture`) that
//! loops: reserve (one decision, a synchronous call into the core, made with
//! the actor's state in hand), POST to the chosen substation while other
//! messages run, settle with the outcome, and on a refusal or a connection
//! failure reserve the next best, excluding those already tried.
//!
//! When no substation has room as the router sees them, it asks the
//! `LoadPollerActor` for a fresh poll (`PollNow`, one at a time, shared) and
//! decides again; if the request still fits nowhere, it asks the core for a
//! plan of sessions to move (`Router::plan_moves`) and carries it out: every
//! hand-over (`POST /sessions/{id}/handover`), then every continuation's
//! `POST /charge`, then the request itself. Only then does it refuse.
//!
//! Reserving and settling run inside the actor between two awaits, never
//! across one, so decisions of concurrent requests interleave safely and
//! every decision sees the reservations of the others still in flight; that
//! is what keeps a burst from herding. They used to be messages the
//! forwarding task sent to its own actor; an actor future reaches the state
//! without those two mailbox round trips per attempt.
//!
//! Logical time is seconds since the actor started.

use std::pin::Pin;
use std::time::{Duration, Instant};

use actix::fut::{ready, wrap_future, ActorFutureExt};
use actix::{Actor, ActorFuture, AsyncContext, Context, Handler, ResponseActFuture};
use awc::http::Uri;
use bytes::Bytes;
use prometheus::IntCounter;

use super::messages::{
    AttachPoller, GetStatus, Joined, Left, LoadSampled, PollFailed, PollNow, Route, Status,
    SubstationStatus,
};
use super::metrics::BalancerMetrics;
use crate::auth::BearerToken;
use crate::error::{Error, Result};
use crate::grid::{ChargeGranted, ChargeRequest, Move, Rebalance, Router, RouterConfig, Ticket};
use crate::net::batch::{BatchConfig, Batcher};
use crate::net::grid::{
    charge_uri, join_uri, parse_grant, post_charge_body, post_handover, Forwarded, HandedOver,
};

const GAUGE_TICK: Duration = Duration::from_millis(250);
/// A refusal rests on figures at most this old: a poll taken for an earlier
/// refusal within this long is fresh enough, which bounds such polls to
/// about 20 a second however many requests are refused.
const REFUSAL_POLL_GAP: Duration = Duration::from_millis(50);

/// The balancer's router actor.
pub struct RouterActor {
    router: Router,
    /// Base URL per index; substations found by DNS are appended.
    urls: Vec<String>,
    /// Per index, what a forwarded request needs, made once rather than per
    /// request: the parsed `/charge` URI and the `lb_decisions_total` series.
    targets: Vec<Option<Target>>,
    origin: Instant,
    client: awc::Client,
    metrics: BalancerMetrics,
    poll_interval: Duration,
    /// This balancer's name in `/status` (its host name).
    instance: String,
    /// How requests to one substation are coalesced (`net::batch`).
    batch: BatchConfig,
    /// `Authorization` of hand-overs (`GRID_ADMIN_TOKEN`); without it no
    /// session is moved.
    handover_auth: Option<String>,
    /// Where fresh polls are asked for before a refusal.
    poller: Option<actix::Recipient<PollNow>>,
    refresh: Refresh,
}

/// The poll taken before refusals: at most one in flight, shared by every
/// request waiting for it.
#[derive(Default)]
struct Refresh {
    in_flight: bool,
    waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    last_done: Option<Instant>,
}

/// Display name of a base URL until the substation tells us its id.
pub fn initial_name(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

impl RouterActor {
    /// A router over the substations at `urls` (base URLs).
    pub fn new(
        urls: Vec<String>,
        client: awc::Client,
        metrics: BalancerMetrics,
        poll_interval: Duration,
        seed: u64,
    ) -> Self {
        let names = urls.iter().map(|u| initial_name(u)).collect();
        RouterActor {
            router: Router::new(names, RouterConfig::default(), seed),
            targets: vec![None; urls.len()],
            urls,
            origin: Instant::now(),
            client,
            metrics,
            poll_interval,
            instance: String::new(),
            batch: BatchConfig {
                max_items: 1,
                in_flight: 1,
            },
            handover_auth: None,
            poller: None,
            refresh: Refresh::default(),
        }
    }

    /// Lets the router move up to `max_moves` sessions to make room for one
    /// request, authorising hand-overs with `token` (`GRID_ADMIN_TOKEN`);
    /// without a token, or with 0, it never moves one.
    pub fn with_moves(mut self, token: Option<&BearerToken>, max_moves: usize) -> Self {
        self.handover_auth = token.map(BearerToken::authorization);
        let n = if token.is_some() { max_moves } else { 0 };
        self.router.set_max_moves(n);
        self
    }

    /// Coalesces the requests to each substation that queue behind those in
    /// flight into batches to its `/charge/batch` (off unless set).
    pub fn with_batching(mut self, batch: BatchConfig) -> Self {
        self.batch = batch;
        self
    }

    /// Names this balancer in `/status`.
    pub fn with_instance(mut self, instance: String) -> Self {
        self.instance = instance;
        self
    }

    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn update_gauges(&mut self) {
        let now = self.now();
        for v in self.router.status(now) {
            let label = [v.name.as_str()];
            let m = &self.metrics;
            m.healthy
                .with_label_values(&label)
                .set(if v.healthy { 1.0 } else { 0.0 });
            if let Some(age) = v.sample_age_s {
                m.snapshot_age.with_label_values(&label).set(age);
            }
            if let Some(u) = v.estimated_utilization {
                m.estimated_utilization.with_label_values(&label).set(u);
            }
        }
    }

    fn forget_label(&self, name: &str) {
        let m = &self.metrics;
        for g in [&m.healthy, &m.snapshot_age, &m.estimated_utilization] {
            let _ = g.remove_label_values(&[name]);
        }
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.update_gauges();
        ctx.run_interval(GAUGE_TICK, |act, _| act.update_gauges());
    }
}

impl Handler<LoadSampled> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: LoadSampled, _: &mut Self::Context) {
        let at = msg.at.saturating_duration_since(self.origin).as_secs_f64();
        let now = self.now();
        let old = self.router.name(msg.index).to_string();
        let was_healthy = self.router.is_healthy(msg.index);
        self.router.observe(msg.index, &msg.sample, at, now);
        let new = self.router.name(msg.index).to_string();
        if old != new {
            self.forget_label(&old);
        }
        if !was_healthy && self.router.is_healthy(msg.index) {
            log::info!("{} ({}) is healthy", new, self.urls[msg.index]);
        }
    }
}

impl Handler<Joined> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: Joined, _: &mut Self::Context) {
        // Indices are the poller's; one may join before a lower one does.
        while self.urls.len() <= msg.index {
            let slot = self.router.add(String::new());
            self.router.retire(slot);
            self.urls.push(String::new());
        }
        if self.urls[msg.index].is_empty() {
            self.targets.resize(self.urls.len(), None);
            self.targets[msg.index] = None;
            self.urls[msg.index] = msg.url;
            self.router
                .set_name(msg.index, initial_name(&self.urls[msg.index]));
        }
        self.router.rejoin(msg.index);
        log::info!(
            "{} joined as substation {}",
            self.urls[msg.index],
            msg.index
        );
    }
}

impl Handler<Left> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: Left, _: &mut Self::Context) {
        if msg.index < self.urls.len() {
            let name = self.router.name(msg.index).to_string();
            log::info!("{name} ({}) left", self.urls[msg.index]);
            self.router.retire(msg.index);
            self.forget_label(&name);
        }
    }
}

impl Handler<PollFailed> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: PollFailed, _: &mut Self::Context) {
        if self.router.is_healthy(msg.index) {
            log::warn!(
                "{} ({}) unhealthy: poll failed: {}",
                self.router.name(msg.index),
                self.urls[msg.index],
                msg.reason
            );
        }
        self.router.poll_failed(msg.index);
    }
}

impl Handler<AttachPoller> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: AttachPoller, _: &mut Self::Context) {
        self.poller = Some(msg.0);
    }
}

impl Handler<GetStatus> for RouterActor {
    type Result = actix::MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        let now = self.now();
        let substations = self
            .router
            .status(now)
            .into_iter()
            .zip(&self.urls)
            .enumerate()
            .filter(|(i, _)| !self.router.is_retired(*i))
            .map(|(_, (view, url))| SubstationStatus {
                url: url.clone(),
                view,
            })
            .collect();
        actix::MessageResult(Status {
            instance: self.instance.clone(),
            poll_interval_ms: self.poll_interval.as_millis() as u64,
            substations,
        })
    }
}

impl Handler<Route> for RouterActor {
    type Result = ResponseActFuture<Self, Result<ChargeGranted>>;

    fn handle(&mut self, msg: Route, _: &mut Self::Context) -> Self::Result {
        let request = msg.0.to_request();
        let power_w = msg.0.power_w();
        let min_w = msg.0.min_power_w();
        let power_kw = msg.0.power_kw;
        // Encoded once; every attempt sends the same bytes.
        let body = match serde_json::to_vec(&request) {
            Ok(b) => Bytes::from(b),
            Err(e) => return Box::pin(ready(Err(Error::internal(e)))),
        };
        self.attempt(Attempt {
            body,
            power_w,
            min_w,
            power_kw,
            exclude: Vec::new(),
            refusals: 0,
            refreshed: false,
            may_move: true,
            rebalanced: false,
        })
    }
}

/// A substation's `/charge` URI, its batcher and its `lb_decisions_total`
/// series, made once per substation (and again if its name changes).
#[derive(Clone)]
struct Target {
    uri: Uri,
    /// Coalesces requests to its `/charge/batch`, unless batching is off.
    batcher: Option<Batcher>,
    name: String,
    decisions: IntCounter,
}

impl Target {
    /// Sends one encoded request, batched or on its own.
    async fn forward(self, client: awc::Client, body: Bytes) -> Forwarded {
        match &self.batcher {
            Some(b) => parse_grant(&self.uri, b.submit(body).await),
            None => post_charge_body(&client, self.uri, body).await,
        }
    }
}

/// One request being routed: what every attempt needs.
struct Attempt {
    body: Bytes,
    power_w: f64,
    /// Minimum power, watts: what the substation's admission counts.
    min_w: f64,
    power_kw: f64,
    /// Substations already tried for this request.
    exclude: Vec<usize>,
    refusals: usize,
    /// Whether a fresh poll was taken for it already.
    refreshed: bool,
    /// Whether sessions may still be moved for it (once per request).
    may_move: bool,
    /// Whether sessions were moved to make room for it.
    rebalanced: bool,
}

/// How a forwarding attempt ended, for the core.
fn settlement(forwarded: &Forwarded) -> Settlement {
    match forwarded {
        Forwarded::Granted(g) => Settlement::Admitted {
            ends_in_s: g.ends_in_s,
            seq: g.seq,
        },
        Forwarded::Refused(_) => Settlement::Refused,
        Forwarded::Unreachable(_) | Forwarded::Timeout => Settlement::Unreachable,
        Forwarded::Invalid(_) | Forwarded::Failed(_) => Settlement::Abandoned,
    }
}

/// How a forwarding attempt ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Settlement {
    /// Admitted; the session ends after this many seconds.
    Admitted { ends_in_s: f64, seq: Option<u64> },
    /// The substation answered 503.
    Refused,
    /// Connection failed or timed out.
    Unreachable,
    /// Anything else; just release the reservation.
    Abandoned,
}

type Routing = std::pin::Pin<Box<dyn ActorFuture<RouterActor, Output = Result<ChargeGranted>>>>;

impl RouterActor {
    /// Chooses a substation for `power_w` (at least `min_w`) and books it
    /// as in flight.
    fn reserve(&mut self, power_w: f64, min_w: f64, exclude: &[usize]) -> Option<(Ticket, Target)> {
        let start = Instant::now();
        let now = self.now();
        let ticket = self.router.reserve(power_w, min_w, exclude, now);
        self.metrics
            .decision_duration
            .observe(start.elapsed().as_secs_f64());
        let ticket = ticket?;
        let target = match self.target(ticket.index) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("substation {} has no usable URL: {e}", ticket.index);
                self.router.abandoned(&ticket);
                return None;
            }
        };
        target.decisions.inc();
        Some((ticket, target))
    }

    /// The cached target of `index`, made again if the substation was renamed.
    fn target(&mut self, index: usize) -> Result<Target> {
        if self.targets.len() < self.urls.len() {
            self.targets.resize(self.urls.len(), None);
        }
        let name = self.router.name(index);
        if let Some(t) = &self.targets[index] {
            if t.name == name {
                return Ok(t.clone());
            }
        }
        let batcher = match self.batch.enabled() {
            true => Some(Batcher::new(
                self.client.clone(),
                join_uri(&self.urls[index], "/charge/batch")?,
                self.batch,
            )),
            false => None,
        };
        let t = Target {
            uri: charge_uri(&self.urls[index])?,
            batcher,
            name: name.to_string(),
            decisions: self.metrics.decisions.with_label_values(&[name]),
        };
        self.targets[index] = Some(t.clone());
        Ok(t)
    }

    /// Releases a reservation with its outcome.
    fn settle(&mut self, ticket: &Ticket, outcome: Settlement) {
        let now = self.now();
        match outcome {
            Settlement::Admitted { ends_in_s, seq } => {
                self.router.confirm(ticket, ends_in_s, seq, now)
            }
            Settlement::Refused => self.router.refused(ticket),
            Settlement::Unreachable => self.router.unreachable(ticket, now),
            Settlement::Abandoned => self.router.abandoned(ticket),
        }
    }

    /// Reserves, forwards, settles; on a refusal or failure, the next best.
    fn attempt(&mut self, a: Attempt) -> Routing {
        let Some((ticket, target)) = self.reserve(a.power_w, a.min_w, &a.exclude) else {
            return self.no_room(a);
        };
        if !a.exclude.is_empty() {
            self.metrics.retries.inc();
        }
        self.forward(a, ticket, target)
    }

    /// Forwards `a` under `ticket`, settles, and on a refusal or failure
    /// tries the next best.
    fn forward(&mut self, mut a: Attempt, ticket: Ticket, target: Target) -> Routing {
        // A clone shares the same connection pool; no new client per request.
        let post = target.clone().forward(self.client.clone(), a.body.clone());
        Box::pin(wrap_future::<_, Self>(post).then(move |forwarded, act, _| {
            act.settle(&ticket, settlement(&forwarded));
            let name = &target.name;
            let done: Routing = match forwarded {
                Forwarded::Granted(g) => {
                    if a.rebalanced {
                        act.metrics.rebalanced.inc();
                    }
                    Box::pin(ready(Ok(g)))
                }
                Forwarded::Invalid(m) => Box::pin(ready(Err(Error::invalid(m)))),
                other => {
                    match other {
                        Forwarded::Refused(m) => {
                            a.refusals += 1;
                            log::debug!("{name} refused: {m}");
                        }
                        Forwarded::Unreachable(m) => {
                            log::warn!("{name} unreachable, retrying: {m}")
                        }
                        Forwarded::Timeout => log::warn!("{name} timed out, retrying"),
                        Forwarded::Failed(m) => log::warn!("{name} failed, retrying: {m}"),
                        Forwarded::Granted(_) | Forwarded::Invalid(_) => {}
                    }
                    a.exclude.push(ticket.index);
                    act.attempt(a)
                }
            };
            done
        }))
    }
}

impl RouterActor {
    /// No substation has room for `a` as the router sees them: decide again
    /// on a fresh poll (once per request), then move sessions to make room
    /// if a plan exists (on those figures: a move is not made for room that
    /// is there already), else refuse.
    fn no_room(&mut self, mut a: Attempt) -> Routing {
        if !a.refreshed {
            a.refreshed = true;
            if let Some(fresh) = self.fresh_figures() {
                return Box::pin(fresh.then(move |_, act, _| {
                    a.exclude.clear();
                    act.attempt(a)
                }));
            }
        }
        if a.may_move {
            a.may_move = false;
            let now = self.now();
            if let Some(plan) = self.router.plan_moves(a.power_w, a.min_w, &a.exclude, now) {
                return self.rebalance(a, plan);
            }
        }
        self.metrics.no_capacity.inc();
        Box::pin(ready(Err(Error::unavailable(format!(
            "no substation can admit {} kW ({} refused)",
            a.power_kw, a.refusals
        )))))
    }

    /// A poll of every substation for a refusal to rest on: joins the one in
    /// flight, or takes one unless the last ended under `REFUSAL_POLL_GAP`
    /// ago. `None` when there is no poll to wait for. The request that starts
    /// a poll carries it: its future applies the samples and wakes the
    /// others (an actor future runs to its end even if its caller leaves).
    fn fresh_figures(&mut self) -> Option<Pin<Box<dyn ActorFuture<Self, Output = ()>>>> {
        let poller = self.poller.clone()?;
        let r = &mut self.refresh;
        if r.in_flight {
            let (tx, rx) = tokio::sync::oneshot::channel();
            r.waiters.push(tx);
            return Some(Box::pin(wrap_future::<_, Self>(async move {
                let _ = rx.await;
            })));
        }
        if r.last_done.is_some_and(|t| t.elapsed() < REFUSAL_POLL_GAP) {
            return None;
        }
        r.in_flight = true;
        self.metrics.refusal_polls.inc();
        let origin = self.origin;
        let poll = async move { poller.send(PollNow).await.unwrap_or_default() };
        Some(Box::pin(wrap_future::<_, Self>(poll).map(
            move |samples, act, _| {
                let now = act.now();
                for s in samples {
                    let at = s.at.saturating_duration_since(origin).as_secs_f64();
                    act.router.observe(s.index, &s.sample, at, now);
                }
                let r = &mut act.refresh;
                r.in_flight = false;
                r.last_done = Some(Instant::now());
                for w in r.waiters.drain(..) {
                    let _ = w.send(());
                }
            },
        )))
    }

    /// Per move: its hand-over URI, and the `/charge` URIs of its new and
    /// old substations (the targets' own, parsed once).
    fn move_uris(&mut self, moves: &[Move]) -> Result<Vec<(Uri, Uri, Uri)>> {
        let mut uris = Vec::with_capacity(moves.len());
        for m in moves {
            let id = format!("{}-{}", self.router.name(m.from), m.seq);
            let handover = join_uri(&self.urls[m.from], &format!("/sessions/{id}/handover"))?;
            let to = self.target(m.ticket.index)?.uri;
            let back = self.target(m.from)?.uri;
            uris.push((handover, to, back));
        }
        Ok(uris)
    }

    /// Carries out `plan` to make room for `a`: every session is handed over
    /// first (a plan may exchange sessions, so room is only there once all
    /// have left), then each continuation is admitted where the plan put it
    /// (or, failing that, taken back where it was), then `a` is forwarded
    /// where the room was made, and routed as usual from there.
    fn rebalance(&mut self, mut a: Attempt, plan: Rebalance) -> Routing {
        let Rebalance { moves, ticket } = plan;
        let uris = self.move_uris(&moves);
        let (Some(auth), Ok(uris)) = (self.handover_auth.clone(), uris) else {
            for m in &moves {
                self.router.abandoned(&m.ticket);
            }
            self.router.abandoned(&ticket);
            return self.no_room(a);
        };
        a.rebalanced = true;
        let client = self.client.clone();
        let handovers = futures_util::future::join_all(uris.iter().map(|(handover, _, _)| {
            let (client, uri, auth) = (client.clone(), handover.clone(), auth.clone());
            async move { post_handover(&client, uri, &auth).await }
        }));
        Box::pin(
            wrap_future::<_, Self>(handovers).then(move |answers, act, _| {
                let now = act.now();
                let mut rests: Vec<(Move, ChargeRequest, Uri, Uri)> = Vec::new();
                for ((m, answer), (_, to, back)) in moves.into_iter().zip(answers).zip(uris) {
                    match answer {
                        HandedOver::Moved(left) => {
                            act.router.moved_out(m.from, m.seq, now);
                            match left.continuation() {
                                Some(rest) => rests.push((m, rest, to, back)),
                                None => act.router.abandoned(&m.ticket),
                            }
                        }
                        HandedOver::Failed(e) => {
                            // Still charging there, or ended: the next poll
                            // says which; the plan goes ahead without it.
                            log::warn!(
                                "hand-over of {}-{} failed: {e}",
                                act.router.name(m.from),
                                m.seq
                            );
                            act.metrics.moves.with_label_values(&["failed"]).inc();
                            act.router.abandoned(&m.ticket);
                        }
                    }
                }
                act.continue_moved(a, ticket, rests)
            }),
        )
    }

    /// Admits each moved session's rest on its new substation, or else back
    /// on its old one; then forwards `a` under `ticket`.
    fn continue_moved(
        &mut self,
        a: Attempt,
        ticket: Ticket,
        rests: Vec<(Move, ChargeRequest, Uri, Uri)>,
    ) -> Routing {
        let client = self.client.clone();
        let admissions =
            futures_util::future::join_all(rests.into_iter().map(|(m, rest, to, back)| {
                let client = client.clone();
                async move {
                    let body = match serde_json::to_vec(&rest) {
                        Ok(b) => Bytes::from(b),
                        Err(e) => return (m, Forwarded::Failed(e.to_string()), None),
                    };
                    let there = post_charge_body(&client, to, body.clone()).await;
                    if matches!(there, Forwarded::Granted(_)) {
                        return (m, there, None);
                    }
                    // Taken back where it was: its room there is still free
                    // unless someone else took it meanwhile.
                    let home = post_charge_body(&client, back, body).await;
                    (m, there, Some(home))
                }
            }));
        Box::pin(
            wrap_future::<_, Self>(admissions).then(move |outcomes, act, _| {
                for (m, there, home) in outcomes {
                    act.settle(&m.ticket, settlement(&there));
                    let name = act.router.name(m.from).to_string();
                    let result = match (&there, &home) {
                        (Forwarded::Granted(_), _) => "moved",
                        (_, Some(Forwarded::Granted(_))) => {
                            log::warn!("{name}-{}: its new substation refused it, so it went back: {there:?}", m.seq);
                            "returned"
                        }
                        _ => {
                            log::error!(
                                "{name}-{}: handed over, then admitted by neither its new substation ({there:?}) nor its old one ({home:?})",
                                m.seq
                            );
                            "dropped"
                        }
                    };
                    act.metrics.moves.with_label_values(&[result]).inc();
                }
                match act.target(ticket.index) {
                    Ok(target) => {
                        target.decisions.inc();
                        act.forward(a, ticket, target)
                    }
                    Err(e) => {
                        log::warn!("substation {} has no usable URL: {e}", ticket.index);
                        act.router.abandoned(&ticket);
                        act.attempt(a)
                    }
                }
            }),
        )
    }
}
