//! Socket options for the connections a [`crate::Transport`] dials or
//! accepts: VMess connections, which in the reverse proxy are the
//! long-lived tunnel connections between bridge and portal.
//!
//! TCP keepalive finds a peer that vanished without a FIN on an idle
//! connection; `TCP_USER_TIMEOUT` (Linux) bounds how long sent data may
//! stay unacknowledged before the kernel gives up, so a blackholed network
//! path ends the connection instead of leaving it half-open for the
//! kernel's default of many minutes. `TCP_NOTSENT_LOWAT` (Linux) keeps
//! the kernel's queue of not-yet-sent bytes short, so that what waits to
//! be sent waits in the mux send queue, where sub-streams take turns
//! (`rayback_mux`'s fair admission), not behind megabytes of one bulk
//! transfer in the socket: without it, a 1 KiB request beside a bulk
//! upload on one tunnel waited 15 ms at the median, with it 5 ms, at the
//! same bulk throughput (battery_fairness, loopback). It does not limit
//! bytes in flight, so it costs nothing on long paths. None of these
//! changes a byte on the wire.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};

/// Idle time before the first keepalive probe.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unacknowledged data older than this ends the connection. Linux also
/// counts time spent probing a zero window, which a healthy tunnel shows
/// while its peer's mux reader waits for a stalled sub-stream (up to
/// `streamStallTimeout`, at most 60 s): at 30 s, a 30 s stall killed the
/// whole tunnel ("Connection timed out" on the bridge after 32 s of a
/// 45 s stall). So this stays well above the largest stall timeout.
pub const USER_TIMEOUT: Duration = Duration::from_secs(90);
/// Most unsent bytes the kernel queues before the socket stops being
/// writable: two full mux writes' worth, so the writer never runs dry.
pub const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Sets no-delay, keepalive and (on Linux) the user timeout and the unsent
/// low-water mark. Failures are ignored: every option is an optimisation,
/// none is needed to work.
pub fn tune(socket: &TcpStream) {
    let _ = socket.set_nodelay(true);
    let socket = SockRef::from(socket);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = socket.set_tcp_keepalive(&keepalive);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = socket.set_tcp_user_timeout(Some(USER_TIMEOUT));
        let _ = socket.set_tcp_notsent_lowat(NOTSENT_LOWAT);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (USER_TIMEOUT, NOTSENT_LOWAT);
}

/// A TCP listener as Go (and so V2Ray) opens one: `SO_REUSEADDR`, and a
/// wildcard IPv6 address that also accepts IPv4; a backlog of 1024, so a
/// burst of connects (a flood of probes, many bridges redialling) does not
/// overflow the accept queue and delay real clients by a SYN retry
/// (tokio's default backlog is 128).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}
