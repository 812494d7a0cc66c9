//! `LoadPollerActor`: scrapes every substation's `/metrics` on an interval.
//!
//! Substations are listed (`http://host:port`) or found by DNS
//! (`dns+http://name:port`: every A/AAAA record of the name is a substation
//! on that port). Names are resolved again at every poll round. A new
//! address gets the next index and joins the router (`Joined`) at its first
//! successful poll; an address that disappears leaves (`Left`); one that
//! comes back keeps its old index. A failed resolution keeps the last
//! answer.
//!
//! All substations are polled concurrently, each with a deadline covering
//! connect, headers and body. A substation whose previous poll has not
//! finished is skipped for this round, so there is at most one poll — and at
//! most one message to `RouterActor` — in flight per substation (which is why
//! `do_send` cannot build up a queue here).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Recipient, ResponseActFuture, WrapFuture,
};

use super::messages::{Joined, Left, LoadSampled, PollFailed, PollNow, PollTiming};
use super::metrics::BalancerMetrics;
use super::router::initial_name;
use crate::grid::LoadSample;
use crate::net::dns::{DnsSource, Resolver};

/// Largest `/metrics` body accepted.
const MAX_METRICS_BODY: usize = 4 * 1024 * 1024;

/// Where the substations come from, besides the listed ones.
pub struct Discovery {
    pub sources: Vec<DnsSource>,
    pub resolver: Resolver,
    /// Who learns of joins and departures.
    pub joined: Recipient<Joined>,
    pub left: Recipient<Left>,
}

/// One substation address the poller knows, by index.
struct Member {
    url: String,
    metrics_url: String,
    name: String,
    inflight: bool,
    /// Listed in `SUBSTATIONS` rather than found by DNS: never leaves.
    listed: bool,
    /// In the last resolution (always, for a listed one).
    present: bool,
    /// The router knows it as present (always, for a listed one).
    announced: bool,
}

/// The poller actor.
pub struct LoadPollerActor {
    members: Vec<Member>,
    by_url: HashMap<String, usize>,
    discovery: Option<Discovery>,
    resolving: bool,
    client: awc::Client,
    sampled: Recipient<LoadSampled>,
    failed: Recipient<PollFailed>,
    timing: PollTiming,
    metrics: BalancerMetrics,
}

enum PollError {
    Timeout,
    Other(String),
}

impl LoadPollerActor {
    /// A poller over `urls` (base URLs) reporting to the router.
    pub fn new(
        urls: &[String],
        client: awc::Client,
        sampled: Recipient<LoadSampled>,
        failed: Recipient<PollFailed>,
        timing: PollTiming,
        metrics: BalancerMetrics,
    ) -> Self {
        let mut poller = LoadPollerActor {
            members: Vec::new(),
            by_url: HashMap::new(),
            discovery: None,
            resolving: false,
            client,
            sampled,
            failed,
            timing,
            metrics,
        };
        for url in urls {
            poller.add_member(url.trim_end_matches('/').to_string(), true);
        }
        poller
    }

    /// Adds substations found by DNS to the listed ones.
    pub fn with_discovery(mut self, discovery: Discovery) -> Self {
        if !discovery.sources.is_empty() {
            self.discovery = Some(discovery);
        }
        self
    }

    fn add_member(&mut self, url: String, listed: bool) -> usize {
        let index = self.members.len();
        self.by_url.insert(url.clone(), index);
        self.members.push(Member {
            metrics_url: format!("{url}/metrics"),
            name: initial_name(&url),
            url,
            inflight: false,
            listed,
            present: true,
            announced: listed,
        });
        index
    }

    /// Resolves every DNS source (one round at a time) and updates the
    /// membership with the answer.
    fn resolve(&mut self, ctx: &mut Context<Self>) {
        let Some(d) = &self.discovery else { return };
        if self.resolving {
            return;
        }
        self.resolving = true;
        let lookups: Vec<_> = d
            .sources
            .iter()
            .map(|src| {
                let src = src.clone();
                let lookup = (d.resolver)(src.host.clone());
                async move { (lookup.await, src) }
            })
            .collect();
        let all = futures_util::future::join_all(lookups);
        ctx.spawn(all.into_actor(self).map(|answers, act, ctx| {
            act.resolving = false;
            let mut found = BTreeSet::new();
            for (answer, src) in answers {
                match answer {
                    Ok(ips) => found.extend(ips.into_iter().map(|ip| src.url(ip))),
                    Err(e) => {
                        log::warn!("resolving substations failed, keeping the last answer: {e}");
                        return;
                    }
                }
            }
            act.update_members(&found);
            act.poll_all(ctx);
        }));
    }

