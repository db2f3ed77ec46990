//! eBPF capture: the kernel programs of `ebpf/programs`, embedded in the agent, loaded
//! and attached here. tc programs (TCX links, or netlink filters on a clsact qdisc on
//! kernels before 6.6) watch interfaces given by name or pattern (`veth*`, `cali*`),
//! picked up as they appear; cgroup_skb programs watch a cgroup subtree (a pod's or a
//! node's); uprobes on OpenSSL read HTTPS in clear. Records arrive over ring buffers and
//! feed the same reassembly → http → extract path as libpcap.
//!
//! Everything attached is owned by this process: TCX and cgroup links and uprobes go
//! away with it, even after a crash. Netlink filters outlive a crash, so they are looked
//! for and removed by name before attaching.

pub mod procfs;
pub mod record;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{CgroupAttachMode, LinkOrder};
use aya::programs::tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions};
use aya::programs::uprobe::UProbeScope;
use aya::programs::{
    CgroupSkb, CgroupSkbAttachType, SchedClassifier, TcAttachType, TracePoint, UProbe,
};
use aya::{Ebpf, EbpfLoader};
use tapline_ebpf_common::{CaptureConfig, PACKET_CLASSES, TLS_CLASSES, counter};

use crate::decode::Micros;

/// The programs, built by the agent's build script (empty when built with
/// `AYA_BUILD_SKIP=1`).
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tapline-ebpf"));

/// How tc programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcAttach {
    /// TCX links (Linux 6.6+) where the kernel has them, else netlink.
    Auto,
    Tcx,
    /// A filter on the interface's clsact qdisc (visible in `tc filter show`).
    Netlink,
}

#[derive(Debug, Clone)]
pub struct EbpfOptions {
    /// Interface names or patterns (`*` and `?`).
    pub ifaces: Vec<String>,
    /// A cgroup v2 directory whose sockets' traffic is captured.
    pub cgroup: Option<PathBuf>,
    /// Probe OpenSSL for HTTPS plaintext.
    pub tls: bool,
    pub snaplen: u32,
    pub tls_snaplen: u32,
    /// Only these ports (either end); empty for all.
    pub ports: Vec<u16>,
    /// Only these networks (either end); empty for all.
    pub cidrs: Vec<(IpAddr, u8)>,
    /// Ring buffer sizes in bytes (rounded up to a power of two).
    pub ring_bytes: u32,
    pub tls_ring_bytes: u32,
    pub attach: TcAttach,
    /// Where /proc is (the host's, in a container with `hostPID`).
    pub proc: PathBuf,
}

impl Default for EbpfOptions {
    fn default() -> Self {
        EbpfOptions {
            ifaces: Vec::new(),
            cgroup: None,
            tls: false,
            snaplen: 16384,
            tls_snaplen: 16384,
            ports: Vec::new(),
            cidrs: Vec::new(),
            ring_bytes: 32 << 20,
            tls_ring_bytes: 8 << 20,
            attach: TcAttach::Auto,
            proc: PathBuf::from("/proc"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "this agent was built without its eBPF programs (AYA_BUILD_SKIP); rebuild with the nightly toolchain and bpf-linker (.ci/setup installs them)"
    )]
    NotBuilt,
    #[error("nothing to capture: give --iface, --cgroup or --tls")]
    NothingToCapture,
    #[error("loading the eBPF programs: {0}{hint}", hint = permission_hint(.1))]
    Load(String, bool),
    #[error("{what}: {message}{hint}", hint = permission_hint(.permission))]
    Attach {
        what: String,
        message: String,
        permission: bool,
    },
    #[error(
        "interface {0}: no such interface (list them with `ip link`; patterns such as `veth*` may match none yet)"
    )]
    NoSuchInterface(String),
    #[error("cgroup {0}: {1}")]
    Cgroup(PathBuf, std::io::Error),
    #[error("snap length {0} is out of range (1 to {1})")]
    Snaplen(u32, usize),
}

