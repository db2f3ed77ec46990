//! Where frames come from. Offline: pcap/pcapng files and pipes. Live: libpcap on
//! interfaces, or the eBPF programs (interfaces, cgroups, OpenSSL). All feed the same
//! [`crate::pipeline::Pipeline`].

pub mod ebpf;
pub mod file;
pub mod live;
