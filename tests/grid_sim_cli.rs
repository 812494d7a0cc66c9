//! `grid_sim --power` run as a user runs it: the table's per-class cells,
//! with and without `--class-fragmentation`.

use std::process::Command;

/// The cells of the row of `policy` (as the table names it).
fn row_cells(policy: &str, extra: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_grid_sim"))
        .args([
            "--power",
            "--arrivals",
            "20000",
            "--staleness",
            "0.01",
            "--min-fractions",
            "1",
            "--policies",
            "least-util,headroom",
        ])
        .args(extra)
        .output()
        .expect("grid_sim runs");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    let row = stdout
        .lines()
        .find(|l| l.contains(&format!("| {policy} |")))
        .unwrap_or_else(|| panic!("no {policy} row in:\n{stdout}"));
    let cells: Vec<String> = row
        .split('|')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    // minimums, load, staleness, policy, rejected, ÷ KR, fragmentation,
    // five classes, peak/mean, mean utilisation, moves per request, admitted
    // after moves.
    assert_eq!(cells.len(), 16, "{row}");
    cells
}

/// The per-class cells (7, 11, 22, 50 and 150 kW) of the placement-only
/// `headroom` row (no session moved).
fn headroom_class_cells(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--max-moves", "0"];
    args.extend_from_slice(extra);
    row_cells("headroom", &args)[7..12].to_vec()
}

fn percent(cell: &str) -> f64 {
    cell.trim()
        .strip_suffix('%')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a percentage: {cell:?}"))
}

#[test]
fn class_fragmentation_adds_each_class_share_in_brackets() {
    let plain = headroom_class_cells(&[]);
    assert!(plain.iter().all(|c| !c.contains('(')), "{plain:?}");

    let split = headroom_class_cells(&["--class-fragmentation"]);
    let mut pairs = Vec::new();
    for (cell, plain) in split.iter().zip(&plain) {
        let (rejected, fragmented) = cell
            .strip_suffix(')')
            .and_then(|c| c.split_once(" ("))
            .unwrap_or_else(|| panic!("no bracketed share in {cell:?}"));
        // The same run: the rejection is unchanged by the flag.
        assert_eq!(rejected, plain);
        let (r, f) = (percent(rejected), percent(fragmented));
        assert!(f <= r, "{cell}: more fragmentation refusals than refusals");
        pairs.push((r, f));
    }
    // 150 kW requests at 95% load with minimum = requested: some are refused
    // for fragmentation, and some because the pool itself is full.
    let (r150, f150) = pairs[4];
    assert!(
        f150 > 0.0 && f150 < r150,
        "150 kW: {r150}% refused, {f150}% fragmented"
    );
}

#[test]
fn the_default_router_moves_sessions_and_says_how_often() {
    let moved = row_cells("**headroom + moves ≤ 16**", &[]);
    let alone = row_cells("headroom", &["--max-moves", "0,16"]);
    let (frag, frag_alone) = (percent(&moved[6]), percent(&alone[6]));
    assert!(
        frag < frag_alone / 2.0,
        "moves: {frag}% fragmentation refusals, placement alone {frag_alone}%"
    );
    let per_request: f64 = moved[14].parse().expect("moves per request");
    let after_moves = percent(&moved[15]);
    assert!(per_request > 0.0 && after_moves > 0.0, "{moved:?}");
    // At most 16 moves for each request admitted after moves.
    assert!(
        per_request <= 16.0 * after_moves / 100.0 + 1e-4,
        "{moved:?}"
    );
    assert_eq!(alone[14], "0.0000", "{alone:?}");
}
