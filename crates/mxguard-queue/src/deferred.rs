//! Messages that wait for a later attempt: one message a file plus its
//! envelope, in `queue/deferred/`.
//!
//! A message that could not be delivered at once leaves the journal for
//! `deferred/<id>.msg` (the message, written once) and `deferred/<id>.env`
//! (the envelope with each recipient's state, replaced atomically after
//! every attempt). Both are flushed, and the directory too, before the
//! journal record is marked delivered, so the message is always in one of
//! the two places.
//!
//! # Security
//! The envelope file holds client-chosen strings; see [`crate::envelope`].
//! Files are re-read at start-up and parsed defensively; a damaged one is
//! reported and left in place for the administrator.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::content::Content;
use crate::envelope::Envelope;
use crate::journal::sync_dir;

/// What [`Deferred::load_all`] found: messages, and warnings to log.
pub type Loaded = (Vec<(Envelope, Content)>, Vec<String>);

/// The deferred store.
#[derive(Clone, Debug)]
pub struct Deferred {
    dir: PathBuf,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Deferred {
    /// Opens (creating) `queue/deferred/`.
    pub fn open(queue_dir: &Path) -> io::Result<Deferred> {
        let dir = queue_dir.join("deferred");
        fs::create_dir_all(&dir)?;
        Ok(Deferred { dir })
    }

    fn paths(&self, id: &str) -> io::Result<(PathBuf, PathBuf)> {
        if !valid_id(id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad queue id {id:?}"),
            ));
        }
        Ok((
            self.dir.join(format!("{id}.msg")),
            self.dir.join(format!("{id}.env")),
        ))
    }

    /// Stores a message and its envelope durably; returns the content as
    /// it now lives in the store.
    pub fn store(&self, env: &Envelope, content: &Content) -> io::Result<Content> {
        let (msg, _) = self.paths(&env.id)?;
        let tmp = self.dir.join(format!("{}.msg.tmp", env.id));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        content.write_to(&mut f)?;
        f.sync_data()?;
        fs::rename(&tmp, &msg)?;
        self.write_envelope(env)?;
        Ok(Content::Stored {
            path: msg,
            offset: 0,
            len: content.len(),
        })
    }

    /// Replaces the envelope (recipient states) durably.
    pub fn write_envelope(&self, env: &Envelope) -> io::Result<()> {
        let (_, path) = self.paths(&env.id)?;
        let tmp = self.dir.join(format!("{}.env.tmp", env.id));
        let mut f = File::create(&tmp)?;
        f.write_all(&env.to_bytes())?;
        f.sync_data()?;
        fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)
    }

    /// Removes a message for good.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        let (msg, env) = self.paths(id)?;
        // The envelope first: without it a leftover message file is ignored.
        match fs::remove_file(&env) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let _ = fs::remove_file(&msg);
        sync_dir(&self.dir)
    }

    /// Every stored message, with problems worth a log line.
    pub fn load_all(&self) -> io::Result<Loaded> {
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(id) = name.strip_suffix(".env") else {
                continue;
            };
            let data = fs::read(&path)?;
            let env = match Envelope::parse(&data) {
                Ok((env, _)) if env.id == id => env,
                Ok(_) => {
                    warnings.push(format!(
                        "{}: envelope names another queue id; left in place",
                        path.display()
                    ));
                    continue;
                }
                Err(e) => {
                    warnings.push(format!("{}: {e}; left in place", path.display()));
                    continue;
                }
            };
            let msg = self.dir.join(format!("{id}.msg"));
            match fs::metadata(&msg) {
                Ok(m) => out.push((
                    env,
                    Content::Stored {
                        path: msg,
                        offset: 0,
                        len: m.len(),
                    },
                )),
                Err(e) => warnings.push(format!("{}: {e}; envelope left in place", msg.display())),
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok((out, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{RcptStatus, Recipient, Target};
    use std::sync::Arc;

    #[test]
    fn store_update_reload_remove() {
        let dir = tempfile::tempdir().unwrap();
        let d = Deferred::open(dir.path()).unwrap();
        let mut env = Envelope {
            id: "ABC123".into(),
            received: 5,
            sender: "s@x.test".into(),
            client_ip: "127.0.0.1".into(),
            helo: "h".into(),
            recipients: vec![Recipient::new("r@y.test".into(), Target::Remote)],
            warned: false,
            filter_score: None,
        };
        let content = Content::Memory(Arc::new(b"Subject: x\r\n\r\nbody\r\n".to_vec()));
        let stored = d.store(&env, &content).unwrap();
        assert_eq!(stored.to_vec().unwrap(), content.to_vec().unwrap());
        env.recipients[0].attempts = 3;
        env.recipients[0].last_error = "451 4.3.0 later".into();
        d.write_envelope(&env).unwrap();
        let (all, warnings) = d.load_all().unwrap();
        assert!(warnings.is_empty());
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0.recipients[0].attempts, 3);
        assert_eq!(all[0].0.recipients[0].status, RcptStatus::Pending);
        assert_eq!(all[0].1.to_vec().unwrap(), b"Subject: x\r\n\r\nbody\r\n");
        d.remove("ABC123").unwrap();
        assert!(d.load_all().unwrap().0.is_empty());
        assert!(d.remove("../etc").is_err());
    }
}
