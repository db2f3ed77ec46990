//! Tapline's kernel-side programs. Built for the BPF target by the agent's build script
//! (aya-build, nightly, bpf-linker) and embedded in the agent; on the host this crate is
//! an empty program so that workspace-wide builds keep working.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod tls;

#[cfg(target_arch = "bpf")]
mod shared {
    use aya_ebpf::macros::map;
    use aya_ebpf::maps::{Array, PerCpuArray};
    use tapline_ebpf_common::{CaptureConfig, counter};

    #[map(name = "CONFIG")]
    pub static CONFIG: Array<CaptureConfig> = Array::with_max_entries(1, 0);

    #[map(name = "COUNTERS")]
    pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

    #[inline(always)]
    pub fn bump(index: u32, by: u64) {
        if let Some(p) = COUNTERS.get_ptr_mut(index) {
            // SAFETY: a per-CPU slot, written only by this CPU with preemption off.
            unsafe { *p += by };
        }
    }

    #[inline(always)]
    pub fn config() -> CaptureConfig {
        CONFIG.get(0).copied().unwrap_or_default()
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
