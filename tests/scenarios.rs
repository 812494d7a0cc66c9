//! Scenario scripts for the KV node's pure core, run as golden tests.
//!
//! Each file under `tests/scenarios/` is a script: blocks of command lines,
//! each block followed by a `----` line and the output the commands must
//! print, blocks separated by a blank line. Lines starting with `#` are
//! comments. The runner executes the commands against a simulated cluster
//! and compares what they print with what the script says; on a mismatch
//! the test fails with a diff. Run with `UPDATE_SCENARIOS=1` to rewrite the
//! expected output in place (then read the diff before committing it).
//!
//! ## The simulated cluster
//! Nodes are named `n0`..`n{N-1}`: the same 0-based ids as the core uses,
//! so vector clocks (`[a,b,c]` is `[n0,n1,n2]`), write ids (`2:3` is the
//! third write of `n2`) and the core's own messages ("peer(s) 1") read the
//! same way. Every node is composed exactly as `actors::kv` composes the
//! pure parts:
//!
//! * a [`Node`] (the `ClockActor`), fed inputs and executing its effects;
//! * a [`DeliveryBuffer`] plus the buffer actor's `durable` clock: peers'
//!   writes are offered to it one by one (`offer_at`), the ready ones go to
//!   the node as one `Input::Deliver`, and the acknowledgement reports
//!   `buffer.received()` and `durable`; `Effect::Durable` advances every
//!   entry of the buffer and raises `durable`;
//! * a [`Store`] (the `StoreActor`): `Effect::Apply` merges the snapshot's
//!   versions, applies the writes, merges the applied clock, then answers
//!   each put with its write's clock and the store's applied clock;
//! * one [`PeerStream`] per peer (the `ReplicatorActor`), with the durable
//!   clock it learns from `Effect::Wake`; it plans only when a script says
//!   `replicate` (standing in for the actor's wake-ups and timer);
//! * a simulated disk that applies a group as `Storage::commit` and its
//!   checkpoint would (the winner per key, the delivered clock, unstable
//!   writes kept per origin, trims, the rebuild mark; the write-ahead log
//!   and its background checkpoint are not modelled: recovery hides them),
//!   and boots as `storage::recover` does (per origin, the contiguous run of
//!   the log ending at the delivered clock; `fresh` when nothing was ever
//!   stored; the rebuild mark).
//!
//! `Effect::Persist` parks the group in the node's unpersisted slot until a
//! `persist` command writes it to the disk and feeds `Input::Persisted`
//! back. The network is a FIFO list of messages in flight; a message on a
//! cut link, or to or from a node that is down, is dropped, and whoever
//! made the request learns it failed (the stream backs off; a snapshot
//! fetch retries after a second, as the replicator does). Time is logical
//! and global: `tick` advances it and feeds `Input::Tick` to every node.
//!
//! ## Commands
//! * `cluster <n> [max_log=] [buffer=] [max_waiters=] [wait_timeout=]
//!   [relay_after=] [heartbeat=] [backoff=] [max_backoff=] [max_batch=] [linger=]
//!   [fresh]`: starts the cluster. Without `fresh` each node boots from a
//!   disk that holds an empty but initialized state (as after a first
//!   start), so it serves at once; with `fresh` every disk is empty and
//!   every node rebuilds first.
//! * `put <node> <key>=<value> [ctx=a,b,c]`, `get <node> <key>`,
//!   `flush <node>`.
//! * `replicate [<node>]`: every stream of the node(s) plans and sends.
//! * `deliver [from=<node>] [to=<node>]`: delivers the messages now in
//!   flight (all, or those on matching links), in order; messages they
//!   cause are sent, not delivered.
//! * `partition <a> <b>` (both directions), `partition <a>` (from
//!   everyone), `cut <a> <b>` (a→b only), `heal [<a> [<b>]]`.
//! * `persist [<node>]`: writes the unpersisted group(s) to disk and
//!   reports them durable.
//! * `crash <node> [after-disk-write]`: the node loses its memory, its
//!   unpersisted group (or, with `after-disk-write`, that group reaches the
//!   disk first, but the node dies before it learns so) and its messages.
//! * `restart <node> [wipe]`: boots from its disk (or an empty one).
//! * `tick <ms>`: advances time.
//! * `status [<node>]`: clocks, log size, readiness (or what the node waits
//!   for), store, the buffer's waiting writes, and the disk.
//! * `converged`: whether the running nodes hold the same store.
//! * `stabilize`: replicate, deliver and persist in rounds; while nothing
//!   changes, advance time by 100 ms; stop once nothing has changed for
//!   longer than a heartbeat and a relay plus the longest backoff. Rounds
//!   in which nothing changed (heartbeats answered with the same clocks,
//!   retries on a cut link) are not printed. `stabilize quiet` prints
//!   only where it ended, for the set-up of a scenario.
//!
//! Defaults: `max_log=100 buffer=100 max_waiters=10 wait_timeout=1000
//! relay_after=300 heartbeat=200 backoff=100 max_backoff=800 max_batch=16
//! linger=0`.
//! A command the runner cannot run (a typo, a node that does not exist)
//! prints `error: ...` in place and fails the test.
//!
//! ## Output
//! Lines start with the node they happen at. `n0 → n1 <message>` is a
//! message sent, `n0 ⇥ n1 <message> (why)` one dropped, `n1 ← n0 ...` its
//! arrival. A write prints as `origin:seq key=value [clock]`; a batch that
//! lacks writes its plan asked for (the log no longer holds them) says so.
//! A group prints with its id, clock, trim, snapshot, rebuild mark and
//! writes; `durable [..], wake replicators` is `Effect::Durable` followed by
//! the `Effect::Wake` of the same clock. A line starting with `!!` is an
//! invariant the runner checks and found broken (a sequence number reused
//! for a different durable write, a second group handed out while one is
//! being persisted).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use causal_grid::causal::node::NodeView;
use causal_grid::causal::{
    Boot, DeliveryBuffer, Effect, Group, Input, Kind, Node, NodeConfig, NodeId, Offered, Op,
    PeerStream, ReplicationLog, Snapshot, Store, StreamConfig, VClock, Versioned, Write,
};
use causal_grid::Error;

type Res<T> = std::result::Result<T, String>;

// ---------------------------------------------------------------------------
// Script files: parse, run, compare, rewrite.
// ---------------------------------------------------------------------------

/// A piece of a script: a line kept as written, or a block of commands.
enum Item {
    Verbatim(String),
    Block {
        line: usize,
        commands: Vec<String>,
        expected: Vec<String>,
    },
}

