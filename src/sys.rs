//! Safe wrappers over the few Linux system calls that std, tokio and socket2 do not expose:
//! batched datagram I/O (`recvmmsg`/`sendmmsg`, optionally with kernel receive times), per-thread scheduling priority and CPU
//! time, and giving freed heap memory back to the system.
//!
//! This is the only module allowed to use `unsafe`. Every call works on caller-owned
//! buffers and on stack arrays that live for the duration of the call; nothing is kept.
#![allow(unsafe_code)]

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// The most datagrams one `recv_batch`/`send_batch` system call handles. Longer slices are
/// served in several calls (`send_batch`) or only partly filled (`recv_batch`).
pub const MAX_BATCH: usize = 64;

/// Receives up to `min(bufs.len(), lens.len(), addrs.len(), MAX_BATCH)` datagrams with one
/// `recvmmsg(2)` call, without blocking (`MSG_DONTWAIT`).
///
/// Datagram `i` is written into `bufs[i]` (up to its current `len()`, which is not changed),
/// its length into `lens[i]` and its source into `addrs[i]`. Returns how many slots were
/// filled; `Err(WouldBlock)` when nothing is queued.
///
/// A datagram that did not fit its buffer (`MSG_TRUNC`), or whose source is not an IPv4/IPv6
/// address, is reported with `lens[i] == 0`: there is nothing in it that can be answered.
pub fn recv_batch(
    fd: &impl AsRawFd,
    bufs: &mut [Vec<u8>],
    lens: &mut [usize],
    addrs: &mut [SocketAddr],
) -> io::Result<usize> {
    recv_batch_impl(fd, bufs, lens, addrs, None)
}

