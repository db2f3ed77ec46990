//! Where frames come from. Offline: pcap/pcapng files and pipes. Live sources (libpcap,
//! eBPF) arrive with their issues and feed the same [`crate::pipeline::Pipeline`].

pub mod file;
pub mod live;
