//! Giving freed memory back to the operating system. With glibc's allocator, what a burst of
//! large requests freed stays in its arenas (twenty 9 MB bodies of tiny blocks at once left
//! the process near 300 MiB while idle, even with `malloc_trim` every few seconds). ccpool
//! uses jemalloc instead, with a background thread that returns unused pages after about a
//! second (`dirty_decay_ms`), and at once once they are purged (`muzzy_decay_ms: 0`).

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: a background purging thread, and short decay times.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// A process's resident memory, in bytes (Linux), for tests and the benchmark.
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
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut after = full;
        while std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            after = resident_bytes(me).unwrap();
            if after + 40 * 1024 * 1024 < full {
                break;
            }
        }
        assert!(
            after + 40 * 1024 * 1024 < full,
            "resident {full} → {after} bytes"
        );
    }
}
