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
//! | `kv` | key | the winning version (JSON `Versioned`) |
//! | `log` | `(origin, seq)` | a delivered write not yet causally stable (JSON `Write`) |
//! | `meta` | `"delivered"` | the delivered clock (JSON) |
//! | `meta` | `"identity"` | node id and cluster size the directory belongs to |
//!
//! A commit writes a whole group of delivered writes (group commit: all the
//! writes that arrived while the previous commit was syncing share one fsync),
//! their effect on `kv`, and the new delivered clock, in one transaction; so
//! after a crash the store, the clock and the log always agree.
//!
//! This module does I/O: it is called from a blocking thread by `ClockActor`,
//! never from an actor's thread.

use std::path::Path;

use redb::{Database, Durability, ReadableTable, TableDefinition};

use crate::causal::store::wins;
use crate::causal::{NodeId, ReplicationLog, Store, VClock, Versioned, Write};
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

/// What a node finds in its `DATA_DIR` at start-up.
pub struct Recovered {
    pub delivered: VClock,
    pub store: Store,
    pub log: ReplicationLog,
    /// True when the directory held no state: a new node, or one whose data
    /// was wiped (see `ClockActor` for how it avoids reusing sequence numbers).
    pub fresh: bool,
}

impl Recovered {
    pub fn empty(n: usize) -> Self {
        Recovered {
            delivered: VClock::zero(n),
            store: Store::new(n),
            log: ReplicationLog::new(n),
            fresh: true,
        }
    }
}

pub struct Storage {
    db: Database,
    durability: Durability,
}

fn storage_err(what: &str) -> impl Fn(redb::Error) -> Error + '_ {
    move |e| Error::internal(format!("storage: {what}: {e}"))
}

fn db<E: Into<redb::Error>>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| storage_err(what)(e.into())
}

