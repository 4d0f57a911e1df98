//! The threshold profiles: a chunk count from the input's duration alone, as the system
//! framefleet replaces chose it. The fallback while the cost history knows nothing of a
//! kind of job, and selectable by name (`neural`, `light`, or one configured). The job's
//! validation looks the profile up; here its thresholds are applied.

use crate::jobs::validate::Profile;

/// The count `profile`'s thresholds give an input of `duration` seconds, and the rule.
pub fn count(profile: &Profile, duration: f64) -> (u32, String) {
    let name = &profile.name;
    let thresholds = &profile.thresholds;
    match thresholds
        .thresholds
        .iter()
        .find(|t| duration < t.below_seconds)
    {
        Some(t) => (
            t.chunks,
            format!(
                "{name}: duration {duration:.2} s < {} s -> {}",
                t.below_seconds, t.chunks
            ),
        ),
        None => (
            thresholds.otherwise,
            format!(
                "{name}: duration {duration:.2} s >= every threshold -> {}",
                thresholds.otherwise
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use framefleet_common::config::PlannerConfig;

    fn profile(name: &str) -> Profile {
        Profile {
            name: name.into(),
            thresholds: PlannerConfig::default().profiles[name].clone(),
        }
    }

    #[test]
    fn thresholds_choose_the_count_and_the_rule_says_why() {
        let neural = profile("neural");
        assert_eq!(count(&neural, 2.0).0, 1);
        assert_eq!(count(&neural, 5.0).0, 2);
        let (chunks, rule) = count(&neural, 20.0);
        assert_eq!(chunks, 4);
        assert!(rule.starts_with("neural: duration 20.00 s"), "{rule}");
        assert_eq!(count(&profile("light"), 20.0).0, 1);
    }
}
