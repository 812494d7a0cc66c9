//! The write-ahead log: numbered segment files of checksummed records.
//!
//! A record is `[length: u32 LE][crc32: u32 LE][payload]`, the payload never
//! empty. Appends go to the newest segment; a group commit is one record and
//! one `fdatasync` (sequential I/O, whatever the keys). Segments are deleted
//! once their content has been checkpointed into the database.
//!
//! **Preallocated segments.** With `prealloc > 0`, every segment is created
//! at that size and filled with zeros (written and synced, not merely
//! `fallocate`d, whose unwritten extents would need a metadata update on
//! first write) by a background thread before it is needed. A record then
//! overwrites blocks that already exist, so its `fdatasync` writes only
//! data: no file size or extent change, hence no filesystem journal commit,
//! which on ext4 (`data=ordered`) would also wait for every other file's
//! dirty data, such as a checkpoint's database pages. When a record does not
//! fit in what is left, the log moves to the next, already zeroed, segment.
//! A record larger than a whole segment is still written, past its end.
//! Up to `set_spares` zeroed segments are kept ready: the storage refills
//! them (`top_up`) while the log is quiet, and only a log that has used
//! them all fills the next one under load.
//!
//! On open, every segment is read in order. A zero length ends a segment's
//! records; after them, zeros are the unused part of a preallocated segment.
//! A record that is cut short or fails its checksum, or non-zero bytes after
//! the last record, end the log: in the newest segment holding any non-zero
//! byte that is a torn write from a crash, and the tail is cut off (and
//! reported); in an older segment it is corruption, and opening fails rather
//! than skipping acknowledged writes.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

const HEADER: usize = 8;
/// Largest record accepted on reading (a group of writes is far smaller).
const MAX_RECORD: usize = 1 << 30;

fn io(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::internal(format!("write-ahead log: {what}: {e}"))
}

/// A segment's number and its valid records.
pub type Segment = (u64, Vec<Vec<u8>>);

pub struct Wal {
    dir: PathBuf,
    file: File,
    segment: u64,
    /// Bytes of records in the current segment (the next write's offset).
    bytes: u64,
    sync: bool,
    /// Size each new segment is zero-filled to; 0 for plain appends.
    prealloc: u64,
    /// Zero-filled segments ready for use, numbered from `segment + 1`.
    spare: VecDeque<File>,
    /// The segment after the spare ones, being zero-filled in the
    /// background.
    filling: Option<JoinHandle<Result<File>>>,
    /// How many spare segments `top_up` keeps ready.
    spares: usize,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:010}.log"))
}

/// The segment numbers present in `dir`, ascending.
pub(super) fn segments(dir: &Path) -> Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io("list"))? {
        let name = entry.map_err(io("list"))?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("wal-")
            .and_then(|rest| rest.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Closed segments in `dir`, as seen from outside a running log: those
/// numbered below the newest segment that holds a record (the spare ones
/// after it hold none; a preallocated log's open segment holds a record from
/// the moment it is opened).
pub(super) fn closed_segments(dir: &Path) -> Result<usize> {
    let numbers = segments(dir)?;
    let holds_a_record = |n: &u64| {
        let mut first = [0u8; 4];
        File::open(segment_path(dir, *n))
            .and_then(|mut f| f.read_exact(&mut first))
            .is_ok_and(|_| first != [0; 4])
    };
    Ok(numbers.iter().rposition(holds_a_record).unwrap_or(0))
}

/// What reading one segment found.
struct SegmentRead {
    records: Vec<Vec<u8>>,
    /// Length of the valid prefix (the records).
    valid: u64,
    /// Whether every byte after the records is zero (unused preallocated
    /// space, or nothing at all).
    clean: bool,
}

/// Reads the valid records of one segment.
fn read_segment(path: &Path) -> Result<SegmentRead> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io("read"))?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        if len == 0 || len > MAX_RECORD || bytes.len() - at - HEADER < len {
            break;
        }
        let payload = &bytes[at + HEADER..at + HEADER + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        records.push(payload.to_vec());
        at += HEADER + len;
    }
    Ok(SegmentRead {
        records,
        valid: at as u64,
        clean: bytes[at..].iter().all(|&b| b == 0),
    })
}

/// Creates segment `n`, zero-filled to `size` bytes and synced with its
/// directory entry, ready to be overwritten.
fn prepare(dir: &Path, n: u64, size: u64) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(segment_path(dir, n))
        .map_err(io("create"))?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        let chunk = (size - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..chunk], at)
            .map_err(io("preallocate"))?;
        at += chunk as u64;
    }
    file.sync_all().map_err(io("sync"))?;
    sync_dir(dir);
    Ok(file)
}

