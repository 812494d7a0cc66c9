//! A parser for the Prometheus text exposition format (version 0.0.4).
//!
//! The balancer learns each substation's load by scraping its `/metrics`, so
//! it needs to read what any Prometheus client may write, not just what our
//! own encoder happens to emit: `# HELP`/`# TYPE` lines and free comments,
//! blank lines, samples with or without labels, label values with escaped
//! `\\`, `\"` and `\n`, a trailing comma in the label set, the special values
//! `NaN`, `+Inf`, `-Inf`, and an optional integer millisecond timestamp.
//!
//! `parse` is strict: a malformed line is an error naming its line number,
//! because a half-understood scrape is worse than a failed one (the poller
//! then marks the substation unhealthy instead of routing on garbage).
//! `LoadSample::from_exposition` extracts the two numbers the router needs.

use crate::error::{Error, Result};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `substation_power_watts`.
    pub name: String,
    /// Label pairs in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value; may be NaN or infinite.
    pub value: f64,
    /// Optional timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a whole exposition body into its samples.
pub fn parse(text: &str) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line)
            .map_err(|e| Error::invalid(format!("metrics line {}: {e}: {line:?}", i + 1)))?;
        out.push(sample);
    }
    Ok(out)
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ') | Some('\t')) {
            self.pos += 1;
        }
    }
    fn expect(&mut self, want: char) -> std::result::Result<(), String> {
        match self.bump() {
            Some(c) if c == want => Ok(()),
            Some(c) => Err(format!("expected {want:?}, found {c:?}")),
            None => Err(format!("expected {want:?}, found end of line")),
        }
    }
    fn ident(&mut self, colons: bool) -> std::result::Result<&'a str, String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let ok = c.is_ascii_alphabetic()
                || c == '_'
                || (colons && c == ':')
                || (self.pos > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err("expected a name".into());
        }
        Ok(&self.s[start..self.pos])
    }
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }
}

