//! A network namespace of its own for each test browser, so that Docker cannot disturb it.
//!
//! Chromium aborts every request in flight with `ERR_NETWORK_CHANGED` whenever a network
//! interface appears or goes away, loopback traffic included, and the other tests start and stop
//! containers (each adds and removes veth interfaces) all the time. In a namespace of its own,
//! where only `lo` exists, Chromium sees no such change. It still reaches the gateway and the
//! other servers of the test on the host's loopback through a SOCKS5 proxy of ours: the proxy
//! listens inside the namespace and opens its connections from a thread that stayed in the
//! host's namespace (namespaces are per thread, sockets keep the namespace they were made in).
//! Host names travel to the proxy (SOCKS5 resolves at the proxy), and the proxy resolves only
//! `localhost` and `*.localhost`, and accepts only loopback addresses: the browser cannot reach
//! anything but this machine's loopback. chromedriver runs in the namespace as well; the test
//! reaches it through a relay on a host loopback port.
//!
//! Making a namespace needs `CAP_SYS_ADMIN` (the tests run as root); without it the browser
//! shares the host's network as before, and the kit's retries on `ERR_NETWORK_CHANGED` remain.
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The proxy's port inside the namespace (nothing else listens there).
pub const SOCKS_PORT: u16 = 1080;
/// chromedriver's port inside the namespace.
const DRIVER_PORT: u16 = 9515;
/// Bound on a connection attempt and on the SOCKS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request for a connection made in one namespace, answered with the stream.
type Dial = (SocketAddr, mpsc::Sender<io::Result<TcpStream>>);

/// A running namespace: the proxy, the relay to chromedriver and the threads that dial.
pub struct BrowserNetwork {
    /// Where the test reaches chromedriver (host loopback).
    pub webdriver: SocketAddr,
    stop: Arc<AtomicBool>,
    ns_dial: mpsc::Sender<Dial>,
}

impl BrowserNetwork {
    /// Makes the namespace, starts the proxy in it and runs `spawn_driver(port)` there (port:
    /// the one chromedriver must listen on). `Err` when the machine refuses a namespace.
    pub fn start(
        spawn_driver: impl FnOnce(u16) -> io::Result<Child> + Send + 'static,
    ) -> io::Result<(BrowserNetwork, Child)> {
        let stop = Arc::new(AtomicBool::new(false));
        let host_dial = dialer();
        let (ready_tx, ready_rx) = mpsc::channel();
        {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let setup = enter_new_namespace().and_then(|()| {
                    let socks = TcpListener::bind((Ipv4Addr::LOCALHOST, SOCKS_PORT))?;
                    let driver = spawn_driver(DRIVER_PORT)?;
                    Ok((socks, driver))
                });
                match setup {
                    Ok((socks, driver)) => {
                        // Threads made from here on are in the namespace too.
                        let ns_dial = dialer();
                        let _ = ready_tx.send(Ok((driver, ns_dial)));
                        serve_socks(socks, host_dial, stop);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        }
        let (driver, ns_dial) = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the namespace thread ended"))??;
        let relay = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let webdriver = relay.local_addr()?;
        {
            let (stop, ns_dial) = (Arc::clone(&stop), ns_dial.clone());
            let target = SocketAddr::from((Ipv4Addr::LOCALHOST, DRIVER_PORT));
            std::thread::spawn(move || {
                for client in relay.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let ns_dial = ns_dial.clone();
                    std::thread::spawn(move || {
                        if let Ok(driver) = dial(&ns_dial, target) {
                            relay_both_ways(client, driver);
                        }
                    });
                }
            });
        }
        Ok((
            BrowserNetwork {
                webdriver,
                stop,
                ns_dial,
            },
            driver,
        ))
    }
}

impl Drop for BrowserNetwork {
    /// Ends the accept loops: each is woken by one last connection after the flag is set.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.webdriver, CONNECT_TIMEOUT);
        let _ = dial(
            &self.ns_dial,
            SocketAddr::from((Ipv4Addr::LOCALHOST, SOCKS_PORT)),
        );
    }
}

/// Moves the calling thread into a new network namespace and brings its `lo` up.
fn enter_new_namespace() -> io::Result<()> {
    // SAFETY: unshare takes a flag word and changes only the calling thread's namespaces; no
    // memory is passed.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Any socket serves as the handle for the interface ioctls.
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    // SAFETY: ifreq is plain data (all-zero is valid); the name fits with its terminating NUL;
    // both ioctls read and write only the ifreq passed, and fd is a live socket.
    unsafe {
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) != 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A thread that opens connections in the namespace of the thread that called this.
fn dialer() -> mpsc::Sender<Dial> {
    let (tx, rx) = mpsc::channel::<Dial>();
    std::thread::spawn(move || {
        for (addr, answer) in rx {
            let _ = answer.send(TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT));
        }
    });
    tx
}