/// Makes new directory entries durable.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Wal {
    /// Opens the log in `dir`: returns every valid record of the existing
    /// segments, in order, with the segment numbers they came from, and a log
    /// that writes to a fresh segment after them (zero-filled to `prealloc`
    /// bytes when that is not 0).
    pub fn open(dir: &Path, sync: bool, prealloc: u64) -> Result<(Wal, Vec<Segment>)> {
        let existing = segments(dir)?;
        let mut read = Vec::new();
        for &n in &existing {
            read.push((n, read_segment(&segment_path(dir, n))?));
        }
        // The tail is the last segment holding any non-zero byte (a crash
        // may leave a newer, empty or zero-filled one behind it).
        let tail = read
            .iter()
            .rev()
            .find(|(_, r)| r.valid > 0 || !r.clean)
            .map(|(n, _)| *n);
        let mut found = Vec::new();
        for (n, r) in read {
            let path = segment_path(dir, n);
            if !r.clean {
                if Some(n) == tail {
                    log::warn!(
                        "write-ahead log {}: discarding a torn tail after byte {} (a write interrupted by a crash; it was never acknowledged)",
                        path.display(),
                        r.valid
                    );
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io("open"))?;
                    f.set_len(r.valid).map_err(io("truncate"))?;
                    f.sync_all().map_err(io("sync"))?;
                } else {
                    return Err(Error::config(format!(
                        "write-ahead log {} is corrupted at byte {} (not at its end): refusing to start; move DATA_DIR away to rebuild this node from its peers",
                        path.display(),
                        r.valid
                    )));
                }
            }
            found.push((n, r.records));
        }
        let segment = existing.last().map_or(1, |n| n + 1);
        let file = Self::create(dir, segment, prealloc)?;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            file,
            segment,
            bytes: 0,
            sync,
            prealloc,
            spare: VecDeque::new(),
            filling: None,
            spares: 1,
        };
        wal.fill_next();
        Ok((wal, found))
    }

    fn create(dir: &Path, n: u64, prealloc: u64) -> Result<File> {
        if prealloc > 0 {
            return prepare(dir, n, prealloc);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, n))
            .map_err(io("create"))?;
        // Make the new file's directory entry durable too.
        sync_dir(dir);
        Ok(file)
    }

    /// Starts zero-filling the segment after the spare ones (unless one is
    /// being filled already).
    fn fill_next(&mut self) {
        if self.prealloc > 0 && self.filling.is_none() {
            let n = self.segment + 1 + self.spare.len() as u64;
            let (dir, size) = (self.dir.clone(), self.prealloc);
            self.filling = Some(std::thread::spawn(move || prepare(&dir, n, size)));
        }
    }

    /// Waits for the segment being filled, if any, and adds it to the
    /// spare ones.
    fn join_filling(&mut self) -> Result<()> {
        if let Some(handle) = self.filling.take() {
            let file = handle.join().map_err(|_| {
                Error::internal("write-ahead log: the preallocating thread panicked")
            })??;
            self.spare.push_back(file);
        }
        Ok(())
    }

    /// How many zero-filled segments to keep ready (see `top_up`); at
    /// least one is always being filled or ready.
    pub fn set_spares(&mut self, spares: usize) {
        self.spares = spares.max(1);
    }

    /// Keeps `spares` zero-filled segments ready, one fill at a time:
    /// called while the log is quiet, so that the fills' writes do not
    /// share the disk with the syncs of commits. Returns whether the pool
    /// is full.
    pub fn top_up(&mut self) -> Result<bool> {
        if self.prealloc == 0 {
            return Ok(true);
        }
        if self.filling.as_ref().is_some_and(|h| h.is_finished()) {
            self.join_filling()?;
        }
        if self.spare.len() >= self.spares {
            return Ok(true);
        }
        self.fill_next();
        Ok(false)
    }

    /// Appends one record; with `sync`, it is on disk when this returns,
    /// and the time the `fdatasync` took is returned. In a preallocated log,
    /// a record that does not fit in what is left of the segment goes to
    /// the next one.
    pub fn append(&mut self, payload: &[u8]) -> Result<Option<Duration>> {
        if payload.is_empty() {
            return Err(Error::internal("write-ahead log: an empty record"));
        }
        let len = (HEADER + payload.len()) as u64;
        if self.prealloc > 0 && self.bytes > 0 && self.bytes + len > self.prealloc {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(HEADER + payload.len());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        buf.extend_from_slice(payload);
        if self.prealloc > 0 {
            self.file
                .write_all_at(&buf, self.bytes)
                .map_err(io("write"))?;
        } else {
            self.file.write_all(&buf).map_err(io("append"))?;
        }
        self.bytes += len;
        if self.sync {
            return self.sync().map(Some);
        }
        Ok(None)
    }

    /// Forces the current segment to disk (whatever the policy); returns
    /// how long the `fdatasync` took.
    pub fn sync(&mut self) -> Result<Duration> {
        let start = Instant::now();
        self.file.sync_data().map_err(io("sync"))?;
        Ok(start.elapsed())
    }

    /// Zero-filled segments ready for use.
    #[cfg(test)]
    pub(super) fn spare(&self) -> usize {
        self.spare.len()
    }

    /// Bytes of records in the current segment.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The current segment's number; every lower one is closed.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Closes the current segment and starts the next; returns the number
    /// of the closed one.
    ///
    /// A preallocated log takes the next spare segment (waiting for the one
    /// being filled if none is ready) and, once no spare one is left,
    /// starts filling the next at once; `top_up` refills the rest.
    pub fn rotate(&mut self) -> Result<u64> {
        self.file.sync_data().map_err(io("sync"))?;
        let closed = self.segment;
        if self.spare.is_empty() {
            self.join_filling()?;
        }
        self.file = match self.spare.pop_front() {
            Some(file) => file,
            None => Self::create(&self.dir, closed + 1, self.prealloc)?,
        };
        self.segment = closed + 1;
        self.bytes = 0;
        if self.spare.is_empty() {
            self.fill_next();
        }
        Ok(closed)
    }

    /// The records of the closed segments numbered `<= upto`, in order. They
    /// were synced when closed, so any damage is an error here.
    pub fn read_closed(dir: &Path, upto: u64) -> Result<Vec<Vec<u8>>> {
        let mut all = Vec::new();
        for n in segments(dir)?.into_iter().filter(|&n| n <= upto) {
            let path = segment_path(dir, n);
            let r = read_segment(&path)?;
            if !r.clean {
                return Err(Error::internal(format!(
                    "write-ahead log {} is corrupted at byte {}",
                    path.display(),
                    r.valid
                )));
            }
            all.extend(r.records);
        }
        Ok(all)
    }

    /// Deletes every segment numbered `<= upto` (checkpointed).
    pub fn remove_upto(dir: &Path, upto: u64) -> Result<()> {
        for n in segments(dir)? {
            if n <= upto {
                fs::remove_file(segment_path(dir, n)).map_err(io("remove"))?;
            }
        }
        Ok(())
    }
}

