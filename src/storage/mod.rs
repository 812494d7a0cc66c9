//! Durable state of a KV node, in a redb database under `DATA_DIR`.
//!
//! redb is an embedded, crash-safe B-tree store: a commit is atomic, and a
//! commit with `Durability::Immediate` is on disk (fsynced) when `commit`
//! returns. Its pages carry checksums and its commit slots are verified on
//! open, so a torn or corrupted tail is detected and either rolled back to the
//! last good commit or reported as an error at start-up: never silently
//! applied. We keep no file format of our own.
//!
//! Tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `kv` | key | the key's version (JSON `Versioned`: a register's value, or a counter's per-origin totals) |
//! | `log` | `(origin, seq)` | a delivered write not yet causally stable (JSON `Write`) |
//! | `meta` | `"delivered"` | the delivered clock (JSON) |
//! | `meta` | `"identity"` | node id and cluster size the directory belongs to |
//! | `meta` | `"rebuilding"` | present while the node rebuilds from its peers (see `causal::node`) |
//!
//! ## Write path: a write-ahead log in front of the database
//! A group commit (all the writes that arrived while the previous commit was
//! syncing) is one checksummed record appended to the write-ahead log
//! (`wal`) and one `fdatasync`: sequential I/O whatever the keys. Measured on
//! our test machine, a redb transaction of 64 random keys cost about 6 ms
//! (copy-on-write pages of a B-tree), which capped durable puts far below the
//! in-memory rate; the log append costs one small sync. Every 8 MiB the log
//! rolls to a new segment. Once the log has taken no record for
//! `CHECKPOINT_QUIET` (or `CHECKPOINT_BACKLOG` closed segments wait, under
//! sustained writes), a background thread reads the closed segments back (the oldest, at most `CHECKPOINT_SEGMENTS` at a time, so
//! that its memory stays bounded when segments close faster than
//! checkpoints finish) and checkpoints them into the database in one
//! transaction: only the winning version of each key, in key order (many
//! writes per page), only the log entries not yet causally stable (in a
//! healthy cluster almost none by then), and the clock their last record
//! reached as `delivered`; then it deletes the segments. Recovery loads the
//! database and replays the remaining segments, skipping writes the
//! checkpoint clock covers; so after a crash the store, the clock and the
//! log always agree.
//!
//! ## The rebuild mark
//! Every group carries the node's rebuilding flag (`Group::rebuilding`); a
//! log record stores it when it differs from the last one stored, and a
//! checkpoint writes it to `meta`. Recovery reads `meta`, then lets each
//! replayed record override it, so a node comes back in the state of its
//! last durable group.
//!
//! This module does I/O: it is called from a blocking thread by `ClockActor`,
//! never from an actor's thread.

mod wal;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use self::wal::Wal;

use crate::causal::{
    Boot, Group, NodeId, Op, ReplicationLog, Snapshot, Store, VClock, Versioned, Write,
};
use crate::error::{Error, Result};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// How a node makes writes durable (`DURABILITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync every group commit before acknowledging (default).
    Fsync,
    /// Write every group commit to the OS before acknowledging, fsync later:
    /// survives a crash of the process, not of the machine.
    Eventual,
    /// Keep nothing on disk (state is lost on restart).
    Memory,
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(SyncPolicy::Fsync),
            "eventual" => Ok(SyncPolicy::Eventual),
            "memory" => Ok(SyncPolicy::Memory),
            other => Err(format!("expected fsync, eventual or memory, got {other:?}")),
        }
    }
}

/// What a node finds in its `DATA_DIR` at start-up: the store for
/// `StoreActor`, the rest for the node's protocol core.
pub struct Recovered {
    pub store: Store,
    pub boot: Boot,
}

impl Recovered {
    pub fn empty(n: usize) -> Self {
        Recovered {
            store: Store::new(n),
            boot: Boot::empty(n),
        }
    }
}

/// What one group commit did, for the commit-path metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitStats {
    /// Writes in the group.
    pub writes: usize,
    /// Bytes appended to the write-ahead log.
    pub bytes: usize,
    /// How long the log's `fdatasync` took, if the commit synced.
    pub fsync: Option<Duration>,
    /// A background checkpoint this commit found finished (or waited for).
    pub checkpoint: Option<CheckpointStats>,
}

/// What one checkpoint wrote into the database, and how long it took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointStats {
    /// From its start to its durable commit.
    pub duration: Duration,
    /// Keys whose value it wrote into `kv`.
    pub keys: usize,
    /// Entries it inserted into the replication log table.
    pub log_entries: usize,
    /// Bytes of values and log entries it wrote (before the database's own
    /// page overhead).
    pub bytes: u64,
    /// Closed log segments it took (at most `WalOptions::checkpoint_segments`).
    pub segments: usize,
}

/// Segment size after which the write-ahead log rolls and checkpoints.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// Most closed segments one checkpoint reads back and folds in memory.
pub const CHECKPOINT_SEGMENTS: usize = 4;

/// How long the log must have taken no record before a checkpoint starts
/// while fewer than `CHECKPOINT_BACKLOG` closed segments wait.
pub const CHECKPOINT_QUIET: Duration = Duration::from_millis(250);

/// Closed segments past which a checkpoint starts whether or not the log
/// is quiet.
pub const CHECKPOINT_BACKLOG: usize = 8;

/// Zero-filled segments a preallocated log keeps ready, refilled while the
/// log is quiet.
pub const SPARE_SEGMENTS: usize = 4;

