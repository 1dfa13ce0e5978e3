//! One child process: started, asked to stop (SIGTERM, then SIGKILL after a deadline), killed,
//! and killed on drop so no test leaves a binary running.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::HarnessError;

/// A child process under test, killed on drop.
#[derive(Debug)]
pub struct Process {
    program: String,
    child: Option<Child>,
}

impl Process {
    /// Starts `cmd`; `program` names it in errors.
    pub fn spawn(program: &str, cmd: &mut Command) -> Result<Process, HarnessError> {
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            program: program.to_string(),
            source,
        })?;
        Ok(Process {
            program: program.to_string(),
            child: Some(child),
        })
    }

    /// A process slot with nothing running (before the first start).
    pub fn none(program: &str) -> Process {
        Process {
            program: program.to_string(),
            child: None,
        }
    }

    /// The name errors use.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The child itself (to take its pipes), while running.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Its exit status, if it has exited (it is then no longer held).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Sends `signal` (a `kill -s` name: `TERM`, `INT`, ...) to the running process.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-s", signal, &pid.to_string()])
                .status();
        }
    }

    /// Sends `signal`, then waits up to `timeout` for the exit; kills it after that. Returns
    /// the exit status; `Ok` with no status if nothing was running.
    pub fn stop_with(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> Result<Option<ExitStatus>, HarnessError> {
        self.signal(signal);
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::StopTimeout {
                    program: self.program.clone(),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then [`Process::stop_with`]'s wait; an exit other than 0 is an error.
    pub fn terminate(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        match self.stop_with("TERM", timeout)? {
            Some(status) if !status.success() => Err(HarnessError::StopFailed {
                program: self.program.clone(),
                status,
            }),
            _ => Ok(()),
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Replaces what is held with a newly started `cmd` (after a stop or kill).
    pub fn respawn(&mut self, cmd: &mut Command) -> Result<(), HarnessError> {
        assert!(self.child.is_none(), "stop or kill {} first", self.program);
        *self = Process::spawn(&self.program.clone(), cmd)?;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last `n` bytes of `text` (from a character boundary): the end of a process's stderr for
/// a failure message.
pub fn tail(text: &str, n: usize) -> &str {
    let start = text.len().saturating_sub(n);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}

/// User + system CPU seconds in the text of a `/proc/PID/stat` (or `/proc/PID/task/TID/stat`)
/// file; `None` if it does not parse.
pub fn stat_cpu_seconds(text: &str) -> Option<f64> {
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name, in USER_HZ
    // ticks: 100 per second, fixed by the kernel's ABI whatever its own tick rate.
    let (user, system) = (ticks(11)?, ticks(12)?);
    Some((user + system) / 100.0)
}

/// A `kB` line of `/proc/PID/status` (`VmRSS:`, `VmHWM:`, `RssAnon:`), in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> Result<u64, HarnessError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|source| HarnessError::Io {
        what: "read",
        path: path.clone().into(),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| HarnessError::Io {
            what: "find the line",
            path: format!("{path} {key}").into(),
            source: std::io::ErrorKind::NotFound.into(),
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_cpu_seconds_reads_past_a_command_name_of_spaces_and_parentheses() {
        let stat = |user, system| {
            format!("7 (a) b) R 1 7 7 0 -1 4194304 100 0 0 0 {user} {system} 0 0 20 0 1 0 9 0 0")
        };
        assert_eq!(super::stat_cpu_seconds(&stat(250, 50)), Some(3.0));
        assert_eq!(super::stat_cpu_seconds("7 (a) R 1"), None);
    }
}
