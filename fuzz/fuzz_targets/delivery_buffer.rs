//! The causal delivery buffer against a reference model.
//!
//! Peers decide which writes a node is offered, in which order, how often,
//! and how far ahead. This target drives a `DeliveryBuffer` with a structured
//! sequence of operations (decoded from the fuzz input with `arbitrary`):
//! offers of small, mostly well-formed writes (sometimes malformed on
//! purpose) and `advance` calls (the node's own writes becoming durable),
//! starting from a fuzzed delivered clock. A deliberately naive model (a map
//! of waiting writes, delivered by repeated full scans) runs alongside.
//! After every operation:
//!
//! * the outcome (`Delivered`, `Buffered`, `Duplicate`, `InvalidInput`,
//!   `Unavailable`) is the model's;
//! * the writes handed out are exactly the model's, each causally
//!   deliverable at the moment it was handed out (checked in the buffer's own
//!   order), and the first one is the offered write when it was `Delivered`;
//! * `delivered()`, `len()` and `received()` are the model's.
//!
//! `advance` is only called for origins inside the cluster (the actor only
//! calls it with its own clock's entries).

#![no_main]

use std::collections::BTreeMap;

use causal_grid::causal::{DeliveryBuffer, Offered, VClock, Write};
use causal_grid::Error;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[path = "../common/causal.rs"]
mod common;

#[derive(Arbitrary, Debug)]
enum Op {
    Offer {
        origin: u8,
        vc: [u8; 4],
        key: u8,
        mangle: u8,
    },
    Advance {
        origin: u8,
        seq: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    n: u8,
    capacity: u8,
    start: [u8; 4],
    ops: Vec<Op>,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Buffered,
    Duplicate,
    Invalid,
    Unavailable,
}

/// Naive causal delivery: waiting writes in a map, full scans to deliver.
struct Model {
    n: usize,
    capacity: usize,
    delivered: Vec<u64>,
    waiting: BTreeMap<(usize, u64), Write>,
}

impl Model {
    fn ready(&self, w: &Write) -> bool {
        w.seq == self.delivered[w.origin] + 1
            && (0..self.n).all(|k| k == w.origin || w.vc.get(k) <= self.delivered[k])
    }

    fn drain(&mut self, out: &mut Vec<Write>) {
        loop {
            let next = self.waiting.values().find(|w| self.ready(w)).cloned();
            match next {
                Some(w) => {
                    self.waiting.remove(&(w.origin, w.seq));
                    self.delivered[w.origin] = w.seq;
                    out.push(w);
                }
                None => return,
            }
        }
    }

    fn offer(&mut self, w: Write, out: &mut Vec<Write>) -> Outcome {
        if w.validate(self.n).is_err() {
            return Outcome::Invalid;
        }
        let base = self.delivered[w.origin] + 1;
        if w.seq < base || self.waiting.contains_key(&(w.origin, w.seq)) {
            return Outcome::Duplicate;
        }
        let index = w.seq - base;
        if self.ready(&w) {
            self.delivered[w.origin] = w.seq;
            out.push(w);
            self.drain(out);
            return Outcome::Delivered;
        }
        if self.waiting.len() >= self.capacity || index > self.capacity as u64 {
            return Outcome::Unavailable;
        }
        self.waiting.insert((w.origin, w.seq), w);
        Outcome::Buffered
    }

    fn advance(&mut self, origin: usize, seq: u64, out: &mut Vec<Write>) {
        if seq > self.delivered[origin] {
            self.delivered[origin] = seq;
            self.waiting.retain(|&(o, s), _| !(o == origin && s <= seq));
            self.drain(out);
        }
    }

    fn received(&self) -> Vec<u64> {
        (0..self.n)
            .map(|j| {
                let mut r = self.delivered[j];
                while self.waiting.contains_key(&(j, r + 1)) {
                    r += 1;
                }
                r
            })
            .collect()
    }
}

fn make_write(n: usize, i: usize, origin: u8, vc: [u8; 4], key: u8, mangle: u8) -> Write {
    let origin = origin as usize % n;
    let mut entries: Vec<u64> = vc[..n].iter().map(|&v| (v % 8) as u64).collect();
    let mut write = Write {
        origin,
        seq: entries[origin],
        vc: VClock::zero(0),
        key: format!("k{}", key % 3),
        value: format!("op{i}"),
        ts_ms: i as u64,
    };
    match mangle % 32 {
        0 => write.seq += 1,
        1 => entries.push(0),
        2 => {
            entries.pop();
        }
        3 => write.key.clear(),
        4 => write.origin = n,
        5 => write.seq = 0,
        _ => {}
    }
    write.vc = VClock::from_vec(entries);
    write
}

fn causal_check(n: usize, shadow: &mut VClock, handed: &[Write]) {
    for w in handed {
        common::deliver_in_causal_order(n, shadow, w);
    }
}

fn sorted(ws: &[Write]) -> Vec<Write> {
    let mut v = ws.to_vec();
    v.sort_by_key(|w| (w.origin, w.seq));
    v
}

fuzz_target!(|input: Input| {
    let n = 1 + (input.n % 4) as usize;
    let capacity = (input.capacity % 16) as usize;
    let start: Vec<u64> = input.start[..n].iter().map(|&v| (v % 4) as u64).collect();

    let mut buffer = DeliveryBuffer::with_delivered(VClock::from_vec(start.clone()), capacity);
    let mut model = Model {
        n,
        capacity,
        delivered: start.clone(),
        waiting: BTreeMap::new(),
    };
    let mut shadow = VClock::from_vec(start);

    for (i, op) in input.ops.into_iter().take(256).enumerate() {
        let mut got = Vec::new();
        let mut want = Vec::new();
        match op {
            Op::Offer {
                origin,
                vc,
                key,
                mangle,
            } => {
                let write = make_write(n, i, origin, vc, key, mangle);
                let expected = model.offer(write.clone(), &mut want);
                let outcome = match buffer.offer(write.clone(), &mut got) {
                    Ok(Offered::Delivered) => Outcome::Delivered,
                    Ok(Offered::Buffered) => Outcome::Buffered,
                    Ok(Offered::Duplicate) => Outcome::Duplicate,
                    Err(Error::InvalidInput(_)) => Outcome::Invalid,
                    Err(Error::Unavailable(_)) => Outcome::Unavailable,
                    Err(e) => panic!("unexpected error {e:?} for {write:?}"),
                };
                assert_eq!(outcome, expected, "offer of {write:?}");
                if outcome == Outcome::Delivered {
                    assert_eq!(got.first(), Some(&write));
                }
            }
            Op::Advance { origin, seq } => {
                let origin = origin as usize % n;
                let seq = (seq % 12) as u64;
                model.advance(origin, seq, &mut want);
                buffer.advance(origin, seq, &mut got);
                if seq > shadow.get(origin) {
                    shadow.set(origin, seq);
                }
            }
        }
        causal_check(n, &mut shadow, &got);
        assert_eq!(
            sorted(&got),
            sorted(&want),
            "handed out other writes than the model"
        );
        assert_eq!(buffer.delivered().entries(), &model.delivered[..]);
        assert_eq!(buffer.delivered(), &shadow);
        assert_eq!(buffer.len(), model.waiting.len());
        assert_eq!(buffer.received().entries(), &model.received()[..]);
    }
});
