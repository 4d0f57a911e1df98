//! The threshold profiles: a chunk count from the input's duration alone, as the system
//! framefleet replaces chose it. The fallback while the cost history knows nothing of a
//! kind of job, and selectable by name (`neural`, `light`, or one configured).

use framefleet_common::config::PlannerConfig;

use super::PlanError;

/// The threshold profile for a job that names none: `light` for lanczos, `neural` for
/// models.
pub fn default_profile(model: &str) -> &'static str {
    if model.is_empty() || model == "lanczos" {
        "light"
    } else {
        "neural"
    }
}

/// The count `profile`'s thresholds give an input of `duration` seconds, and the rule.
pub fn count(
    profile: &str,
    duration: f64,
    config: &PlannerConfig,
) -> Result<(u32, String), PlanError> {
    let thresholds = config
        .profiles
        .get(profile)
        .ok_or_else(|| PlanError::UnknownProfile {
            profile: profile.to_string(),
            known: config
                .profiles
                .keys()
                .cloned()
                .chain(["auto".to_string()])
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    Ok(
        match thresholds
            .thresholds
            .iter()
            .find(|t| duration < t.below_seconds)
        {
            Some(t) => (
                t.chunks,
                format!(
                    "{profile}: duration {duration:.2} s < {} s -> {}",
                    t.below_seconds, t.chunks
                ),
            ),
            None => (
                thresholds.otherwise,
                format!(
                    "{profile}: duration {duration:.2} s >= every threshold -> {}",
                    thresholds.otherwise
                ),
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_choose_the_count_and_the_rule_says_why() {
        let config = PlannerConfig::default();
        assert_eq!(count("neural", 2.0, &config).expect("count").0, 1);
        assert_eq!(count("neural", 5.0, &config).expect("count").0, 2);
        let (chunks, rule) = count("neural", 20.0, &config).expect("count");
        assert_eq!(chunks, 4);
        assert!(rule.starts_with("neural: duration 20.00 s"), "{rule}");
        assert_eq!(count("light", 20.0, &config).expect("count").0, 1);
        let unknown = count("nope", 1.0, &config).expect_err("unknown");
        assert!(unknown.to_string().contains("auto"), "{unknown}");
        assert_eq!(default_profile("lanczos"), "light");
        assert_eq!(default_profile("realesr-animevideov3-x2"), "neural");
    }
}
