//! What the figures were measured on: cores, memory, kernel, CPU model, date, commit, load.

use std::process::Command;

/// A Markdown block describing the machine and the moment.
pub fn describe(collector_bin: &std::path::Path) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = output("uname", &["-r"]);
    let mut commit = output("git", &["rev-parse", "--short", "HEAD"]);
    let status = output("git", &["status", "--porcelain", "--untracked-files=no"]);
    if !status.is_empty() && status != "?" {
        commit.push_str(" (with uncommitted changes)");
    }
    format!(
        "- date: {}\n- machine: {nproc} cores ({cpu}), {:.1} GiB memory, Linux {kernel}\n- commit: {commit}\n- collector binary: {}\n- load average at start: {}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        mem_kib as f64 / 1024.0 / 1024.0,
        collector_bin.display(),
        crate::stats::load_average(),
    )
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}