fn permission_hint(permission: &bool) -> &'static str {
    if *permission {
        " (permission denied: the agent needs CAP_BPF and CAP_PERFMON to load programs, CAP_NET_ADMIN to attach to interfaces and cgroups, and for --tls CAP_SYS_ADMIN (uprobe events) and CAP_SYS_PTRACE (other users' processes); see docs/capture.md)"
    } else {
        ""
    }
}

fn is_permission(e: &dyn std::error::Error) -> bool {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(e) = cur {
        let s = e.to_string().to_ascii_lowercase();
        if s.contains("operation not permitted") || s.contains("permission denied") {
            return true;
        }
        cur = e.source();
    }
    false
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

fn attach_error(what: impl Into<String>, e: &dyn std::error::Error) -> EbpfError {
    EbpfError::Attach {
        what: what.into(),
        message: chain(e),
        permission: is_permission(e),
    }
}

/// `*` matches any run of characters, `?` one.
pub fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    // Interface names are at most 15 bytes; longer input never matches a real one.
    pattern.len() <= 64 && name.len() <= 64 && go(pattern.as_bytes(), name.as_bytes())
}

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// The kernel's counters, summed over CPUs (indexes of [`counter`]).
pub type KernelCounters = [u64; counter::COUNT as usize];

const TC_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("tapline_tc_ingress", TcAttachType::Ingress),
    ("tapline_tc_egress", TcAttachType::Egress),
];

/// SSL functions, their entry program and their return program.
const SSL_PROBES: [(&str, &str, &str); 4] = [
    ("SSL_write", "tapline_ssl_write", "tapline_ssl_write_ret"),
    ("SSL_read", "tapline_ssl_read", "tapline_ssl_read_ret"),
    (
        "SSL_write_ex",
        "tapline_ssl_write_ex",
        "tapline_ssl_write_ret",
    ),
    ("SSL_read_ex", "tapline_ssl_read_ex", "tapline_ssl_read_ret"),
];

/// Tracepoint programs and the syscall tracepoints each is attached to: the syscalls
/// OpenSSL (and programs' own BIOs) move TLS records with, and those that make sockets.
const TRACEPOINTS: [(&str, &[&str]); 4] = [
    (
        "tapline_sys_enter_fd",
        &[
            "sys_enter_read",
            "sys_enter_write",
            "sys_enter_recvfrom",
            "sys_enter_sendto",
        ],
    ),
    (
        "tapline_sys_enter_accept",
        &["sys_enter_accept", "sys_enter_accept4"],
    ),
    (
        "tapline_sys_exit_accept",
        &["sys_exit_accept", "sys_exit_accept4"],
    ),
    ("tapline_sys_enter_connect", &["sys_enter_connect"]),
];

