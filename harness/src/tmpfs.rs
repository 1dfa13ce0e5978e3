//! A size-limited tmpfs mounted by a test (root only), so a disk can really fill up: filled with a
//! ballast file until writes fail with ENOSPC, then freed. Unmounted on drop.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory; unmounted when dropped (lazily if still in use, so a test that
/// fails with a process still holding files there leaves no mount behind).
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

/// The name of the ballast file [`Tmpfs::fill`] writes.
const BALLAST: &str = "ballast.fill";

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `path` (created if missing). The error says why not: tests
    /// print it and skip where mounting is refused (not root).
    pub fn mount(path: &Path, mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs at {}: {} {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a ballast file until the file system is full (a write fails with ENOSPC), so that
    /// any further write of new data there fails. Returns the bytes written. Called again, tops
    /// the ballast up (what was freed since, e.g. by a merge's old segments going, is taken).
    pub fn fill(&self) -> io::Result<u64> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.join(BALLAST))?;
        let mut written = 0u64;
        // Large chunks first, then small ones for what is left of the last pages.
        for chunk in [1 << 20, 4096, 512] {
            let bytes = vec![0xa5u8; chunk];
            loop {
                match file.write(&bytes) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(written)
    }

    /// Grows (or shrinks) the file system to `mib` MiB in place, as an operator adding space
    /// would; the files on it stay.
    pub fn resize(&self, mib: u64) -> Result<(), String> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.path)
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -o remount,size={mib}m {}: {} {}",
                self.path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Deletes the ballast: the space is free again.
    pub fn free(&self) -> io::Result<()> {
        std::fs::remove_file(self.path.join(BALLAST))
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
