//! A counting global allocator for tests of bounded cost: the peak of live heap bytes while one
//! input is handled. Include it (`#[path]`) in a test binary of its own and install it there:
//! `#[global_allocator] static ALLOCATOR: counting::Counting = counting::Counting;`
//!
//! Only the measuring thread's allocations count: the test harness runs other tests (and
//! proptest generates their next inputs) on other threads meanwhile, which a process-wide
//! counter added to the peak (CI saw 327 KB for a 361-byte line that peaks at ~20 KB alone).
//! What is measured must therefore run on the calling thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    /// Set on a thread inside [`peak_of`].
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    /// Live bytes this thread added since its measure began (negative if it freed older ones).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Adds `by` to this thread's live bytes when it is measuring. `try_with`: a thread being torn
/// down still allocates and frees.
fn count(by: isize) {
    let _ = MEASURING.try_with(|measuring| {
        if measuring.get() {
            let live = LIVE.with(|l| {
                l.set(l.get() + by);
                l.get()
            });
            PEAK.with(|p| p.set(p.get().max(live)));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Peak live heap bytes `f` adds (on this thread) above what was live when it started, and its
/// result.
pub fn peak_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    MEASURING.with(|m| m.set(true));
    let out = f();
    MEASURING.with(|m| m.set(false));
    (PEAK.with(|p| p.get()).max(0) as usize, out)
}
