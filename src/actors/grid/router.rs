//! `RouterActor`: the balancer's routing state and its forwarding.
//!
//! Owns the pure `grid::Router` (decisions) and an `awc::Client` (forwarding).
//! A `Route` message runs as a future on the actor's arbiter that loops:
//! `Reserve` (one decision, a synchronous call into the core), POST to the
//! chosen substation, `Settle` with the outcome, and on a refusal or a
//! connection failure try the next best, excluding those already tried.
//! Each step goes back through the mailbox, so decisions of concurrent
//! requests interleave safely and every decision sees the reservations of the
//! others still in flight; that is what keeps a burst from herding.
//!
//! Logical time is seconds since the actor started.

use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, ResponseFuture};

use super::messages::{
    GetStatus, Joined, Left, LoadSampled, PollFailed, Reserve, Route, Settle, Settlement, Status,
    SubstationStatus,
};
use super::metrics::BalancerMetrics;
use crate::error::{Error, Result};
use crate::grid::{ChargeGranted, Router, RouterConfig, Ticket};
use crate::net::grid::{post_charge, Forwarded};

const GAUGE_TICK: Duration = Duration::from_millis(250);

/// The balancer's router actor.
pub struct RouterActor {
    router: Router,
    /// Base URL per index; substations found by DNS are appended.
    urls: Vec<String>,
    origin: Instant,
    client: awc::Client,
    metrics: BalancerMetrics,
    poll_interval: Duration,
    /// This balancer's name in `/status` (its host name).
    instance: String,
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
            urls,
            origin: Instant::now(),
            client,
            metrics,
            poll_interval,
            instance: String::new(),
        }
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

impl Handler<Reserve> for RouterActor {
    type Result = Option<(Ticket, String, String)>;

    fn handle(&mut self, msg: Reserve, _: &mut Self::Context) -> Self::Result {
        let start = Instant::now();
        let now = self.now();
        let ticket = self
            .router
            .reserve(msg.power_w, msg.min_w, &msg.exclude, now);
        self.metrics
            .decision_duration
            .observe(start.elapsed().as_secs_f64());
        let ticket = ticket?;
        let name = self.router.name(ticket.index).to_string();
        self.metrics.decisions.with_label_values(&[&name]).inc();
        let url = format!("{}/charge", self.urls[ticket.index].trim_end_matches('/'));
        Some((ticket, name, url))
    }
}

impl Handler<Settle> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: Settle, _: &mut Self::Context) {
        let now = self.now();
        match msg.outcome {
            Settlement::Admitted { ends_in_s, seq } => {
                self.router.confirm(&msg.ticket, ends_in_s, seq, now)
            }
            Settlement::Refused => self.router.refused(&msg.ticket),
            Settlement::Unreachable => self.router.unreachable(&msg.ticket, now),
            Settlement::Abandoned => self.router.abandoned(&msg.ticket),
        }
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
    type Result = ResponseFuture<Result<ChargeGranted>>;

    fn handle(&mut self, msg: Route, ctx: &mut Self::Context) -> Self::Result {
        let addr = ctx.address();
        // A clone shares the same connection pool; no new client per request.
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let req = msg.0.to_request();
            let power_w = msg.0.power_w();
            let min_w = msg.0.min_power_w();
            let mut exclude: Vec<usize> = Vec::new();
            let mut refusals = 0usize;
            loop {
                let reserved = addr
                    .send(Reserve {
                        power_w,
                        min_w,
                        exclude: exclude.clone(),
                    })
                    .await?;
                let Some((ticket, name, url)) = reserved else {
                    metrics.no_capacity.inc();
                    return Err(Error::unavailable(format!(
                        "no substation can admit {} kW ({} refused)",
                        msg.0.power_kw, refusals
                    )));
                };
                if !exclude.is_empty() {
                    metrics.retries.inc();
                }
                let index = ticket.index;
                let forwarded = post_charge(&client, &url, &req).await;
                let outcome = match &forwarded {
                    Forwarded::Granted(g) => Settlement::Admitted {
                        ends_in_s: g.ends_in_s,
                        seq: g.seq,
                    },
                    Forwarded::Refused(_) => Settlement::Refused,
                    Forwarded::Unreachable(_) | Forwarded::Timeout => Settlement::Unreachable,
                    Forwarded::Invalid(_) | Forwarded::Failed(_) => Settlement::Abandoned,
                };
                addr.send(Settle { ticket, outcome }).await?;
                match forwarded {
                    Forwarded::Granted(g) => return Ok(g),
                    Forwarded::Invalid(m) => return Err(Error::invalid(m)),
                    Forwarded::Refused(m) => {
                        refusals += 1;
                        log::debug!("{name} refused: {m}");
                    }
                    Forwarded::Unreachable(m) => log::warn!("{name} unreachable, retrying: {m}"),
                    Forwarded::Timeout => log::warn!("{name} timed out, retrying"),
                    Forwarded::Failed(m) => log::warn!("{name} failed, retrying: {m}"),
                }
                exclude.push(index);
            }
        })
    }
}
