//! Where compiled modules are kept between tasks: in memory (the loaded
//! modules, least recently used evicted past a size bound) and on disk (the
//! compiled artifacts, authenticated and evicted the same way).
//!
//! A compiled artifact is native code that wasmtime maps and runs without
//! checking it (`Component::deserialize` is `unsafe` for that reason), so
//! whoever can write the cache directory could otherwise run anything in the
//! worker. Every artifact therefore carries an HMAC-SHA256 under a per-node
//! key kept outside the cache directory; a file whose tag does not verify is
//! deleted and the module recompiled.

use crate::error::WorkerError;
use hmac::{Hmac, Mac};
use quarry_proto::ModuleDigest;
use sha2::Sha256;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of a cache file: names the format (and its version).
const MAGIC: &[u8; 8] = b"QRYCWSM1";
/// Bytes of the HMAC-SHA256 tag after the magic.
const TAG_BYTES: usize = 32;
/// Bytes of a node's cache key.
const KEY_BYTES: usize = 32;
/// Numbers this process's temporary files.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Where compiled modules are cached and how much room they may take.
#[derive(Clone, Debug)]
pub struct ModuleCacheConfig {
    /// The directory of compiled artifacts (created with mode 0700).
    pub dir: PathBuf,
    /// The node's key authenticating the artifacts: created (mode 0600, 32
    /// random bytes) when missing. Must lie outside `dir`, so that write
    /// access to the cache does not give the key.
    pub key_file: PathBuf,
    /// Bytes of artifacts kept on disk; the least recently used are deleted
    /// beyond this.
    pub max_disk_bytes: u64,
}

impl ModuleCacheConfig {
    /// Artifacts in `dir`, the key beside it (`<dir>.key`), 2 GiB on disk.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            key_file: dir.with_extension("key"),
            max_disk_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

/// Compiled components on disk, `<dir>/<digest>-<engine hash>.cwasm`, each
/// `MAGIC | HMAC-SHA256(key, engine hash, digest, artifact) | artifact`.
pub(crate) struct DiskCache {
    dir: PathBuf,
    key: [u8; KEY_BYTES],
    max_bytes: u64,
    /// The engine's precompile compatibility hash (wasmtime version,
    /// compiler settings, target), so an artifact from another wasmtime or
    /// configuration is never even looked at.
    engine_hash: String,
}

impl DiskCache {
    pub(crate) fn open(config: &ModuleCacheConfig, engine: &Engine) -> Result<Self, WorkerError> {
        let dir = &config.dir;
        let failed = |what: &str, e: std::io::Error| {
            WorkerError::Runtime(format!(
                "cannot {what} the module cache {}: {e}",
                dir.display()
            ))
        };
        crate::shard::segment::create_private_dir_all(dir).map_err(|e| failed("create", e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| failed("restrict the permissions of", e))?;
        }
        let key = node_key(&config.key_file, dir)?;
        // Temp files a crashed run left half-written; never read, only
        // renamed into place when complete.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir: dir.to_owned(),
            key,
            max_bytes: config.max_disk_bytes,
            engine_hash: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, digest: &ModuleDigest) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    fn tag(&self, digest: &ModuleDigest) -> Hmac<Sha256> {
        // `new_from_slice` accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(MAGIC);
        mac.update(self.engine_hash.as_bytes());
        mac.update(b"\0");
        mac.update(digest.to_string().as_bytes());
        mac.update(b"\0");
        mac
    }

