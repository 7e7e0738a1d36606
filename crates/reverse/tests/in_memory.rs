//! Bridge and portal wired through in-memory pipes instead of VMess:
//!
//! ```text
//! test client ──Portal::connect──▶ portal ══duplex (Mux.Cool)══▶ bridge ──▶ TCP echo server
//! ```
//!
//! The bridge's `Dispatch::connect` hands one end of a duplex pipe to the
//! portal's `handle` (as the portal's VMess inbound would), and its
//! `dispatch` dials the destination over real TCP.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rayback_core::relay::relay;
use rayback_core::{Address, Destination, Dispatch, Outbound, Policy, Session, Stream, Tag};
use rayback_reverse::{Bridge, BridgeSettings, Portal, PortalSettings};
use rayback_testkit::{echo_server, seeded_bytes, sha256_hex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const DOMAIN: &str = "test.v2ray.com";

/// The bridge side's router: tunnel dials go to a portal through a pipe,
/// everything else to the echo server. With several portals it lists them
/// as the tunnel outbound's servers, as a VMess `vnext` would, and a dial
/// goes to the one the session names.
struct BridgeRouter {
    portals: Vec<Arc<Portal>>,
    echo: SocketAddr,
    dials: AtomicUsize,
    /// Dials per portal.
    dials_to: Vec<AtomicUsize>,
    /// While set, dials to that portal are refused (it is down).
    down: Vec<std::sync::atomic::AtomicBool>,
    /// While set, the links to that portal forward nothing.
    silenced: Vec<Arc<std::sync::atomic::AtomicBool>>,
    /// The relays standing in for the network between bridge and portal.
    links: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
    /// Tunnels numbered up to this one report a low send budget.
    budget_low_up_to: Arc<AtomicUsize>,
    /// While set, the links that exist stop forwarding (a half-open path).
    blackhole: Arc<std::sync::atomic::AtomicBool>,
}

impl BridgeRouter {
    fn new(portal: Arc<Portal>, echo: SocketAddr) -> Arc<BridgeRouter> {
        BridgeRouter::with_portals(vec![portal], echo)
    }

    fn with_portals(portals: Vec<Arc<Portal>>, echo: SocketAddr) -> Arc<BridgeRouter> {
        let count = portals.len();
        Arc::new(BridgeRouter {
            portals,
            echo,
            dials: AtomicUsize::new(0),
            dials_to: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            down: (0..count).map(|_| Default::default()).collect(),
            silenced: (0..count).map(|_| Default::default()).collect(),
            links: std::sync::Mutex::new(Vec::new()),
            budget_low_up_to: Arc::new(AtomicUsize::new(0)),
            blackhole: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// Cuts every tunnel connection, as a network failure would.
    fn cut_links(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

#[async_trait]
impl Dispatch for BridgeRouter {
    async fn dispatch(&self, session: Session, stream: Stream) -> io::Result<()> {
        assert_eq!(session.inbound_tag, Some(Tag::new("bridge")));
        let backend = TcpStream::connect(self.echo).await?;
        relay(stream, backend, &Policy::default()).await.map(drop)
    }

    async fn connect(&self, session: &Session) -> io::Result<Stream> {
        assert_eq!(session.destination.address.domain(), Some(DOMAIN));
        let index = match (self.portals.len(), session.server) {
            (1, _) => 0,
            (_, Some(index)) => index,
            (_, None) => panic!("with several portals every dial names one"),
        };
        self.dials_to[index].fetch_add(1, Ordering::Relaxed);
        if self.down[index].load(Ordering::Relaxed) {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        let number = self.dials.fetch_add(1, Ordering::Relaxed) + 1;
        let (bridge_end, link_a) = tokio::io::duplex(256 * 1024);
        let (link_b, portal_end) = tokio::io::duplex(256 * 1024);
        let blackhole = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let link = tokio::spawn(pump_both(link_a, link_b, blackhole.clone()));
        // The test blackholes the links that exist when it says so; links
        // made after that work.
        let all = self.blackhole.clone();
        let this_portal = self.silenced[index].clone();
        let silent = move || all.load(Ordering::Relaxed) || this_portal.load(Ordering::Relaxed);
        if !silent() {
            tokio::spawn(async move {
                while !silent() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                blackhole.store(true, Ordering::Relaxed);
            });
        }
        self.links.lock().unwrap().push(link.abort_handle());
        let portal = self.portals[index].clone();
        let mut adopted = Session::new(session.destination.clone());
        let low_up_to = self.budget_low_up_to.clone();
        adopted.send_budget = Some(rayback_core::SendBudget::new(move || {
            low_up_to.load(Ordering::Relaxed) >= number
        }));
        tokio::spawn(async move {
            let _ = portal
                .handle(adopted, Box::new(portal_end), &Policy::default())
                .await;
        });
        Ok(Box::new(bridge_end))
    }

    async fn servers(&self, _session: &Session) -> Vec<String> {
        if self.portals.len() == 1 {
            return Vec::new();
        }
        (0..self.portals.len())
            .map(|index| format!("portal-{index}:1024"))
            .collect()
    }
}

/// Forwards both ways until `blackhole` is set; then forwards nothing and
/// closes nothing, like a network path that silently drops everything.
async fn pump_both(
    a: tokio::io::DuplexStream,
    b: tokio::io::DuplexStream,
    blackhole: Arc<std::sync::atomic::AtomicBool>,
) {
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let one = pump(&mut a_read, &mut b_write, &blackhole);
    let other = pump(&mut b_read, &mut a_write, &blackhole);
    let _ = tokio::join!(one, other);
}

async fn pump<R, W>(
    reader: &mut R,
    writer: &mut W,
    blackhole: &std::sync::atomic::AtomicBool,
) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if blackhole.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        let read = reader.read(&mut buf).await?;
        if read == 0 || blackhole.load(Ordering::Relaxed) {
            if read == 0 {
                return writer.shutdown().await;
            }
            continue;
        }
        writer.write_all(&buf[..read]).await?;
    }
}

fn settings() -> (PortalSettings, BridgeSettings) {
    let mut portal = PortalSettings::new(Tag::new("portal"), DOMAIN.into());
    portal.no_bridge_wait = Duration::from_millis(300);
    (
        portal,
        BridgeSettings::new(Tag::new("bridge"), DOMAIN.into()),
    )
}

async fn echo_through(portal: &Portal, target: Destination, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = portal.connect(&Session::new(target)).await?;
    let (mut reader, mut writer) = tokio::io::split(&mut stream);
    let send = async {
        writer.write_all(data).await?;
        io::Result::Ok(())
    };
    let receive = async {
        let mut got = vec![0u8; data.len()];
        reader.read_exact(&mut got).await?;
        io::Result::Ok(got)
    };
    let ((), got) = tokio::try_join!(send, receive)?;
    Ok(got)
}

#[tokio::test]
async fn public_streams_reach_the_backend_through_the_bridge() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let echo = echo_server().await.unwrap();
        let (portal_settings, bridge_settings) = settings();
        let portal = Arc::new(Portal::new(portal_settings));
        let router = BridgeRouter::new(portal.clone(), echo);
        let tracker = TaskTracker::new();
        let bridge = Arc::new(Bridge::new(bridge_settings, router.clone(), tracker));
        let shutdown = CancellationToken::new();
        tokio::spawn(bridge.clone().run(shutdown.clone()));

        // The decoy destination is the echo server itself here: the bridge
        // router dials the echo server whatever the target says.
        let target = Destination::tcp(Address::Ipv4([127, 0, 0, 1].into()), 9);
        let mut tasks = Vec::new();
        for seed in 0..20u64 {
            let portal = portal.clone();
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                let data = seeded_bytes(seed, 256 * 1024);
                let got = echo_through(&portal, target, &data).await.unwrap();
                assert_eq!(sha256_hex(&got), sha256_hex(&data));
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert!(router.dials.load(Ordering::Relaxed) >= 1);
        assert!(!portal.tunnels().is_empty());
        shutdown.cancel();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn without_a_bridge_a_public_stream_fails_after_the_wait() {
    let (portal_settings, _) = settings();
    let portal = Portal::new(portal_settings);
    let started = tokio::time::Instant::now();
    let target = Destination::tcp(Address::Ipv4([127, 0, 0, 1].into()), 9);
    let error = match portal.connect(&Session::new(target)).await {
        Ok(_) => panic!("a stream without any bridge"),
        Err(error) => error,
    };
    assert_eq!(error.kind(), io::ErrorKind::NotConnected);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_dead_tunnel_is_replaced_and_never_picked() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let echo = echo_server().await.unwrap();
        let (portal_settings, bridge_settings) = settings();
        let portal = Arc::new(Portal::new(portal_settings));
        let router = BridgeRouter::new(portal.clone(), echo);
        let bridge = Arc::new(Bridge::new(
            bridge_settings,
            router.clone(),
            TaskTracker::new(),
        ));
        let shutdown = CancellationToken::new();
        tokio::spawn(bridge.clone().run(shutdown.clone()));
        let target = Destination::tcp(Address::Ipv4([127, 0, 0, 1].into()), 9);
        let got = echo_through(&portal, target.clone(), b"first")
            .await
            .unwrap();
        assert_eq!(got, b"first");

        // Cut the tunnel: the bridge redials at once and the portal must
        // not hand out the dead connection meanwhile.
        let dials_before = router.dials.load(Ordering::Relaxed);
        router.cut_links();
        // Let the cut reach both ends (a real network tells the portal by a
        // FIN or reset); from then on no stream may land on the dead one.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for round in 0..20 {
            let got = echo_through(&portal, target.clone(), format!("round {round}").as_bytes())
                .await
                .unwrap();
            assert_eq!(got, format!("round {round}").as_bytes());
        }
        assert!(router.dials.load(Ordering::Relaxed) > dials_before);
        assert_eq!(portal.tunnels().len(), 1, "the dead tunnel is forgotten");
        drop(bridge);
        shutdown.cancel();
    })
    .await
    .expect("bounded");
}

async fn drained_connections_are_replaced(portal_settings: PortalSettings, budget_runs_low: bool) {
    let echo = echo_server().await.unwrap();
    let (_, bridge_settings) = settings();
    let portal = Arc::new(Portal::new(portal_settings));
    let router = BridgeRouter::new(portal.clone(), echo);
    let bridge = Arc::new(Bridge::new(
        bridge_settings,
        router.clone(),
        TaskTracker::new(),
    ));
    let shutdown = CancellationToken::new();
    tokio::spawn(bridge.run(shutdown.clone()));
    let target = Destination::tcp(Address::Ipv4([127, 0, 0, 1].into()), 9);
    // One stream stays open across the drain: it must keep working.
    let mut long_lived = portal.connect(&Session::new(target.clone())).await.unwrap();
    long_lived.write_all(b"before").await.unwrap();
    let mut got = [0u8; 6];
    long_lived.read_exact(&mut got).await.unwrap();
    if budget_runs_low {
        // The tunnels up now run low; the ones dialled next do not.
        router
            .budget_low_up_to
            .store(router.dials.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    for round in 0..30 {
        let text = format!("round {round}");
        let got = echo_through(&portal, target.clone(), text.as_bytes())
            .await
            .unwrap();
        assert_eq!(got, text.as_bytes());
    }
    assert!(
        router.dials.load(Ordering::Relaxed) >= 2,
        "a drained tunnel was replaced"
    );
    long_lived.write_all(b"after!").await.unwrap();
    long_lived.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"after!", "the draining tunnel kept its session");
    shutdown.cancel();
}

#[tokio::test]
async fn a_tunnel_past_its_session_limit_drains_and_keeps_its_sessions() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (mut portal_settings, _) = settings();
        portal_settings.drain_after = 10;
        drained_connections_are_replaced(portal_settings, false).await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_tunnel_near_its_nonce_budget_drains() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (portal_settings, _) = settings();
        drained_connections_are_replaced(portal_settings, true).await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_half_open_tunnel_is_noticed_on_both_sides_and_replaced() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let echo = echo_server().await.unwrap();
        let (mut portal_settings, mut bridge_settings) = settings();
        portal_settings.bridge_silence = Duration::from_secs(3);
        bridge_settings.heartbeat_timeout = Duration::from_secs(3);
        let portal = Arc::new(Portal::new(portal_settings));
        let router = BridgeRouter::new(portal.clone(), echo);
        let bridge = Arc::new(Bridge::new(
            bridge_settings,
            router.clone(),
            TaskTracker::new(),
        ));
        let shutdown = CancellationToken::new();
        tokio::spawn(bridge.run(shutdown.clone()));
        let target = Destination::tcp(Address::Ipv4([127, 0, 0, 1].into()), 9);
        // Let keepalives flow once so the portal knows this bridge sends them.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            echo_through(&portal, target.clone(), b"before")
                .await
                .unwrap(),
            b"before"
        );

        router.blackhole.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cut = tokio::time::Instant::now();
        // Both sides notice the silence, close the dead tunnel, and the
        // bridge dials a new one that works.
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(1),
                echo_through(&portal, target.clone(), b"after"),
            )
            .await;
            if matches!(attempt, Ok(Ok(ref got)) if got == b"after") {
                break;
            }
            assert!(
                cut.elapsed() < Duration::from_secs(15),
                "no service after the blackhole"
            );
        }
        eprintln!(
            "service back {:?} after the tunnel went half-open",
            cut.elapsed()
        );
        assert!(router.dials.load(Ordering::Relaxed) >= 2);
        assert_eq!(
            portal.tunnels().len(),
            1,
            "the half-open tunnel was dropped"
        );
        shutdown.cancel();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn the_bridge_understands_the_v2fly_control_domain() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let echo = echo_server().await.unwrap();
        let (mut portal_settings, bridge_settings) = settings();
        portal_settings.control_domain = rayback_reverse::CONTROL_DOMAIN_V2FLY.to_owned();
        let portal = Arc::new(Portal::new(portal_settings));
        let router = BridgeRouter::new(portal.clone(), echo);
        let bridge = Arc::new(Bridge::new(
            bridge_settings,
            router.clone(),
            TaskTracker::new(),
        ));
        let shutdown = CancellationToken::new();
        tokio::spawn(bridge.clone().run(shutdown.clone()));
        let target = Destination::tcp(Address::Ipv4([127, 0, 0, 1].into()), 9);
        assert_eq!(
            echo_through(&portal, target, b"v2fly").await.unwrap(),
            b"v2fly"
        );
        // The heartbeat arrived as a control message, not as a session to
        // dispatch (which would have gone to the echo server).
        let started = tokio::time::Instant::now();
        while bridge.status().since_control.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no control message understood"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
    })
    .await
    .expect("bounded");
}