    fn update_members(&mut self, found: &BTreeSet<String>) {
        for url in found {
            match self.by_url.get(url) {
                Some(&i) => self.members[i].present = true,
                None => {
                    let i = self.add_member(url.clone(), false);
                    log::info!("found substation address {url} (index {i})");
                }
            }
        }
        let Some(d) = &self.discovery else { return };
        for (index, m) in self.members.iter_mut().enumerate() {
            if m.listed || found.contains(&m.url) {
                continue;
            }
            if m.present && m.announced {
                d.left.do_send(Left { index });
            }
            m.present = false;
            m.announced = false;
        }
    }

    fn poll_all(&mut self, ctx: &mut Context<Self>) {
        for index in 0..self.members.len() {
            let m = &mut self.members[index];
            if m.inflight || !m.present {
                continue;
            }
            m.inflight = true;
            let fetch = scrape(
                self.client.clone(),
                m.metrics_url.clone(),
                self.timing.timeout,
            );
            let at = Instant::now();
            ctx.spawn(
                fetch
                    .into_actor(self)
                    .map(move |res, act, _| act.finish(index, at, res)),
            );
        }
    }

    fn finish(&mut self, index: usize, at: Instant, res: Result<String, PollError>) {
        self.members[index].inflight = false;
        if let Some(sample) = self.apply(index, at, res) {
            self.sampled.do_send(LoadSampled { index, sample, at });
        }
    }

    /// Counts a poll's result and announces joins and failures; returns the
    /// sample of a successful poll.
    fn apply(
        &mut self,
        index: usize,
        at: Instant,
        res: Result<String, PollError>,
    ) -> Option<LoadSample> {
        if !self.members[index].present {
            // It left while the poll was in flight.
            return None;
        }
        self.metrics
            .poll_duration
            .observe(at.elapsed().as_secs_f64());
        let parsed = match res {
            Ok(body) => LoadSample::from_exposition(&body).map_err(|e| ("error", e.to_string())),
            Err(PollError::Timeout) => Err(("timeout", "timed out".to_string())),
            Err(PollError::Other(e)) => Err(("error", e)),
        };
        match parsed {
            Ok(sample) => {
                let m = &mut self.members[index];
                if !sample.substation.is_empty() {
                    m.name.clone_from(&sample.substation);
                }
                self.metrics.polls.with_label_values(&[&m.name, "ok"]).inc();
                if !m.announced {
                    // Joins at its first successful poll.
                    if let Some(d) = &self.discovery {
                        m.announced = true;
                        let url = m.url.clone();
                        d.joined.do_send(Joined { index, url });
                    }
                }
                Some(sample)
            }
            Err((result, reason)) => {
                let m = &self.members[index];
                self.metrics
                    .polls
                    .with_label_values(&[&m.name, result])
                    .inc();
                log::debug!("poll of {} failed: {reason}", m.metrics_url);
                if m.announced {
                    self.failed.do_send(PollFailed { index, reason });
                }
                None
            }
        }
    }
}

/// GETs `url` (a `/metrics`) within `timeout`: connect, headers and body.
async fn scrape(
    client: awc::Client,
    url: String,
    timeout: std::time::Duration,
) -> Result<String, PollError> {
    let work = async {
        let mut resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| PollError::Other(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(PollError::Other(format!("status {}", resp.status())));
        }
        let body = resp
            .body()
            .limit(MAX_METRICS_BODY)
            .await
            .map_err(|e| PollError::Other(e.to_string()))?;
        String::from_utf8(body.to_vec()).map_err(|e| PollError::Other(e.to_string()))
    };
    match actix_rt::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(PollError::Timeout),
    }
}

impl Handler<PollNow> for LoadPollerActor {
    type Result = ResponseActFuture<Self, Vec<LoadSampled>>;

    /// Scrapes every present substation at once (beside any regular poll in
    /// flight) and answers with the samples; the router applies them itself,
    /// before it decides again.
    fn handle(&mut self, _: PollNow, _: &mut Self::Context) -> Self::Result {
        let scrapes: Vec<_> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.present)
            .map(|(index, m)| {
                let at = Instant::now();
                let fetch = scrape(
                    self.client.clone(),
                    m.metrics_url.clone(),
                    self.timing.timeout,
                );
                async move { (index, at, fetch.await) }
            })
            .collect();
        Box::pin(
            futures_util::future::join_all(scrapes)
                .into_actor(self)
                .map(|results, act, _| {
                    results
                        .into_iter()
                        .filter_map(|(index, at, res)| {
                            let sample = act.apply(index, at, res)?;
                            Some(LoadSampled { index, sample, at })
                        })
                        .collect()
                }),
        )
    }
}

impl Actor for LoadPollerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.poll_all(ctx);
        self.resolve(ctx);
        ctx.run_interval(self.timing.interval, |act, ctx| {
            act.poll_all(ctx);
            act.resolve(ctx);
        });
    }
}
