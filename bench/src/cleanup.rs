//! Leaving nothing behind on Ctrl-C or SIGTERM: the children and temp dirs in use are
//! registered here, and a signal kills the children, removes the dirs and exits 130. (A normal
//! exit or an error cleans up through `Drop`; children also get `PR_SET_PDEATHSIG`.)

use std::path::{Path, PathBuf};
use std::sync::Mutex;

struct Registry {
    children: Vec<u32>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    children: Vec::new(),
    dirs: Vec::new(),
});

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    f(&mut REGISTRY.lock().unwrap_or_else(|e| e.into_inner()))
}

pub fn register_child(pid: u32) {
    with(|r| r.children.push(pid));
}

pub fn forget_child(pid: u32) {
    with(|r| r.children.retain(|&p| p != pid));
}

pub fn register_dir(dir: &Path) {
    with(|r| r.dirs.push(dir.to_path_buf()));
}

pub fn forget_dir(dir: &Path) {
    with(|r| r.dirs.retain(|d| d != dir));
}

/// Starts the thread that waits for SIGINT or SIGTERM.
pub fn install() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            codestax_config::shutdown_signal().await;
            eprintln!("!! interrupted: stopping the servers and removing the temp dirs");
            let (children, dirs) = with(|r| (r.children.clone(), r.dirs.clone()));
            for pid in children {
                // SAFETY: kill(2) on a pid we started and have not reaped.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
            for d in dirs {
                let _ = std::fs::remove_dir_all(&d);
            }
            std::process::exit(130);
        });
    });
}

/// A temp dir that is registered for removal on a signal, and removed on drop.
pub struct TempDir(Option<tempfile::TempDir>);

impl TempDir {
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        register_dir(dir.path());
        Ok(TempDir(Some(dir)))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new(""), |d| d.path())
    }
}

/// Set to keep the data dirs of a run (the collector's index, PostgreSQL's cluster) for a look
/// afterwards; their paths are printed. A signal still removes them.
pub const KEEP_DATA_ENV: &str = "CODESTAX_BENCH_KEEP_DATA";

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            forget_dir(d.path());
            if std::env::var_os(KEEP_DATA_ENV).is_some() {
                eprintln!("{KEEP_DATA_ENV}: kept {}", d.keep().display());
            } else {
                let _ = d.close();
            }
        }
    }
}
