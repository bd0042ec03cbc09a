//! Message content: what a session hands to the queue ([`Body`]) and what
//! the queue hands to delivery ([`Content`]).
//!
//! Small messages stay in memory from the session to the Maildir. A large
//! one is spooled to a file by the session (so a session's memory stays
//! bounded whatever the message size), copied into the journal at commit,
//! and read from the journal at delivery. Messages recovered after a
//! restart are read from the journal too, never loaded all at once.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// A message given to [`crate::Queue::commit`].
#[derive(Debug)]
pub enum Body {
    Memory(Vec<u8>),
    /// A spool file (under [`crate::Queue::spool_dir`]); the queue removes
    /// it once its content is in the journal.
    File(PathBuf),
}

/// A queued message's content.
#[derive(Clone, Debug)]
pub enum Content {
    Memory(Arc<Vec<u8>>),
    /// `len` octets at `offset` of a journal segment.
    Stored {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl Content {
    pub fn len(&self) -> u64 {
        match self {
            Content::Memory(m) => m.len() as u64,
            Content::Stored { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the content into `out`.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        match self {
            Content::Memory(m) => out.write_all(m),
            Content::Stored { path, offset, len } => {
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(*offset))?;
                let copied = io::copy(&mut f.take(*len), out)?;
                if copied != *len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{}: journal record shorter than recorded", path.display()),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The first `max` octets (enough for the header section of a bounce).
    pub fn head(&self, max: usize) -> io::Result<Vec<u8>> {
        match self {
            Content::Memory(m) => Ok(m[..m.len().min(max)].to_vec()),
            Content::Stored { path, offset, len } => {
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(*offset))?;
                let mut v = Vec::with_capacity((*len).min(max as u64) as usize);
                f.take((*len).min(max as u64)).read_to_end(&mut v)?;
                Ok(v)
            }
        }
    }

    /// The whole content in memory (for tests and small messages).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(self.len() as usize);
        self.write_to(&mut v)?;
        Ok(v)
    }
}