/// Loaded and attached programs.
pub struct EbpfCapture {
    ebpf: Ebpf,
    opts: EbpfOptions,
    tcx: bool,
    /// Interfaces with our programs, and their links.
    attached: HashMap<String, Vec<(&'static str, SchedClassifierLinkId)>>,
    libraries: HashSet<procfs::FileId>,
    counters: PerCpuArray<MapData, u64>,
    /// tracefs was not mounted and this process mounted it (unmounted on detach).
    mounted_tracefs: bool,
    /// Processes using OpenSSL, whose new sockets the kernel reports.
    tls_pids: Option<BpfHashMap<MapData, u32, u8>>,
    /// REALTIME − MONOTONIC, to date records stamped with `bpf_ktime_get_ns`.
    clock_offset_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC now, the clock of the records' stamps.
pub fn monotonic_ns() -> i128 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn ring_size(bytes: u32) -> u32 {
    bytes.clamp(1 << 16, 1 << 30).next_power_of_two()
}

impl EbpfCapture {
    /// Loads the programs through the verifier, fills the settings maps and attaches
    /// what the options ask for. Fails with the first thing that cannot be done, so
    /// `--source auto` can fall back to libpcap with that reason.
    pub fn load(opts: EbpfOptions) -> Result<Self, EbpfError> {
        if PROGRAMS.is_empty() {
            return Err(EbpfError::NotBuilt);
        }
        if opts.ifaces.is_empty() && opts.cgroup.is_none() && !opts.tls {
            return Err(EbpfError::NothingToCapture);
        }
        let max = PACKET_CLASSES[PACKET_CLASSES.len() - 1];
        if opts.snaplen == 0 || opts.snaplen as usize > max {
            return Err(EbpfError::Snaplen(opts.snaplen, max));
        }
        let tls_max = TLS_CLASSES[TLS_CLASSES.len() - 1];
        if opts.tls_snaplen == 0 || opts.tls_snaplen as usize > tls_max {
            return Err(EbpfError::Snaplen(opts.tls_snaplen, tls_max));
        }
        for name in &opts.ifaces {
            if !is_pattern(name) && !Path::new("/sys/class/net").join(name).exists() {
                return Err(EbpfError::NoSuchInterface(name.clone()));
            }
        }
        raise_memlock();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("PACKETS", ring_size(opts.ring_bytes))
            .map_max_entries("TLS_DATA", ring_size(opts.tls_ring_bytes))
            .load(PROGRAMS)
            .map_err(|e| EbpfError::Load(chain(&e), is_permission(&e)))?;
        let map_err = |what: &str, e: &dyn std::error::Error| attach_error(what, e);
        {
            let map = ebpf.map_mut("CONFIG").expect("CONFIG is in the object");
            let mut config: Array<_, CaptureConfig> =
                Array::try_from(map).map_err(|e| map_err("map CONFIG", &e))?;
            let c = CaptureConfig {
                snaplen: opts.snaplen,
                tls_snaplen: opts.tls_snaplen,
                filter_ports: u32::from(!opts.ports.is_empty()),
                filter_cidrs: u32::from(!opts.cidrs.is_empty()),
            };
            config.set(0, c, 0).map_err(|e| map_err("map CONFIG", &e))?;
        }
        {
            let map = ebpf.map_mut("PORTS").expect("PORTS is in the object");
            let mut ports: BpfHashMap<_, u16, u8> =
                BpfHashMap::try_from(map).map_err(|e| map_err("map PORTS", &e))?;
            for p in &opts.ports {
                ports
                    .insert(p, 1, 0)
                    .map_err(|e| map_err("map PORTS", &e))?;
            }
        }
        {
            let map = ebpf.map_mut("CIDRS").expect("CIDRS is in the object");
            let mut cidrs: LpmTrie<_, [u8; 16], u8> =
                LpmTrie::try_from(map).map_err(|e| map_err("map CIDRS", &e))?;
            for (ip, len) in &opts.cidrs {
                let (bytes, len) = match ip {
                    IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), u32::from(*len) + 96),
                    IpAddr::V6(v6) => (v6.octets(), u32::from(*len)),
                };
                cidrs
                    .insert(&Key::new(len.min(128), bytes), 1, 0)
                    .map_err(|e| map_err("map CIDRS", &e))?;
            }
        }
        let counters = PerCpuArray::try_from(
            ebpf.take_map("COUNTERS")
                .expect("COUNTERS is in the object"),
        )
        .map_err(|e| map_err("map COUNTERS", &e))?;
        let tcx = match opts.attach {
            TcAttach::Tcx => true,
            TcAttach::Netlink => false,
            TcAttach::Auto => aya::util::KernelVersion::current()
                .map(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
                .unwrap_or(false),
        };
        let mut cap = EbpfCapture {
            ebpf,
            opts,
            tcx,
            attached: HashMap::new(),
            libraries: HashSet::new(),
            counters,
            mounted_tracefs: false,
            tls_pids: None,
            clock_offset_ns: 0,
        };
        cap.sync_clock();
        if !cap.opts.ifaces.is_empty() {
            for (name, _) in TC_PROGRAMS {
                let p: &mut SchedClassifier = program(&mut cap.ebpf, name)?;
                p.load()
                    .map_err(|e| attach_error(format!("verifying {name}"), &e))?;
            }
            cap.attach_interfaces()?;
        }
        if let Some(path) = cap.opts.cgroup.clone() {
            let dir = std::fs::File::open(&path).map_err(|e| EbpfError::Cgroup(path.clone(), e))?;
            for (name, kind) in [
                ("tapline_cgroup_ingress", CgroupSkbAttachType::Ingress),
                ("tapline_cgroup_egress", CgroupSkbAttachType::Egress),
            ] {
                let p: &mut CgroupSkb = program(&mut cap.ebpf, name)?;
                p.load()
                    .map_err(|e| attach_error(format!("verifying {name}"), &e))?;
                // Through a bpf link (5.7+), which coexists with other programs on the
                // cgroup; the kernel refuses attach flags on links, hence `Single`.
                p.attach(&dir, kind, CgroupAttachMode::Single)
                    .map_err(|e| attach_error(format!("{name} on {}", path.display()), &e))?;
            }
        }
        if cap.opts.tls {
            let mut loaded = HashSet::new();
            for (_, entry, ret) in SSL_PROBES {
                for name in [entry, ret] {
                    if loaded.insert(name) {
                        let p: &mut UProbe = program(&mut cap.ebpf, name)?;
                        p.load()
                            .map_err(|e| attach_error(format!("verifying {name}"), &e))?;
                    }
                }
            }
            cap.mounted_tracefs = mount_tracefs()?;
            for (name, syscalls) in TRACEPOINTS {
                let tp: &mut TracePoint = program(&mut cap.ebpf, name)?;
                tp.load()
                    .map_err(|e| attach_error(format!("verifying {name}"), &e))?;
                for sc in syscalls {
                    tp.attach("syscalls", sc)
                        .map_err(|e| attach_error(format!("tracepoint syscalls:{sc}"), &e))?;
                }
            }
            cap.tls_pids = Some(
                BpfHashMap::try_from(cap.ebpf.take_map("TLS_PIDS").expect("in the object"))
                    .map_err(|e| attach_error("map TLS_PIDS", &e))?,
            );
            let known: Vec<(procfs::FileId, PathBuf)> = procfs::WELL_KNOWN
                .iter()
                .filter_map(|p| procfs::file_id(Path::new(p)).map(|id| (id, PathBuf::from(p))))
                .collect();
            for (id, path) in known {
                if !cap.libraries.contains(&id) {
                    cap.probe_library(id, &path)?;
                }
            }
            cap.scan_libraries();
        }
        Ok(cap)
    }

    /// Takes the ring buffers for the reader: packets, and TLS plaintext when probed.
    pub fn take_rings(
        &mut self,
    ) -> Result<(RingBuf<MapData>, Option<RingBuf<MapData>>), EbpfError> {
        let packets = RingBuf::try_from(self.ebpf.take_map("PACKETS").expect("in the object"))
            .map_err(|e| attach_error("map PACKETS", &e))?;
        let tls = if self.opts.tls {
            Some(
                RingBuf::try_from(self.ebpf.take_map("TLS_DATA").expect("in the object"))
                    .map_err(|e| attach_error("map TLS_DATA", &e))?,
            )
        } else {
            None
        };
        Ok((packets, tls))
    }

    fn attach_interfaces(&mut self) -> Result<Vec<String>, EbpfError> {
        let mut log = Vec::new();
        let present: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        // Interfaces that went away took their links with them.
        self.attached.retain(|name, _| present.contains(name));
        let wanted: Vec<String> = present
            .iter()
            .filter(|n| self.opts.ifaces.iter().any(|p| matches(p, n)))
            .filter(|n| !self.attached.contains_key(*n))
            .cloned()
            .collect();
        for iface in wanted {
            let mut links = Vec::new();
            for (name, kind) in TC_PROGRAMS {
                if !self.tcx {
                    // A crashed run's filters (netlink filters outlive their process).
                    let _ = aya::programs::tc::qdisc_detach_program(&iface, kind, name);
                    let _ = aya::programs::tc::qdisc_add_clsact(&iface);
                }
                let p: &mut SchedClassifier = program(&mut self.ebpf, name)?;
                let options = if self.tcx {
                    TcAttachOptions::TcxOrder(LinkOrder::default())
                } else {
                    TcAttachOptions::Netlink(NlOptions::default())
                };
                match p.attach_with_options(&iface, kind, options) {
                    Ok(id) => links.push((name, id)),
                    // A pattern's interface may vanish between listing and attaching.
                    Err(e)
                        if self.opts.ifaces.iter().any(|p| is_pattern(p))
                            && !Path::new("/sys/class/net").join(&iface).exists() =>
                    {
                        log.push(format!("interface {iface} went away: {}", chain(&e)));
                        break;
                    }
                    Err(e) => return Err(attach_error(format!("{name} on {iface}"), &e)),
                }
            }
            log.push(format!(
                "attached to {iface} ({})",
                if self.tcx { "tcx" } else { "netlink clsact" }
            ));
            self.attached.insert(iface, links);
        }
        Ok(log)
    }

    fn probe_library(&mut self, id: procfs::FileId, path: &Path) -> Result<(), EbpfError> {
        for (func, entry, ret) in SSL_PROBES {
            for name in [entry, ret] {
                let p: &mut UProbe = program(&mut self.ebpf, name)?;
                if let Err(e) = p.attach(func, path, UProbeScope::AllProcesses) {
                    // Older libraries lack the `_ex` functions.
                    if func.ends_with("_ex") {
                        continue;
                    }
                    return Err(attach_error(
                        format!("uprobe {func} in {}", path.display()),
                        &e,
                    ));
                }
            }
        }
        self.libraries.insert(id);
        Ok(())
    }

    fn scan_libraries(&mut self) -> Vec<String> {
        let mut log = Vec::new();
        let proc = self.opts.proc.clone();
        let (libraries, pids) = procfs::scan_libraries(&proc, &self.libraries);
        if let Some(map) = self.tls_pids.as_mut() {
            for pid in pids {
                let _ = map.insert(pid, 1, 0);
            }
        }
        for (id, path) in libraries {
            match self.probe_library(id, &path) {
                Ok(()) => log.push(format!("probing OpenSSL in {}", path.display())),
                Err(e) => {
                    // Remember it anyway: one clear line, not one per scan.
                    self.libraries.insert(id);
                    log.push(format!("not probing {}: {e}", path.display()));
                }
            }
        }
        log
    }

    /// Picks up new interfaces matching the patterns and new OpenSSL libraries; returns
    /// what changed, for the log.
    pub fn refresh(&mut self) -> Vec<String> {
        self.sync_clock();
        let mut log = Vec::new();
        if !self.opts.ifaces.is_empty() {
            match self.attach_interfaces() {
                Ok(l) => log.extend(l),
                Err(e) => log.push(e.to_string()),
            }
        }
        if self.opts.tls {
            log.extend(self.scan_libraries());
        }
        log
    }

    fn sync_clock(&mut self) {
        self.clock_offset_ns = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC);
    }

