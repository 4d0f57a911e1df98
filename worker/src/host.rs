//! The machine a worker runs on, named in every chunk result: chunks that ran on one
//! machine at once shared its cores and GPUs, and the orchestrator's cost model counts how
//! many did.

use std::sync::OnceLock;

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

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_name_is_read_and_stable() {
        let name = super::name();
        assert!(!name.is_empty() && !name.contains('\n'));
        assert_eq!(name, super::name());
    }
}
