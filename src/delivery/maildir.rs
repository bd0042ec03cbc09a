//! Maildir delivery (the format of <https://cr.yp.to/proto/maildir.html>,
//! as Dovecot reads it): a copy is written into `tmp/`, flushed, and
//! renamed into `new/`, and `new/` is flushed, so a message that shows in
//! `new/` is whole and survives a crash.
//!
//! Deliveries are done in batches: all files of a batch are written, then
//! flushed, then renamed, then each touched `new/` directory is flushed
//! once, which shares the directory flushes between messages.
//!
//! # Security
//! Mailbox paths come from the configuration's account addresses, never
//! from the client; a local part that could leave the mail root ('/', a
//! leading '.') is refused all the same.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mxguard_queue::Content;

/// The Maildirs under `data_dir/mail/<domain>/<local part>/`.
pub struct Maildirs {
    root: PathBuf,
    host: String,
    pid: u32,
    counter: u64,
    /// Maildirs known to exist with their three subdirectories.
    ready: HashSet<PathBuf>,
}

fn safe_component(s: &str) -> Option<&str> {
    (!s.is_empty() && !s.starts_with('.') && !s.contains('/') && !s.contains('\0')).then_some(s)
}

/// Asks the kernel to start writing a file's dirty pages (Linux
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`); a hint only, the `fdatasync`
/// that follows is what makes the data durable.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is owned by `file`, open for the whole call;
    // sync_file_range reads no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Maildirs {
    pub fn new(root: PathBuf, hostname: &str) -> Maildirs {
        Maildirs {
            root,
            host: hostname.replace('/', "\\057").replace(':', "\\072"),
            pid: std::process::id(),
            counter: 0,
            ready: HashSet::new(),
        }
    }

    /// The Maildir of an account address.
    pub fn path_for(&self, mailbox: &str) -> io::Result<PathBuf> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unusable mailbox name {mailbox:?}"),
            )
        };
        let (local, domain) = mailbox.rsplit_once('@').ok_or_else(bad)?;
        let local = safe_component(local).ok_or_else(bad)?;
        let domain = safe_component(domain).ok_or_else(bad)?;
        Ok(self.root.join(domain).join(local))
    }

    /// Creates the Maildir's directories (durably) the first time it is used.
    fn ensure(&mut self, dir: &Path) -> io::Result<()> {
        if self.ready.contains(dir) {
            return Ok(());
        }
        let existed =
            dir.join("new").is_dir() && dir.join("tmp").is_dir() && dir.join("cur").is_dir();
        if !existed {
            let mut b = fs::DirBuilder::new();
            b.recursive(true).mode(0o700);
            for sub in ["tmp", "new", "cur"] {
                b.create(dir.join(sub))?;
            }
            // Make the new directory entries themselves durable.
            sync_dir(dir)?;
            let mut p = dir.parent();
            while let Some(parent) = p {
                sync_dir(parent)?;
                if parent == self.root {
                    break;
                }
                p = parent.parent();
            }
        }
        self.ready.insert(dir.to_path_buf());
        Ok(())
    }

    fn unique_name(&mut self, size: u64) -> String {
        self.counter += 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{}.M{}P{}Q{}.{},S={}",
            now.as_secs(),
            now.subsec_micros(),
            self.pid,
            self.counter,
            self.host,
            size
        )
    }

    /// Delivers each `(maildir, message)`; one result per item, in order.
    pub fn deliver_batch(&mut self, items: &[(PathBuf, &Content)]) -> Vec<io::Result<()>> {
        struct Pending {
            file: File,
            tmp: PathBuf,
            new: PathBuf,
        }
        let mut staged: Vec<Result<Pending, io::Error>> = Vec::with_capacity(items.len());
        for (dir, message) in items {
            let r = self.ensure(dir).and_then(|()| {
                let name = self.unique_name(message.len());
                let tmp = dir.join("tmp").join(&name);
                let new = dir.join("new").join(&name);
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                if let Err(e) = message.write_to(&mut file) {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
                Ok(Pending { file, tmp, new })
            });
            staged.push(r);
        }
        // Start the write-back of every file at once, so the flushes below
        // find their data already on its way to the disk instead of
        // issuing one small write and one wait per file.
        for p in staged.iter().flatten() {
            start_writeback(&p.file);
        }
        // Flush every file, then publish them with renames.
        let mut results: Vec<io::Result<()>> = Vec::with_capacity(items.len());
        let mut touched: HashMap<PathBuf, Vec<usize>> = HashMap::new();
        for (i, s) in staged.into_iter().enumerate() {
            let r = s.and_then(|p| {
                if let Err(e) = p.file.sync_data().and_then(|()| fs::rename(&p.tmp, &p.new)) {
                    let _ = fs::remove_file(&p.tmp);
                    return Err(e);
                }
                if let Some(parent) = p.new.parent() {
                    touched.entry(parent.to_path_buf()).or_default().push(i);
                }
                Ok(())
            });
            results.push(r);
        }
        for (dir, idx) in touched {
            if let Err(e) = sync_dir(&dir) {
                for i in idx {
                    results[i] = Err(io::Error::new(
                        e.kind(),
                        format!("flushing {}: {e}", dir.display()),
                    ));
                }
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_into_new() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Maildirs::new(dir.path().to_path_buf(), "mx.test");
        let a = m.path_for("joe@example.test").unwrap();
        let b = m.path_for("ann@example.test").unwrap();
        let c = |s: &[u8]| Content::Memory(std::sync::Arc::new(s.to_vec()));
        let (one, two, three) = (c(b"one\r\n"), c(b"two\r\n"), c(b"three\r\n"));
        let r = m.deliver_batch(&[(a.clone(), &one), (b.clone(), &two), (a.clone(), &three)]);
        assert!(r.iter().all(|r| r.is_ok()));
        assert_eq!(fs::read_dir(a.join("new")).unwrap().count(), 2);
        assert_eq!(fs::read_dir(b.join("new")).unwrap().count(), 1);
        assert_eq!(fs::read_dir(a.join("tmp")).unwrap().count(), 0);
        assert!(a.join("cur").is_dir());
    }

    #[test]
    fn refuses_paths_leaving_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let m = Maildirs::new(dir.path().to_path_buf(), "mx.test");
        for bad in [
            "../x@example.test",
            "a/b@example.test",
            "x@..",
            "x",
            ".x@example.test",
            "x@a/b",
        ] {
            assert!(m.path_for(bad).is_err(), "{bad}");
        }
    }
}