impl Drop for Wal {
    /// Lets a segment being zero-filled finish, so no thread outlives the log.
    fn drop(&mut self) {
        if let Some(handle) = self.filling.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("causal-grid-wal-{}", rand::random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn records_survive_reopen_and_rotation() {
        let dir = tmp();
        let (mut wal, found) = Wal::open(&dir, true, 0).unwrap();
        assert!(found.is_empty());
        wal.append(b"one").unwrap();
        let closed = wal.rotate().unwrap();
        wal.append(b"two").unwrap();
        drop(wal);
        let (_, found) = Wal::open(&dir, true, 0).unwrap();
        let all: Vec<Vec<u8>> = found.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(all, vec![b"one".to_vec(), b"two".to_vec()]);
        Wal::remove_upto(&dir, closed).unwrap();
        let (_, found) = Wal::open(&dir, true, 0).unwrap();
        let all: Vec<Vec<u8>> = found.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(all, vec![b"two".to_vec()]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_a_bad_checksum_ends_the_log() {
        let dir = tmp();
        let (mut wal, _) = Wal::open(&dir, true, 0).unwrap();
        wal.append(b"good").unwrap();
        wal.append(b"also good").unwrap();
        let path = segment_path(&dir, wal.segment());
        drop(wal);
        // A torn write: half a record at the end.
        let mut bytes = fs::read(&path).unwrap();
        let full = bytes.len();
        bytes.extend_from_slice(&100u32.to_le_bytes());
        bytes.extend_from_slice(&7u32.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3]);
        fs::write(&path, &bytes).unwrap();
        let (_, found) = Wal::open(&dir, true, 0).unwrap();
        assert_eq!(found.last().unwrap().1.len(), 2);
        assert_eq!(
            fs::metadata(&path).unwrap().len() as usize,
            full,
            "tail cut off"
        );
        // A flipped bit in the last record: it is not applied.
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let (_, found) = Wal::open(&dir, true, 0).unwrap();
        let all: Vec<Vec<u8>> = found.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(all, vec![b"good".to_vec()]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corruption_before_the_last_segment_refuses_to_open() {
        let dir = tmp();
        let (mut wal, _) = Wal::open(&dir, true, 0).unwrap();
        wal.append(b"first").unwrap();
        let first = wal.segment();
        wal.rotate().unwrap();
        wal.append(b"second").unwrap();
        drop(wal);
        let path = segment_path(&dir, first);
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(Wal::open(&dir, true, 0), Err(Error::Config(_))));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_preallocated_log_overwrites_zeros_and_moves_on_when_full() {
        let dir = tmp();
        let (mut wal, _) = Wal::open(&dir, true, 64).unwrap();
        let first = wal.segment();
        let path = segment_path(&dir, first);
        assert_eq!(fs::metadata(&path).unwrap().len(), 64, "zero-filled");
        wal.append(b"0123456789").unwrap();
        wal.append(b"abcdefghij").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            64,
            "overwritten, not grown"
        );
        // 18 + 18 + 18 > 64 - 8: the third record goes to the next segment.
        wal.append(b"ABCDEFGHIJ").unwrap();
        wal.append(b"KLMNOPQRST").unwrap();
        wal.append(b"UVWXYZ0123").unwrap();
        assert_eq!(wal.segment(), first + 1);
        // A record larger than a segment is written past its end.
        let big = vec![b'x'; 100];
        wal.append(&big).unwrap();
        assert_eq!(wal.segment(), first + 2);
        drop(wal);
        let (_, found) = Wal::open(&dir, true, 64).unwrap();
        let all: Vec<Vec<u8>> = found.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(
            all,
            vec![
                b"0123456789".to_vec(),
                b"abcdefghij".to_vec(),
                b"ABCDEFGHIJ".to_vec(),
                b"KLMNOPQRST".to_vec(),
                b"UVWXYZ0123".to_vec(),
                big
            ]
        );
        // The zero-filled segment prepared next is found empty.
        assert!(found.last().unwrap().1.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn spare_segments_are_filled_when_asked_and_used_in_order() {
        let dir = tmp();
        let (mut wal, _) = Wal::open(&dir, true, 64).unwrap();
        wal.set_spares(3);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !wal.top_up().unwrap() {
            assert!(
                Instant::now() < deadline,
                "the spare segments were never filled"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(wal.spare.len(), 3);
        assert!(wal.filling.is_none());
        let first = wal.segment();
        // One 48-byte record fits in a 64-byte segment: every append after
        // the first moves to the next segment.
        let records: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i; 40]).collect();
        for r in &records[..3] {
            wal.append(r).unwrap();
        }
        assert_eq!(wal.segment(), first + 2);
        assert_eq!(wal.spare.len(), 1);
        assert!(wal.filling.is_none(), "a spare was left: nothing is filled");
        // The last spare taken, the next fill starts at once.
        wal.append(&records[3]).unwrap();
        assert_eq!(wal.segment(), first + 3);
        assert!(wal.spare.is_empty() && wal.filling.is_some());
        wal.append(&records[4]).unwrap();
        assert_eq!(wal.segment(), first + 4);
        // Seen from the files: the four before the current one are closed,
        // whatever spare ones follow it.
        assert_eq!(closed_segments(&dir).unwrap(), 4);
        drop(wal);
        let (_, found) = Wal::open(&dir, true, 64).unwrap();
        let numbers: Vec<u64> = found.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, (first..=first + 5).collect::<Vec<_>>());
        let replayed: Vec<Vec<u8>> = found.into_iter().flat_map(|(_, r)| r).collect();
        assert_eq!(replayed, records);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn in_a_preallocated_log_a_torn_tail_is_cut_off_and_older_damage_refused() {
        let dir = tmp();
        let (mut wal, _) = Wal::open(&dir, true, 256).unwrap();
        wal.append(b"good").unwrap();
        let tail = wal.segment();
        let path = segment_path(&dir, tail);
        drop(wal);
        // A torn write into the zeros: a header and part of its payload.
        let mut bytes = fs::read(&path).unwrap();
        bytes[12..16].copy_from_slice(&50u32.to_le_bytes());
        bytes[16..20].copy_from_slice(&9u32.to_le_bytes());
        bytes[20..23].copy_from_slice(&[1, 2, 3]);
        fs::write(&path, &bytes).unwrap();
        // The segment prepared after it is all zeros, so this is the tail.
        let (mut wal, found) = Wal::open(&dir, true, 256).unwrap();
        let all: Vec<Vec<u8>> = found.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(all, vec![b"good".to_vec()]);
        assert_eq!(fs::metadata(&path).unwrap().len(), 12, "tail cut off");
        // Damage after the records of a segment that is not the tail.
        wal.append(b"later").unwrap();
        drop(wal);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 5]);
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(Wal::open(&dir, true, 256), Err(Error::Config(_))));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn empty_records_are_refused() {
        let dir = tmp();
        let (mut wal, _) = Wal::open(&dir, true, 64).unwrap();
        assert!(wal.append(b"").is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