impl Storage {
    /// Opens (or creates) the database in `dir` and recovers the node's state.
    pub fn open(
        dir: &Path,
        me: NodeId,
        n: usize,
        policy: SyncPolicy,
    ) -> Result<(Storage, Recovered)> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::config(format!("DATA_DIR {} cannot be created: {e}", dir.display()))
        })?;
        let path = dir.join("node.redb");
        let db = Database::builder()
            .set_cache_size(64 * 1024 * 1024)
            .create(&path)
            .map_err(|e| {
                Error::config(format!(
                    "cannot open {}: {e} (a damaged file is refused rather than half-read; move it away to rebuild this node from its peers)",
                    path.display()
                ))
            })?;
        let storage = Storage {
            db,
            durability: match policy {
                SyncPolicy::Eventual => Durability::Eventual,
                _ => Durability::Immediate,
            },
        };
        let recovered = storage.recover(me, n)?;
        Ok((storage, recovered))
    }

    fn recover(&self, me: NodeId, n: usize) -> Result<Recovered> {
        let identity = serde_json::json!({"node": me, "cluster_size": n}).to_string();
        let txn = self.db.begin_write().map_err(db("begin"))?;
        let delivered = {
            let mut meta = txn.open_table(META).map_err(db("open meta"))?;
            let found = meta
                .get("identity")
                .map_err(db("read identity"))?
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
                        .map_err(db("write identity"))?;
                }
            }
            let delivered = meta.get("delivered").map_err(db("read clock"))?;
            match delivered {
                Some(v) => Some(
                    serde_json::from_slice::<VClock>(v.value())
                        .map_err(|e| Error::internal(format!("storage: bad clock: {e}")))?,
                ),
                None => None,
            }
        };
        txn.open_table(KV).map_err(db("open kv"))?;
        txn.open_table(LOG).map_err(db("open log"))?;
        txn.commit().map_err(db("commit"))?;

        let Some(delivered) = delivered else {
            return Ok(Recovered::empty(n));
        };
        if delivered.len() != n {
            return Err(Error::config(format!(
                "DATA_DIR holds a clock of {} nodes, PEERS lists {n}",
                delivered.len()
            )));
        }
        let read = self.db.begin_read().map_err(db("begin read"))?;
        let mut store = Store::new(n);
        let kv = read.open_table(KV).map_err(db("open kv"))?;
        for entry in kv.iter().map_err(db("scan kv"))? {
            let (k, v) = entry.map_err(db("scan kv"))?;
            let version: Versioned = serde_json::from_slice(v.value()).map_err(|e| {
                Error::internal(format!("storage: bad value of {:?}: {e}", k.value()))
            })?;
            store.restore(k.value().to_string(), version);
        }
        store.set_applied(delivered.clone());

        // The log holds, per origin, a contiguous run ending at `delivered`.
        let log_table = read.open_table(LOG).map_err(db("open log"))?;
        let mut writes: Vec<Write> = Vec::new();
        for entry in log_table.iter().map_err(db("scan log"))? {
            let (_, v) = entry.map_err(db("scan log"))?;
            writes.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| Error::internal(format!("storage: bad log entry: {e}")))?,
            );
        }
        let mut start = delivered.clone();
        for k in 0..n {
            let count = writes.iter().filter(|w| w.origin == k).count() as u64;
            start.set(k, delivered.get(k).saturating_sub(count));
        }
        let mut log = ReplicationLog::starting_after(&start);
        for w in writes {
            if !log.append(w) {
                return Err(Error::internal("storage: replication log has a gap"));
            }
        }
        Ok(Recovered {
            delivered,
            store,
            log,
            fresh: false,
        })
    }

    /// Durably records a group of delivered writes (in delivery order), their
    /// effect on the key space, the new delivered clock, and drops log entries
    /// that are causally stable (`trim`).
    pub fn commit(
        &self,
        writes: &[Write],
        delivered: &VClock,
        trim: Option<&VClock>,
    ) -> Result<()> {
        self.commit_with(&[], writes, delivered, trim)
    }

    /// Like `commit`, first merging versions from a peer's snapshot.
    pub fn commit_with(
        &self,
        snapshot: &[(String, Versioned)],
        writes: &[Write],
        delivered: &VClock,
        trim: Option<&VClock>,
    ) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(db("begin"))?;
        txn.set_durability(self.durability);
        {
            let mut kv = txn.open_table(KV).map_err(db("open kv"))?;
            let mut log = txn.open_table(LOG).map_err(db("open log"))?;
            for (key, version) in snapshot {
                let newer = match kv.get(key.as_str()).map_err(db("read kv"))? {
                    Some(v) => serde_json::from_slice::<Versioned>(v.value())
                        .map(|current| version.rank() > current.rank())
                        .unwrap_or(true),
                    None => true,
                };
                if newer {
                    let bytes = serde_json::to_vec(version).map_err(Error::internal)?;
                    kv.insert(key.as_str(), bytes.as_slice())
                        .map_err(db("write kv"))?;
                }
            }
            for w in writes {
                let current = match kv.get(w.key.as_str()).map_err(db("read kv"))? {
                    Some(v) => Some(
                        serde_json::from_slice::<Versioned>(v.value())
                            .map_err(|e| Error::internal(format!("storage: bad value: {e}")))?,
                    ),
                    None => None,
                };
                if wins(w, current.as_ref()) {
                    let version = Versioned {
                        value: w.value.clone(),
                        vc: w.vc.clone(),
                        origin: w.origin,
                    };
                    let bytes = serde_json::to_vec(&version).map_err(Error::internal)?;
                    kv.insert(w.key.as_str(), bytes.as_slice())
                        .map_err(db("write kv"))?;
                }
                let bytes = serde_json::to_vec(w).map_err(Error::internal)?;
                log.insert((w.origin as u64, w.seq), bytes.as_slice())
                    .map_err(db("write log"))?;
            }
            if let Some(stable) = trim {
                for k in 0..stable.len() {
                    log.retain_in((k as u64, 0)..=(k as u64, stable.get(k)), |_, _| false)
                        .map_err(db("trim log"))?;
                }
            }
            let mut meta = txn.open_table(META).map_err(db("open meta"))?;
            let clock = serde_json::to_vec(delivered).map_err(Error::internal)?;
            meta.insert("delivered", clock.as_slice())
                .map_err(db("write clock"))?;
        }
        txn.commit().map_err(db("commit"))?;
        Ok(())
    }

    /// Bytes the database file takes on disk.
    pub fn file_bytes(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("node.redb"))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(origin: NodeId, vc: &[u64], key: &str, value: &str) -> Write {
        Write {
            origin,
            seq: vc[origin],
            vc: VClock::from_vec(vc.to_vec()),
            key: key.into(),
            value: value.into(),
            ts_ms: 0,
        }
    }

    fn tmp() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("causal-grid-storage-{}", rand::random::<u64>()))
    }

    #[test]
    fn state_survives_reopen_and_trim() {
        let dir = tmp();
        let (s, r) = Storage::open(&dir, 0, 2, SyncPolicy::Fsync).unwrap();
        assert!(r.fresh);
        let a = w(0, &[1, 0], "x", "1");
        let b = w(1, &[1, 1], "x", "2");
        let c = w(0, &[2, 1], "y", "3");
        s.commit(&[a.clone(), b.clone()], &VClock::from_vec(vec![1, 1]), None)
            .unwrap();
        s.commit(
            std::slice::from_ref(&c),
            &VClock::from_vec(vec![2, 1]),
            Some(&VClock::from_vec(vec![1, 0])),
        )
        .unwrap();
        drop(s);
        let (_, r) = Storage::open(&dir, 0, 2, SyncPolicy::Fsync).unwrap();
        assert!(!r.fresh);
        assert_eq!(r.delivered, VClock::from_vec(vec![2, 1]));
        assert_eq!(r.store.get("x").unwrap().value, "2");
        assert_eq!(r.store.get("y").unwrap().value, "3");
        assert_eq!(r.store.applied(), &VClock::from_vec(vec![2, 1]));
        // Write 0:1 was trimmed; 0:2 and 1:1 remain for resending.
        assert_eq!(r.log.len(), 2);
        assert_eq!(r.log.first_available(0), 2);
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
        s.commit(&writes, &VClock::from_vec(vec![200]), None)
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
                    assert!(k.starts_with('k') && v.value == "v".repeat(100));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
