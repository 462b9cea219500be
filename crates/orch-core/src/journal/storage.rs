//! Where journal bytes go: a file, or memory that keeps apart what was synced.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Where journal bytes go. The engine appends from its thread; a separate
/// [`SyncHandle`] makes what was appended durable from the sync thread.
pub trait Storage: Send {
    /// Appends `bytes` (whole records) at the end, in one write where possible.
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// A handle that makes everything appended before each `sync` call durable.
    fn sync_handle(&self) -> std::io::Result<Box<dyn SyncHandle>>;
}

/// Makes appended journal bytes durable.
pub trait SyncHandle: Send {
    /// Makes everything appended so far durable.
    fn sync(&mut self) -> std::io::Result<()>;
}

/// A journal file (`O_APPEND`, synced with `fdatasync`).
#[derive(Debug)]
pub struct FileStorage {
    file: File,
}

impl FileStorage {
    /// Creates the journal file (it must not exist); when `durable`, makes its directory
    /// entry durable too.
    pub fn create(path: &Path, durable: bool) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        if durable && let Some(dir) = path.parent() {
            // The new name must survive a crash too.
            File::open(dir)?.sync_all()?;
        }
        Ok(Self { file })
    }

    /// Opens a file to append to, creating it when missing (for logs that outlive a run,
    /// like the audit log); when `durable` and it was created, makes its directory entry
    /// durable too.
    pub fn open_append(path: &Path, durable: bool) -> std::io::Result<Self> {
        let existed = path.exists();
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        if durable
            && !existed
            && let Some(dir) = path.parent()
        {
            File::open(dir)?.sync_all()?;
        }
        Ok(Self { file })
    }
}

impl Storage for FileStorage {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)
    }

    fn sync_handle(&self) -> std::io::Result<Box<dyn SyncHandle>> {
        Ok(Box::new(FileSync(self.file.try_clone()?)))
    }
}

struct FileSync(File);

impl SyncHandle for FileSync {
    fn sync(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
}

/// In-memory storage that keeps apart what was synced: [`MemStorage::durable`] is what
/// would survive a power cut, so a test can drop every unsynced write.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    inner: Arc<Mutex<MemState>>,
}

#[derive(Debug, Default)]
struct MemState {
    data: Vec<u8>,
    synced: usize,
}

impl MemStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything appended, synced or not.
    pub fn written(&self) -> Vec<u8> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .data
            .clone()
    }

    /// Only what was synced: the journal as a crash that loses unsynced writes leaves it.
    pub fn durable(&self) -> Vec<u8> {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.data[..s.synced].to_vec()
    }
}

impl Storage for MemStorage {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .data
            .extend_from_slice(bytes);
        Ok(())
    }

    fn sync_handle(&self) -> std::io::Result<Box<dyn SyncHandle>> {
        Ok(Box::new(self.clone()))
    }
}

impl SyncHandle for MemStorage {
    fn sync(&mut self) -> std::io::Result<()> {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.synced = s.data.len();
        Ok(())
    }
}

/// Makes the storage of a run's journal, given the journal's path.
#[derive(Clone)]
pub struct StorageFactory(
    #[allow(clippy::type_complexity)]
    pub  Arc<dyn Fn(&Path) -> std::io::Result<Box<dyn Storage>> + Send + Sync>,
);

impl StorageFactory {
    /// A factory from a closure.
    pub fn new(
        f: impl Fn(&Path) -> std::io::Result<Box<dyn Storage>> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }

    /// Always hands out (clones of) the same in-memory storage.
    pub fn memory(storage: MemStorage) -> Self {
        Self::new(move |_| Ok(Box::new(storage.clone()) as Box<dyn Storage>))
    }
}

impl std::fmt::Debug for StorageFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageFactory(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_keeps_unsynced_writes_apart() {
        let mut m = MemStorage::new();
        m.append(b"abc").unwrap();
        let mut h = m.sync_handle().unwrap();
        h.sync().unwrap();
        m.append(b"def").unwrap();
        assert_eq!(m.durable(), b"abc");
        assert_eq!(m.written(), b"abcdef");
    }
}
