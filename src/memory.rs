//! Giving freed memory back to the operating system. glibc's allocator keeps what a burst of
//! large requests freed in its arenas, so a process that once parsed twenty 10 MB bodies at
//! once stays large while idle. `give_back` returns the free pages at the top of every arena
//! and between allocations (`malloc_trim`); `ccpool serve` does it every few seconds.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the serve loop gives freed memory back.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Returns the allocator's free memory to the operating system.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives freed memory back every `TRIM_INTERVAL` until `stop` fires.
pub async fn give_back_periodically(stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(TRIM_INTERVAL) => {
                tokio::task::spawn_blocking(give_back).await.ok();
            }
        }
    }
}

/// This process's resident memory, in bytes (Linux), for tests and the benchmark.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_goes_back_to_the_system() {
        let me = std::process::id();
        // Many small blocks (as a parsed JSON body is), freed at once.
        let blocks: Vec<Vec<u8>> = (0..400_000).map(|i| vec![i as u8; 200]).collect();
        let full = resident_bytes(me).unwrap();
        drop(blocks);
        give_back();
        let after = resident_bytes(me).unwrap();
        assert!(
            after + 40 * 1024 * 1024 < full,
            "resident {full} → {after} bytes"
        );
    }
}