/// How the write-ahead log is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// Past this size a segment is closed and checkpointed in the background.
    pub segment_bytes: u64,
    /// Zero-fill each segment ahead of use, so a commit overwrites existing
    /// blocks and its `fdatasync` needs no filesystem journal commit (see
    /// `wal`). On by default.
    pub preallocate: bool,
    /// Most closed segments one checkpoint takes, oldest first: what bounds
    /// its memory when segments closed faster than checkpoints finished
    /// (the rest wait for the next one).
    pub checkpoint_segments: usize,
    /// A checkpoint waits until no record has been logged for this long:
    /// its database commit and the log's `fdatasync` then do not share the
    /// disk's queue, where one slow sync held every put of its group (see
    /// docs/durability.md). Zero starts checkpoints as soon as a segment
    /// closes.
    pub checkpoint_quiet: Duration,
    /// Closed segments past which a checkpoint starts even while writes
    /// keep coming: what bounds the log on disk (and a restart's replay)
    /// under sustained load.
    pub checkpoint_backlog: usize,
    /// Zero-filled segments a preallocated log keeps ready; they are
    /// refilled only once the log has been quiet for `checkpoint_quiet`, so
    /// writes that pause now and then never wait on a fill's disk traffic.
    pub spare_segments: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: SEGMENT_BYTES,
            preallocate: true,
            checkpoint_segments: CHECKPOINT_SEGMENTS,
            checkpoint_quiet: CHECKPOINT_QUIET,
            checkpoint_backlog: CHECKPOINT_BACKLOG,
            spare_segments: SPARE_SEGMENTS,
        }
    }
}

/// Closed write-ahead log segments in a node's data directory, read from
/// the files (see `wal`): for tools that wait, from outside the node, until
/// its checkpoints have caught up.
pub fn closed_log_segments(dir: &Path) -> Result<usize> {
    wal::closed_segments(dir)
}

pub struct Storage {
    db: Arc<Database>,
    dir: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    wal: Wal,
    /// The latest causally stable clock, applied to the log table at the
    /// next checkpoint.
    trim: Option<VClock>,
    checkpointer: Option<std::thread::JoinHandle<Result<CheckpointStats>>>,
    /// The delivered clock and rebuild mark as of the last record written.
    written: (VClock, bool),
    /// The closed segments no checkpoint has taken yet, oldest first, each
    /// with the delivered clock and rebuild mark as of its last record:
    /// what a checkpoint ending with that segment may claim (never the
    /// state of a record that went to a later segment).
    closed: VecDeque<(u64, VClock, bool)>,
    segment_bytes: u64,
    checkpoint_segments: usize,
    checkpoint_quiet: Duration,
    checkpoint_backlog: usize,
    /// When the last record went to the log.
    last_append: Instant,
    /// Tests hold checkpoints back to let closed segments pile up.
    #[cfg(test)]
    hold: bool,
    /// The rebuild mark as last stored.
    rebuilding: bool,
}

impl Drop for Storage {
    /// Waits for a running checkpoint, so the database is closed (and can be
    /// reopened) once the storage is gone.
    fn drop(&mut self) {
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(handle) = inner.checkpointer.take() {
                match handle.join() {
                    Ok(Err(e)) => log::error!("checkpoint failed: {e}"),
                    Err(_) => log::error!("checkpoint thread panicked"),
                    Ok(Ok(_)) => {}
                }
            }
        }
    }
}

/// One group commit in the write-ahead log.
#[derive(Deserialize)]
struct WalRecord {
    writes: Vec<Write>,
    /// Absent in records of versions without the mark: not rebuilding.
    #[serde(default)]
    rebuilding: Option<bool>,
}

/// The same record, serialized from borrowed writes (a write of several
/// operations, a transaction, is one entry: it is replayed whole or, in a
/// torn tail, not at all).
#[derive(Serialize)]
struct WalRecordRef<'a> {
    writes: &'a [Write],
    #[serde(skip_serializing_if = "Option::is_none")]
    rebuilding: Option<bool>,
}

fn storage_err(what: &str) -> impl Fn(redb::Error) -> Error + '_ {
    move |e| Error::internal(format!("storage: {what}: {e}"))
}

fn dberr<E: Into<redb::Error>>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| storage_err(what)(e.into())
}

impl Storage {
    /// Opens (or creates) the database in `dir` and recovers the node's
    /// state, with the default log layout.
    pub fn open(
        dir: &Path,
        me: NodeId,
        n: usize,
        policy: SyncPolicy,
    ) -> Result<(Storage, Recovered)> {
        Self::open_with(dir, me, n, policy, WalOptions::default())
    }

    /// Opens (or creates) the database in `dir` and recovers the node's state.
    pub fn open_with(
        dir: &Path,
        me: NodeId,
        n: usize,
        policy: SyncPolicy,
        options: WalOptions,
    ) -> Result<(Storage, Recovered)> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::config(format!("DATA_DIR {} cannot be created: {e}", dir.display()))
        })?;
        let path = dir.join("node.redb");
        let db = Database::builder()
            .set_cache_size(16 * 1024 * 1024)
            .create(&path)
            .map_err(|e| {
                Error::config(format!(
                    "cannot open {}: {e} (a damaged file is refused rather than half-read; move it away to rebuild this node from its peers)",
                    path.display()
                ))
            })?;
        let db = Arc::new(db);
        let mut recovered = recover(&db, me, n)?;
        let segment_bytes = options.segment_bytes.max(1);
        let prealloc = if options.preallocate {
            segment_bytes
        } else {
            0
        };
        let (mut wal, segments) = Wal::open(dir, policy == SyncPolicy::Fsync, prealloc)?;
        wal.set_spares(options.spare_segments);

        // Replay what the last checkpoint does not cover.
        let covered = recovered.boot.delivered.clone();
        let mut replayed = Vec::new();
        let mut last_segment = None;
        let mut any_record = false;
        for (segment, records) in segments {
            last_segment = Some(segment);
            for payload in records {
                let record = decode_record(&payload)?;
                any_record = true;
                if let Some(flag) = record.rebuilding {
                    recovered.boot.rebuilding = flag;
                }
                for w in record.writes {
                    if w.origin >= n || w.seq <= covered.get(w.origin) {
                        continue;
                    }
                    recovered.store.apply(&w);
                    recovered.boot.delivered.merge(&w.vc);
                    if !recovered.boot.log.append(w.clone()) {
                        return Err(Error::internal(format!(
                            "write-ahead log: write {}:{} out of sequence",
                            w.origin, w.seq
                        )));
                    }
                    replayed.push(w);
                }
            }
        }
        if any_record {
            log::info!(
                "replayed {} writes from the write-ahead log",
                replayed.len()
            );
            let boot = &recovered.boot;
            checkpoint(&db, None, &replayed, &boot.delivered, None, boot.rebuilding)?;
            recovered.boot.fresh = false;
        }
        if let Some(upto) = last_segment {
            Wal::remove_upto(dir, upto)?;
        }
        let storage = Storage {
            db,
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                wal,
                trim: None,
                checkpointer: None,
                written: (recovered.boot.delivered.clone(), recovered.boot.rebuilding),
                closed: VecDeque::new(),
                segment_bytes,
                checkpoint_segments: options.checkpoint_segments.max(1),
                checkpoint_quiet: options.checkpoint_quiet,
                checkpoint_backlog: options.checkpoint_backlog.max(1),
                last_append: Instant::now(),
                #[cfg(test)]
                hold: false,
                rebuilding: recovered.boot.rebuilding,
            }),
        };
        Ok((storage, recovered))
    }
}