/// Asks the kernel to record when each datagram arrives on `fd` (`SO_TIMESTAMPNS`), for
/// [`recv_batch_stamped`].
pub fn enable_rx_timestamps(fd: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_TIMESTAMPNS` (= `SCM_TIMESTAMPNS`) of asm-generic/socket.h, with the 16-byte
/// `timespec` of 64-bit Linux; libc does not export it for every target.
const SO_TIMESTAMPNS: libc::c_int = 35;

/// [`recv_batch`] that also reports when the kernel received each datagram, in `stamps[i]`
/// (nanoseconds since the Unix epoch; 0 when the socket was not set up with
/// [`enable_rx_timestamps`]). A load generator uses it so that time it spends off the CPU
/// after an answer arrived is not counted as the server's latency.
pub fn recv_batch_stamped(
    fd: &impl AsRawFd,
    bufs: &mut [Vec<u8>],
    lens: &mut [usize],
    addrs: &mut [SocketAddr],
    stamps: &mut [u64],
) -> io::Result<usize> {
    recv_batch_impl(fd, bufs, lens, addrs, Some(stamps))
}

/// Room for one control message carrying a `timespec` (CMSG_SPACE(16) is 32 bytes), as
/// u64s for the alignment `cmsghdr` needs.
type Control = [u64; 8];

fn recv_batch_impl(
    fd: &impl AsRawFd,
    bufs: &mut [Vec<u8>],
    lens: &mut [usize],
    addrs: &mut [SocketAddr],
    mut stamps: Option<&mut [u64]>,
) -> io::Result<usize> {
    let mut n = bufs.len().min(lens.len()).min(addrs.len()).min(MAX_BATCH);
    if let Some(st) = stamps.as_deref() {
        n = n.min(st.len());
    }
    if n == 0 {
        return Ok(0);
    }
    // Only the first `n` slots are initialized: zeroing all MAX_BATCH headers and addresses
    // on every call (26 KB per receive + send) showed up as 4% of the server's CPU.
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    let mut controls = [const { MaybeUninit::<Control>::uninit() }; MAX_BATCH];
    let stamped = stamps.is_some();

    for ((((buf, iov), name), hdr), control) in bufs
        .iter_mut()
        .zip(iovs.iter_mut())
        .zip(names.iter_mut())
        .zip(hdrs.iter_mut())
        .zip(controls.iter_mut())
        .take(n)
    {
        // SAFETY: `sockaddr_storage` is a plain C struct; all-zero is a valid value.
        let name = name.write(unsafe { mem::zeroed() });
        let iov = iov.write(libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        });
        // SAFETY: `mmsghdr` is a plain C struct; all-zero (null pointers, zero lengths) is a
        // valid value.
        let hdr = hdr.write(unsafe { mem::zeroed() });
        hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        if stamped {
            let control = control.write([0; 8]);
            hdr.msg_hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = mem::size_of::<Control>() as _;
        }
    }

    // SAFETY: `hdrs[..n]` (initialized above; the kernel reads no further than `n`) point at
    // `n` iovecs each describing the initialized, exclusively
    // borrowed bytes of one `bufs[i]` (valid for `buf.len()` bytes), at `n` name buffers
    // of `sockaddr_storage` size and, when stamped, at `n` zeroed control buffers of
    // `msg_controllen` bytes. All of them outlive the call, and nothing else accesses
    // them during it. The kernel writes at most `iov_len` bytes per buffer, at most
    // `msg_namelen` bytes per name and `msg_controllen` per control buffer, and
    // `n <= MAX_BATCH` bounds the header array. A null
    // timeout is allowed (no timeout; with MSG_DONTWAIT the call never blocks).
    let got = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = (got as usize).min(n);

    for (i, (((hdr, name), len), addr)) in hdrs
        .iter()
        .zip(names.iter())
        .zip(lens.iter_mut())
        .zip(addrs.iter_mut())
        .take(got)
        .enumerate()
    {
        // SAFETY: the first `n` headers and names were initialized above, and `got <= n`.
        let (hdr, name) = unsafe { (hdr.assume_init_ref(), name.assume_init_ref()) };
        let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        match sockaddr_to_std(name, hdr.msg_hdr.msg_namelen) {
            Some(a) if !truncated => {
                *addr = a;
                *len = hdr.msg_len as usize;
            }
            _ => *len = 0,
        }
        if let Some(slot) = stamps.as_deref_mut().and_then(|st| st.get_mut(i)) {
            *slot = rx_timestamp(&hdr.msg_hdr);
        }
    }
    Ok(got)
}

/// The `SCM_TIMESTAMPNS` time in a received message's control data, in ns since the
/// epoch (0 when there is none).
fn rx_timestamp(msg: &libc::msghdr) -> u64 {
    // SAFETY: `msg` was filled in by recvmmsg: `msg_control` points at a live control
    // buffer of which the kernel set `msg_controllen` bytes (the CMSG macros stay within
    // them). A message of the right level and type carries a `timespec`, read unaligned
    // since the control buffer's layout is the kernel's.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET
                && (*c).cmsg_type == SO_TIMESTAMPNS
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(mem::size_of::<libc::timespec>() as u32) as usize
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return (ts.tv_sec as u64)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    0
}

/// Sends each `(payload, destination)` as one datagram with `sendmmsg(2)` (in chunks of
/// [`MAX_BATCH`]), without blocking.
///
/// Returns how many leading messages were sent. The count is smaller than `msgs.len()`
/// when the kernel stopped early; an error is returned only when the very first message
/// could not be sent (as `sendmmsg` reports it), so the caller can skip or retry it.
pub fn send_batch(fd: &impl AsRawFd, msgs: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let mut sent = 0usize;
    for chunk in msgs.chunks(MAX_BATCH) {
        let k = match send_chunk(fd, chunk) {
            Ok(k) => k,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => return Ok(sent),
        };
        sent += k;
        if k < chunk.len() {
            break;
        }
    }
    Ok(sent)
}

fn send_chunk(fd: &impl AsRawFd, chunk: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let n = chunk.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    // Only the first `n` slots are initialized (see `recv_batch`).
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];

    for (((msg, iov), name), hdr) in chunk
        .iter()
        .zip(iovs.iter_mut())
        .zip(names.iter_mut())
        .zip(hdrs.iter_mut())
        .take(n)
    {
        let (payload, dest) = msg;
        // SAFETY: plain C struct; all-zero is a valid value.
        let name = name.write(unsafe { mem::zeroed() });
        let namelen = std_to_sockaddr(dest, name);
        // sendmsg only reads through iov_base; the field is `*mut` for the shared struct.
        let iov = iov.write(libc::iovec {
            iov_base: payload.as_ptr().cast_mut().cast(),
            iov_len: payload.len(),
        });
        // SAFETY: plain C struct; all-zero is a valid value.
        let hdr = hdr.write(unsafe { mem::zeroed() });
        hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        hdr.msg_hdr.msg_namelen = namelen;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
    }

    // SAFETY: `hdrs[..n]` (initialized above; the kernel reads no further than `n`) point at
    // iovecs describing `n` live payload slices (only read by
    // the kernel for sendmmsg) and at `n` initialized socket addresses whose lengths match
    // their family. Everything outlives the call; `n <= MAX_BATCH` bounds the array.
    let sent = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Puts the calling thread under `SCHED_IDLE` (sched(7)): it runs only on CPU time that
/// normal threads leave, and a normal thread that wakes up preempts it at once. A nice
/// level alone still lets a running heavy job keep the CPU for a whole scheduler slice
/// (milliseconds) while a query waits. Lowering the policy needs no privilege.
pub fn set_idle_scheduling() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialized sched_param that outlives the call; pid 0 is
    // the calling thread (Linux schedules threads individually).
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the nice value of the calling thread (not the whole process) to `nice`.
///
/// On Linux, `setpriority(PRIO_PROCESS, tid)` applies to one thread (see the NOTES of
/// setpriority(2)); heavy-job threads call this so they yield to query-serving threads.
/// Raising priority (a lower nice value) needs CAP_SYS_NICE and fails with EACCES.
pub fn lower_thread_priority(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    // SAFETY: plain system call on integer arguments; no memory is passed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`, clock_gettime(2)).
/// `None` if the clock cannot be read (it always can on Linux).
pub fn thread_cpu_time() -> Option<std::time::Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec on our stack that outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc < 0 {
        return None;
    }
    Some(std::time::Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// Returns the free memory of every malloc arena to the system (glibc `malloc_trim(0)`:
/// releases the top of each heap and `madvise`s whole free pages inside it). A zone load
/// or import frees hundreds of megabytes of build buffers in the middle of the heavy
/// thread's arena, which glibc would otherwise keep as resident memory. A no-op with other
/// C libraries.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads a socket address the kernel wrote into `name` (`len` bytes valid).
fn sockaddr_to_std(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: `sockaddr_storage` is sized and aligned for every socket address type,
            // and the family and length say the kernel stored a `sockaddr_in` here.
            let sin =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `name` in its C form and returns the length to pass to the kernel.
fn std_to_sockaddr(addr: &SocketAddr, name: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: `sockaddr_storage` is sized and aligned for `sockaddr_in`, and we hold
            // the only reference to it.
            let sin =
                unsafe { &mut *(name as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 =
                unsafe { &mut *(name as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    fn pair(local: &str) -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind(local).unwrap();
        let b = UdpSocket::bind(local).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (a, b)
    }

    /// Polls `recv_batch` until `want` datagrams arrived (loopback delivery is immediate,
    /// but allow for scheduling).
    fn recv_all(sock: &UdpSocket, bufs: &mut [Vec<u8>], want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::new();
        let mut lens = vec![0usize; bufs.len()];
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut addrs = vec![unspecified; bufs.len()];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.len() < want {
            match recv_batch(sock, bufs, &mut lens, &mut addrs) {
                Ok(n) => {
                    for i in 0..n {
                        out.push((bufs[i][..lens[i]].to_vec(), addrs[i]));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "timed out");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("recv_batch: {e}"),
            }
        }
        out
    }

    fn roundtrip(local: &str) {
        let (sender, receiver) = pair(local);
        let to = receiver.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 1 + i as usize]).collect();
        let msgs: Vec<(&[u8], SocketAddr)> = payloads.iter().map(|p| (&p[..], to)).collect();
        // 100 > MAX_BATCH: exercises chunking.
        assert_eq!(send_batch(&sender, &msgs).unwrap(), 100);

        let mut bufs = vec![vec![0u8; 512]; 16];
        let got = recv_all(&receiver, &mut bufs, 100);
        assert_eq!(got.len(), 100);
        for (i, (data, from)) in got.iter().enumerate() {
            assert_eq!(data, &payloads[i], "datagram {i}");
            assert_eq!(*from, sender.local_addr().unwrap());
        }
        // Nothing left: WouldBlock, not a hang.
        let mut lens = [0usize; 16];
        let mut addrs = [to; 16];
        let e = recv_batch(&receiver, &mut bufs, &mut lens, &mut addrs).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn roundtrip_ipv4() {
        roundtrip("127.0.0.1:0");
    }

    #[test]
    fn roundtrip_ipv6() {
        if UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 loopback; skipping");
            return;
        }
        roundtrip("[::1]:0");
    }

    #[test]
    fn replies_reach_each_source() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let clients: Vec<UdpSocket> = (0..5)
            .map(|_| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c
            })
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&[i as u8], server.local_addr().unwrap()).unwrap();
        }
        let mut bufs = vec![vec![0u8; 64]; 8];
        let got = recv_all(&server, &mut bufs, 5);
        let replies: Vec<(Vec<u8>, SocketAddr)> = got
            .iter()
            .map(|(d, from)| (vec![d[0], 0xAA], *from))
            .collect();
        let msgs: Vec<(&[u8], SocketAddr)> = replies.iter().map(|(d, a)| (&d[..], *a)).collect();
        assert_eq!(send_batch(&server, &msgs).unwrap(), 5);
        for (i, c) in clients.iter().enumerate() {
            let mut b = [0u8; 8];
            let (n, from) = c.recv_from(&mut b).unwrap();
            assert_eq!(&b[..n], &[i as u8, 0xAA]);
            assert_eq!(from, server.local_addr().unwrap());
        }
    }

    #[test]
    fn oversized_datagram_reported_empty() {
        let (sender, receiver) = pair("127.0.0.1:0");
        let to = receiver.local_addr().unwrap();
        sender.send_to(&[7u8; 100], to).unwrap();
        sender.send_to(&[8u8; 10], to).unwrap();
        let mut bufs = vec![vec![0u8; 32]; 4];
        let got = recv_all(&receiver, &mut bufs, 2);
        assert!(
            got[0].0.is_empty(),
            "truncated datagram must be reported as empty"
        );
        assert_eq!(got[1].0, vec![8u8; 10]);
    }

    #[test]
    fn empty_slices() {
        let (sender, _) = pair("127.0.0.1:0");
        assert_eq!(send_batch(&sender, &[]).unwrap(), 0);
        assert_eq!(recv_batch(&sender, &mut [], &mut [], &mut []).unwrap(), 0);
    }

    #[test]
    fn send_error_on_first_message_is_reported() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        // An IPv6 destination on an IPv4 socket cannot be sent to.
        let dest = SocketAddr::from((Ipv6Addr::LOCALHOST, 53));
        assert!(send_batch(&sock, &[(&[1u8][..], dest)]).is_err());
    }

    fn thread_nice() -> i32 {
        // Field 19 of /proc/thread-self/stat; the command name (field 2) may hold spaces,
        // so count from the closing parenthesis.
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn priority_is_per_thread() {
        let before = thread_nice();
        let target = (before + 5).min(19);
        let inner = std::thread::spawn(move || {
            lower_thread_priority(target).unwrap();
            thread_nice()
        })
        .join()
        .unwrap();
        assert_eq!(inner, target);
        assert_eq!(thread_nice(), before, "other threads keep their priority");
    }

    fn unix_ns() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }

    #[test]
    fn receive_times_come_from_the_kernel() {
        let (a, b) = pair("127.0.0.1:0");
        let to = b.local_addr().unwrap();
        let mut bufs = vec![vec![0u8; 64]; 4];
        let mut lens = vec![0usize; 4];
        let mut addrs = vec![to; 4];
        let mut stamps = vec![u64::MAX; 4];

        // Without SO_TIMESTAMPNS there is no time: 0.
        a.send_to(b"one", to).unwrap();
        b.set_nonblocking(true).unwrap();
        let got = loop {
            match recv_batch_stamped(&b, &mut bufs, &mut lens, &mut addrs, &mut stamps) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!((got, lens[0], stamps[0]), (1, 3, 0));

        enable_rx_timestamps(&b).unwrap();
        // The kernel turns arrival stamping on a little after the first socket asks for it
        // (a deferred static key); until then it stamps datagrams when they are read.
        let mut early = false;
        for _ in 0..100 {
            let before = unix_ns();
            a.send_to(b"two", to).unwrap();
            a.send_to(b"three", to).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let read_at = unix_ns();
            let got =
                recv_batch_stamped(&b, &mut bufs, &mut lens, &mut addrs, &mut stamps).unwrap();
            assert_eq!(got, 2);
            assert_eq!(
                (&bufs[0][..lens[0]], &bufs[1][..lens[1]]),
                (&b"two"[..], &b"three"[..])
            );
            for &t in &stamps[..2] {
                assert!(
                    t >= before && t <= read_at + 1_000_000,
                    "{before} {t} {read_at}"
                );
            }
            // Stamped on arrival: well before the read 20 ms later.
            if stamps[..2].iter().all(|&t| t + 10_000_000 < read_at) {
                early = true;
                break;
            }
        }
        assert!(early, "datagrams were never stamped on arrival");
    }
}