fn dial(dialer: &mpsc::Sender<Dial>, addr: SocketAddr) -> io::Result<TcpStream> {
    let (tx, rx) = mpsc::channel();
    dialer
        .send((addr, tx))
        .map_err(|_| io::Error::other("the dialer ended"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the dialer ended"))?
}

fn serve_socks(listener: TcpListener, host_dial: mpsc::Sender<Dial>, stop: Arc<AtomicBool>) {
    for client in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(client) = client else { continue };
        let host_dial = host_dial.clone();
        std::thread::spawn(move || {
            if let Ok(Some(upstream)) = socks_handshake(&client, &host_dial) {
                relay_both_ways(client, upstream);
            }
        });
    }
}

/// What a SOCKS5 CONNECT names.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Name(String, u16),
    Addr(SocketAddr),
}

/// The host loopback addresses a target may reach: `localhost` and `*.localhost` (as Chromium
/// itself resolves them), or a loopback address; nothing else.
pub fn loopback_addrs(target: &Target) -> Vec<SocketAddr> {
    match target {
        Target::Name(name, port) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                vec![
                    SocketAddr::from((Ipv4Addr::LOCALHOST, *port)),
                    SocketAddr::from((Ipv6Addr::LOCALHOST, *port)),
                ]
            } else {
                Vec::new()
            }
        }
        Target::Addr(addr) if addr.ip().is_loopback() => vec![*addr],
        Target::Addr(_) => Vec::new(),
    }
}

/// RFC 1928, no authentication, CONNECT only. `Ok(None)`: refused (and told so).
fn socks_handshake(
    mut client: &TcpStream,
    host_dial: &mpsc::Sender<Dial>,
) -> io::Result<Option<TcpStream>> {
    client.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let mut head = [0u8; 2];
    client.read_exact(&mut head)?;
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods)?;
    if head[0] != 5 || !methods.contains(&0) {
        client.write_all(&[5, 0xff])?;
        return Ok(None);
    }
    client.write_all(&[5, 0])?;
    let mut request = [0u8; 4];
    client.read_exact(&mut request)?;
    let target = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip)?;
            Target::Addr(SocketAddr::from((IpAddr::from(ip), read_port(client)?)))
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len)?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name)?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let port = read_port(client)?;
            // Chromium sends addresses in text too.
            match name.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(ip) => Target::Addr(SocketAddr::from((ip, port))),
                Err(_) => Target::Name(name, port),
            }
        }
        4 => {
            let mut ip = [0u8; 16];
            client.read_exact(&mut ip)?;
            Target::Addr(SocketAddr::from((IpAddr::from(ip), read_port(client)?)))
        }
        _ => {
            reply(client, 8)?;
            return Ok(None);
        }
    };
    if request[1] != 1 {
        reply(client, 7)?;
        return Ok(None);
    }
    let addrs = loopback_addrs(&target);
    if addrs.is_empty() {
        // Not allowed by the ruleset: only this machine's loopback.
        reply(client, 2)?;
        return Ok(None);
    }
    for addr in addrs {
        if let Ok(upstream) = dial(host_dial, addr) {
            reply(client, 0)?;
            client.set_read_timeout(None)?;
            return Ok(Some(upstream));
        }
    }
    reply(client, 5)?;
    Ok(None)
}

fn read_port(mut client: &TcpStream) -> io::Result<u16> {
    let mut port = [0u8; 2];
    client.read_exact(&mut port)?;
    Ok(u16::from_be_bytes(port))
}

fn reply(mut client: &TcpStream, code: u8) -> io::Result<()> {
    client.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0])
}

/// Copies both ways until both sides have finished sending.
fn relay_both_ways(a: TcpStream, b: TcpStream) {
    let (Ok(a_read), Ok(b_write)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let forward = std::thread::spawn(move || copy_then_close(a_read, b_write));
    copy_then_close(b, a);
    let _ = forward.join();
}

fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_localhost_names_and_loopback_addresses_are_reached() {
        let v4 = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let both = |port| vec![v4(port), SocketAddr::from((Ipv6Addr::LOCALHOST, port))];
        assert_eq!(
            loopback_addrs(&Target::Name("localhost".into(), 8443)),
            both(8443)
        );
        assert_eq!(
            loopback_addrs(&Target::Name("abc.apps.LOCALHOST.".into(), 1)),
            both(1)
        );
        assert_eq!(loopback_addrs(&Target::Addr(v4(9))), vec![v4(9)]);
        for refused in [
            Target::Name("example.com".into(), 443),
            Target::Name("localhost.example.com".into(), 443),
            Target::Name("notlocalhost".into(), 443),
            Target::Addr(SocketAddr::from(([10, 0, 0, 1], 80))),
            Target::Addr(SocketAddr::from(([172, 17, 0, 2], 80))),
        ] {
            assert!(loopback_addrs(&refused).is_empty(), "{refused:?}");
        }
    }
}
