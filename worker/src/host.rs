//! The machine a worker runs on, named in every chunk result: chunks that ran on one
//! machine at once shared its cores and GPUs, and the orchestrator's cost model counts how
//! many did. Also how long ago this process started, for the cold start it reports.

use std::sync::OnceLock;
use std::time::Duration;

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else
/// `unknown`), read once.
pub fn name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown".to_string())
    })
}

/// How long ago this process started (the kernel's start time in `/proc/self/stat` against
/// `/proc/uptime`, so the dynamic loading of FFmpeg and libtorch counts); `None` where
/// those cannot be read.
pub fn process_age() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    age_from(&stat, &uptime, clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the running system and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The age of the process whose `/proc/PID/stat` is `stat`, with the system up `uptime`
/// (`/proc/uptime`) and `ticks` clock ticks a second.
fn age_from(stat: &str, uptime: &str, ticks: f64) -> Option<Duration> {
    // The command name in parentheses may hold spaces: fields are counted after it, and
    // the start time is field 22 of the line (the 20th after the name).
    let after_name = &stat[stat.rfind(')')? + 1..];
    let started: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let up: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64((up - started / ticks).max(0.0)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_name_is_read_and_stable() {
        let name = super::name();
        assert!(!name.is_empty() && !name.contains('\n'));
        assert_eq!(name, super::name());
    }

    #[test]
    fn the_process_age_is_uptime_less_the_start_time() {
        let stat = "4242 (frame fleet) S 1 4242 4242 0 -1 4194560 500 0 0 0 7 3 0 0 20 0 9 0 \
                    12000 1000000 300 18446744073709551615";
        let age = super::age_from(stat, "150.50 300.00", 100.0).expect("age");
        assert!((age.as_secs_f64() - 30.5).abs() < 1e-9, "{age:?}");
        assert!(super::age_from("garbage", "1.0 1.0", 100.0).is_none());
        let own = super::process_age().expect("this process's age");
        assert!(own.as_secs_f64() < 3600.0, "{own:?}");
    }
}