    /// Wall-clock microseconds of a record's `bpf_ktime_get_ns` stamp.
    pub fn to_micros(&self, ktime_ns: u64) -> Micros {
        ((i128::from(ktime_ns) + self.clock_offset_ns) / 1000) as Micros
    }

    pub fn clock_offset_ns(&self) -> i128 {
        self.clock_offset_ns
    }

    pub fn counters(&self) -> KernelCounters {
        let mut out = [0u64; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(v) = self.counters.get(&(i as u32), 0) {
                *slot = v.iter().sum();
            }
        }
        out
    }

    pub fn interfaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.attached.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn libraries(&self) -> usize {
        self.libraries.len()
    }

    pub fn tcx(&self) -> bool {
        self.tcx
    }

    /// Detaches everything now (dropping does too; this also removes netlink filters
    /// whose interface is still there, and reports nothing on failure: the process is
    /// ending).
    pub fn detach(mut self) {
        let attached = std::mem::take(&mut self.attached);
        for (iface, links) in attached {
            for (name, id) in links {
                if let Ok(p) = program::<SchedClassifier>(&mut self.ebpf, name) {
                    let _ = p.detach(id);
                }
            }
            if !self.tcx {
                for (name, kind) in TC_PROGRAMS {
                    let _ = aya::programs::tc::qdisc_detach_program(&iface, kind, name);
                }
            }
        }
        let mounted = self.mounted_tracefs;
        drop(self.ebpf);
        if mounted {
            let target = c"/sys/kernel/tracing";
            // SAFETY: a valid C string; failure (still busy) leaves it mounted, harmlessly.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Tracepoints are found through tracefs. Hosts usually mount it; a container may not,
/// and then the agent mounts it (CAP_SYS_ADMIN) and says so. True when it did.
fn mount_tracefs() -> Result<bool, EbpfError> {
    if Path::new("/sys/kernel/tracing/events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return Ok(false);
    }
    let (source, target, fstype) = (c"nodev", c"/sys/kernel/tracing", c"tracefs");
    // SAFETY: valid C strings and no data.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(EbpfError::Attach {
            what: "mounting tracefs at /sys/kernel/tracing (needed for the syscall tracepoints of --tls; mount the host's /sys/kernel/tracing)".into(),
            permission: e.kind() == std::io::ErrorKind::PermissionDenied,
            message: e.to_string(),
        });
    }
    eprintln!("ebpf: mounted tracefs at /sys/kernel/tracing");
    Ok(true)
}

