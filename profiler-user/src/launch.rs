//! Launch a command held before `exec`, so everything can be attached
//! before its first instruction.
//!
//! The child is forked as usual, then blocks in its pre-exec step reading
//! a pipe; it first writes its pid to a second pipe. The parent reads the
//! pid, attaches whatever it needs (the CPU sampler's filter entry, the Go
//! uprobes on the program's file), then [`HeldCommand::release`] writes
//! one byte and the child execs. If the parent dies first, the child sees
//! end-of-file and exits without running the program.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::fd::{FromRawFd as _, IntoRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    thread::JoinHandle,
};

/// A launched command, forked and waiting to `exec` until released.
pub struct HeldCommand {
    pid: u32,
    exe: PathBuf,
    release: File,
    spawner: JoinHandle<std::io::Result<tokio::process::Child>>,
}

fn pipe() -> std::io::Result<(File, File)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(r), File::from(w)))
}

/// The file `cmd` names: as given when it holds a `/`, else the first
/// executable match on `PATH`.
pub fn resolve(cmd: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(cmd)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

impl HeldCommand {
    /// Fork `argv` (inside a tokio runtime) and return once the child is
    /// held before `exec`. Errors: the program cannot be found, or the
    /// fork failed.
    pub fn spawn(argv: &[String]) -> std::io::Result<Self> {
        let program = argv
            .first()
            .ok_or_else(|| std::io::Error::other("empty command"))?;
        let exe = resolve(program).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "not found on PATH")
        })?;
        let (mut pid_r, pid_w) = pipe()?;
        let (hold_r, hold_w) = pipe()?;
        let (pid_wfd, hold_rfd) = (pid_w.into_raw_fd(), hold_r.into_raw_fd());
        let hold_wfd = {
            use std::os::fd::AsRawFd as _;
            hold_w.as_raw_fd()
        };
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(&argv[1..]);
        // SAFETY: the closure runs in the forked child before exec and
        // makes only async-signal-safe calls (getpid, write, close, read).
        unsafe {
            cmd.pre_exec(move || {
                let pid = libc::getpid();
                let b = pid.to_ne_bytes();
                libc::write(pid_wfd, b.as_ptr().cast(), b.len());
                libc::close(pid_wfd);
                libc::close(hold_wfd);
                let mut one = 0u8;
                let n = libc::read(hold_rfd, (&mut one as *mut u8).cast(), 1);
                libc::close(hold_rfd);
                if n == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::other(
                        "the profiler did not release the command",
                    ))
                }
            });
        }
        let handle = tokio::runtime::Handle::current();
        // The spawn blocks until the child has exec'd (std reports exec
        // errors through a pipe), so it runs on its own thread; it owns
        // the pid pipe's write end, so a failed fork ends our read below.
        let spawner = std::thread::spawn(move || {
            let _rt = handle.enter();
            let r = cmd.spawn();
            // SAFETY: these descriptors are ours and closed only here (the
            // child's copies are its own).
            unsafe {
                libc::close(pid_wfd);
                libc::close(hold_rfd);
            }
            r
        });
        let mut b = [0u8; 4];
        let got = pid_r.read_exact(&mut b);
        if got.is_err() {
            drop(hold_w);
            return Err(match spawner.join() {
                Ok(Err(e)) => e,
                _ => std::io::Error::other("the command did not start"),
            });
        }
        Ok(Self {
            pid: i32::from_ne_bytes(b) as u32,
            exe,
            release: hold_w,
            spawner,
        })
    }

    /// The held child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The program file the child will exec.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Let the child `exec`; returns once it has (or failed to).
    pub fn release(mut self) -> std::io::Result<tokio::process::Child> {
        let _ = self.release.write_all(&[1]);
        drop(self.release);
        self.spawner
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("spawner thread panicked")))
    }
}
