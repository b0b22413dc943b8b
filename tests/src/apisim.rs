//! `apiserver-sim` (a workload) started by a test on a random loopback
//! port, and reading a child's pipe without ever blocking it.

use std::{
    io::{BufRead as _, BufReader, Read},
    net::SocketAddr,
    process::{Command, Stdio},
    thread::JoinHandle,
};

use crate::{workload, Owned};

/// Reads a child's pipe to its end on a thread (so the pipe can never fill
/// and block the child); join for the text.
pub fn drain(r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(r).read_to_string(&mut s);
        s
    })
}

/// Starts `apiserver-sim -addr 127.0.0.1:0 EXTRA` and reads the address it
/// prints first (`listening on ADDR`; panics on anything else). Returns the
/// process, its address and the rest of its stdout (drained).
pub fn start(extra: &[&str]) -> (Owned, SocketAddr, JoinHandle<String>) {
    let mut srv = Owned::spawn(
        Command::new(workload("apiserver-sim"))
            .args(["-addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut out = BufReader::new(srv.0.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    out.read_line(&mut line)
        .expect("reading apiserver-sim stdout");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("apiserver-sim: unexpected first line {line:?}"));
    (srv, addr, drain(out))
}
