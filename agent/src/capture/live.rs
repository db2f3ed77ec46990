//! Live capture from network interfaces with libpcap: a span port, a host interface, a
//! veth. Each interface is read non-blocking (immediate mode), so an idle link never
//! holds up shutdown or the flushing of open transactions.

use std::time::Duration;

use crate::decode::Micros;

/// How an interface is opened.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub promisc: bool,
    /// BPF capture filter (tcpdump syntax); empty captures everything.
    pub filter: String,
    /// Kernel ring buffer size in bytes.
    pub buffer_bytes: usize,
    pub snaplen: usize,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            promisc: false,
            filter: String::new(),
            buffer_bytes: 32 << 20,
            snaplen: 65_535,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(
        "interface {0}: no such interface (list them with `ip link`; `any` captures all of them)"
    )]
    NoSuchInterface(String),
    #[error(
        "interface {0}: permission denied (run as root, or grant the binary CAP_NET_RAW and CAP_NET_ADMIN with setcap)"
    )]
    Permission(String),
    #[error("interface {0}: bad capture filter `{1}`: {2}")]
    Filter(String, String, String),
    #[error("interface {0}: {1}")]
    Other(String, String),
    #[error(transparent)]
    Ebpf(#[from] crate::capture::ebpf::EbpfError),
}

/// Kernel-side counters of one interface (`pcap_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub received: u64,
    /// Dropped because the ring was full (the reader was too slow).
    pub dropped: u64,
    /// Dropped by the interface or driver.
    pub if_dropped: u64,
}

/// One open interface.
pub struct LiveCapture {
    name: String,
    cap: pcap::Capture<pcap::Active>,
    linktype: u32,
}

/// What one read gave.
pub enum Next<'a> {
    Frame {
        ts: Micros,
        linktype: u32,
        data: &'a [u8],
    },
    /// Nothing right now.
    Idle,
}

fn classify(name: &str, e: pcap::Error) -> LiveError {
    let msg = e.to_string();
    let lower = msg.to_ascii_lowercase();
    if lower.contains("no such device") || lower.contains("doesn't exist") {
        LiveError::NoSuchInterface(name.to_string())
    } else if lower.contains("permission") || lower.contains("not permitted") {
        LiveError::Permission(name.to_string())
    } else {
        LiveError::Other(name.to_string(), msg)
    }
}

impl LiveCapture {
    pub fn open(name: &str, opts: &LiveOptions) -> Result<Self, LiveError> {
        let cap = pcap::Capture::from_device(name)
            .map_err(|e| classify(name, e))?
            .promisc(opts.promisc)
            .snaplen(i32::try_from(opts.snaplen).unwrap_or(65_535))
            .buffer_size(i32::try_from(opts.buffer_bytes).unwrap_or(i32::MAX))
            // Block-based TPACKET_V3 ring, blocks handed over at least every 100 ms:
            // immediate mode would switch to fixed 64 KiB slots (few frames per MiB, a
            // wake-up per frame) and lose frames under load for latency a passive
            // sensor does not need.
            .immediate_mode(false)
            .timeout(100)
            .open()
            .map_err(|e| classify(name, e))?;
        let mut cap = cap.setnonblock().map_err(|e| classify(name, e))?;
        if !opts.filter.is_empty() {
            cap.filter(&opts.filter, true).map_err(|e| {
                LiveError::Filter(name.to_string(), opts.filter.clone(), e.to_string())
            })?;
        }
        let linktype = cap.get_datalink().0 as u32;
        Ok(LiveCapture {
            name: name.to_string(),
            cap,
            linktype,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next frame, or `Idle` when none is waiting.
    pub fn next_frame(&mut self) -> Result<Next<'_>, LiveError> {
        match self.cap.next_packet() {
            Ok(p) => {
                let ts = p.header.ts.tv_sec * 1_000_000 + p.header.ts.tv_usec;
                Ok(Next::Frame {
                    ts,
                    linktype: self.linktype,
                    data: p.data,
                })
            }
            Err(pcap::Error::TimeoutExpired | pcap::Error::NoMorePackets) => Ok(Next::Idle),
            Err(e) => Err(LiveError::Other(self.name.clone(), e.to_string())),
        }
    }

    /// Waits until a frame may be ready, at most `timeout` (poll on the capture socket:
    /// an idle reader costs nothing and wakes as soon as the ring has a frame).
    pub fn wait(&self, timeout: Duration) {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd {
            fd: self.cap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut fd, 1, ms) };
        if r < 0 {
            std::thread::sleep(timeout.min(Duration::from_millis(2)));
        }
    }

    pub fn stats(&mut self) -> KernelStats {
        self.cap
            .stats()
            .map(|s| KernelStats {
                received: u64::from(s.received),
                dropped: u64::from(s.dropped),
                if_dropped: u64::from(s.if_dropped),
            })
            .unwrap_or_default()
    }
}