fn decode_record(payload: &[u8]) -> Result<WalRecord> {
    serde_json::from_slice::<WalRecord>(payload)
        .map_err(|e| Error::internal(format!("write-ahead log: bad record: {e}")))
}

fn decode_version(key: &str, bytes: &[u8]) -> Result<Versioned> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::internal(format!("storage: bad stored value of {key:?}: {e}")))
}

/// The writes of the closed (fully synced) log segments numbered `<= upto`,
/// in delivery order.
fn closed_writes(dir: &Path, upto: u64) -> Result<Vec<Write>> {
    let mut writes = Vec::new();
    for payload in Wal::read_closed(dir, upto)? {
        writes.extend(decode_record(&payload)?.writes);
    }
    Ok(writes)
}

fn recover(db: &Database, me: NodeId, n: usize) -> Result<Recovered> {
    {
        let identity = serde_json::json!({"node": me, "cluster_size": n}).to_string();
        let txn = db.begin_write().map_err(dberr("begin"))?;
        let (delivered, rebuilding) = {
            let mut meta = txn.open_table(META).map_err(dberr("open meta"))?;
            let found = meta
                .get("identity")
                .map_err(dberr("read identity"))?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            match found {
                Some(found) if found != identity => {
                    return Err(Error::config(format!(
                        "DATA_DIR holds the state of {found}, not of {identity}: refusing to start"
                    )));
                }
                Some(_) => {}
                None => {
                    meta.insert("identity", identity.as_bytes())
                        .map_err(dberr("write identity"))?;
                }
            }
            let delivered = meta.get("delivered").map_err(dberr("read clock"))?;
            let delivered = match delivered {
                Some(v) => Some(
                    serde_json::from_slice::<VClock>(v.value())
                        .map_err(|e| Error::internal(format!("storage: bad clock: {e}")))?,
                ),
                None => None,
            };
            let rebuilding = meta
                .get("rebuilding")
                .map_err(dberr("read the rebuild mark"))?
                .is_some();
            (delivered, rebuilding)
        };
        txn.open_table(KV).map_err(dberr("open kv"))?;
        txn.open_table(LOG).map_err(dberr("open log"))?;
        txn.commit().map_err(dberr("commit"))?;

        let Some(delivered) = delivered else {
            let mut empty = Recovered::empty(n);
            empty.boot.rebuilding = rebuilding;
            return Ok(empty);
        };
        if delivered.len() != n {
            return Err(Error::config(format!(
                "DATA_DIR holds a clock of {} nodes, PEERS lists {n}",
                delivered.len()
            )));
        }
        let read = db.begin_read().map_err(dberr("begin read"))?;
        let mut store = Store::new(n);
        let kv = read.open_table(KV).map_err(dberr("open kv"))?;
        for entry in kv.iter().map_err(dberr("scan kv"))? {
            let (k, v) = entry.map_err(dberr("scan kv"))?;
            store.restore(k.value(), decode_version(k.value(), v.value())?);
        }
        store.set_applied(delivered.clone());

        // The log holds, per origin, a contiguous run ending at `delivered`.
        let log_table = read.open_table(LOG).map_err(dberr("open log"))?;
        let mut writes: Vec<Write> = Vec::new();
        for entry in log_table.iter().map_err(dberr("scan log"))? {
            let (_, v) = entry.map_err(dberr("scan log"))?;
            writes.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| Error::internal(format!("storage: bad log entry: {e}")))?,
            );
        }
        let log = ReplicationLog::recover(&delivered, writes)
            .map_err(|e| Error::internal(format!("storage: {e}")))?;
        Ok(Recovered {
            store,
            boot: Boot {
                delivered,
                log,
                fresh: false,
                rebuilding,
            },
        })
    }
}