/// Waits (bounded) until `portal` has a tunnel and serves an echo.
async fn until_served(portal: &Portal, what: &str) -> Duration {
    let started = tokio::time::Instant::now();
    let target = Destination::tcp(Address::Ipv4([127, 0, 0, 1].into()), 9);
    loop {
        if !portal.tunnels().is_empty() {
            let attempt = tokio::time::timeout(
                Duration::from_secs(1),
                echo_through(portal, target.clone(), what.as_bytes()),
            )
            .await;
            if matches!(attempt, Ok(Ok(ref got)) if got == what.as_bytes()) {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what}: not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_bridge_keeps_a_tunnel_to_every_portal_and_redials_each_on_its_own() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let echo = echo_server().await.unwrap();
        let (mut portal_settings, mut bridge_settings) = settings();
        portal_settings.bridge_silence = Duration::from_secs(3);
        bridge_settings.heartbeat_timeout = Duration::from_secs(3);
        let portals: Vec<Arc<Portal>> = (0..3)
            .map(|_| Arc::new(Portal::new(portal_settings.clone())))
            .collect();
        let router = BridgeRouter::with_portals(portals.clone(), echo);
        // Portal 1 is down when the bridge starts: the others must not wait.
        router.down[1].store(true, Ordering::Relaxed);
        let bridge = Arc::new(Bridge::new(
            bridge_settings,
            router.clone(),
            TaskTracker::new(),
        ));
        let shutdown = CancellationToken::new();
        tokio::spawn(bridge.clone().run(shutdown.clone()));
        until_served(&portals[0], "portal 0").await;
        until_served(&portals[2], "portal 2").await;
        assert!(portals[1].tunnels().is_empty());
        assert!(router.dials_to[1].load(Ordering::Relaxed) >= 1);
        let names: Vec<String> = bridge.status().portals.into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["portal-0:1024", "portal-1:1024", "portal-2:1024"]);

        // Portal 1 comes up: redialled on its own backoff (at most 2 s).
        router.down[1].store(false, Ordering::Relaxed);
        let took = until_served(&portals[1], "portal 1").await;
        eprintln!("portal 1 served {took:?} after it came up");

        // The path to portal 2 goes silent: only its tunnel is replaced,
        // and portal 0 serves throughout.
        let dials_to_0 = router.dials_to[0].load(Ordering::Relaxed);
        router.silenced[2].store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        router.silenced[2].store(false, Ordering::Relaxed);
        let target = Destination::tcp(Address::Ipv4([127, 0, 0, 1].into()), 9);
        let silenced = tokio::time::Instant::now();
        let mut rounds = 0;
        let back = loop {
            let got = echo_through(&portals[0], target.clone(), b"meanwhile")
                .await
                .unwrap();
            assert_eq!(got, b"meanwhile");
            rounds += 1;
            let attempt = tokio::time::timeout(
                Duration::from_millis(500),
                echo_through(&portals[2], target.clone(), b"portal 2 again"),
            )
            .await;
            if matches!(attempt, Ok(Ok(ref got)) if got == b"portal 2 again") {
                break silenced.elapsed();
            }
            assert!(silenced.elapsed() < Duration::from_secs(15), "portal 2 not back");
        };
        eprintln!("portal 2 served again {back:?} after its path went silent; portal 0 served {rounds} echoes meanwhile");
        assert_eq!(router.dials_to[0].load(Ordering::Relaxed), dials_to_0);

        // Growth: 60 sessions held on portal 0's tunnels make the bridge
        // add tunnels, spread over the portals.
        let mut held = Vec::new();
        for _ in 0..60 {
            held.push(portals[0].connect(&Session::new(target.clone())).await.unwrap());
        }
        let started = tokio::time::Instant::now();
        let counts = loop {
            let counts: Vec<usize> = bridge.status().portals.iter().map(|p| p.connections).collect();
            if counts.iter().sum::<usize>() >= 4 {
                break counts;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no growth: {counts:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (least, most) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(most - least <= 1, "growth not spread: {counts:?}");
        drop(held);
        shutdown.cancel();
    })
    .await
    .expect("bounded");
}
