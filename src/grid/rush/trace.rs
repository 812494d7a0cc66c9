//! Traces of real charging sessions, replayed by `rush_hour --trace`.
//!
//! A trace is a CSV file with a header row naming its columns, in any order:
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `arrival_s` | yes | arrival, **simulated** seconds since the start of the trace (>= 0) |
//! | `energy_kwh` | yes | energy the vehicle wants, in (0, 200] |
//! | `max_power_kw` | yes | the most it can draw, in (0, 350]: sent as `power_kw` |
//! | `min_power_kw` | no | the least it accepts, in (0, `max_power_kw`] |
//! | `departure_s` | no | when it leaves, simulated seconds since the start (> `arrival_s`) |
//!
//! Blank lines and lines starting with `#` are skipped; an optional cell may
//! be empty (or the row may stop before it). Times are simulated, like the
//! substations' clock: a session arriving at `arrival_s` is sent
//! `arrival_s / time_scale` real seconds into the run, so a six-hour evening
//! (21 600 s) replays in three minutes at a time scale of 120.
//!
//! With a departure, the vehicle needs at least `energy_kwh / ((departure_s -
//! arrival_s) / 3600)` kW to be full when it leaves. The minimum sent is the
//! larger of that and `min_power_kw` (when given), capped at `max_power_kw`
//! (a vehicle that cannot finish even at full power asks for full power and
//! is never curtailed). Without a departure, `min_power_kw` is sent as it is;
//! without either, no minimum is sent and the session is never curtailed.
//!
//! Rows need not be sorted; they are replayed in order of arrival. Every
//! error names its line (1-based, counting comments and blank lines).

use crate::error::{Error, Result};
use crate::grid::request::{MAX_ENERGY_KWH, MAX_POWER_KW};

use super::profile::Planned;

/// One session of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Line of the file it came from (1-based).
    pub line: usize,
    /// Arrival, simulated seconds since the start of the trace.
    pub arrival_s: f64,
    /// Energy wanted, kWh.
    pub energy_kwh: f64,
    /// Most power it can draw, kW.
    pub max_power_kw: f64,
    /// Least power it accepts, kW, if given.
    pub min_power_kw: Option<f64>,
    /// Departure, simulated seconds since the start of the trace, if given.
    pub departure_s: Option<f64>,
}

impl TraceRow {
    /// The minimum to send: see the module documentation. `None` when it
    /// would equal the maximum.
    pub fn effective_min_kw(&self) -> Option<f64> {
        let needed = self
            .departure_s
            .map(|d| self.energy_kwh / ((d - self.arrival_s) / 3600.0));
        let min = match (self.min_power_kw, needed) {
            (Some(m), Some(n)) => Some(m.max(n)),
            (m, n) => m.or(n),
        }?;
        (min < self.max_power_kw).then_some(min)
    }

    /// The request to send, `arrival_s / time_scale` real seconds in.
    pub fn planned(&self, time_scale: f64) -> Planned {
        Planned {
            at_s: self.arrival_s / time_scale,
            power_kw: self.max_power_kw,
            energy_kwh: self.energy_kwh,
            min_power_kw: self.effective_min_kw(),
        }
    }
}

const COLUMNS: [&str; 5] = [
    "arrival_s",
    "energy_kwh",
    "max_power_kw",
    "min_power_kw",
    "departure_s",
];

/// Parses a whole trace; rows sorted by arrival (stable for ties).
pub fn parse(text: &str) -> Result<Vec<TraceRow>> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (header_line, header) = lines
        .next()
        .ok_or_else(|| Error::invalid("trace: no header row (and no sessions)"))?;
    // Position of each known column in a row, in the order of COLUMNS.
    let mut at: [Option<usize>; 5] = [None; 5];
    for (pos, name) in header.split(',').map(str::trim).enumerate() {
        let k = COLUMNS.iter().position(|c| *c == name).ok_or_else(|| {
            Error::invalid(format!(
                "trace line {header_line}: unknown column {name:?} (expected a header of {})",
                COLUMNS.join(", ")
            ))
        })?;
        if at[k].replace(pos).is_some() {
            return Err(Error::invalid(format!(
                "trace line {header_line}: column {name:?} appears twice"
            )));
        }
    }
    for required in 0..3 {
        if at[required].is_none() {
            return Err(Error::invalid(format!(
                "trace line {header_line}: the header lacks the column {:?}",
                COLUMNS[required]
            )));
        }
    }
    let width = at.iter().flatten().count();
    let mut rows = Vec::new();
    for (line, text) in lines {
        let row = parse_row(text, &at, width)
            .map_err(|e| Error::invalid(format!("trace line {line}: {e}: {text:?}")))?;
        rows.push(TraceRow { line, ..row });
    }
    if rows.is_empty() {
        return Err(Error::invalid("trace: no sessions after the header"));
    }
    rows.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    Ok(rows)
}