fn parse(text: &str) -> Res<Vec<Item>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() || line.starts_with('#') {
            items.push(Item::Verbatim(line.to_string()));
            i += 1;
            continue;
        }
        let start = i;
        let mut commands = Vec::new();
        while i < lines.len() && lines[i] != "----" {
            if lines[i].trim().is_empty() {
                return Err(format!(
                    "line {}: a command block must end with a `----` line",
                    start + 1
                ));
            }
            commands.push(lines[i].to_string());
            i += 1;
        }
        if i == lines.len() {
            return Err(format!(
                "line {}: missing `----` after the commands",
                start + 1
            ));
        }
        i += 1;
        let mut expected = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push(lines[i].to_string());
            i += 1;
        }
        items.push(Item::Block {
            line: start + 1,
            commands,
            expected,
        });
    }
    Ok(items)
}

fn render(items: &[Item], actual: &[Vec<String>]) -> String {
    let mut out = String::new();
    let mut blocks = actual.iter();
    for item in items {
        match item {
            Item::Verbatim(line) => {
                out.push_str(line);
                out.push('\n');
            }
            Item::Block { commands, .. } => {
                for c in commands {
                    out.push_str(c);
                    out.push('\n');
                }
                out.push_str("----\n");
                for line in blocks.next().into_iter().flatten() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// A line diff (longest common subsequence): `-` expected, `+` actual.
fn diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            let _ = writeln!(out, "  {}", expected[i]);
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "- {}", expected[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", actual[j]);
            j += 1;
        }
    }
    out
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

/// Runs one script; panics with a diff when its output differs.
fn run_script(name: &str) {
    let path = scenario_dir().join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let items = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut sim = Sim::default();
    let mut actual = Vec::new();
    let mut failures = String::new();
    let mut errors = String::new();
    for item in &items {
        let Item::Block {
            line,
            commands,
            expected,
        } = item
        else {
            continue;
        };
        let mut out = Vec::new();
        for command in commands.iter().filter(|c| !c.starts_with('#')) {
            let mut text = String::new();
            if let Err(e) = sim.command(command, &mut text) {
                // A mistake in the script: shown in place, and always fatal.
                let _ = writeln!(text, "error: {e}");
                let _ = writeln!(errors, "{}:{line}: `{command}`: {e}", path.display());
            }
            out.extend(text.lines().map(str::to_string));
        }
        if &out != expected {
            let _ = writeln!(
                failures,
                "{}:{line}: output of `{}` differs (- expected, + actual):\n{}",
                path.display(),
                commands.join("; "),
                diff(expected, &out)
            );
        }
        actual.push(out);
    }
    if !failures.is_empty() && std::env::var_os("UPDATE_SCENARIOS").is_some() {
        std::fs::write(&path, render(&items, &actual))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("rewrote {}", path.display());
        failures.clear();
    }
    assert!(errors.is_empty(), "commands that failed:\n{errors}");
    assert!(
        failures.is_empty(),
        "{failures}\n(set UPDATE_SCENARIOS=1 to accept the new output)"
    );
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_script(stringify!($name));
            }
        )*

        /// Every script has its test, and every test its script.
        #[test]
        fn every_script_is_run() {
            let mut listed = vec![$(stringify!($name).to_string()),*];
            listed.sort();
            let mut found: Vec<String> = std::fs::read_dir(scenario_dir())
                .expect("tests/scenarios")
                .filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    Some(name.strip_suffix(".txt")?.to_string())
                })
                .collect();
            found.sort();
            assert_eq!(listed, found, "add the script to the scenarios! list");
        }
    };
}

scenarios!(
    buffer_reorders,
    txn_atomic_behind_delay,
    context_put_times_out,
    crash_between_persist_and_answer,
    dead_origin_relayed,
    replication_lingers,
    full_buffer_and_full_log,
    rebuild_crash_after_snapshot,
    rebuild_crash_before_snapshot,
    relay_on_stale_acks,
    snapshot_leaves_a_gap,
    trim_at_stability,
    wiped_node_waits_for_its_snapshot,
    wiped_node_rejoins,
);

// ---------------------------------------------------------------------------
// Formatting.
// ---------------------------------------------------------------------------

fn name(id: NodeId) -> String {
    format!("n{id}")
}

fn clock(vc: &VClock) -> String {
    format!("[{vc}]")
}

fn write(w: &Write) -> String {
    format!(
        "{}:{} {} {}",
        w.origin,
        w.seq,
        describe(&w.ops),
        clock(&w.vc)
    )
}

/// Operations as a script writes them: `k=v` for a put, `n+=3` or `n-=3`
/// for an increment.
fn describe(ops: &[Op]) -> String {
    let each: Vec<String> = ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value } => format!("{key}={value}"),
            Op::Incr { key, by } if *by < 0 => format!("{key}-={}", by.unsigned_abs()),
            Op::Incr { key, by } => format!("{key}+={by}"),
        })
        .collect();
    each.join(" ")
}

/// Parses `k=v`, `n+=3` and `n-=3`.
fn op_arg(arg: &str) -> Result<Op, String> {
    let incr = |key: &str, by: &str, sign: i64| -> Result<Op, String> {
        let by: i64 = by.parse().map_err(|e| format!("{arg}: {e}"))?;
        Ok(Op::Incr {
            key: key.into(),
            by: sign * by,
        })
    };
    if let Some((key, by)) = arg.split_once("+=") {
        incr(key, by, 1)
    } else if let Some((key, by)) = arg.split_once("-=") {
        incr(key, by, -1)
    } else {
        let (key, value) = kv_arg(arg)?;
        Ok(Op::Put {
            key: key.into(),
            value: value.into(),
        })
    }
}

fn writes(ws: &[Write]) -> String {
    ws.iter().map(write).collect::<Vec<_>>().join(", ")
}

fn ids(ws: &[Write]) -> String {
    ws.iter()
        .map(|w| format!("{}:{}", w.origin, w.seq))
        .collect::<Vec<_>>()
        .join(" ")
}

fn version(v: &Versioned) -> String {
    match v.kind() {
        Kind::Register => format!("{} {}", v.value.text(), clock(&v.vc)),
        Kind::Counter => format!("{} (counter) {}", v.value.text(), clock(&v.vc)),
    }
}

fn entries<'a>(it: impl Iterator<Item = (&'a str, &'a Versioned)>) -> String {
    let all: Vec<String> = it.map(|(k, v)| format!("{k}={}", version(v))).collect();
    if all.is_empty() {
        "empty".into()
    } else {
        all.join(", ")
    }
}

fn group(g: &Group) -> String {
    let mut s = format!("group {} delivered={}", g.id, clock(&g.delivered));
    if let Some(t) = &g.trim {
        let _ = write!(s, " trim={}", clock(t));
    }
    if let Some(snap) = &g.snapshot {
        let _ = write!(
            s,
            " snapshot={} ({} keys)",
            clock(&snap.delivered),
            snap.entries.len()
        );
    }
    if g.rebuilding {
        s.push_str(" rebuilding");
    }
    if g.sync {
        s.push_str(" sync");
    }
    if !g.writes.is_empty() {
        let _ = write!(s, " writes: {}", writes(&g.writes));
    }
    s
}

