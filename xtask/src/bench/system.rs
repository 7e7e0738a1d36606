//! The operating system, as the benchmark sees it: child processes killed
//! by PID when dropped, tool commands bounded in time, tools looked up on
//! `PATH`, and readings from `/proc` (resident memory, CPU time, established
//! TCP sockets, the processor's name).
//!
//! It is not a supervisor: nothing is restarted, and a reading of a process
//! that has gone away is an error, not a zero.
//!
//! | file read | what is taken |
//! |---|---|
//! | `/proc/PID/status` | `VmRSS:` in KiB |
//! | `/proc/PID/stat` | fields 14 and 15 (`utime`, `stime`) in clock ticks |
//! | `/proc/net/tcp`, `/proc/net/tcp6` | sockets in state `01` (established) by local port |
//! | `/proc/cpuinfo` | the first `model name` |

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A long-running child (a tunnel side, an iperf3 server) killed by PID
/// when dropped. Its output goes to a log file beside its configuration.
pub struct Daemon {
    name: String,
    log: PathBuf,
    child: Child,
}

impl Daemon {
    /// Starts `program args...` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&OsStr],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> Result<Daemon> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Daemon {
            name: name.to_owned(),
            log: log.to_path_buf(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error naming the log if the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited early ({status}); its log: {}",
                self.name,
                self.log.display()
            ),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a bounded command printed and how it ended.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args...` to completion, killing it (by PID, through
/// tokio's kill-on-drop) if it takes longer than `limit`.
pub async fn run_bounded<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    limit: Duration,
) -> Result<Output> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("{} took over {limit:?} and was killed", program.display()))??;
    Ok(Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs `program args...` with its output shown on the terminal (builds,
/// installs), killed if it takes longer than `limit`. Returns whether it
/// succeeded.
pub async fn run_visible<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    envs: &[(&str, &str)],
    limit: Duration,
) -> Result<bool> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .with_context(|| format!("{program} took over {limit:?} and was killed"))??;
    Ok(status.success())
}

/// The first executable called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (real UID 0 in `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            == Some("0")
    })
}

/// Raises this process's limit on open files (soft and hard, the hard one
/// only as far as the process may: up to `wanted` with CAP_SYS_RESOURCE,
/// else up to the hard limit it has), so the benchmark and the processes
/// it starts, which inherit it, can hold twenty thousand connections.
/// Returns the soft limit it ends with.
#[allow(unsafe_code)]
pub fn raise_open_files(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct
    // passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let raised = libc::rlimit {
            rlim_cur: wanted.max(limit.rlim_cur),
            rlim_max: wanted.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return raised.rlim_cur;
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            return limit.rlim_cur;
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur
    }
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_rss_kib(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    value.split_whitespace().next()?.parse().ok()
}

/// User plus system CPU time of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat: {stat:?}"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces, so
    // count fields after the last ')': field 3 (state) is index 0 there.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails, which is
/// what Linux uses on every common architecture).
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// How many established TCP sockets have `port` as their local port: on a
/// server's port, the connections it has accepted and not yet closed.
pub fn established_on_port(port: u16) -> Result<usize> {
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(table) {
            Ok(text) => count += count_established(&text, port),
            Err(error) if table.ends_with('6') && error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("reading {table}")),
        }
    }
    Ok(count)
}

fn count_established(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1);
            let state = fields.nth(1);
            let local_port = local
                .and_then(|address| address.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            local_port == Some(port) && state == Some("01")
        })
        .count()
}

/// The processor's name from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The first line a command prints (stdout, else stderr), for versions.
pub fn first_line_of(program: &Path, args: &[&str]) -> String {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            stdout
                .lines()
                .chain(stderr.lines())
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("(no output)")
                .to_owned()
        }
        Err(error) => format!("(could not run: {error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_status() {
        let status = "Name:\tv2ray\nVmPeak:\t  900 kB\nVmRSS:\t   23456 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_rss_kib(status), Some(23456));
        assert_eq!(parse_rss_kib("Name:\tzombie\n"), None);
    }

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        // Fields 14 and 15 are 7 and 5; the name holds a space and a ')'.
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 99 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
        assert_eq!(parse_cpu_ticks("1234 (short) S 1"), None);
    }

    #[test]
    fn established_sockets_are_counted_by_local_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n\
   2: 0100007F:1F90 0100007F:D432 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n\
   3: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4 1\n\
   4: 0100007F:1F90 0100007F:D433 06 00000000:00000000 00:00000000 00000000     0        0 5 1\n";
        // Port 0x1F90 = 8080: the listener (0A) and TIME_WAIT (06) do not
        // count, nor does the client side whose remote port is 8080.
        assert_eq!(count_established(table, 8080), 2);
        assert_eq!(count_established(table, 0xD431), 1);
        assert_eq!(count_established(table, 9), 0);
    }

    #[test]
    fn this_process_is_visible_in_proc() {
        let pid = std::process::id();
        assert!(rss_kib(pid).expect("own RSS") > 0);
        cpu_ticks(pid).expect("own CPU time");
        assert!(!cpu_model().is_empty());
    }
}
