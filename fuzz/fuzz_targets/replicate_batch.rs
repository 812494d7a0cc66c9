//! The peer replication wire format, end to end through the pure core.
//!
//! `POST /peer/replicate` decodes its body with serde_json into a
//! `ReplicateRequest`, and `DeliveryBufferActor` offers every write to the
//! node's `DeliveryBuffer`; delivered writes go on to the `Store`. This
//! target does the same without actix.
//!
//! Input: byte 0 picks the cluster size (1..=4), byte 1 the buffer capacity
//! (0..=63), and the rest is the JSON body. Checked:
//!
//! * a decoded batch re-encodes and decodes to the same batch;
//! * `offer` never panics, and fails with `InvalidInput` exactly when
//!   `Write::validate` rejects the write;
//! * every write handed out was causally deliverable at that moment (next
//!   sequence number of its origin, dependencies already delivered), none is
//!   handed out twice, and the buffer's delivered clock is exactly the clock
//!   of what it handed out; `received() >= delivered()`; the buffer never
//!   holds more than its capacity;
//! * `Delivered`/`Buffered`/`Duplicate` agree with what happened to `out`
//!   and `len()`; a duplicate is already delivered or already waiting; a
//!   refused write changes nothing;
//! * the `Store` fed the delivered writes has the same applied clock, and
//!   each key holds the highest-ranked delivered write for it;
//! * after the batch, every delivered write offered again is a duplicate.

#![no_main]

use std::collections::{BTreeMap, HashSet};

use causal_grid::causal::{DeliveryBuffer, Offered, Store, VClock, Write};
use causal_grid::wire::kv::ReplicateRequest;
use causal_grid::Error;
use libfuzzer_sys::fuzz_target;

#[path = "../common/causal.rs"]
mod common;

fn check_delivered(
    n: usize,
    shadow: &mut VClock,
    newly: &[Write],
    seen: &mut HashSet<(usize, u64)>,
    store: &mut Store,
    best: &mut BTreeMap<String, Write>,
) {
    for w in newly {
        assert!(w.validate(n).is_ok(), "delivered an invalid write {w:?}");
        assert!(seen.insert((w.origin, w.seq)), "delivered {w:?} twice");
        common::deliver_in_causal_order(n, shadow, w);
        store.apply(w);
        let replace = best
            .get(&w.key)
            .is_none_or(|current| w.rank() > current.rank());
        if replace {
            best.insert(w.key.clone(), w.clone());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = 1 + (data[0] % 4) as usize;
    let capacity = (data[1] % 64) as usize;
    let Ok(batch) = serde_json::from_slice::<ReplicateRequest>(&data[2..]) else {
        return;
    };

    let encoded = serde_json::to_vec(&batch).expect("a decoded batch encodes");
    let again: ReplicateRequest =
        serde_json::from_slice(&encoded).expect("an encoded batch decodes");
    assert_eq!(again.from, batch.from);
    assert_eq!(again.writes, batch.writes, "batch changed on a round trip");

    let mut buffer = DeliveryBuffer::new(n, capacity);
    let mut store = Store::new(n);
    let mut shadow = VClock::zero(n);
    let mut seen = HashSet::new();
    let mut waiting: HashSet<(usize, u64)> = HashSet::new();
    let mut best: BTreeMap<String, Write> = BTreeMap::new();
    let mut out: Vec<Write> = Vec::new();

    for write in &batch.writes {
        let valid = write.validate(n);
        let len_before = buffer.len();
        let delivered_before = buffer.delivered().clone();
        let out_before = out.len();
        let result = buffer.offer(write.clone(), &mut out);

        match (&valid, &result) {
            (Err(_), Err(Error::InvalidInput(_))) => {}
            (Err(e), other) => panic!("invalid write {write:?} ({e}) was {other:?}"),
            (Ok(()), Err(Error::InvalidInput(e))) => {
                panic!("valid write {write:?} refused as invalid: {e}")
            }
            _ => {}
        }
        match result {
            Ok(Offered::Delivered) => {
                assert!(out.len() > out_before, "Delivered but nothing handed out");
                assert_eq!(&out[out_before], write, "the offered write comes first");
            }
            Ok(Offered::Buffered) => {
                assert_eq!(out.len(), out_before);
                assert_eq!(buffer.len(), len_before + 1);
                assert!(buffer.len() <= capacity, "buffer over its capacity");
            }
            Ok(Offered::Duplicate) | Err(_) => {
                assert_eq!(out.len(), out_before, "{result:?} handed writes out");
                assert_eq!(buffer.len(), len_before, "{result:?} changed len");
                assert_eq!(buffer.delivered(), &delivered_before);
            }
        }
        let id = (write.origin, write.seq);
        match result {
            Ok(Offered::Duplicate) => assert!(
                write.seq <= delivered_before.get(write.origin) || waiting.contains(&id),
                "{write:?} dropped as a duplicate of nothing"
            ),
            Ok(Offered::Buffered) => {
                assert!(write.seq > delivered_before.get(write.origin));
                assert!(waiting.insert(id), "{write:?} buffered twice");
            }
            _ => {}
        }
        for w in &out[out_before..] {
            waiting.remove(&(w.origin, w.seq));
        }
        assert_eq!(
            buffer.len(),
            waiting.len(),
            "len() is not the number waiting"
        );

        check_delivered(
            n,
            &mut shadow,
            &out[out_before..],
            &mut seen,
            &mut store,
            &mut best,
        );
        assert_eq!(buffer.delivered(), &shadow, "delivered clock drifted");
        assert_eq!(store.applied(), &shadow, "store applied clock drifted");
        let received = buffer.received();
        assert_eq!(received.len(), n);
        assert!(
            shadow.le(&received),
            "received {received} < delivered {shadow}"
        );
        let ahead: u64 = (0..n).map(|k| received.get(k) - shadow.get(k)).sum();
        assert!(
            ahead as usize <= buffer.len(),
            "received counts missing writes"
        );
        assert_eq!(buffer.is_empty(), waiting.is_empty());
    }

    for (key, w) in &best {
        let stored = store.get(key).expect("a delivered key is stored");
        assert_eq!(&*stored.value, w.value.as_str(), "key {key:?} diverged");
        assert_eq!(stored.vc, w.vc);
        assert_eq!(stored.origin, w.origin);
    }
    assert_eq!(store.len(), best.len());

    let len = buffer.len();
    for w in out.clone() {
        let mut more = Vec::new();
        assert_eq!(
            buffer.offer(w, &mut more).ok(),
            Some(Offered::Duplicate),
            "a delivered write was not recognised as a duplicate"
        );
        assert!(more.is_empty());
    }
    assert_eq!(buffer.len(), len);
});
