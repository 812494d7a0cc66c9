//! The Prometheus text exposition parser the load balancer runs on every
//! substation's `/metrics` body (`grid::exposition::parse` and
//! `LoadSample::from_exposition`). The input is any UTF-8 text. Checked:
//!
//! * on success there is exactly one sample per line that is neither blank
//!   nor a `#` comment, in order: the parser never returns a sample for a
//!   line that is not a sample, and never skips one;
//! * each sample's name is a valid metric name and its line starts with the
//!   whole name (not a prefix of a longer one), its label names are valid
//!   label names;
//! * each sample, written back out in canonical form (escaped label values,
//!   `NaN`/`+Inf`/`-Inf`, shortest round-trip number), parses back to the
//!   same sample, bit for bit, and that line alone parses to it too;
//! * on failure the error names a line that is a sample line which does not
//!   parse on its own, and the text before that line parses;
//! * `from_exposition` succeeds exactly when both gauges are present with a
//!   finite, non-negative first value, and reports those first values.

#![no_main]

use causal_grid::grid::exposition::{parse, LoadSample, Sample};
use causal_grid::Error;
use libfuzzer_sys::fuzz_target;

fn is_sample_line(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !line.starts_with('#')
}

fn valid_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    matches!(chars.next(), Some(c) if ok_first(c))
        && chars.all(|c| ok_first(c) || c.is_ascii_digit())
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn encode(s: &Sample) -> String {
    let mut line = s.name.clone();
    if !s.labels.is_empty() {
        let pairs: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        line.push('{');
        line.push_str(&pairs.join(","));
        line.push('}');
    }
    let value = if s.value.is_nan() {
        "NaN".to_string()
    } else if s.value == f64::INFINITY {
        "+Inf".to_string()
    } else if s.value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{}", s.value)
    };
    line.push(' ');
    line.push_str(&value);
    if let Some(ts) = s.timestamp_ms {
        line.push_str(&format!(" {ts}"));
    }
    line
}

fn same(a: &Sample, b: &Sample) -> bool {
    let value_same =
        (a.value.is_nan() && b.value.is_nan()) || a.value.to_bits() == b.value.to_bits();
    a.name == b.name && a.labels == b.labels && a.timestamp_ms == b.timestamp_ms && value_same
}

fn error_line(e: &Error) -> usize {
    let Error::InvalidInput(msg) = e else {
        panic!("parse failed with {e:?}, not InvalidInput");
    };
    let rest = msg
        .strip_prefix("metrics line ")
        .unwrap_or_else(|| panic!("error does not name a line: {msg:?}"));
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("error does not name a line: {msg:?}"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();

    match parse(text) {
        Ok(samples) => {
            let sample_lines: Vec<&str> = lines
                .iter()
                .map(|l| l.trim())
                .filter(|l| is_sample_line(l))
                .collect();
            assert_eq!(
                samples.len(),
                sample_lines.len(),
                "{} samples from {} sample lines",
                samples.len(),
                sample_lines.len()
            );
            for (s, line) in samples.iter().zip(&sample_lines) {
                assert!(valid_name(&s.name, true), "bad metric name {:?}", s.name);
                assert!(
                    line.starts_with(s.name.as_str()),
                    "sample {:?} does not come from line {line:?}",
                    s.name
                );
                // The spec needs a blank between tokens only where they would
                // otherwise merge, so `x.3` is `x` = 0.3; but the name must
                // not stop inside a longer name.
                let after = line[s.name.len()..].chars().next();
                assert!(
                    !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                    "name {:?} cut short in {line:?}",
                    s.name
                );
                for (k, _) in &s.labels {
                    assert!(valid_name(k, false), "bad label name {k:?}");
                }
                let canonical = encode(s);
                let back = parse(&canonical).unwrap_or_else(|e| {
                    panic!("canonical form {canonical:?} of {line:?} does not parse: {e}")
                });
                assert!(
                    back.len() == 1 && same(&back[0], s),
                    "{line:?} -> {canonical:?} -> {back:?}"
                );
                let alone = parse(line).expect("a sample line parses on its own");
                assert!(alone.len() == 1 && same(&alone[0], s));
            }

            let first = |name: &str| samples.iter().find(|s| s.name == name);
            let usable =
                |s: Option<&Sample>| s.is_some_and(|s| s.value.is_finite() && s.value >= 0.0);
            let power = first("substation_power_watts");
            let capacity = first("substation_capacity_watts");
            match LoadSample::from_exposition(text) {
                Ok(load) => {
                    assert!(usable(power) && usable(capacity));
                    assert_eq!(load.power_w.to_bits(), power.unwrap().value.to_bits());
                    assert_eq!(load.capacity_w.to_bits(), capacity.unwrap().value.to_bits());
                    assert_eq!(
                        load.substation,
                        power.unwrap().label("substation").unwrap_or_default()
                    );
                    if let Some(started) = load.started {
                        let s = first("substation_sessions_started_total").unwrap();
                        assert!(s.value.is_finite() && s.value >= 0.0);
                        assert_eq!(started, s.value as u64);
                    }
                }
                Err(_) => assert!(!(usable(power) && usable(capacity))),
            }
        }
        Err(e) => {
            assert!(LoadSample::from_exposition(text).is_err());
            let at = error_line(&e);
            assert!(
                at >= 1 && at <= lines.len(),
                "error at line {at} of {}",
                lines.len()
            );
            let line = lines[at - 1];
            assert!(is_sample_line(line), "error at non-sample line {line:?}");
            assert!(parse(line).is_err(), "line {line:?} parses on its own");
            let before = lines[..at - 1].join("\n");
            assert!(
                parse(&before).is_ok(),
                "text before the failing line {at} does not parse"
            );
        }
    }
});
