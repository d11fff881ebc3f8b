//! A CPU-heavy mode, so benchmarks see what production's CLI costs: node spends hundreds of
//! milliseconds of CPU starting and real work per output line. `FAKE_CLAUDE_STARTUP_CPU_MS`
//! burns that much CPU time before the process answers anything; `FAKE_CLAUDE_LINE_CPU_US`
//! burns that much before every line it writes. CPU time, not wall time: under contention the
//! burn takes longer, as real work does.

use std::sync::OnceLock;
use std::time::Duration;

fn env_duration(name: &str, unit: fn(u64) -> Duration) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, unit)
}

/// CPU time this process has used so far.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe {
        libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts);
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Spins until this process has used `amount` more CPU time.
fn burn(amount: Duration) {
    if amount.is_zero() {
        return;
    }
    let until = cpu_time() + amount;
    let mut x = 0u64;
    while cpu_time() < until {
        for i in 0..1_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
}

/// The start-up burn (`FAKE_CLAUDE_STARTUP_CPU_MS`).
pub fn at_start() {
    burn(env_duration(
        "FAKE_CLAUDE_STARTUP_CPU_MS",
        Duration::from_millis,
    ));
}

/// The per-line burn (`FAKE_CLAUDE_LINE_CPU_US`).
pub fn per_line() {
    static PER_LINE: OnceLock<Duration> = OnceLock::new();
    burn(*PER_LINE.get_or_init(|| env_duration("FAKE_CLAUDE_LINE_CPU_US", Duration::from_micros)));
}
