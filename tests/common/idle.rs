//! A python client that opens many connections and holds them idle
//! (tests/clients/ws_idle.py, http_idle.py): its first line says how many
//! opened, then it waits for a line on stdin to prove the last one works.

use super::venv;
use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

pub struct IdleClient {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl IdleClient {
    /// Starts `tests/clients/<script> <n> <port>`; returns it with its
    /// first line (`OPEN ...`).
    pub fn open(script: &str, n: usize, port: u16) -> (IdleClient, String) {
        let mut child = Command::new(venv().join("bin/python"))
            .arg(format!("{}/tests/clients/{script}", super::MANIFEST_DIR))
            .args([n.to_string(), port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the idle client");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let open = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        (IdleClient { child, lines }, open)
    }

    /// Lets it go on; returns its next line that is not `skip`.
    pub fn go_on(&mut self, skip: &str) -> String {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = writeln!(stdin);
        }
        self.lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l != skip)
            .unwrap_or_default()
    }
}

impl Drop for IdleClient {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
