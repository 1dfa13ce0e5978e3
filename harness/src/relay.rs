//! A TCP relay in front of a server (moto's S3) that can hold back the server's answers: while
//! held, a request reaches the server and is carried out, but its answer does not reach the
//! client until released (a lost answer, or an object store that has become slow).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The relay; it runs for as long as the test does.
pub struct AnswerHold {
    port: u16,
    held: Arc<AtomicBool>,
}

impl AnswerHold {
    /// A relay on a free port of 127.0.0.1 to `upstream` on 127.0.0.1.
    pub fn start(upstream: u16) -> AnswerHold {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("the relay's address").port();
        let held = Arc::new(AtomicBool::new(false));
        let answers_held = held.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || relay(client, server, None));
                let held = answers_held.clone();
                std::thread::spawn(move || relay(server2, client2, Some(held)));
            }
        });
        AnswerHold { port, held }
    }

    /// Holds the server's answers back (`true`) or lets them through again.
    pub fn hold(&self, on: bool) {
        self.held.store(on, Ordering::SeqCst);
    }

    /// The relay's `http://` address.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn relay(mut from: TcpStream, mut to: TcpStream, held: Option<Arc<AtomicBool>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while held.as_ref().is_some_and(|h| h.load(Ordering::SeqCst)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
