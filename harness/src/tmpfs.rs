//! A small tmpfs mounted by a test, to fill a disk for real (ENOSPC from the kernel, not an
//! injected error). Mounting needs root (or CAP_SYS_ADMIN): we are root here and on CI; where
//! it is refused, the caller says SKIPPED and returns.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory; unmounted when dropped (lazily if something still holds it
/// open, so a failed test never leaves a mount behind).
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `at` (created if missing); `Err(why)` when mounting is
    /// refused.
    pub fn mount(at: &Path, mib: u64) -> Result<Tmpfs, String> {
        fs::create_dir_all(at).map_err(|e| format!("mkdir {}: {e}", at.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs at {} ({}): {}",
                at.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ));
        }
        Ok(Tmpfs {
            path: at.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the file `name` until the tmpfs has no page left (the write fails with ENOSPC);
    /// returns its size. Delete it to give the space back.
    pub fn fill(&self, name: &str) -> io::Result<u64> {
        let path = self.path.join(name);
        let mut file = File::create(&path)?;
        let mut written = 0u64;
        for chunk in [1 << 20, 4096] {
            let bytes = vec![0xa5u8; chunk];
            loop {
                match file.write_all(&bytes) {
                    Ok(()) => written += chunk as u64,
                    Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
                    Err(e) => return Err(e),
                }
            }
        }
        file.sync_all()?;
        Ok(fs::metadata(&path)?.len().max(written))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
