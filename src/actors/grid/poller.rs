//! `LoadPollerActor`: scrapes every substation's `/metrics` on an interval.
//!
//! All substations are polled concurrently, each with a deadline covering
//! connect, headers and body. A substation whose previous poll has not
//! finished is skipped for this round, so there is at most one poll — and at
//! most one message to `RouterActor` — in flight per substation (which is why
//! `do_send` cannot build up a queue here).

use std::time::Instant;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Recipient, WrapFuture};

use super::messages::{LoadSampled, PollFailed, PollTiming};
use super::metrics::BalancerMetrics;
use super::router::initial_name;
use crate::grid::LoadSample;

/// Largest `/metrics` body accepted.
const MAX_METRICS_BODY: usize = 4 * 1024 * 1024;

/// The poller actor.
pub struct LoadPollerActor {
    metrics_urls: Vec<String>,
    names: Vec<String>,
    inflight: Vec<bool>,
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
        LoadPollerActor {
            metrics_urls: urls
                .iter()
                .map(|u| format!("{}/metrics", u.trim_end_matches('/')))
                .collect(),
            names: urls.iter().map(|u| initial_name(u)).collect(),
            inflight: vec![false; urls.len()],
            client,
            sampled,
            failed,
            timing,
            metrics,
        }
    }

    fn poll_all(&mut self, ctx: &mut Context<Self>) {
        for index in 0..self.metrics_urls.len() {
            if self.inflight[index] {
                continue;
            }
            self.inflight[index] = true;
            let client = self.client.clone();
            let url = self.metrics_urls[index].clone();
            let timeout = self.timing.timeout;
            let at = Instant::now();
            let fetch = async move {
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
            };
            ctx.spawn(
                fetch
                    .into_actor(self)
                    .map(move |res, act, _| act.finish(index, at, res)),
            );
        }
    }

    fn finish(&mut self, index: usize, at: Instant, res: Result<String, PollError>) {
        self.inflight[index] = false;
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
                if !sample.substation.is_empty() {
                    self.names[index].clone_from(&sample.substation);
                }
                self.metrics
                    .polls
                    .with_label_values(&[&self.names[index], "ok"])
                    .inc();
                self.sampled.do_send(LoadSampled { index, sample, at });
            }
            Err((result, reason)) => {
                self.metrics
                    .polls
                    .with_label_values(&[&self.names[index], result])
                    .inc();
                log::debug!("poll of {} failed: {reason}", self.metrics_urls[index]);
                self.failed.do_send(PollFailed { index, reason });
            }
        }
    }
}

impl Actor for LoadPollerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.poll_all(ctx);
        ctx.run_interval(self.timing.interval, |act, ctx| act.poll_all(ctx));
    }
}