impl Storage {
    /// Durably records a group (see `causal::node::Group`): a peer's
    /// snapshot if any, the writes in delivery order, the clock they reach,
    /// the rebuild mark, and the trim of causally stable log entries. With
    /// `group.sync` the data is forced to disk whatever the policy.
    pub fn commit(&self, group: &Group) -> Result<CommitStats> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Error::internal("storage lock poisoned"))?;
        let mut stats = CommitStats {
            writes: group.writes.len(),
            ..CommitStats::default()
        };
        if let Some(t) = &group.trim {
            inner.trim = Some(t.clone());
        }
        let snapshot = group.snapshot.as_ref();
        stats.checkpoint = reap(&mut inner, snapshot.is_some())?;
        if snapshot.is_some() {
            // Rare (a rebuilding node installs one): done synchronously, as
            // a full checkpoint of everything logged so far.
            let closed = inner.wal.rotate()?;
            let mut all = closed_writes(&self.dir, closed)?;
            all.extend(group.writes.iter().cloned());
            stats.checkpoint = Some(checkpoint(
                &self.db,
                snapshot,
                &all,
                &group.delivered,
                inner.trim.as_ref(),
                group.rebuilding,
            )?);
            inner.rebuilding = group.rebuilding;
            Wal::remove_upto(&self.dir, closed)?;
            inner.written = (group.delivered.clone(), group.rebuilding);
            inner.closed.clear();
            return Ok(stats);
        }
        let mark = (group.rebuilding != inner.rebuilding).then_some(group.rebuilding);
        if !group.writes.is_empty() || mark.is_some() {
            let record = serde_json::to_vec(&WalRecordRef {
                writes: &group.writes,
                rebuilding: mark.or(group.rebuilding.then_some(true)),
            })
            .map_err(Error::internal)?;
            stats.bytes = record.len();
            let segment = inner.wal.segment();
            stats.fsync = inner.wal.append(&record)?;
            inner.last_append = Instant::now();
            if inner.wal.segment() != segment {
                // The log moved on before this record: the closed segment
                // ends with the previous one.
                let (clock, rebuilding) = inner.written.clone();
                inner.closed.push_back((segment, clock, rebuilding));
            }
            inner.rebuilding = group.rebuilding;
            inner.written = (group.delivered.clone(), group.rebuilding);
        }
        if group.sync && stats.fsync.is_none() {
            stats.fsync = Some(inner.wal.sync()?);
        }
        if inner.checkpointer.is_none() {
            self.start_checkpoint(&mut inner)?;
        }
        Ok(stats)
    }

    /// Collects a finished background checkpoint and starts the next one if
    /// closed segments wait for it. A commit does this too; a node calls it
    /// now and then so that segments closed while a checkpoint ran are not
    /// left in the log until the next write (after a bulk load the log
    /// would otherwise keep them, and a restart replay them).
    pub fn maintain(&self) -> Result<Option<CheckpointStats>> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Error::internal("storage lock poisoned"))?;
        let finished = reap(&mut inner, false)?;
        if inner.checkpointer.is_none() {
            self.start_checkpoint(&mut inner)?;
        }
        Ok(finished)
    }

    /// Starts a background checkpoint of the oldest closed segments not yet
    /// taken, at most `checkpoint_segments` of them (none is running), once
    /// the log has been quiet for `checkpoint_quiet` or `checkpoint_backlog`
    /// segments wait; a quiet log also gets its spare segments refilled. A
    /// preallocated log moves to its next segment by itself when one is
    /// full; a plain one is rolled here.
    fn start_checkpoint(&self, inner: &mut Inner) -> Result<()> {
        if inner.wal.bytes() >= inner.segment_bytes {
            let segment = inner.wal.rotate()?;
            let (clock, rebuilding) = inner.written.clone();
            inner.closed.push_back((segment, clock, rebuilding));
        }
        let quiet = inner.last_append.elapsed() >= inner.checkpoint_quiet;
        if quiet {
            inner.wal.top_up()?;
        }
        #[cfg(test)]
        if inner.hold {
            return Ok(());
        }
        if inner.closed.len() < inner.checkpoint_backlog && !quiet {
            return Ok(());
        }
        let take = inner.closed.len().min(inner.checkpoint_segments);
        let Some((upto, clock, rebuilding)) = inner.closed.drain(..take).next_back() else {
            return Ok(());
        };
        // The closed segments are read back from disk (the page cache,
        // usually) rather than kept in memory until their checkpoint.
        let trim = inner.trim.clone();
        let db = self.db.clone();
        let dir = self.dir.clone();
        inner.checkpointer = Some(std::thread::spawn(move || {
            let batch = closed_writes(&dir, upto)?;
            let mut stats = checkpoint(&db, None, &batch, &clock, trim.as_ref(), rebuilding)?;
            stats.segments = take;
            // The memory goes back before the segments go: once they are
            // gone from the directory, the checkpoint's heap is too (what
            // `kv_bench memory` waits for before it reads a node's RSS).
            drop(batch);
            release_free_memory();
            Wal::remove_upto(&dir, upto)?;
            Ok(stats)
        }));
        Ok(())
    }

    /// Whether a background checkpoint is running (for benchmarks that
    /// separate commits made during one from the others).
    pub fn checkpointing(&self) -> bool {
        self.inner
            .lock()
            .is_ok_and(|i| i.checkpointer.as_ref().is_some_and(|h| !h.is_finished()))
    }
}

/// What a checkpoint will do to one key: join a version (the snapshot's
/// and the puts', folded), then add increments in delivery order.
type Pending<'a> = (Option<Versioned>, Vec<(&'a Write, &'a Op)>);

/// Hands the heap's free pages back to the operating system. A checkpoint
/// reads whole log segments and builds a map of their winners on its own
/// thread; glibc keeps what that thread freed in the thread's arena, so
/// after a bulk load a node's resident memory stayed tens of megabytes above
/// what its store uses (`kv_bench memory`). Elsewhere a no-op.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim takes no pointers and only returns unused
        // pages of the allocator's own heaps to the kernel; it is safe to
        // call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// The background checkpoint's result if it has finished (or, with `wait`,
/// once it has): its error is the storage's.
fn reap(inner: &mut Inner, wait: bool) -> Result<Option<CheckpointStats>> {
    if !wait && !inner.checkpointer.as_ref().is_some_and(|h| h.is_finished()) {
        return Ok(None);
    }
    match inner.checkpointer.take() {
        Some(handle) => {
            Ok(Some(handle.join().map_err(|_| {
                Error::internal("checkpoint thread panicked")
            })??))
        }
        None => Ok(None),
    }
}