    /// The cached component for `digest`, if its file exists and its tag
    /// verifies; a file that does not verify is deleted.
    pub(crate) fn load(&self, engine: &Engine, digest: &ModuleDigest) -> Option<Component> {
        let path = self.path(digest);
        let mut file = std::fs::File::open(&path).ok()?;
        let size = file.metadata().ok()?.len();
        let mut bytes = Vec::new();
        // Never read more than the cache may hold.
        let read = (&mut file)
            .take(self.max_bytes.saturating_add(1))
            .read_to_end(&mut bytes);
        let artifact = match read {
            Ok(_) if size <= self.max_bytes => self.verify(digest, &bytes),
            Ok(_) => Err("larger than the cache"),
            Err(_) => Err("unreadable"),
        };
        let artifact = match artifact {
            Ok(artifact) => artifact,
            Err(why) => {
                tracing::warn!(path = %path.display(), why, "refusing a cached module artifact; recompiling it");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        // SAFETY: `deserialize` trusts its input to be an artifact that
        // wasmtime produced for a compatible engine. The tag just verified
        // says this worker wrote exactly these bytes for this digest and
        // engine (`store` tags the output of `Component::serialize`): only a
        // holder of the node key, which lives outside the cache directory
        // with mode 0600, can make a file that verifies. wasmtime still
        // checks the header and engine settings.
        match unsafe { Component::deserialize(engine, artifact) } {
            Ok(component) => {
                // Recently used: kept longest by `evict`.
                if let Ok(file) = std::fs::File::options().write(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                Some(component)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable cached module");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// The artifact in a cache file's `bytes`, if its tag verifies.
    fn verify<'a>(&self, digest: &ModuleDigest, bytes: &'a [u8]) -> Result<&'a [u8], &'static str> {
        let header = MAGIC.len() + TAG_BYTES;
        if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not a tagged artifact");
        }
        let (tag, artifact) = bytes[MAGIC.len()..].split_at(TAG_BYTES);
        let mut mac = self.tag(digest);
        mac.update(artifact);
        // Constant-time comparison.
        mac.verify_slice(tag)
            .map_err(|_| "its authentication tag does not verify (tampered with, or written under another node key)")?;
        Ok(artifact)
    }

    /// Writes the tagged `artifact` for `digest` through a temporary file and
    /// a rename, so a reader never sees a partial file; then evicts the least
    /// recently used artifacts beyond the size bound.
    pub(crate) fn store(&self, digest: &ModuleDigest, artifact: &[u8]) {
        let path = self.path(digest);
        let mut mac = self.tag(digest);
        mac.update(artifact);
        let tag = mac.finalize().into_bytes();
        let temp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = crate::shard::segment::private_file()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp)?;
            file.write_all(MAGIC)?;
            file.write_all(&tag)?;
            file.write_all(artifact)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled module");
            return;
        }
        self.evict(&path);
    }

    /// Deletes the least recently used artifacts (by modification time,
    /// which `load` refreshes) until the directory holds at most the bound;
    /// `keep` (the one just written) is never deleted.
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|entry| entry.path().extension().is_some_and(|e| e == "cwasm"))
            .filter_map(|entry| {
                let meta = entry.metadata().ok()?;
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                Some((used, meta.len(), entry.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::debug!(path = %path.display(), "evicted a cached module artifact");
                total = total.saturating_sub(len);
            }
        }
    }
}

/// The node's cache key from `path`, created (32 random bytes, mode 0600)
/// when missing.
fn node_key(path: &Path, cache_dir: &Path) -> Result<[u8; KEY_BYTES], WorkerError> {
    let failed = |what: &str, detail: String| {
        WorkerError::Runtime(format!(
            "module cache key {}: {what}: {detail}",
            path.display()
        ))
    };
    if path.starts_with(cache_dir) {
        return Err(failed(
            "inside the cache directory",
            "keep the key outside the directory it authenticates".into(),
        ));
    }
    match create_key(path) {
        Ok(key) => return Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(failed("cannot create it", e.to_string())),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| failed("cannot read it", e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(failed(
                "readable or writable by others",
                format!(
                    "mode {:o}; run `chmod 600 {}`",
                    mode & 0o777,
                    path.display()
                ),
            ));
        }
    }
    let bytes = std::fs::read(path).map_err(|e| failed("cannot read it", e.to_string()))?;
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        failed(
            "not a key",
            format!(
                "{} bytes instead of {KEY_BYTES}; delete it to have a new one made (the cache is then recompiled)",
                bytes.len()
            ),
        )
    })
}

/// Creates `path` with a fresh random key; fails with `AlreadyExists` when
/// there is one. The key is written to a temporary file first and linked
/// into place, so a worker starting alongside never reads a partial key.
fn create_key(path: &Path) -> std::io::Result<[u8; KEY_BYTES]> {
    if path.exists() {
        return Err(std::io::ErrorKind::AlreadyExists.into());
    }
    let mut key = [0u8; KEY_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    crate::shard::segment::create_private_dir_all(parent)?;
    let temp = parent.join(format!(
        ".tmp-key-{}-{}",
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::File::options();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(&key)?;
        file.sync_all()?;
        // Unlike a rename, a link never replaces a key another worker made.
        std::fs::hard_link(&temp, path)
    })();
    let _ = std::fs::remove_file(&temp);
    written.map(|()| key)
}

/// Most modules kept loaded at once, whatever their size: a module's
/// in-memory cost is more than its code (its `InstancePre`, description and
/// projection), and a stream of tiny distinct modules must not grow the map
/// without end under the byte bound.
pub(crate) const MAX_LOADED_MODULES: usize = 256;

/// Loaded modules by digest, the least recently used dropped past a size
/// bound and past [`MAX_LOADED_MODULES`] (a running task keeps its own
/// `Arc`).
pub(crate) struct MemoryCache<M> {
    entries: HashMap<ModuleDigest, Entry<M>>,
    bytes: usize,
    max_bytes: usize,
    clock: u64,
}

struct Entry<M> {
    module: M,
    bytes: usize,
    used: u64,
}

impl<M: Clone> MemoryCache<M> {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
            max_bytes,
            clock: 0,
        }
    }

