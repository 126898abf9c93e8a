//! A child process the test talks to while it runs: its output lines arrive on a channel, so a
//! test can wait for a line, act, answer on stdin, and wait again, each wait bounded.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed when dropped, with its output lines on a channel, each marked with
/// whether it came from stdout (the two pipes are read by separate threads, so their lines
/// interleave arbitrarily; a PEM block on stdout must not be cut by a stderr line).
#[derive(Debug)]
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    /// How long each wait (for a line, for the exit) may take.
    timeout: Duration,
}

impl Running {
    /// Starts `command` with all three pipes; every wait on it gives up after `timeout`.
    pub fn spawn(command: &mut Command, timeout: Duration) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        for (is_stdout, pipe) in [
            (
                true,
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            ),
            (false, Box::new(child.stderr.take().unwrap())),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send((is_stdout, line)).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            timeout,
        }
    }

    /// Collects output lines until one contains `marker`; panics with the output so far if the
    /// process ends or the timeout passes first.
    pub fn wait_for_line(&self, marker: &str, seen: &mut Vec<String>) {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, line)) => {
                    let found = line.contains(marker);
                    seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no line with `{marker}`; output so far:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    /// Writes `text` to the process's stdin.
    pub fn send(&mut self, text: &str) -> std::io::Result<()> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .expect("stdin is open until finish");
        stdin.write_all(text.as_bytes())?;
        stdin.flush()
    }

    /// Closes stdin, waits for the process to exit; returns its success and every output line:
    /// `seen` first, then the rest of stdout, then the rest of stderr.
    pub fn finish(mut self, seen: Vec<String>) -> (bool, String) {
        let deadline = Instant::now() + self.timeout;
        drop(self.child.stdin.take());
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut keep = |(is_stdout, line): (bool, String)| {
            if is_stdout {
                stdout.push(line);
            } else {
                stderr.push(line);
            }
        };
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "did not exit; output:\n{}",
                seen.join("\n")
            );
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                keep(line);
            }
        };
        // The readers end at EOF, once the process and its pipes are gone.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            keep(line);
        }
        let all: Vec<String> = seen.into_iter().chain(stdout).chain(stderr).collect();
        (status.success(), all.join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