/// Writes a group of delivered writes (and snapshot versions) into the
/// database in one durable transaction: their effect on `kv`, the unstable
/// ones into `log`, the clock they reach as `delivered`, the rebuild mark,
/// and drops log entries that are causally stable (`trim`).
fn checkpoint(
    db: &Database,
    snapshot: Option<&Snapshot>,
    writes: &[Write],
    delivered: &VClock,
    trim: Option<&VClock>,
    rebuilding: bool,
) -> Result<CheckpointStats> {
    let start = Instant::now();
    let mut stats = CheckpointStats::default();
    let mut txn = db.begin_write().map_err(dberr("begin"))?;
    txn.set_durability(Durability::Immediate);
    {
        let mut kv = txn.open_table(KV).map_err(dberr("open kv"))?;
        let mut log = txn.open_table(LOG).map_err(dberr("open log"))?;
        // One update per key reaches the table, in key order so
        // neighbouring keys share the pages they dirty. Versions (a
        // snapshot's, the puts') fold into one before the table is read:
        // their join does not depend on order. Increments are deltas: they
        // are applied to the stored version, in delivery order, each at
        // most once (a counter knows the last write of each origin it
        // holds, so a write the table already has is skipped).
        let mut pending: BTreeMap<&str, Pending> = BTreeMap::new();
        for (key, version) in snapshot
            .into_iter()
            .flat_map(|s| s.entries.iter().map(|(k, v)| (k.as_str(), v)))
        {
            Versioned::join(&mut pending.entry(key).or_default().0, version);
        }
        for w in writes {
            for op in &w.ops {
                let slot = pending.entry(op.key()).or_default();
                match op {
                    Op::Put { .. } => {
                        Versioned::apply_to(&mut slot.0, w, op);
                    }
                    Op::Incr { .. } => slot.1.push((w, op)),
                }
            }
        }
        for (key, (version, incrs)) in pending {
            let mut current = match kv.get(key).map_err(dberr("read kv"))? {
                Some(v) => Some(decode_version(key, v.value())?),
                None => None,
            };
            let mut changed = version.is_some_and(|v| Versioned::join(&mut current, &v));
            for (w, op) in incrs {
                changed |= Versioned::apply_to(&mut current, w, op);
            }
            if let (true, Some(version)) = (changed, current) {
                let bytes = serde_json::to_vec(&version).map_err(Error::internal)?;
                kv.insert(key, bytes.as_slice())
                    .map_err(dberr("write kv"))?;
                stats.keys += 1;
                stats.bytes += (key.len() + bytes.len()) as u64;
            }
        }
        // The log keeps, per origin, the contiguous run of writes after the
        // stable clock: writes every peer already has are never inserted
        // (in a healthy cluster, nearly all of them by checkpoint time), nor
        // are writes a snapshot covers.
        for w in writes {
            if trim.is_some_and(|stable| w.seq <= stable.get(w.origin))
                || snapshot.is_some_and(|s| w.seq <= s.delivered.get(w.origin))
            {
                continue;
            }
            let bytes = serde_json::to_vec(w).map_err(Error::internal)?;
            log.insert((w.origin as u64, w.seq), bytes.as_slice())
                .map_err(dberr("write log"))?;
            stats.log_entries += 1;
            stats.bytes += bytes.len() as u64;
        }
        if let Some(stable) = trim {
            for k in 0..stable.len() {
                log.retain_in((k as u64, 0)..=(k as u64, stable.get(k)), |_, _| false)
                    .map_err(dberr("trim log"))?;
            }
        }
        let mut meta = txn.open_table(META).map_err(dberr("open meta"))?;
        let clock = serde_json::to_vec(delivered).map_err(Error::internal)?;
        meta.insert("delivered", clock.as_slice())
            .map_err(dberr("write clock"))?;
        if rebuilding {
            meta.insert("rebuilding", b"true".as_slice())
                .map_err(dberr("write the rebuild mark"))?;
        } else {
            meta.remove("rebuilding")
                .map_err(dberr("clear the rebuild mark"))?;
        }
    }
    txn.commit().map_err(dberr("commit"))?;
    stats.duration = start.elapsed();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::write::test_write as w;

    /// A group of `writes` reaching `delivered`.
    fn group(writes: &[Write], delivered: &VClock, trim: Option<&VClock>) -> Group {
        Group {
            id: 0,
            snapshot: None,
            writes: writes.to_vec(),
            delivered: delivered.clone(),
            trim: trim.cloned(),
            sync: false,
            rebuilding: false,
        }
    }

    fn tmp() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("causal-grid-storage-{}", rand::random::<u64>()))
    }

    #[test]
    fn state_survives_reopen_and_trim() {
        let dir = tmp();
        let (s, r) = Storage::open(&dir, 0, 2, SyncPolicy::Fsync).unwrap();
        assert!(r.boot.fresh);
        let a = w(0, &[1, 0], "x", "1");
        let b = w(1, &[1, 1], "x", "2");
        let c = w(0, &[2, 1], "y", "3");
        s.commit(&group(&[a, b], &VClock::from_vec(vec![1, 1]), None))
            .unwrap();
        s.commit(&group(
            std::slice::from_ref(&c),
            &VClock::from_vec(vec![2, 1]),
            Some(&VClock::from_vec(vec![1, 0])),
        ))
        .unwrap();
        drop(s);
        let (_, r) = Storage::open(&dir, 0, 2, SyncPolicy::Fsync).unwrap();
        assert!(!r.boot.fresh);
        assert_eq!(r.boot.delivered, VClock::from_vec(vec![2, 1]));
        assert_eq!(r.store.get("x").unwrap().value.text(), "2");
        assert_eq!(r.store.get("y").unwrap().value.text(), "3");
        assert_eq!(r.store.applied(), &VClock::from_vec(vec![2, 1]));
        // 0:2 and 1:1 remain for resending (the trim of 0:1 was only in
        // memory: it is redone after the restart, which costs a resend).
        assert!(r.boot.log.len() >= 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn checkpoints_move_the_log_into_the_database_and_recovery_combines_both() {
        for preallocate in [true, false] {
            // Checkpoints start as soon as segments close.
            let options = WalOptions {
                segment_bytes: 2048,
                preallocate,
                checkpoint_quiet: Duration::ZERO,
                ..WalOptions::default()
            };
            let dir = tmp();
            let (s, _) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
            let mut clock = VClock::zero(1);
            let mut checkpoints = 0;
            for i in 1..=120u64 {
                let seq = clock.increment(0);
                let write = w(0, &[seq], &format!("k{}", i % 17), &i.to_string());
                let trim = (i % 10 == 0).then(|| VClock::from_vec(vec![i - 5]));
                let stats = s
                    .commit(&group(std::slice::from_ref(&write), &clock, trim.as_ref()))
                    .unwrap();
                assert!(stats.fsync.is_some() && stats.writes == 1 && stats.bytes > 0);
                checkpoints += usize::from(stats.checkpoint.is_some());
            }
            // The last checkpoint may still be running: its result comes
            // with the next maintenance.
            wait_checkpoint(&s);
            checkpoints += usize::from(s.maintain().unwrap().is_some());
            let segments = logged_segments(&s, &dir);
            drop(s);
            assert!(checkpoints >= 1, "preallocate {preallocate}: no checkpoint");
            assert!(
                segments <= 4,
                "checkpointed segments are deleted ({segments} left)"
            );
            let (_, r) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
            assert_eq!(r.boot.delivered, VClock::from_vec(vec![120]));
            for k in 0..17u64 {
                // The last write of each key wins.
                let last = (1..=120u64).filter(|i| i % 17 == k).max().unwrap();
                assert_eq!(
                    r.store.get(&format!("k{k}")).unwrap().value.text(),
                    last.to_string()
                );
            }
            assert!(r.boot.log.len() < 120, "stable writes were trimmed");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Segment files up to the current one (not the spare ones after it).
    fn logged_segments(s: &Storage, dir: &Path) -> usize {
        let current = s.inner.lock().unwrap().wal.segment();
        let all = wal::segments(dir).unwrap();
        all.into_iter().filter(|&n| n <= current).count()
    }

    /// Commits `groups` groups of 20 writes to distinct keys (about 2 KiB a
    /// group: with 4 KiB segments, a segment closes every other commit);
    /// `after` is told how many closed segments waited before each commit.
    fn commit_groups(s: &Storage, groups: u64, mut after: impl FnMut(usize)) {
        let mut clock = VClock::zero(1);
        for g in 0..groups {
            let writes: Vec<Write> = (0..20u64)
                .map(|j| {
                    let seq = clock.increment(0);
                    w(0, &[seq], &format!("k{}", g * 20 + j), "some value text")
                })
                .collect();
            let waiting = s.inner.lock().unwrap().closed.len();
            s.commit(&group(&writes, &clock, Some(&clock))).unwrap();
            after(waiting);
        }
    }

    /// 600 keys in 30 groups.
    fn commit_600_keys(s: &Storage) {
        commit_groups(s, 30, |_| {});
    }

    /// Runs maintenance until `done` holds, failing with `what` after 30 s.
    fn maintain_until(s: &Storage, what: &str, done: impl Fn(&Storage) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(s) {
            assert!(Instant::now() < deadline, "{what}");
            s.maintain().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (with a deadline) until no background checkpoint runs.
    fn wait_checkpoint(s: &Storage) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.checkpointing() {
            assert!(Instant::now() < deadline, "the checkpoint never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn an_idle_node_checkpoints_what_its_last_commits_closed() {
        for preallocate in [true, false] {
            let options = WalOptions {
                segment_bytes: 4096,
                preallocate,
                ..WalOptions::default()
            };
            let dir = tmp();
            let (s, _) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
            // Faster than checkpoints finish.
            commit_600_keys(&s);
            // No more commits: maintenance alone takes every closed segment
            // (a preallocated log closes segments while a checkpoint runs,
            // so without it the last ones would stay; with it disabled this
            // loop runs into its deadline).
            maintain_until(&s, "closed segments left behind", |s| {
                logged_segments(s, &dir) <= 2 && !s.checkpointing()
            });
            drop(s);
            let (_, r) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
            assert_eq!(r.boot.delivered, VClock::from_vec(vec![600]));
            assert_eq!(r.store.len(), 600);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Closed segments wait for a quiet log, unless too many of them wait.
    #[test]
    fn a_checkpoint_waits_for_a_quiet_log_or_a_full_backlog() {
        let quiet = Duration::from_millis(300);
        let options = WalOptions {
            segment_bytes: 4096,
            checkpoint_quiet: quiet,
            checkpoint_backlog: 1000,
            ..WalOptions::default()
        };
        let dir = tmp();
        let (s, _) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
        commit_600_keys(&s);
        let closed = s.inner.lock().unwrap().closed.len();
        assert!(closed >= 10, "only {closed} closed segments");
        // Under writes (and right after them) nothing was checkpointed, and
        // no more than the one segment after the current was filled.
        let last = s.inner.lock().unwrap().last_append;
        assert!(s.maintain().unwrap().is_none());
        if last.elapsed() < quiet {
            assert!(!s.checkpointing(), "a checkpoint started under writes");
            assert_eq!(s.inner.lock().unwrap().closed.len(), closed);
            assert!(s.inner.lock().unwrap().wal.spare() <= 1);
        }
        // Once the log is quiet, maintenance works through them all.
        maintain_until(&s, "closed segments left behind", |s| {
            s.inner.lock().unwrap().closed.is_empty() && !s.checkpointing()
        });
        assert!(last.elapsed() >= quiet);
        // And the spare segments are refilled.
        maintain_until(&s, "the spare segments were not refilled", |s| {
            s.inner.lock().unwrap().wal.spare() >= SPARE_SEGMENTS
        });
        drop(s);
        let (_, r) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
        assert_eq!(r.store.len(), 600);
        let _ = std::fs::remove_dir_all(&dir);

        // With a backlog of 3, writes that never pause still get their
        // segments checkpointed, and never more than 3 wait for long.
        let options = WalOptions {
            checkpoint_quiet: Duration::from_secs(3600),
            checkpoint_backlog: 3,
            ..options
        };
        let dir = tmp();
        let (s, _) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
        let mut started = false;
        commit_groups(&s, 100, |waiting| {
            let running = s.checkpointing() || s.inner.lock().unwrap().closed.len() < waiting;
            if !started && running {
                // The first checkpoint starts once 3 segments wait (this
                // commit may have closed the third).
                assert!(
                    waiting + 1 >= 3,
                    "a checkpoint started with {waiting} waiting"
                );
                started = true;
            }
        });
        assert!(started, "no checkpoint under sustained writes");
        maintain_until(&s, "the backlog never shrank", |s| {
            s.inner.lock().unwrap().closed.len() < 3 && !s.checkpointing()
        });
        // Fewer than 3 wait, and they keep waiting (the log is not quiet
        // for an hour).
        let waiting = s.inner.lock().unwrap().closed.len();
        s.maintain().unwrap();
        assert!(!s.checkpointing());
        assert_eq!(s.inner.lock().unwrap().closed.len(), waiting);
        drop(s);
        let (_, r) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
        assert_eq!(r.store.len(), 2000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Segments that closed while checkpoints were held back are taken a
    /// few at a time, oldest first, each checkpoint claiming the clock of
    /// its own last segment: a restart between two of them replays the
    /// rest and loses nothing.
    #[test]
    fn a_checkpoint_takes_at_most_its_bound_of_segments_and_claims_only_their_clock() {
        for preallocate in [true, false] {
            let options = WalOptions {
                segment_bytes: 4096,
                preallocate,
                checkpoint_segments: 2,
                checkpoint_quiet: Duration::ZERO,
                ..WalOptions::default()
            };
            let dir = tmp();
            let (s, _) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
            s.inner.lock().unwrap().hold = true;
            commit_600_keys(&s);
            let pending = s.inner.lock().unwrap().closed.len();
            assert!(pending >= 10, "only {pending} closed segments");
            s.inner.lock().unwrap().hold = false;
            // One checkpoint of the two oldest, then a restart.
            assert!(s.maintain().unwrap().is_none(), "nothing had finished");
            wait_checkpoint(&s);
            let first = reap(&mut s.inner.lock().unwrap(), true).unwrap().unwrap();
            assert_eq!(first.segments, 2);
            assert_eq!(s.inner.lock().unwrap().closed.len(), pending - 2);
            drop(s);
            let (s, r) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
            assert_eq!(r.boot.delivered, VClock::from_vec(vec![600]));
            assert_eq!(r.store.len(), 600, "preallocate {preallocate}");
            drop(s);
            let _ = std::fs::remove_dir_all(&dir);

            // Without a restart, maintenance works through the backlog two
            // segments at a time.
            let dir = tmp();
            let (s, _) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
            s.inner.lock().unwrap().hold = true;
            commit_600_keys(&s);
            let pending = s.inner.lock().unwrap().closed.len();
            s.inner.lock().unwrap().hold = false;
            let mut taken = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !s.inner.lock().unwrap().closed.is_empty() || s.checkpointing() {
                assert!(Instant::now() < deadline, "closed segments left behind");
                taken.extend(s.maintain().unwrap().map(|c| c.segments));
                std::thread::sleep(Duration::from_millis(2));
            }
            taken.extend(
                reap(&mut s.inner.lock().unwrap(), true)
                    .unwrap()
                    .map(|c| c.segments),
            );
            assert!(taken.iter().all(|&n| n <= 2), "{taken:?}");
            assert_eq!(taken.iter().sum::<usize>(), pending, "{taken:?}");
            drop(s);
            let (_, r) = Storage::open_with(&dir, 0, 1, SyncPolicy::Fsync, options).unwrap();
            assert_eq!(r.boot.delivered, VClock::from_vec(vec![600]));
            assert_eq!(r.store.len(), 600);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    fn log_keys(db: &Database) -> Vec<(u64, u64)> {
        let read = db.begin_read().unwrap();
        let table = read.open_table(LOG).unwrap();
        let keys = table
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value())
            .collect();
        keys
    }

    #[test]
    fn a_checkpoint_keeps_the_highest_rank_per_key_and_only_unstable_log_entries() {
        let dir = tmp();
        let (s, _) = Storage::open(&dir, 0, 2, SyncPolicy::Fsync).unwrap();
        // Delivered in this order: b (rank (3, 1)) before the concurrent a
        // (rank (1, 0)); b must stay, although a comes later.
        let b1 = w(1, &[0, 1], "other", "b1");
        let b2 = w(1, &[0, 2], "other", "b2");
        let b3 = w(1, &[0, 3], "x", "b");
        let a = w(0, &[1, 0], "x", "a");
        let writes = vec![b1, b2, b3, a];
        let clock = VClock::from_vec(vec![1, 3]);
        checkpoint(
            &s.db,
            None,
            &writes,
            &clock,
            Some(&VClock::from_vec(vec![0, 2])),
            false,
        )
        .unwrap();
        assert_eq!(
            log_keys(&s.db),
            vec![(0, 1), (1, 3)],
            "1:1 and 1:2 are stable"
        );
        let r = recover(&s.db, 0, 2).unwrap();
        assert_eq!(r.store.get("x").unwrap().value.text(), "b");
        assert_eq!(r.store.get("other").unwrap().value.text(), "b2");
        assert_eq!(r.boot.log.len(), 2);
        // The recovered log continues where the table ends.
        let mut log = r.boot.log;
        assert!(log.append(w(1, &[1, 4], "y", "b4")));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_of_another_node_is_refused() {
        let dir = tmp();
        drop(Storage::open(&dir, 0, 3, SyncPolicy::Fsync).unwrap());
        assert!(matches!(
            Storage::open(&dir, 1, 3, SyncPolicy::Fsync),
            Err(Error::Config(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupted_file_is_detected_not_applied() {
        let dir = tmp();
        let (s, _) = Storage::open(&dir, 0, 1, SyncPolicy::Fsync).unwrap();
        let writes: Vec<Write> = (1..=200)
            .map(|i| w(0, &[i], &format!("k{i}"), &"v".repeat(100)))
            .collect();
        s.commit(&group(&writes, &VClock::from_vec(vec![200]), None))
            .unwrap();
        drop(s);
        // Overwrite the middle of the file with garbage.
        let path = dir.join("node.redb");
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 4096] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        match Storage::open(&dir, 0, 1, SyncPolicy::Fsync) {
            Err(_) => {}
            Ok((_, r)) => {
                // If redb fell back to an intact commit, what it returns must
                // be self-consistent: every recovered value is a real write.
                for (k, v) in r.store.iter() {
                    assert!(k.starts_with('k') && v.value.text() == "v".repeat(100));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_rebuild_mark_survives_a_restart_until_the_group_that_clears_it() {
        let dir = tmp();
        let (s, r) = Storage::open(&dir, 2, 3, SyncPolicy::Fsync).unwrap();
        assert!(r.boot.fresh && !r.boot.rebuilding);
        // The first group of a rebuilding node carries the mark, even
        // without writes.
        let mut g = group(&[], &VClock::zero(3), None);
        g.rebuilding = true;
        s.commit(&g).unwrap();
        drop(s);
        let (s, r) = Storage::open(&dir, 2, 3, SyncPolicy::Fsync).unwrap();
        assert!(r.boot.rebuilding, "still rebuilding after a restart");
        // A snapshot installed while rebuilding commits a clock; the mark
        // stays.
        let mut g = group(&[], &VClock::from_vec(vec![1, 1, 1]), None);
        g.rebuilding = true;
        g.snapshot = Some(Snapshot {
            delivered: VClock::from_vec(vec![1, 1, 1]),
            entries: vec![(
                "a".into(),
                Versioned::register("x", VClock::from_vec(vec![1, 1, 1]), 2),
            )],
        });
        s.commit(&g).unwrap();
        drop(s);
        let (s, r) = Storage::open(&dir, 2, 3, SyncPolicy::Fsync).unwrap();
        assert!(r.boot.rebuilding && !r.boot.fresh);
        assert_eq!(r.boot.delivered, VClock::from_vec(vec![1, 1, 1]));
        assert_eq!(r.store.get("a").unwrap().value.text(), "x");
        // The group that ends the rebuild clears it.
        let w = w(2, &[1, 1, 2], "b", "y");
        s.commit(&group(
            std::slice::from_ref(&w),
            &VClock::from_vec(vec![1, 1, 2]),
            None,
        ))
        .unwrap();
        drop(s);
        let (_, r) = Storage::open(&dir, 2, 3, SyncPolicy::Fsync).unwrap();
        assert!(!r.boot.rebuilding);
        assert_eq!(r.boot.delivered, VClock::from_vec(vec![1, 1, 2]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stored_value_that_cannot_be_decoded_is_an_error_on_every_path() {
        let dir = tmp();
        let (s, _) = Storage::open(&dir, 0, 1, SyncPolicy::Fsync).unwrap();
        {
            let txn = s.db.begin_write().unwrap();
            {
                let mut kv = txn.open_table(KV).unwrap();
                kv.insert("k", b"not json".as_slice()).unwrap();
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("delivered", b"[1]".as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let write = w(0, &[2], "k", "v");
        let snapshot = Snapshot {
            delivered: VClock::from_vec(vec![2]),
            entries: vec![("k".into(), Versioned::register("v", write.vc.clone(), 0))],
        };
        let clock = VClock::from_vec(vec![2]);
        // The merge of a snapshot and the checkpoint of writes both refuse
        // it rather than overwrite it.
        assert!(checkpoint(&s.db, Some(&snapshot), &[], &clock, None, false).is_err());
        assert!(checkpoint(&s.db, None, &[write], &clock, None, false).is_err());
        assert!(recover(&s.db, 0, 1).is_err(), "and so does recovery");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn counters_and_transactions_survive_checkpoints_and_replays_without_double_counting() {
        use crate::causal::write::test_ops;
        let options = WalOptions {
            segment_bytes: 2048,
            preallocate: false,
            ..WalOptions::default()
        };
        let dir = tmp();
        let (s, _) = Storage::open_with(&dir, 0, 2, SyncPolicy::Fsync, options).unwrap();
        let mut clock = VClock::zero(2);
        let mut totals = [0i64; 3];
        for i in 1..=150i64 {
            let origin = (i % 2) as usize;
            clock.increment(origin);
            let by = if i % 3 == 0 { -i } else { i };
            let c = (i % 3) as usize;
            totals[c] += by;
            let ops = vec![
                Op::Incr {
                    key: format!("c{c}"),
                    by,
                },
                Op::Put {
                    key: format!("r{c}"),
                    value: i.to_string(),
                },
            ];
            let write = test_ops(origin, clock.entries(), ops);
            s.commit(&group(std::slice::from_ref(&write), &clock, None))
                .unwrap();
        }
        drop(s);
        // Twice: the first open replays the log's tail over the checkpoint
        // and checkpoints it; the second starts from that.
        for _ in 0..2 {
            let (_, r) = Storage::open_with(&dir, 0, 2, SyncPolicy::Fsync, options).unwrap();
            for (c, total) in totals.iter().enumerate() {
                let v = r.store.get(&format!("c{c}")).unwrap();
                assert_eq!(v.value.text(), total.to_string(), "c{c}");
                assert!(v.value.is_counter());
            }
            assert_eq!(r.store.get("r0").unwrap().value.text(), "150");
            assert_eq!(r.boot.delivered, clock);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_checkpoint_adds_increments_to_a_snapshot_counter_once() {
        use crate::causal::write::test_ops;
        let dir = tmp();
        let (s, _) = Storage::open(&dir, 1, 2, SyncPolicy::Fsync).unwrap();
        let mut store = Store::new(2);
        let first = test_ops(
            0,
            &[1, 0],
            vec![Op::Incr {
                key: "n".into(),
                by: 5,
            }],
        );
        store.apply(&first);
        let snapshot = Snapshot {
            delivered: VClock::from_vec(vec![1, 0]),
            entries: vec![("n".into(), store.get("n").unwrap().clone())],
        };
        // The group replays 0:1 (covered by the snapshot) and adds 0:2.
        let second = test_ops(
            0,
            &[2, 0],
            vec![Op::Incr {
                key: "n".into(),
                by: 2,
            }],
        );
        let clock = VClock::from_vec(vec![2, 0]);
        checkpoint(
            &s.db,
            Some(&snapshot),
            &[first, second],
            &clock,
            None,
            false,
        )
        .unwrap();
        let r = recover(&s.db, 1, 2).unwrap();
        assert_eq!(r.store.get("n").unwrap().value.text(), "7");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
