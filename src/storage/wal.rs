//! The write-ahead log: numbered segment files of checksummed records.
//!
//! A record is `[length: u32 LE][crc32: u32 LE][payload]`. Appends go to the
//! newest segment; a group commit is one record and one `fdatasync`
//! (sequential I/O, whatever the keys). Segments are deleted once their
//! content has been checkpointed into the database.
//!
//! On open, every segment is read in order. A record that is cut short or
//! fails its checksum ends the log: at the end of the newest segment that is
//! a torn write from a crash, and the tail is cut off (and reported); in an
//! older segment it is corruption, and opening fails rather than skipping
//! acknowledged writes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
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
    bytes: u64,
    sync: bool,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:010}.log"))
}

/// The segment numbers present in `dir`, ascending.
fn segments(dir: &Path) -> Result<Vec<u64>> {
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

/// Reads the valid records of one segment; returns them and the length of
/// the valid prefix.
fn read_segment(path: &Path) -> Result<(Vec<Vec<u8>>, u64, u64)> {
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
        if len > MAX_RECORD || bytes.len() - at - HEADER < len {
            break;
        }
        let payload = &bytes[at + HEADER..at + HEADER + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        records.push(payload.to_vec());
        at += HEADER + len;
    }
    Ok((records, at as u64, bytes.len() as u64))
}

impl Wal {
    /// Opens the log in `dir`: returns every valid record of the existing
    /// segments, in order, with the segment numbers they came from, and a log
    /// that appends to a fresh segment after them.
    pub fn open(dir: &Path, sync: bool) -> Result<(Wal, Vec<Segment>)> {
        let existing = segments(dir)?;
        // The tail is the last segment holding any bytes (a crash may leave
        // a newer, empty one behind it).
        let tail = existing
            .iter()
            .rev()
            .find(|&&n| {
                fs::metadata(segment_path(dir, n))
                    .map(|m| m.len() > 0)
                    .unwrap_or(false)
            })
            .copied();
        let mut found = Vec::new();
        for &n in &existing {
            let path = segment_path(dir, n);
            let (records, valid, total) = read_segment(&path)?;
            if valid < total {
                if Some(n) == tail {
                    log::warn!(
                        "write-ahead log {}: discarding a torn tail of {} bytes (a write interrupted by a crash; it was never acknowledged)",
                        path.display(),
                        total - valid
                    );
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io("open"))?;
                    f.set_len(valid).map_err(io("truncate"))?;
                    f.sync_all().map_err(io("sync"))?;
                } else {
                    return Err(Error::config(format!(
                        "write-ahead log {} is corrupted at byte {valid} (not at its end): refusing to start; move DATA_DIR away to rebuild this node from its peers",
                        path.display()
                    )));
                }
            }
            found.push((n, records));
        }
        let segment = existing.last().map_or(1, |n| n + 1);
        let file = Self::create(dir, segment)?;
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                file,
                segment,
                bytes: 0,
                sync,
            },
            found,
        ))
    }

    fn create(dir: &Path, n: u64) -> Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, n))
            .map_err(io("create"))?;
        // Make the new file's directory entry durable too.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(file)
    }

    /// Appends one record; with `sync`, it is on disk when this returns,
    /// and the time the `fdatasync` took is returned.
    pub fn append(&mut self, payload: &[u8]) -> Result<Option<Duration>> {
        let mut buf = Vec::with_capacity(HEADER + payload.len());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        buf.extend_from_slice(payload);
        self.file.write_all(&buf).map_err(io("append"))?;
        self.bytes += buf.len() as u64;
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

    /// Bytes in the current segment.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    #[cfg(test)]
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Closes the current segment and starts the next; returns the number
    /// of the closed one.
    pub fn rotate(&mut self) -> Result<u64> {
        self.file.sync_data().map_err(io("sync"))?;
        let closed = self.segment;
        self.segment += 1;
        self.file = Self::create(&self.dir, self.segment)?;
        self.bytes = 0;
        Ok(closed)
    }

    /// The records of the closed segments numbered `<= upto`, in order. They
    /// were synced when closed, so any damage is an error here.
    pub fn read_closed(dir: &Path, upto: u64) -> Result<Vec<Vec<u8>>> {
        let mut all = Vec::new();
        for n in segments(dir)?.into_iter().filter(|&n| n <= upto) {
            let path = segment_path(dir, n);
            let (records, valid, total) = read_segment(&path)?;
            if valid < total {
                return Err(Error::internal(format!(
                    "write-ahead log {} is corrupted at byte {valid}",
                    path.display()
                )));
            }
            all.extend(records);
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
        let (mut wal, found) = Wal::open(&dir, true).unwrap();
        assert!(found.is_empty());
        wal.append(b"one").unwrap();
        let closed = wal.rotate().unwrap();
        wal.append(b"two").unwrap();
        drop(wal);
        let (_, found) = Wal::open(&dir, true).unwrap();
        let all: Vec<Vec<u8>> = found.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(all, vec![b"one".to_vec(), b"two".to_vec()]);
        Wal::remove_upto(&dir, closed).unwrap();
        let (_, found) = Wal::open(&dir, true).unwrap();
        let all: Vec<Vec<u8>> = found.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(all, vec![b"two".to_vec()]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_a_bad_checksum_ends_the_log() {
        let dir = tmp();
        let (mut wal, _) = Wal::open(&dir, true).unwrap();
        wal.append(b"good").unwrap();
        wal.append(b"also good").unwrap();
        let path = segment_path(&dir, wal.segment());
        drop(wal);
        // A torn write: half a record at the end.
        let mut bytes = fs::read(&path).unwrap();
        let full = bytes.len();
        bytes.extend_from_slice(&100u32.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3]);
        fs::write(&path, &bytes).unwrap();
        let (_, found) = Wal::open(&dir, true).unwrap();
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
        let (_, found) = Wal::open(&dir, true).unwrap();
        let all: Vec<Vec<u8>> = found.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(all, vec![b"good".to_vec()]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corruption_before_the_last_segment_refuses_to_open() {
        let dir = tmp();
        let (mut wal, _) = Wal::open(&dir, true).unwrap();
        wal.append(b"first").unwrap();
        let first = wal.segment();
        wal.rotate().unwrap();
        wal.append(b"second").unwrap();
        drop(wal);
        let path = segment_path(&dir, first);
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(Wal::open(&dir, true), Err(Error::Config(_))));
        let _ = fs::remove_dir_all(&dir);
    }
}
