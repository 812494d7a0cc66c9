//! The `Causal-Context` header: `VClock`'s `FromStr` and `parse_context`.
//!
//! A client sends this header on any `/put` or `/get`; the server reads it
//! as text (`HeaderValue::to_str`) and parses it. The input is any UTF-8
//! string (a superset of what a header can carry). Checked:
//!
//! * an accepted header holds only digits, `+`, `,` and whitespace, and has
//!   one entry per comma-separated part;
//! * its display form (the header the server sends back) is canonical
//!   (`digits(,digits)*`), re-parses to the same clock and re-displays
//!   identically;
//! * `parse_context` accepts it for exactly its own cluster size and returns
//!   the same clock, and rejects whatever `FromStr` rejects;
//! * partial-order laws on it, and, when the input holds two clocks
//!   separated by `|`, on the pair (`compare` agrees with `le` both ways and
//!   is antisymmetric, `merge` is a commutative least upper bound).

#![no_main]

use causal_grid::causal::session::parse_context;
use causal_grid::causal::vclock::{Causality, VClock};
use libfuzzer_sys::fuzz_target;

fn check_one(raw: &str) -> Option<VClock> {
    let parsed = raw.parse::<VClock>();
    let clock = match parsed {
        Ok(clock) => clock,
        Err(_) => {
            for n in 0..4 {
                assert!(
                    parse_context(raw, n).is_err(),
                    "parse_context accepted {raw:?} that FromStr rejects"
                );
            }
            return None;
        }
    };

    assert!(
        raw.chars()
            .all(|c| c.is_ascii_digit() || c == '+' || c == ',' || c.is_whitespace()),
        "accepted a header with other characters: {raw:?}"
    );
    assert!(!clock.is_empty(), "accepted an empty clock from {raw:?}");
    assert_eq!(
        clock.len(),
        raw.matches(',').count() + 1,
        "entry count of {raw:?}"
    );

    let shown = clock.to_string();
    assert!(
        !shown.is_empty()
            && !shown.starts_with(',')
            && !shown.ends_with(',')
            && !shown.contains(",,")
            && shown.bytes().all(|b| b.is_ascii_digit() || b == b','),
        "display form {shown:?} of {raw:?} is not canonical"
    );
    let again: VClock = shown
        .parse()
        .unwrap_or_else(|e| panic!("display form {shown:?} of {raw:?} does not re-parse: {e}"));
    assert_eq!(again, clock, "{raw:?} -> {shown:?} changed the clock");
    assert_eq!(again.to_string(), shown);

    let n = clock.len();
    assert_eq!(parse_context(raw, n).as_ref(), Ok(&clock));
    assert!(parse_context(raw, n + 1).is_err());
    assert!(parse_context(raw, n - 1).is_err());

    assert_eq!(clock.compare(&clock), Causality::Equal);
    let zero = VClock::zero(n);
    assert!(zero.le(&clock));
    let mut joined = zero.clone();
    joined.merge(&clock);
    assert_eq!(joined, clock);
    for k in 0..n {
        assert_eq!(clock.get(k), clock.entries()[k]);
    }
    assert_eq!(clock.get(n), 0);
    Some(clock)
}

fn check_pair(a: &VClock, b: &VClock) {
    let ab = a.compare(b);
    let ba = b.compare(a);
    let flipped = match ab {
        Causality::Before => Causality::After,
        Causality::After => Causality::Before,
        other => other,
    };
    assert_eq!(ba, flipped, "compare is not antisymmetric on {a} / {b}");
    assert_eq!(ab == Causality::Equal, a.le(b) && b.le(a));
    assert_eq!(ab == Causality::Before, a.le(b) && !b.le(a));
    if ab == Causality::Equal && a.len() == b.len() {
        assert_eq!(a, b);
    }

    let mut m1 = a.clone();
    m1.merge(b);
    let mut m2 = b.clone();
    m2.merge(a);
    assert_eq!(m1, m2, "merge is not commutative on {a} / {b}");
    assert_eq!(m1.len(), a.len().max(b.len()));
    assert!(a.le(&m1) && b.le(&m1), "merge is not an upper bound");
    for k in 0..m1.len() {
        assert_eq!(m1.get(k), a.get(k).max(b.get(k)), "merge is not least");
    }
    if a.le(b) {
        let mut ab = a.clone();
        ab.merge(b);
        assert!(ab.le(b) && b.le(&ab));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    check_one(raw);
    if let Some((left, right)) = raw.split_once('|') {
        if let (Some(a), Some(b)) = (check_one(left), check_one(right)) {
            check_pair(&a, &b);
        }
    }
});