/// The HTTP status a client would get for `e`.
fn status_code(e: &Error) -> u16 {
    match e {
        Error::InvalidInput(_) => 400,
        Error::NotFound(_) => 404,
        Error::Unauthorized(_) => 401,
        Error::Conflict(_) => 409,
        Error::TooLarge(_) => 413,
        Error::Unavailable(_) => 503,
        Error::Config(_) | Error::Internal(_) => 500,
    }
}

// ---------------------------------------------------------------------------
// The simulated disk.
// ---------------------------------------------------------------------------

/// What `Storage` keeps of a node, as its tables would hold it after a
/// checkpoint of every group.
#[derive(Default, Clone)]
struct Disk {
    kv: BTreeMap<String, Versioned>,
    log: BTreeMap<(NodeId, u64), Write>,
    /// `None` until something is stored (the disk is fresh).
    delivered: Option<VClock>,
    rebuilding: bool,
    /// The latest causally stable clock (storage keeps it for its next
    /// checkpoint).
    trim: Option<VClock>,
}

impl Disk {
    /// An initialized disk that stored an empty state.
    fn initialized(n: usize) -> Disk {
        Disk {
            delivered: Some(VClock::zero(n)),
            ..Disk::default()
        }
    }

    /// As `Storage::commit`: a group stores something when it has a
    /// snapshot, writes, or changes the rebuild mark (the first group of a
    /// rebuilding node does, even empty).
    fn commit(&mut self, g: &Group) {
        if let Some(t) = &g.trim {
            self.trim = Some(t.clone());
        }
        let stores =
            g.snapshot.is_some() || !g.writes.is_empty() || g.rebuilding != self.rebuilding;
        if stores {
            let snapshot = g
                .snapshot
                .iter()
                .flat_map(|s| s.entries.iter().map(|(k, v)| (k.clone(), v.clone())));
            for (key, v) in snapshot {
                let mut slot = self.kv.remove(&key);
                Versioned::join(&mut slot, &v);
                self.kv.extend(slot.map(|v| (key, v)));
            }
            for w in &g.writes {
                for op in &w.ops {
                    let key = op.key().to_string();
                    let mut slot = self.kv.remove(&key);
                    Versioned::apply_to(&mut slot, w, op);
                    self.kv.extend(slot.map(|v| (key, v)));
                }
            }
            for w in &g.writes {
                let stable = self.trim.as_ref().is_some_and(|t| w.seq <= t.get(w.origin));
                let covered = g
                    .snapshot
                    .as_ref()
                    .is_some_and(|s| w.seq <= s.delivered.get(w.origin));
                if !stable && !covered {
                    self.log.insert((w.origin, w.seq), w.clone());
                }
            }
            self.delivered = Some(g.delivered.clone());
            self.rebuilding = g.rebuilding;
        }
        if let Some(t) = &self.trim {
            self.log.retain(|&(origin, seq), _| seq > t.get(origin));
        }
    }

    /// As `storage::recover`.
    fn recover(&self, n: usize) -> (Store, Boot) {
        let Some(delivered) = &self.delivered else {
            let mut boot = Boot::empty(n);
            boot.rebuilding = self.rebuilding;
            return (Store::new(n), boot);
        };
        let mut store = Store::new(n);
        for (k, v) in &self.kv {
            store.restore(k, v.clone());
        }
        store.set_applied(delivered.clone());
        let writes = self.log.values().cloned().collect();
        let log = ReplicationLog::recover(delivered, writes).expect("a recoverable log");
        let boot = Boot {
            delivered: delivered.clone(),
            log,
            fresh: false,
            rebuilding: self.rebuilding,
        };
        (store, boot)
    }

    fn describe(&self) -> String {
        let Some(delivered) = &self.delivered else {
            return if self.rebuilding {
                "empty, rebuilding".into()
            } else {
                "empty".into()
            };
        };
        let mut runs: Vec<String> = Vec::new();
        let mut keys: Vec<(NodeId, u64)> = self.log.keys().copied().collect();
        keys.sort();
        let mut i = 0;
        while i < keys.len() {
            let (origin, first) = keys[i];
            let mut last = first;
            while i + 1 < keys.len() && keys[i + 1] == (origin, last + 1) {
                i += 1;
                last += 1;
            }
            runs.push(if first == last {
                format!("{origin}:{first}")
            } else {
                format!("{origin}:{first}..{last}")
            });
            i += 1;
        }
        let mut s = format!(
            "delivered={} keys={} log=[{}]",
            clock(delivered),
            self.kv.len(),
            runs.join(" ")
        );
        if self.rebuilding {
            s.push_str(" rebuilding");
        }
        s
    }
}

// ---------------------------------------------------------------------------
// The simulated cluster.
// ---------------------------------------------------------------------------

#[derive(Clone)]
enum Body {
    /// `missing`: writes the plan asked for that the log could not supply.
    Replicate {
        writes: Vec<Write>,
        missing: Vec<String>,
    },
    Ack {
        received: VClock,
        delivered: VClock,
    },
    Refused {
        error: Error,
    },
    SnapshotRequest,
    SnapshotReply {
        snapshot: Snapshot,
    },
}

#[derive(Clone)]
struct Msg {
    from: NodeId,
    to: NodeId,
    body: Body,
}

impl Msg {
    fn describe(&self) -> String {
        match &self.body {
            Body::Replicate {
                writes: ws,
                missing,
            } => {
                let mut s = match ws.is_empty() {
                    true if missing.is_empty() => "replicate (heartbeat)".to_string(),
                    true => "replicate (nothing)".to_string(),
                    false => format!("replicate {}", writes(ws)),
                };
                if !missing.is_empty() {
                    let _ = write!(s, " ({} not in the log)", missing.join(" "));
                }
                s
            }
            Body::Ack {
                received,
                delivered,
            } => format!(
                "ack received={} delivered={}",
                clock(received),
                clock(delivered)
            ),
            Body::Refused { error } => format!("refused {}: {error}", status_code(error)),
            Body::SnapshotRequest => "snapshot request".into(),
            Body::SnapshotReply { snapshot } => format!(
                "snapshot delivered={} {}",
                clock(&snapshot.delivered),
                entries(snapshot.entries.iter().map(|(k, v)| (k.as_str(), v)))
            ),
        }
    }
}

/// One replicator: its stream and the durable clock it knows of.
struct Link {
    stream: PeerStream,
    ours: VClock,
}

/// A node that is up.
struct Running {
    node: Node,
    buffer: DeliveryBuffer,
    /// The buffer actor's durable clock, reported in acks.
    durable: VClock,
    store: Store,
    /// The store serves reads once the node said `Ready`.
    store_ready: bool,
    links: Vec<Option<Link>>,
    /// The group handed out by `Effect::Persist`, not yet on disk.
    unpersisted: Option<Group>,
    /// Snapshot fetches that failed, to retry at the given time.
    fetch_retry: Vec<(NodeId, u64)>,
}