fn parse_row(
    text: &str,
    at: &[Option<usize>; 5],
    width: usize,
) -> std::result::Result<TraceRow, String> {
    let cells: Vec<&str> = text.split(',').map(str::trim).collect();
    if cells.len() > width {
        return Err(format!("{} cells, the header has {width}", cells.len()));
    }
    let cell = |k: usize| -> std::result::Result<Option<f64>, String> {
        match at[k].and_then(|pos| cells.get(pos)) {
            None | Some(&"") => Ok(None),
            Some(s) => s
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(Some)
                .ok_or_else(|| format!("{} is not a number: {s:?}", COLUMNS[k])),
        }
    };
    let required = |k: usize| cell(k)?.ok_or_else(|| format!("{} is missing", COLUMNS[k]));
    let arrival_s = required(0)?;
    let energy_kwh = required(1)?;
    let max_power_kw = required(2)?;
    let min_power_kw = cell(3)?;
    let departure_s = cell(4)?;
    if arrival_s < 0.0 {
        return Err(format!("arrival_s must be >= 0, got {arrival_s}"));
    }
    if !(energy_kwh > 0.0 && energy_kwh <= MAX_ENERGY_KWH) {
        return Err(format!(
            "energy_kwh must be in (0, {MAX_ENERGY_KWH}], got {energy_kwh}"
        ));
    }
    if !(max_power_kw > 0.0 && max_power_kw <= MAX_POWER_KW) {
        return Err(format!(
            "max_power_kw must be in (0, {MAX_POWER_KW}], got {max_power_kw}"
        ));
    }
    if let Some(m) = min_power_kw {
        if !(m > 0.0 && m <= max_power_kw) {
            return Err(format!(
                "min_power_kw must be in (0, max_power_kw = {max_power_kw}], got {m}"
            ));
        }
    }
    if let Some(d) = departure_s {
        if d <= arrival_s {
            return Err(format!(
                "departure_s ({d}) must be after arrival_s ({arrival_s})"
            ));
        }
    }
    Ok(TraceRow {
        line: 0,
        arrival_s,
        energy_kwh,
        max_power_kw,
        min_power_kw,
        departure_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# an evening at a car park
arrival_s,energy_kwh,max_power_kw,min_power_kw,departure_s

600,20,11,,
0,30,50,10,
# a commuter who leaves in two hours: needs 12 kW
120,24,22,,7320
300,24,22,20,7500
900,40,11,,4500
1200,10,7
";

    #[test]
    fn a_good_trace_parses_sorted_with_its_minimums() {
        let rows = parse(GOOD).unwrap();
        let arrivals: Vec<f64> = rows.iter().map(|r| r.arrival_s).collect();
        assert_eq!(arrivals, [0.0, 120.0, 300.0, 600.0, 900.0, 1200.0]);
        assert_eq!(rows[0].line, 5, "lines count comments and blanks");
        assert_eq!(
            rows[0].effective_min_kw(),
            Some(10.0),
            "given, no departure"
        );
        let needed = rows[1].effective_min_kw().unwrap();
        assert!((needed - 12.0).abs() < 1e-9, "derived from the departure");
        assert_eq!(
            rows[2].effective_min_kw(),
            Some(20.0),
            "the given minimum is higher than the 12 kW needed"
        );
        assert_eq!(rows[3].effective_min_kw(), None, "neither: never curtailed");
        assert_eq!(
            rows[4].effective_min_kw(),
            None,
            "40 kWh in an hour needs 40 kW: capped at the 11 kW maximum"
        );
        assert_eq!(
            rows[5].min_power_kw, None,
            "a short row leaves the rest empty"
        );
        let p = rows[3].planned(120.0);
        assert_eq!((p.at_s, p.power_kw, p.energy_kwh), (5.0, 11.0, 20.0));
    }

    #[test]
    fn columns_may_come_in_any_order() {
        let rows = parse("max_power_kw,arrival_s,energy_kwh\n22,10,5\n").unwrap();
        assert_eq!(
            (rows[0].arrival_s, rows[0].energy_kwh, rows[0].max_power_kw),
            (10.0, 5.0, 22.0)
        );
    }

    #[test]
    fn bad_traces_fail_naming_the_line() {
        let header = "arrival_s,energy_kwh,max_power_kw,min_power_kw,departure_s\n";
        for (body, line, what) in [
            ("0,x,11\n", 2, "energy_kwh is not a number"),
            ("0,10,11,,,7\n", 2, "6 cells"),
            ("0,10\n", 2, "max_power_kw is missing"),
            ("-5,10,11\n", 2, "arrival_s must be >= 0"),
            ("0,0,11\n", 2, "energy_kwh must be in"),
            ("0,10,400\n", 2, "max_power_kw must be in"),
            ("# ok\n0,10,11,12\n", 3, "min_power_kw must be in"),
            ("100,10,11,,100\n", 2, "must be after arrival_s"),
            ("0,10,11\n\n0,10,inf\n", 4, "max_power_kw is not a number"),
        ] {
            let err = parse(&format!("{header}{body}")).unwrap_err().to_string();
            assert!(
                err.contains(&format!("trace line {line}:")) && err.contains(what),
                "{body:?}: {err}"
            );
        }
        let err = parse("arrival_s,energy,max_power_kw\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1") && err.contains("unknown column \"energy\""),
            "{err}"
        );
        let err = parse("arrival_s,max_power_kw\n0,1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lacks the column \"energy_kwh\""), "{err}");
        let err = parse("arrival_s,arrival_s,energy_kwh,max_power_kw\n").unwrap_err();
        assert!(err.to_string().contains("twice"));
        assert!(parse("# only a comment\n").is_err());
        assert!(parse(header)
            .unwrap_err()
            .to_string()
            .contains("no sessions"));
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../../examples/traces/evening.csv");
        let rows = parse(text).unwrap();
        assert!((100..=300).contains(&rows.len()), "{} rows", rows.len());
        assert!(rows.iter().any(|r| r.effective_min_kw().is_some()));
    }
}
