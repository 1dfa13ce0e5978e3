//! How a failed command is told: its error chain on one line, each cause once.

use std::error::Error;

/// `outer: cause: cause`, leaving out a cause whose text the line already holds (an error that
/// prints its source in its own message, as `cannot listen on …: Address already in use`, would
/// otherwise show it twice).
pub fn chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Whether the command failed only because its reader closed the pipe (`codestax export
/// --output - | head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || source_is_broken_pipe(cause)
    })
}

fn source_is_broken_pipe(cause: &(dyn Error + 'static)) -> bool {
    cause
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:8470 (HTTP API): {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let e = anyhow::Error::new(Bind {
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        })
        .context("the collector stopped during start");
        let line = chain(&e);
        assert_eq!(line.matches("in use").count(), 1, "{line}");
        assert!(line.starts_with("the collector stopped during start: cannot listen"));
    }

    #[test]
    fn a_broken_pipe_anywhere_in_the_chain_is_seen() {
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing the table");
        assert!(is_broken_pipe(&e));
        let other = anyhow::anyhow!("no such file");
        assert!(!is_broken_pipe(&other));
    }
}