    pub(crate) fn get(&mut self, digest: &ModuleDigest) -> Option<M> {
        self.clock += 1;
        let entry = self.entries.get_mut(digest)?;
        entry.used = self.clock;
        Some(entry.module.clone())
    }

    /// Adds `module` (about `bytes` large), then drops the least recently
    /// used others while the cache is over its bound.
    pub(crate) fn insert(&mut self, digest: ModuleDigest, module: M, bytes: usize) {
        self.clock += 1;
        let entry = Entry {
            module,
            bytes,
            used: self.clock,
        };
        if let Some(old) = self.entries.insert(digest.clone(), entry) {
            self.bytes = self.bytes.saturating_sub(old.bytes);
        }
        self.bytes = self.bytes.saturating_add(bytes);
        while self.bytes > self.max_bytes || self.entries.len() > MAX_LOADED_MODULES {
            let oldest = self
                .entries
                .iter()
                .filter(|(d, _)| **d != digest)
                .min_by_key(|(_, e)| e.used)
                .map(|(d, _)| d.clone());
            let Some(oldest) = oldest else { break };
            if let Some(old) = self.entries.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(old.bytes);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> ModuleDigest {
        ModuleDigest::new(format!("{n:064x}"))
    }

    #[test]
    fn memory_cache_holds_a_bounded_number_of_tiny_modules() {
        let mut cache = MemoryCache::new(1 << 30);
        for n in 0..4 * MAX_LOADED_MODULES {
            cache.insert(ModuleDigest::new(format!("{n:064x}")), n, 0);
        }
        assert_eq!(cache.len(), MAX_LOADED_MODULES);
        // The most recent stay.
        let last = 4 * MAX_LOADED_MODULES - 1;
        assert_eq!(
            cache.get(&ModuleDigest::new(format!("{last:064x}"))),
            Some(last)
        );
        assert_eq!(cache.get(&digest(0)), None);
    }

    #[test]
    fn memory_cache_drops_the_least_recently_used_past_its_bound() {
        let mut cache = MemoryCache::new(100);
        cache.insert(digest(1), 1, 40);
        cache.insert(digest(2), 2, 40);
        assert_eq!(cache.get(&digest(1)), Some(1));
        cache.insert(digest(3), 3, 40);
        // 2 was used least recently.
        assert_eq!(cache.get(&digest(2)), None);
        assert_eq!(cache.get(&digest(1)), Some(1));
        assert_eq!(cache.get(&digest(3)), Some(3));
        // One entry larger than the bound stays (it is in use) alone.
        cache.insert(digest(4), 4, 500);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&digest(4)), Some(4));
    }

    #[test]
    fn a_key_inside_the_cache_or_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = dir.path().join("cache");
        let inside = node_key(&cache.join("key"), &cache).expect_err("inside");
        assert!(
            inside.to_string().contains("inside the cache directory"),
            "{inside}"
        );
        let key = dir.path().join("cache.key");
        let first = node_key(&key, &cache).expect("created");
        assert_eq!(node_key(&key, &cache).expect("read back"), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            let open = node_key(&key, &cache).expect_err("world-readable");
            assert!(open.to_string().contains("chmod 600"), "{open}");
        }
    }
}