struct Slot {
    disk: Disk,
    running: Option<Running>,
}

struct Settings {
    n: usize,
    max_log: usize,
    buffer: usize,
    max_waiters: usize,
    wait_timeout_ms: u64,
    stream: StreamConfig,
}

/// A client's write in flight: a `put` or a `txn` command.
struct Put {
    node: NodeId,
    label: &'static str,
    what: String,
}

#[derive(Default)]
struct Sim {
    settings: Option<Settings>,
    now_ms: u64,
    slots: Vec<Slot>,
    net: VecDeque<Msg>,
    /// Directed links that drop messages.
    cut: std::collections::BTreeSet<(NodeId, NodeId)>,
    next_request: u64,
    puts: BTreeMap<u64, Put>,
    /// Every write that ever reached a disk at its origin, by id.
    durable_writes: BTreeMap<(NodeId, u64), Write>,
}

/// How long a snapshot fetch waits before it retries (the replicator's).
const FETCH_RETRY_MS: u64 = 1_000;
/// The time step of `stabilize` while nothing happens.
const STEP_MS: u64 = 100;

fn kv_arg(arg: &str) -> Res<(&str, &str)> {
    arg.split_once('=')
        .ok_or_else(|| format!("expected key=value, got {arg:?}"))
}

fn num<T: std::str::FromStr>(s: &str) -> Res<T> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

impl Sim {
    fn settings(&self) -> Res<&Settings> {
        self.settings
            .as_ref()
            .ok_or_else(|| "start with a `cluster` command".to_string())
    }

    fn n(&self) -> usize {
        self.slots.len()
    }