fn parse_line(line: &str) -> std::result::Result<Sample, String> {
    let mut c = Cursor { s: line, pos: 0 };
    let name = c.ident(true)?.to_string();
    c.skip_ws();
    let mut labels = Vec::new();
    if c.peek() == Some('{') {
        c.bump();
        loop {
            c.skip_ws();
            if c.peek() == Some('}') {
                c.bump();
                break;
            }
            let key = c.ident(false)?.to_string();
            c.skip_ws();
            c.expect('=')?;
            c.skip_ws();
            c.expect('"')?;
            let mut value = String::new();
            loop {
                match c.bump() {
                    None => return Err("unterminated label value".into()),
                    Some('"') => break,
                    Some('\\') => match c.bump() {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape \\{other:?}")),
                    },
                    Some(ch) => value.push(ch),
                }
            }
            labels.push((key, value));
            c.skip_ws();
            match c.bump() {
                Some(',') => continue,
                Some('}') => break,
                other => return Err(format!("expected ',' or '}}', found {other:?}")),
            }
        }
    }
    c.skip_ws();
    let value = parse_value(c.token())?;
    c.skip_ws();
    let ts = c.token();
    let timestamp_ms = if ts.is_empty() {
        None
    } else {
        Some(
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp {ts:?}"))?,
        )
    };
    c.skip_ws();
    if c.peek().is_some() {
        return Err("trailing characters".into());
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

fn parse_value(tok: &str) -> std::result::Result<f64, String> {
    match tok {
        "" => Err("missing value".into()),
        "NaN" | "nan" => Ok(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => tok.parse::<f64>().map_err(|_| format!("bad value {tok:?}")),
    }
}

/// What the router needs from one scrape of a substation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadSample {
    /// The substation's own id (its `substation` label).
    pub substation: String,
    /// Power drawn, watts.
    pub power_w: f64,
    /// Sum of the active sessions' minimums (`substation_committed_watts`),
    /// what a new session's minimum must fit beside; `None` from a
    /// substation that does not export it (then every session is taken to
    /// be non-curtailable, so the committed power is the power drawn).
    pub committed_w: Option<f64>,
    /// Sum of the power the active sessions ask for
    /// (`substation_requested_watts`), if exported.
    pub requested_w: Option<f64>,
    /// Transformer limit, watts.
    pub capacity_w: f64,
    /// Active sessions, if exported.
    pub sessions: Option<f64>,
    /// Sessions admitted since start (`substation_sessions_started_total`), if exported.
    pub started: Option<u64>,
}

impl LoadSample {
    /// Extracts `substation_power_watts` and `substation_capacity_watts`
    /// (required: fails if either is missing, not finite, or negative), and
    /// the optional committed and requested power, session count and
    /// admission count (ignored if not finite or negative).
    pub fn from_exposition(text: &str) -> Result<LoadSample> {
        let samples = parse(text)?;
        let find = |name: &str| samples.iter().find(|s| s.name == name);
        let power = find("substation_power_watts")
            .ok_or_else(|| Error::invalid("no substation_power_watts in metrics"))?;
        let capacity = find("substation_capacity_watts")
            .ok_or_else(|| Error::invalid("no substation_capacity_watts in metrics"))?;
        for s in [power, capacity] {
            if !s.value.is_finite() || s.value < 0.0 {
                return Err(Error::invalid(format!("{} = {}", s.name, s.value)));
            }
        }
        Ok(LoadSample {
            substation: power.label("substation").unwrap_or_default().to_string(),
            power_w: power.value,
            committed_w: find("substation_committed_watts")
                .filter(|s| s.value.is_finite() && s.value >= 0.0)
                .map(|s| s.value),
            requested_w: find("substation_requested_watts")
                .filter(|s| s.value.is_finite() && s.value >= 0.0)
                .map(|s| s.value),
            capacity_w: capacity.value,
            sessions: find("substation_sessions_active").map(|s| s.value),
            started: find("substation_sessions_started_total")
                .filter(|s| s.value.is_finite() && s.value >= 0.0)
                .map(|s| s.value as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"# HELP substation_power_watts Power drawn by active sessions.
# TYPE substation_power_watts gauge
substation_power_watts{substation="s1"} 150000
# a free comment
substation_capacity_watts{substation="s1",} 4e5 1700000000000

weird_metric{path="C:\\dir\"x\"\nend", le="+Inf"} +Inf
nan_metric NaN
neg_metric{a="1"}	-Inf   -5
http_requests_total{route="/charge",status="200"} 3
"#;

    #[test]
    fn parses_labels_escapes_specials_and_timestamps() {
        let s = parse(BODY).unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(s[0].name, "substation_power_watts");
        assert_eq!(s[0].label("substation"), Some("s1"));
        assert_eq!(s[1].value, 400_000.0);
        assert_eq!(s[1].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(s[2].label("path"), Some("C:\\dir\"x\"\nend"));
        assert_eq!(s[2].label("le"), Some("+Inf"));
        assert_eq!(s[2].value, f64::INFINITY);
        assert!(s[3].value.is_nan());
        assert!(s[3].labels.is_empty());
        assert_eq!(s[4].value, f64::NEG_INFINITY);
        assert_eq!(s[4].timestamp_ms, Some(-5));
        assert_eq!(s[5].label("route"), Some("/charge"));
    }

    #[test]
    fn extracts_load_sample() {
        let l = LoadSample::from_exposition(BODY).unwrap();
        assert_eq!(l.substation, "s1");
        assert_eq!(l.power_w, 150_000.0);
        assert_eq!(l.capacity_w, 400_000.0);
        assert_eq!(l.sessions, None);
        assert_eq!(l.started, None);
        assert_eq!((l.committed_w, l.requested_w), (None, None));
    }

    #[test]
    fn extracts_committed_and_requested_power_when_exported() {
        let body = "substation_power_watts{substation=\"s\"} 300000\n\
                    substation_capacity_watts{substation=\"s\"} 300000\n\
                    substation_committed_watts{substation=\"s\"} 120000\n\
                    substation_requested_watts{substation=\"s\"} 450000\n\
                    substation_sessions_started_total{substation=\"s\"} 9\n";
        let l = LoadSample::from_exposition(body).unwrap();
        assert_eq!(l.committed_w, Some(120_000.0));
        assert_eq!(l.requested_w, Some(450_000.0));
        assert_eq!(l.started, Some(9));
        let bad = body.replace("120000", "NaN");
        assert_eq!(LoadSample::from_exposition(&bad).unwrap().committed_w, None);
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "x{a=\"1\" 3",
            "x{a=1} 3",
            "x 3 4 5",
            "x abc",
            "x{a=\"\\q\"} 1",
            "{a=\"1\"} 1",
            "x",
            "x 1 1.5",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn missing_or_bad_power_is_an_error() {
        assert!(LoadSample::from_exposition("substation_capacity_watts 1").is_err());
        assert!(LoadSample::from_exposition(
            "substation_power_watts NaN\nsubstation_capacity_watts 1"
        )
        .is_err());
    }

    proptest::proptest! {
        #[test]
        fn label_values_round_trip(v in "\\PC*", x in -1e12f64..1e12) {
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let line = format!("m{{k=\"{escaped}\"}} {x}");
            let s = parse(&line).unwrap();
            proptest::prop_assert_eq!(s[0].label("k"), Some(v.as_str()));
            proptest::prop_assert_eq!(s[0].value, x);
        }
    }
}
