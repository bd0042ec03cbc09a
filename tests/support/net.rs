//! Network helpers: a client connected from a chosen loopback address
//! (a "stranger": 127.0.0.2 is not in `relay.clients`), and ports where
//! nothing listens.
#![allow(dead_code)]

use std::io::BufReader;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Client, REPLY_TIMEOUT, Reply};

/// A TCP connection to `addr` from `local_ip` (port chosen by the system).
#[track_caller]
pub fn tcp_connect_from(local_ip: &str, addr: SocketAddr) -> TcpStream {
    let ip: IpAddr = local_ip
        .parse()
        .unwrap_or_else(|e| panic!("bad local IP {local_ip:?}: {e}"));
    let domain = if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).expect("create a TCP socket");
    s.bind(&SockAddr::from(SocketAddr::new(ip, 0)))
        .unwrap_or_else(|e| panic!("bind the client socket to {ip}: {e}"));
    s.connect_timeout(&SockAddr::from(addr), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect from {ip} to {addr}: {e}"));
    s.into()
}

/// An SMTP transcript client connected from `local_ip`, banner read.
#[track_caller]
pub fn client_from(local_ip: &str, addr: SocketAddr) -> Client {
    let stream = tcp_connect_from(local_ip, addr);
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(REPLY_TIMEOUT))
        .expect("set write timeout");
    let reader = BufReader::new(stream.try_clone().expect("clone the socket"));
    let mut c = Client {
        stream,
        reader,
        banner: Reply { lines: vec![] },
    };
    c.banner = c.read_reply().expect("220 ");
    c
}

/// A port on `ip` where nothing listens right now (bound, then released).
pub fn free_port(ip: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    l.local_addr().expect("local address").port()
}