/// Loads every program of the object through the verifier without attaching any:
/// returns their names. What `tapline-agent check-ebpf` and the tests run.
pub fn verify_all() -> Result<Vec<String>, EbpfError> {
    use aya::programs::Program;
    if PROGRAMS.is_empty() {
        return Err(EbpfError::NotBuilt);
    }
    raise_memlock();
    let mut ebpf = EbpfLoader::new()
        .load(PROGRAMS)
        .map_err(|e| EbpfError::Load(chain(&e), is_permission(&e)))?;
    let mut names = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        let r = match program {
            Program::SchedClassifier(p) => p.load(),
            Program::CgroupSkb(p) => p.load(),
            Program::UProbe(p) => p.load(),
            Program::TracePoint(p) => p.load(),
            _ => continue,
        };
        r.map_err(|e| attach_error(format!("verifying {name}"), &e))?;
        names.push(name.to_string());
    }
    names.sort();
    Ok(names)
}

/// A program of the object, as its type.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, EbpfError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or_else(|| EbpfError::Attach {
        what: name.to_string(),
        message: "not in the object".to_string(),
        permission: false,
    })?;
    p.try_into().map_err(|e| attach_error(name, &e))
}

fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit. Failure is fine: kernels since 5.11 charge BPF memory to
    // the cgroup instead of this limit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every program passes this kernel's verifier (needs root: CAP_BPF and CAP_PERFMON).
    #[test]
    fn every_program_passes_the_verifier() {
        // SAFETY: no arguments.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: loading eBPF programs needs root");
            return;
        }
        let names = verify_all().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            names,
            [
                "tapline_cgroup_egress",
                "tapline_cgroup_ingress",
                "tapline_ssl_read",
                "tapline_ssl_read_ex",
                "tapline_ssl_read_ret",
                "tapline_ssl_write",
                "tapline_ssl_write_ex",
                "tapline_ssl_write_ret",
                "tapline_sys_enter_accept",
                "tapline_sys_enter_connect",
                "tapline_sys_enter_fd",
                "tapline_sys_exit_accept",
                "tapline_tc_egress",
                "tapline_tc_ingress",
            ]
        );
    }

    #[test]
    fn interface_patterns() {
        assert!(matches("veth*", "veth1a2b"));
        assert!(matches("eth0", "eth0"));
        assert!(!matches("eth0", "eth01"));
        assert!(matches("cali?x*", "cali1xab"));
        assert!(!matches("veth*", "eth0"));
        assert!(matches("*", "lo"));
        assert!(!matches(&"*".repeat(100), "lo"));
    }
}