    fn node_id(&self, s: &str) -> Res<NodeId> {
        let id: NodeId = s
            .strip_prefix('n')
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("expected a node name like n0, got {s:?}"))?;
        if id >= self.n() {
            return Err(format!("no node {s} in a cluster of {}", self.n()));
        }
        Ok(id)
    }

    /// The node a command names, or every node when it names none.
    fn targets(&self, nodes: &[&str]) -> Res<Vec<NodeId>> {
        match nodes {
            [] => Ok((0..self.n()).collect()),
            [node] => Ok(vec![self.node_id(node)?]),
            _ => Err("at most one node".into()),
        }
    }

    fn up(&self, id: NodeId) -> bool {
        self.slots[id].running.is_some()
    }

    fn running(&mut self, id: NodeId) -> Option<&mut Running> {
        self.slots[id].running.as_mut()
    }

    fn command(&mut self, line: &str, out: &mut String) -> Res<()> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (&cmd, args) = words.split_first().ok_or("empty command")?;
        if cmd != "cluster" {
            self.settings()?;
        }
        match (cmd, args) {
            ("cluster", _) => self.cluster(args, out),
            ("put", [node, pair, rest @ ..]) => {
                let id = self.node_id(node)?;
                let (key, value) = kv_arg(pair)?;
                let context = match rest {
                    [] => None,
                    [ctx] => Some(
                        ctx.strip_prefix("ctx=")
                            .ok_or("expected ctx=a,b,c")?
                            .parse::<VClock>()
                            .map_err(|e| e.to_string())?,
                    ),
                    _ => return Err("usage: put <node> <key>=<value> [ctx=a,b,c]".into()),
                };
                let op = Op::Put {
                    key: key.into(),
                    value: value.into(),
                };
                self.put(id, "put", vec![op], context, out);
                Ok(())
            }
            ("txn", [node, rest @ ..]) => {
                let id = self.node_id(node)?;
                let mut ops = Vec::new();
                let mut context = None;
                for arg in rest {
                    match arg.strip_prefix("ctx=") {
                        Some(ctx) => {
                            context = Some(ctx.parse::<VClock>().map_err(|e| e.to_string())?)
                        }
                        None => ops.push(op_arg(arg)?),
                    }
                }
                causal_grid::causal::validate_ops(&ops).map_err(|e| e.to_string())?;
                self.put(id, "txn", ops, context, out);
                Ok(())
            }
            ("get", [node, key]) => {
                let id = self.node_id(node)?;
                self.get(id, key, out);
                Ok(())
            }
            ("flush", [node]) => {
                let id = self.node_id(node)?;
                let request = self.request_id();
                self.step(id, Input::Flush { id: request }, out);
                Ok(())
            }
            ("replicate", nodes @ ([] | [_])) => {
                for id in self.targets(nodes)? {
                    self.replicate(id, out);
                }
                Ok(())
            }
            ("deliver", _) => {
                let (mut from, mut to) = (None, None);
                for arg in args {
                    match kv_arg(arg)? {
                        ("from", v) => from = Some(self.node_id(v)?),
                        ("to", v) => to = Some(self.node_id(v)?),
                        _ => return Err(format!("unknown argument {arg}")),
                    }
                }
                self.deliver(from, to, out);
                Ok(())
            }
            ("partition", [a]) => {
                let a = self.node_id(a)?;
                for b in (0..self.n()).filter(|&b| b != a) {
                    self.cut.insert((a, b));
                    self.cut.insert((b, a));
                }
                self.print_cuts(out);
                Ok(())
            }
            ("partition", [a, b]) => {
                let (a, b) = (self.node_id(a)?, self.node_id(b)?);
                self.cut.insert((a, b));
                self.cut.insert((b, a));
                self.print_cuts(out);
                Ok(())
            }
            ("cut", [a, b]) => {
                let (a, b) = (self.node_id(a)?, self.node_id(b)?);
                self.cut.insert((a, b));
                self.print_cuts(out);
                Ok(())
            }
            ("heal", []) => {
                self.cut.clear();
                self.print_cuts(out);
                Ok(())
            }
            ("heal", [a]) => {
                let a = self.node_id(a)?;
                self.cut.retain(|&(x, y)| x != a && y != a);
                self.print_cuts(out);
                Ok(())
            }
            ("heal", [a, b]) => {
                let (a, b) = (self.node_id(a)?, self.node_id(b)?);
                self.cut.remove(&(a, b));
                self.cut.remove(&(b, a));
                self.print_cuts(out);
                Ok(())
            }
            ("persist", []) => {
                for id in 0..self.n() {
                    self.persist(id, out);
                }
                Ok(())
            }
            ("persist", [node]) => {
                let id = self.node_id(node)?;
                if !self.persist(id, out) {
                    return Err(format!("{node} has no group to persist"));
                }
                Ok(())
            }
            ("crash", [node, rest @ ..]) => {
                let id = self.node_id(node)?;
                let after_disk_write = match rest {
                    [] => false,
                    ["after-disk-write"] => true,
                    _ => return Err("usage: crash <node> [after-disk-write]".into()),
                };
                self.crash(id, after_disk_write, out)
            }
            ("restart", [node, rest @ ..]) => {
                let id = self.node_id(node)?;
                let wipe = match rest {
                    [] => false,
                    ["wipe"] => true,
                    _ => return Err("usage: restart <node> [wipe]".into()),
                };
                self.restart(id, wipe, out)
            }
            ("tick", [ms]) => {
                self.advance(num(ms)?, out);
                Ok(())
            }
            ("status", nodes @ ([] | [_])) => {
                for id in self.targets(nodes)? {
                    self.status(id, out);
                }
                Ok(())
            }
            ("converged", []) => {
                self.converged(out);
                Ok(())
            }
            ("stabilize", []) => {
                self.stabilize(out);
                Ok(())
            }
            ("stabilize", ["quiet"]) => {
                // For the set-up of a scenario: only the last line is kept.
                let mut all = String::new();
                self.stabilize(&mut all);
                out.push_str(all.lines().last().unwrap_or_default());
                out.push('\n');
                Ok(())
            }
            _ => Err(format!("unknown command or wrong arguments: {line}")),
        }
    }

    fn cluster(&mut self, args: &[&str], out: &mut String) -> Res<()> {
        if self.settings.is_some() {
            return Err("the cluster is already running".into());
        }
        let (first, rest) = args.split_first().ok_or("usage: cluster <n> ...")?;
        let n: usize = num(first)?;
        let mut s = Settings {
            n,
            max_log: 100,
            buffer: 100,
            max_waiters: 10,
            wait_timeout_ms: 1_000,
            stream: StreamConfig {
                max_batch: 16,
                relay_after_ms: 300,
                base_backoff_ms: 100,
                max_backoff_ms: 800,
                // Shorter than relay_after: a quiet peer is heard from
                // again before its lag could look like a missed write.
                heartbeat_ms: 200,
                // Scripts send when they say so; `linger=` turns it on.
                linger_ms: 0,
            },
        };
        let mut fresh = false;
        for arg in rest {
            if *arg == "fresh" {
                fresh = true;
                continue;
            }
            let (k, v) = kv_arg(arg)?;
            match k {
                "max_log" => s.max_log = num(v)?,
                "buffer" => s.buffer = num(v)?,
                "max_waiters" => s.max_waiters = num(v)?,
                "wait_timeout" => s.wait_timeout_ms = num(v)?,
                "relay_after" => s.stream.relay_after_ms = num(v)?,
                "heartbeat" => s.stream.heartbeat_ms = num(v)?,
                "backoff" => s.stream.base_backoff_ms = num(v)?,
                "max_backoff" => s.stream.max_backoff_ms = num(v)?,
                "max_batch" => s.stream.max_batch = num(v)?,
                "linger" => s.stream.linger_ms = num(v)?,
                _ => return Err(format!("unknown cluster setting {k}")),
            }
        }
        self.settings = Some(s);
        self.slots = (0..n)
            .map(|_| Slot {
                disk: if fresh {
                    Disk::default()
                } else {
                    Disk::initialized(n)
                },
                running: None,
            })
            .collect();
        for id in 0..n {
            self.boot(id, out);
        }
        Ok(())
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Starts a node from its disk.
    fn boot(&mut self, id: NodeId, out: &mut String) {
        let s = self.settings.as_ref().expect("cluster");
        let (store, boot) = self.slots[id].disk.recover(s.n);
        let _ = writeln!(
            out,
            "{}: boot {}delivered={} log={} keys={}{}",
            name(id),
            if boot.fresh { "fresh " } else { "" },
            clock(&boot.delivered),
            boot.log.len(),
            store.len(),
            if boot.rebuilding { " rebuilding" } else { "" }
        );
        let config = NodeConfig {
            me: id,
            n: s.n,
            max_log: s.max_log,
            max_waiters: s.max_waiters,
            wait_timeout_ms: s.wait_timeout_ms,
        };
        let links = (0..s.n)
            .map(|peer| {
                (peer != id).then(|| Link {
                    stream: PeerStream::new(id, s.n, s.stream.clone()),
                    ours: VClock::zero(s.n),
                })
            })
            .collect();
        let buffer = DeliveryBuffer::with_delivered(boot.delivered.clone(), s.buffer);
        let durable = boot.delivered.clone();
        let (mut node, effects) = Node::new(config, boot);
        // The simulation's clock, not the node's zero, is the time now.
        let tick = node.step(Input::Tick {
            now_ms: self.now_ms,
        });
        self.slots[id].running = Some(Running {
            node,
            buffer,
            durable,
            store,
            store_ready: false,
            links,
            unpersisted: None,
            fetch_retry: Vec::new(),
        });
        self.execute(id, effects.into_iter().chain(tick).collect(), out);
    }

    fn step(&mut self, id: NodeId, input: Input, out: &mut String) {
        let Some(r) = self.running(id) else { return };
        let effects = r.node.step(input);
        self.execute(id, effects, out);
    }

    /// Executes effects as `ClockActor` does; writes the buffer releases are
    /// fed back afterwards, as the buffer actor's `Deliver` would arrive.
    fn execute(&mut self, id: NodeId, effects: Vec<Effect>, out: &mut String) {
        let me = name(id);
        let mut queue: VecDeque<Effect> = effects.into();
        let mut inputs: VecDeque<Input> = VecDeque::new();
        loop {
            while let Some(effect) = queue.pop_front() {
                let Some(r) = self.slots[id].running.as_mut() else {
                    return;
                };
                match effect {
                    Effect::Persist(g) => {
                        let _ = writeln!(out, "{me}: persist {}", group(&g));
                        if let Some(old) = &r.unpersisted {
                            let _ = writeln!(
                                out,
                                "!! {me}: group {} handed out while group {} is being persisted",
                                g.id, old.id
                            );
                        }
                        r.unpersisted = Some(g);
                    }
                    Effect::Apply {
                        snapshot,
                        writes: ws,
                        replies,
                        applied,
                    } => {
                        let mut line = format!("{me}: apply");
                        if let Some(snap) = &snapshot {
                            let _ = write!(line, " snapshot ({} keys)", snap.entries.len());
                            for (key, v) in &snap.entries {
                                r.store.merge_version(key, v.clone());
                            }
                        }
                        if !ws.is_empty() {
                            let _ = write!(line, " {}", ids(&ws));
                        }
                        for w in &ws {
                            r.store.apply(w);
                        }
                        let mut merged = r.store.applied().clone();
                        merged.merge(&applied);
                        r.store.set_applied(merged);
                        let _ = writeln!(out, "{line} applied={}", clock(r.store.applied()));
                        for (request, index) in replies {
                            let put = self.puts.remove(&request);
                            let (label, what) = put.map_or(("put", String::new()), |p| {
                                (p.label, format!(" {}", p.what))
                            });
                            let _ = writeln!(
                                out,
                                "{me}: {label}#{request}{what} ok vc={} context={}",
                                clock(&ws[index].vc),
                                clock(r.store.applied())
                            );
                        }
                    }
                    Effect::Durable { delivered } => {
                        let mut ready = Vec::new();
                        for k in 0..delivered.len() {
                            r.buffer.advance(k, delivered.get(k), &mut ready);
                        }
                        r.durable.merge(&delivered);
                        let wake = matches!(queue.front(), Some(Effect::Wake { delivered: d }) if *d == delivered);
                        if wake {
                            if let Some(Effect::Wake { delivered: d }) = queue.pop_front() {
                                wake_links(r, &d);
                            }
                        }
                        let _ = writeln!(
                            out,
                            "{me}: durable {}{}",
                            clock(&delivered),
                            if wake { ", wake replicators" } else { "" }
                        );
                        if !ready.is_empty() {
                            let _ = writeln!(out, "{me}: buffer releases {}", ids(&ready));
                            inputs.push_back(Input::Deliver { writes: ready });
                        }
                    }
                    Effect::Wake { delivered } => {
                        wake_links(r, &delivered);
                        let _ = writeln!(out, "{me}: wake replicators {}", clock(&delivered));
                    }
                    Effect::Refused { id: request, error } => match self.puts.remove(&request) {
                        Some(p) => {
                            let _ = writeln!(
                                out,
                                "{me}: {}#{request} {} refused {}: {error}",
                                p.label,
                                p.what,
                                status_code(&error)
                            );
                        }
                        None => {
                            let _ = writeln!(out, "{me}: request#{request} refused: {error}");
                        }
                    },
                    Effect::Flushed { id: request } => {
                        let _ = writeln!(out, "{me}: flush#{request} done");
                    }
                    Effect::FetchSnapshot { peer } => {
                        let _ = writeln!(out, "{me}: fetch snapshot from {}", name(peer));
                        self.send(
                            Msg {
                                from: id,
                                to: peer,
                                body: Body::SnapshotRequest,
                            },
                            out,
                        );
                    }
                    Effect::Ready => {
                        r.store_ready = true;
                        let _ = writeln!(out, "{me}: ready");
                    }
                    Effect::Halt { reason } => {
                        let _ = writeln!(out, "{me}: HALT {reason}");
                        // The process stops (fail-stop): as a crash.
                        self.take_down(id, "halted", out);
                        return;
                    }
                }
            }
            let Some(input) = inputs.pop_front() else {
                return;
            };
            let Some(r) = self.running(id) else { return };
            queue.extend(r.node.step(input));
        }
    }

    fn put(
        &mut self,
        id: NodeId,
        label: &'static str,
        ops: Vec<Op>,
        context: Option<VClock>,
        out: &mut String,
    ) {
        let request = self.request_id();
        let me = name(id);
        let what = describe(&ops);
        if !self.up(id) {
            let _ = writeln!(out, "{me}: {label}#{request} {what} failed: {me} is down");
            return;
        }
        self.puts.insert(
            request,
            Put {
                node: id,
                label,
                what: what.clone(),
            },
        );
        let before = self.running(id).map(|r| r.node.view());
        let input = Input::Write {
            id: request,
            ops,
            context: context.clone(),
            ts_ms: self.now_ms,
        };
        let mut text = String::new();
        self.step(id, input, &mut text);
        let after: Option<NodeView> = self.running(id).map(|r| r.node.view());
        if let (Some(before), Some(after)) = (before, after) {
            if after.waiting_puts > before.waiting_puts {
                let _ = writeln!(
                    out,
                    "{me}: {label}#{request} {what} waits for its context {}",
                    clock(context.as_ref().expect("a context"))
                );
            } else if text.is_empty() && after.uncommitted > before.uncommitted {
                let _ = writeln!(
                    out,
                    "{me}: {label}#{request} {what} stamped into the open group"
                );
            }
        }
        out.push_str(&text);
    }

    fn get(&mut self, id: NodeId, key: &str, out: &mut String) {
        let me = name(id);
        let Some(r) = self.running(id) else {
            let _ = writeln!(out, "{me}: get {key} failed: {me} is down");
            return;
        };
        if !r.store_ready {
            let _ = writeln!(out, "{me}: get {key} refused 503: node is not ready");
            return;
        }
        match r.store.get(key) {
            Some(v) => {
                let _ = writeln!(out, "{me}: {key}={}", version(v));
            }
            None => {
                let _ = writeln!(out, "{me}: {key} not found");
            }
        }
    }

    /// Every stream of the node plans at the current time and sends.
    fn replicate(&mut self, id: NodeId, out: &mut String) {
        let now = self.now_ms;
        for peer in 0..self.n() {
            let Some(r) = self.running(id) else { return };
            let Some(Some(link)) = r.links.get_mut(peer) else {
                continue;
            };
            let Some(plan) = link.stream.plan(now, &link.ours) else {
                continue;
            };
            let (batch, delivered) = r.node.read_batch(&plan);
            link.ours.merge(&delivered);
            let missing = if batch.len() < plan.max {
                missing(&plan.ranges, &batch)
            } else {
                Vec::new()
            };
            self.send(
                Msg {
                    from: id,
                    to: peer,
                    body: Body::Replicate {
                        writes: batch,
                        missing,
                    },
                },
                out,
            );
        }
    }

    /// Puts a message on the network, or drops it.
    fn send(&mut self, msg: Msg, out: &mut String) {
        let why = self.blocked(&msg);
        let (from, to) = (name(msg.from), name(msg.to));
        match why {
            Some(why) => {
                let _ = writeln!(out, "{from} ⇥ {to} {} ({why})", msg.describe());
                self.fail(&msg, out);
            }
            None => {
                let _ = writeln!(out, "{from} → {to} {}", msg.describe());
                self.net.push_back(msg);
            }
        }
    }

    /// Why a message cannot get through now, if it cannot.
    fn blocked(&self, msg: &Msg) -> Option<String> {
        if self.cut.contains(&(msg.from, msg.to)) {
            Some("link cut".into())
        } else if !self.up(msg.to) {
            Some(format!("{} is down", name(msg.to)))
        } else if !self.up(msg.from) {
            Some(format!("{} is down", name(msg.from)))
        } else {
            None
        }
    }

    /// A message was lost: whoever made the request learns it failed.
    fn fail(&mut self, msg: &Msg, out: &mut String) {
        let now = self.now_ms;
        let (requester, peer) = match msg.body {
            Body::Replicate { .. } | Body::SnapshotRequest => (msg.from, msg.to),
            Body::Ack { .. } | Body::Refused { .. } | Body::SnapshotReply { .. } => {
                (msg.to, msg.from)
            }
        };
        let Some(r) = self.running(requester) else {
            return;
        };
        match msg.body {
            Body::Replicate { .. } | Body::Ack { .. } | Body::Refused { .. } => {
                if let Some(Some(link)) = r.links.get_mut(peer) {
                    link.stream.on_failure(now);
                }
            }
            Body::SnapshotRequest | Body::SnapshotReply { .. } => {
                let at = now + FETCH_RETRY_MS;
                r.fetch_retry.push((peer, at));
                let _ = writeln!(
                    out,
                    "{}: snapshot fetch from {} failed, retry at {at} ms",
                    name(requester),
                    name(peer)
                );
            }
        }
    }

    /// Delivers the messages in flight now (optionally only on some links).
    fn deliver(&mut self, from: Option<NodeId>, to: Option<NodeId>, out: &mut String) -> usize {
        let (now, later): (Vec<Msg>, Vec<Msg>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|m| from.is_none_or(|f| f == m.from) && to.is_none_or(|t| t == m.to));
        self.net = later.into();
        let count = now.len();
        for msg in now {
            self.arrive(msg, out);
        }
        count
    }

    fn arrive(&mut self, msg: Msg, out: &mut String) {
        if let Some(why) = self.blocked(&msg) {
            let _ = writeln!(
                out,
                "{} ⇥ {} {} ({why})",
                name(msg.from),
                name(msg.to),
                msg.describe()
            );
            self.fail(&msg, out);
            return;
        }
        let now = self.now_ms;
        let (from, to) = (msg.from, msg.to);
        let (sender, me) = (name(from), name(to));
        match msg.body {
            Body::Replicate { writes: ws, .. } => {
                let r = self.running(to).expect("up");
                let mut ready = Vec::new();
                let mut outcomes = Vec::new();
                let mut refused = None;
                for w in ws {
                    let wid = format!("{}:{}", w.origin, w.seq);
                    match r.buffer.offer_at(w, now, &mut ready) {
                        Ok(Offered::Delivered) => outcomes.push(format!("{wid} delivered")),
                        Ok(Offered::Buffered) => outcomes.push(format!("{wid} buffered")),
                        Ok(Offered::Duplicate) => outcomes.push(format!("{wid} duplicate")),
                        Err(e) => {
                            outcomes.push(format!("{wid} refused"));
                            refused = Some(e);
                            break;
                        }
                    }
                }
                let reply = match refused {
                    Some(error) => Body::Refused { error },
                    None => Body::Ack {
                        received: r.buffer.received(),
                        delivered: r.durable.clone(),
                    },
                };
                if outcomes.is_empty() {
                    let _ = writeln!(out, "{me} ← {sender} heartbeat");
                } else {
                    let _ = writeln!(out, "{me} ← {sender} {}", outcomes.join(", "));
                }
                if !ready.is_empty() {
                    self.step(to, Input::Deliver { writes: ready }, out);
                }
                self.send(
                    Msg {
                        from: to,
                        to: from,
                        body: reply,
                    },
                    out,
                );
            }
            Body::Ack {
                received,
                delivered,
            } => {
                let _ = writeln!(out, "{me} ← {sender} ack");
                let r = self.running(to).expect("up");
                if let Some(Some(link)) = r.links.get_mut(from) {
                    link.stream.on_ack(received.clone(), delivered.clone());
                }
                let input = Input::PeerAcked {
                    peer: from,
                    received,
                    delivered,
                };
                self.step(to, input, out);
            }
            Body::Refused { .. } => {
                let _ = writeln!(out, "{me} ← {sender} refused, backs off");
                let r = self.running(to).expect("up");
                if let Some(Some(link)) = r.links.get_mut(from) {
                    link.stream.on_failure(now);
                }
            }
            Body::SnapshotRequest => {
                let _ = writeln!(out, "{me} ← {sender} snapshot request");
                let r = self.running(to).expect("up");
                let snapshot = Snapshot {
                    delivered: r.store.applied().clone(),
                    entries: r
                        .store
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                };
                self.send(
                    Msg {
                        from: to,
                        to: from,
                        body: Body::SnapshotReply { snapshot },
                    },
                    out,
                );
            }
            Body::SnapshotReply { snapshot } => {
                let _ = writeln!(out, "{me} ← {sender} snapshot");
                let n = self.n();
                if let Err(e) = snapshot.validate(n) {
                    let _ = writeln!(out, "{me}: snapshot from {sender} invalid: {e}");
                    return;
                }
                self.step(to, Input::Snapshot { from, snapshot }, out);
            }
        }
    }

    /// Writes the node's unpersisted group to its disk and reports it
    /// durable. False when there was none.
    fn persist(&mut self, id: NodeId, out: &mut String) -> bool {
        let Some(g) = self.running(id).and_then(|r| r.unpersisted.take()) else {
            return false;
        };
        self.write_to_disk(id, &g, out);
        let _ = writeln!(out, "{}: persisted group {}", name(id), g.id);
        self.step(id, Input::Persisted(g), out);
        true
    }

    fn write_to_disk(&mut self, id: NodeId, g: &Group, out: &mut String) {
        for w in g.writes.iter().filter(|w| w.origin == id) {
            match self.durable_writes.get(&(w.origin, w.seq)) {
                Some(old) if old != w => {
                    let _ = writeln!(
                        out,
                        "!! {}: write {} reuses the id of the durable write {}",
                        name(id),
                        write(w),
                        write(old)
                    );
                }
                Some(_) => {}
                None => {
                    self.durable_writes.insert((w.origin, w.seq), w.clone());
                }
            }
        }
        self.slots[id].disk.commit(g);
    }

    fn crash(&mut self, id: NodeId, after_disk_write: bool, out: &mut String) -> Res<()> {
        let me = name(id);
        let Some(r) = self.slots[id].running.as_mut() else {
            return Err(format!("{me} is already down"));
        };
        let pending = r.unpersisted.take();
        match (pending, after_disk_write) {
            (Some(g), true) => {
                self.write_to_disk(id, &g, out);
                let _ = writeln!(out, "{me}: group {} is on disk", g.id);
            }
            (None, true) => return Err(format!("{me} has no group being persisted")),
            (Some(g), false) => {
                let _ = writeln!(out, "{me}: group {} is lost", g.id);
            }
            (None, false) => {}
        }
        self.take_down(id, "crashed", out);
        Ok(())
    }

    /// The node's process is gone: its memory, its requests and the
    /// messages to and from it.
    fn take_down(&mut self, id: NodeId, how: &str, out: &mut String) {
        self.slots[id].running = None;
        self.puts.retain(|_, p| p.node != id);
        let _ = writeln!(out, "{}: {how}", name(id));
        let (lost, kept): (Vec<Msg>, Vec<Msg>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|m| m.from == id || m.to == id);
        self.net = kept.into();
        for msg in lost {
            let _ = writeln!(
                out,
                "{} ⇥ {} {} ({} {how})",
                name(msg.from),
                name(msg.to),
                msg.describe(),
                name(id)
            );
            self.fail(&msg, out);
        }
    }

    fn restart(&mut self, id: NodeId, wipe: bool, out: &mut String) -> Res<()> {
        if self.up(id) {
            return Err(format!("{} is running; crash it first", name(id)));
        }
        if wipe {
            self.slots[id].disk = Disk::default();
            let _ = writeln!(out, "{}: disk wiped", name(id));
        }
        self.boot(id, out);
        Ok(())
    }

    /// Advances logical time: every node ticks, due snapshot fetches retry.
    fn advance(&mut self, ms: u64, out: &mut String) {
        self.now_ms += ms;
        let now = self.now_ms;
        let _ = writeln!(out, "now {now} ms");
        for id in 0..self.n() {
            self.step(id, Input::Tick { now_ms: now }, out);
            let due = match self.running(id) {
                Some(r) => {
                    let (due, later) = r.fetch_retry.drain(..).partition(|&(_, at)| at <= now);
                    r.fetch_retry = later;
                    due
                }
                None => Vec::new(),
            };
            for (peer, _) in due {
                let _ = writeln!(
                    out,
                    "{}: retry snapshot fetch from {}",
                    name(id),
                    name(peer)
                );
                self.send(
                    Msg {
                        from: id,
                        to: peer,
                        body: Body::SnapshotRequest,
                    },
                    out,
                );
            }
        }
    }

    fn print_cuts(&self, out: &mut String) {
        let cuts: Vec<String> = self
            .cut
            .iter()
            .map(|&(a, b)| format!("{}→{}", name(a), name(b)))
            .collect();
        if cuts.is_empty() {
            let _ = writeln!(out, "cut: none");
        } else {
            let _ = writeln!(out, "cut: {}", cuts.join(" "));
        }
    }

    fn status(&mut self, id: NodeId, out: &mut String) {
        let me = name(id);
        let now = self.now_ms;
        let disk = self.slots[id].disk.describe();
        let Some(r) = self.slots[id].running.as_ref() else {
            let _ = writeln!(out, "{me}: down; disk {disk}");
            return;
        };
        let view = r.node.view();
        let mut line = format!(
            "{me}: delivered={} durable={} log={}",
            clock(&view.delivered),
            clock(&view.durable),
            view.log_entries
        );
        if view.uncommitted > 0 {
            let _ = write!(line, " uncommitted={}", view.uncommitted);
        }
        if view.waiting_puts > 0 {
            let _ = write!(line, " waiting_puts={}", view.waiting_puts);
        }
        match &view.not_ready {
            None => line.push_str(" ready"),
            Some(why) => {
                let _ = write!(line, " not ready: {why}");
            }
        }
        let _ = writeln!(out, "{line}");
        let _ = writeln!(out, "{me}: store {}", entries(r.store.iter()));
        for w in r.buffer.waiting(now) {
            let _ = writeln!(
                out,
                "{me}: buffer holds {} write(s) of n{} from {}:{} ({}), blocked on {}:{} for {} ms",
                w.count,
                w.origin,
                w.origin,
                w.first_seq,
                w.key,
                w.blocked_on.origin,
                w.blocked_on.seq,
                w.waited_ms
            );
        }
        let _ = writeln!(out, "{me}: disk {disk}");
    }

    /// Do the running nodes hold the same data?
    fn converged(&mut self, out: &mut String) {
        let mut states: Vec<(NodeId, String)> = Vec::new();
        for id in 0..self.n() {
            match self.slots[id].running.as_ref() {
                None => {
                    let _ = writeln!(out, "{} is down", name(id));
                }
                Some(r) => {
                    let state = format!(
                        "applied={} {}",
                        clock(r.store.applied()),
                        entries(r.store.iter())
                    );
                    states.push((id, state));
                }
            }
        }
        let first = states.first().map(|(_, s)| s.clone()).unwrap_or_default();
        if states.iter().all(|(_, s)| *s == first) {
            let _ = writeln!(out, "converged: {first}");
        } else {
            for (id, s) in states {
                let _ = writeln!(out, "not converged: {} {s}", name(id));
            }
        }
    }

    /// What `stabilize` watches for change.
    fn fingerprint(&self) -> String {
        let mut s = String::new();
        for slot in &self.slots {
            let Some(r) = &slot.running else {
                s.push_str("down;");
                continue;
            };
            let v = r.node.view();
            let _ = write!(
                s,
                "{:?} {} {} {:?} {} {};",
                v,
                r.buffer.received(),
                r.buffer.len(),
                r.unpersisted.as_ref().map(|g| g.id),
                r.store.applied(),
                r.store.len()
            );
            for link in r.links.iter().flatten() {
                let _ = write!(
                    s,
                    "{}/{} ",
                    link.stream.acked(),
                    link.stream.peer_delivered()
                );
            }
        }
        s
    }

    /// Replicate, deliver and persist until nothing changes, advancing
    /// time while nothing does, so relays, retries and heartbeats happen.
    fn stabilize(&mut self, out: &mut String) {
        let stream = &self.settings.as_ref().expect("cluster").stream;
        let window = stream
            .heartbeat_ms
            .max(stream.relay_after_ms + stream.max_backoff_ms)
            + STEP_MS;
        let mut quiet = 0;
        let mut round_out = String::new();
        for _ in 0..1_000 {
            let before = self.fingerprint();
            for id in 0..self.n() {
                self.replicate(id, &mut round_out);
            }
            let mut rounds = 0;
            while self.deliver(None, None, &mut round_out) > 0 && rounds < 100 {
                rounds += 1;
            }
            for id in 0..self.n() {
                self.persist(id, &mut round_out);
            }
            let changed = before != self.fingerprint();
            // Rounds that changed nothing (heartbeats answered with the
            // same clocks, retries on a cut link) are not printed.
            if changed {
                out.push_str(&round_out);
            }
            round_out.clear();
            if changed {
                quiet = 0;
                continue;
            }
            if quiet >= window {
                let _ = writeln!(out, "stable at {} ms", self.now_ms);
                return;
            }
            self.advance(STEP_MS, &mut round_out);
            quiet += STEP_MS;
        }
        let _ = writeln!(out, "still changing at {} ms: gave up", self.now_ms);
    }
}

/// Per planned range, the writes the batch lacks, as `origin:first..last`.
fn missing(ranges: &[(NodeId, u64, u64)], batch: &[Write]) -> Vec<String> {
    let mut out = Vec::new();
    for &(origin, after, upto) in ranges {
        let absent: Vec<u64> = (after + 1..=upto)
            .filter(|seq| !batch.iter().any(|w| w.origin == origin && w.seq == *seq))
            .collect();
        match (absent.first(), absent.last()) {
            (Some(first), Some(last)) if first == last => out.push(format!("{origin}:{first}")),
            (Some(first), Some(last)) => out.push(format!("{origin}:{first}..{last}")),
            _ => {}
        }
    }
    out
}

fn wake_links(r: &mut Running, delivered: &VClock) {
    for link in r.links.iter_mut().flatten() {
        link.ours.merge(delivered);
    }
}
