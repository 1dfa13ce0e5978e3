//! Durable files, each mechanism once: the framed segment log and its recovery ([`log`]; random
//! reads of fixed-size entries, [`fixed`]), the
//! group-commit writer ([`group`]), atomic state files ([`state`]), the directory lock,
//! `sync_dir` and `free_bytes` ([`dir`]), and the [`Disk`] trait the log writes through (faults in tests).
#![forbid(unsafe_code)]

pub mod dir;
pub mod disk;
pub mod fixed;
pub mod frame;
pub mod group;
pub mod log;
pub mod segment;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use dir::{DirLock, LockError, free_bytes, sync_dir};
pub use disk::{Disk, Fault, FaultyDisk, RealDisk};
pub use fixed::FixedReader;
pub use frame::{Checksum, FRAME_OVERHEAD, FrameProblem, Frames};
pub use group::{Committer, GroupCommit, GroupOptions, Stopped};
pub use log::{Catalog, Damage, EntryAt, EntryReader, Log, LogError, OpenLog, SegmentState};
pub use segment::{Frame, HEADER_LEN, SegmentFormat, SegmentReader};
pub use state::{
    AtomicFile, OnDamage, PreparedFile, StateFile, StateFileError, StateFileFault, Versioned,
};
