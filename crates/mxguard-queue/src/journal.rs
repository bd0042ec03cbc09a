//! Segment files: the append-only journal that makes accepted mail durable.
//!
//! A segment `seg-<sequence>.log` is a run of records:
//!
//! ```text
//! kind: u8  ('M' message, 'D' delivered)   len: u32 LE   crc32: u32 LE   payload: len octets
//! ```
//!
//! An `M` payload is the envelope header followed by the message; a `D`
//! payload names a delivered message by segment and offset (two u64 LE).
//! Records are written by one committer thread, a batch at a time, with one
//! `fdatasync` for the whole batch: messages that finish DATA at the same
//! moment share it (group commit). A crash can only tear the tail of the
//! newest segment; recovery stops at the first record whose length or CRC
//! does not hold and truncates the rest.
//!
//! # Security
//! Segment files are written only by mxguard, but are read back after a
//! crash, so every length is checked against the file before use and a
//! damaged record ends the scan instead of panicking.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::content::Content;
use crate::envelope::Envelope;

pub(crate) const KIND_MESSAGE: u8 = b'M';
pub(crate) const KIND_DELIVERED: u8 = b'D';
pub(crate) const HEADER: usize = 9;

/// Where a message record lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordLoc {
    pub segment: u64,
    pub offset: u64,
}

pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:016x}.log"))
}

pub(crate) fn encode_record(kind: u8, payload_parts: &[&[u8]], out: &mut Vec<u8>) {
    let len: usize = payload_parts.iter().map(|p| p.len()).sum();
    let mut crc = crc32fast::Hasher::new();
    for p in payload_parts {
        crc.update(p);
    }
    out.push(kind);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    for p in payload_parts {
        out.extend_from_slice(p);
    }
}

pub(crate) fn encode_delivered(loc: RecordLoc, out: &mut Vec<u8>) {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&loc.segment.to_le_bytes());
    p[8..].copy_from_slice(&loc.offset.to_le_bytes());
    encode_record(KIND_DELIVERED, &[&p], out);
}

/// A message found in the journal at start-up.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub loc: RecordLoc,
    pub envelope: Envelope,
    pub content: Content,
}

/// What a scan of the queue directory found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub pending: Vec<Recovered>,
    /// Segments that exist, with how many undelivered messages each holds.
    pub live: BTreeMap<u64, usize>,
    pub next_seq: u64,
    /// Problems worth a log line (torn tails, damaged envelopes).
    pub warnings: Vec<String>,
}

/// A message record seen by the scan: where it is, its envelope and the
/// offset of the body within the payload (or why it did not parse), and
/// the payload's length.
type FoundMessage = (RecordLoc, Result<(Envelope, usize), String>, usize);

/// Reads every segment in `dir`, truncating a torn tail.
pub(crate) fn scan(dir: &Path) -> io::Result<Scan> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let hex = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".log"));
        if let Some(seq) = hex.and_then(|h| u64::from_str_radix(h, 16).ok()) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    let mut out = Scan {
        next_seq: seqs.last().map_or(1, |s| s + 1),
        ..Scan::default()
    };
    let mut messages: Vec<FoundMessage> = Vec::new();
    let mut delivered: HashSet<RecordLoc> = HashSet::new();
    for &seq in &seqs {
        let path = segment_path(dir, seq);
        let data = fs::read(&path)?;
        let mut pos = 0usize;
        out.live.insert(seq, 0);
        while pos < data.len() {
            let Some(head) = data.get(pos..pos + HEADER) else {
                break;
            };
            let kind = head[0];
            let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let crc = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
            let Some(payload) = data.get(pos + HEADER..pos + HEADER + len) else {
                break;
            };
            if crc32fast::hash(payload) != crc {
                break;
            }
            let loc = RecordLoc {
                segment: seq,
                offset: pos as u64,
            };
            match kind {
                KIND_MESSAGE => messages.push((
                    loc,
                    Envelope::parse(payload).map_err(|e| e.to_string()),
                    payload.len(),
                )),
                KIND_DELIVERED if payload.len() == 16 => {
                    let mut a = [0u8; 8];
                    let mut b = [0u8; 8];
                    a.copy_from_slice(&payload[..8]);
                    b.copy_from_slice(&payload[8..]);
                    delivered.insert(RecordLoc {
                        segment: u64::from_le_bytes(a),
                        offset: u64::from_le_bytes(b),
                    });
                }
                _ => break,
            }
            pos += HEADER + len;
        }
        if pos < data.len() {
            out.warnings.push(format!(
                "{}: damaged or torn record at offset {pos}; {} octets after it dropped",
                path.display(),
                data.len() - pos
            ));
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(pos as u64)?;
            f.sync_all()?;
        }
    }
    for (loc, parsed, payload_len) in messages {
        if delivered.contains(&loc) {
            continue;
        }
        match parsed {
            Ok((envelope, body_off)) => {
                *out.live.entry(loc.segment).or_insert(0) += 1;
                out.pending.push(Recovered {
                    loc,
                    envelope,
                    content: Content::Stored {
                        path: segment_path(dir, loc.segment),
                        offset: loc.offset + (HEADER + body_off) as u64,
                        len: (payload_len - body_off) as u64,
                    },
                });
            }
            Err(e) => out.warnings.push(format!(
                "segment {:x} offset {}: {e}; record skipped",
                loc.segment, loc.offset
            )),
        }
    }
    Ok(out)
}

/// The segment being appended to, owned by the committer thread.
pub(crate) struct ActiveSegment {
    pub seq: u64,
    pub file: File,
    pub len: u64,
}

impl ActiveSegment {
    /// Creates a new segment and makes its directory entry durable.
    pub(crate) fn create(dir: &Path, seq: u64) -> io::Result<ActiveSegment> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(dir, seq))?;
        sync_dir(dir)?;
        Ok(ActiveSegment { seq, file, len: 0 })
    }

    /// Appends bytes (not yet durable).
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Cuts the segment back after a failed batch.
    pub(crate) fn truncate(&mut self, len: u64) {
        if self.file.set_len(len).is_ok() {
            self.len = len;
        }
    }
}

/// Appends a message record whose body is the file at `path`; returns the
/// body's length. The file is read twice (CRC, then copy); it was written
/// just before, so both reads come from the page cache.
pub(crate) fn append_file_record(
    seg: &mut ActiveSegment,
    head: &[u8],
    path: &Path,
) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let total = head.len() as u64 + len;
    let total32 = u32::try_from(total).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "message too large for one journal record",
        )
    })?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(head);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        crc.update(&chunk[..n]);
    }
    let mut header = Vec::with_capacity(HEADER + head.len());
    header.push(KIND_MESSAGE);
    header.extend_from_slice(&total32.to_le_bytes());
    header.extend_from_slice(&crc.finalize().to_le_bytes());
    header.extend_from_slice(head);
    seg.write(&header)?;
    let mut file = File::open(path)?;
    let copied = io::copy(&mut (&mut file).take(len), &mut seg.file)?;
    seg.len += copied;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "spool file changed while it was copied",
        ));
    }
    Ok(len)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
