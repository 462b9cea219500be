//! Printing HTML to PDF with headless Chromium.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::errors::ReportError;

/// Program names looked up on `PATH`, in order.
pub const CHROMIUM_NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// Finds a Chromium executable on `PATH` (see [`CHROMIUM_NAMES`]).
pub fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in CHROMIUM_NAMES {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A `file://` URL for an absolute path, percent-encoding what URLs cannot hold.
pub fn file_url(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut url = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// The flags every headless Chromium run of this crate uses (no network, no profile state).
pub fn headless_args(user_data_dir: &Path) -> Vec<String> {
    vec![
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        format!("--user-data-dir={}", user_data_dir.display()),
    ]
}

/// Kills Chromium's process group when dropped (timeouts, cancellation, panics).
struct GroupGuard {
    child: Option<Child>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Prints an HTML file to PDF with headless Chromium.
///
/// Fails with [`ReportError::ChromiumMissing`] when no Chromium is on `PATH`.
pub fn print_pdf(html: &Path, pdf: &Path, timeout: Duration) -> Result<(), ReportError> {
    print_pdf_cancellable(None, html, pdf, timeout, &AtomicBool::new(false))
}

/// Like [`print_pdf`], stopping Chromium when `cancel` becomes true.
/// `chromium` overrides the lookup on `PATH`.
pub(crate) fn print_pdf_cancellable(
    chromium: Option<&Path>,
    html: &Path,
    pdf: &Path,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<(), ReportError> {
    let chromium = match chromium {
        Some(path) if is_executable(path) => path.to_owned(),
        Some(path) => {
            return Err(ReportError::ChromiumMissing {
                looked_for: path.display().to_string(),
                html: Some(html.to_owned()),
            });
        }
        None => find_chromium().ok_or_else(|| ReportError::ChromiumMissing {
            looked_for: format!("{} on PATH", CHROMIUM_NAMES.join(", ")),
            html: Some(html.to_owned()),
        })?,
    };
    let print_err = |message: String| ReportError::Print {
        pdf: pdf.to_owned(),
        message,
    };
    let html = std::path::absolute(html).map_err(|e| print_err(e.to_string()))?;
    let pdf_abs = std::path::absolute(pdf).map_err(|e| print_err(e.to_string()))?;
    let scratch = tempfile::Builder::new()
        .prefix("orch-report-chromium-")
        .tempdir()
        .map_err(|e| print_err(format!("cannot make a profile directory: {e}")))?;
    let profile = scratch.path().join("profile");
    let stderr_path = scratch.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| print_err(format!("cannot create {}: {e}", stderr_path.display())))?;
    let _ = std::fs::remove_file(&pdf_abs);

    let mut cmd = Command::new(&chromium);
    cmd.args(headless_args(&profile))
        .arg(format!("--print-to-pdf={}", pdf_abs.display()))
        .arg("--no-pdf-header-footer")
        .arg(file_url(&html))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .spawn()
        .map_err(|e| print_err(format!("cannot start {}: {e}", chromium.display())))?;
    let mut guard = GroupGuard { child: Some(child) };

    let deadline = Instant::now() + timeout;
    let status = loop {
        let Some(child) = guard.child.as_mut() else {
            return Err(print_err("chromium vanished".into()));
        };
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(print_err(format!("cannot wait for chromium: {e}"))),
        }
        if cancel.load(Ordering::Relaxed) {
            guard.kill();
            return Err(print_err("cancelled".into()));
        }
        if Instant::now() >= deadline {
            guard.kill();
            return Err(print_err(format!(
                "chromium did not finish within {}s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    // Reap helpers that outlived the browser process.
    guard.kill();
    let size = std::fs::metadata(&pdf_abs).map_or(0, |m| m.len());
    if status.success() && size > 0 {
        return Ok(());
    }
    let log = std::fs::read(&stderr_path).unwrap_or_default();
    let log = String::from_utf8_lossy(&log);
    let tail: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("dbus") && !l.trim().is_empty())
        .collect();
    let tail = tail[tail.len().saturating_sub(5)..].join(" | ");
    Err(print_err(format!(
        "{status}, {size} bytes written{}",
        if tail.is_empty() {
            String::new()
        } else {
            format!("; stderr: {tail}")
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_percent_encoded() {
        assert_eq!(
            file_url(Path::new("/tmp/a b/r%port#1.html")),
            "file:///tmp/a%20b/r%25port%231.html"
        );
    }
}
