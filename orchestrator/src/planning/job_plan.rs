//! Planning a job with what this orchestrator knows: the job's kind, the cost model fitted
//! from the kind's history, and where it would run (the fleet's offer, or what the
//! configuration or a dry run says to plan for), handed to the [`planner`]. Shared by the
//! runner, which plans each job after its probe, and by `PlanJob`, the dry run.

use framefleet_common::config::Config;
use framefleet_common::media::VideoInfo;
use framefleet_common::proto::PlanJobResponse;

use crate::fleet::FleetOffer;
use crate::jobs::validate::ValidJob;
use crate::planning::cost_model::{typical_cold_start, Capacity, CostModel};
use crate::planning::history::CostHistory;
use crate::planning::planner::{self, PlanContext, PlanError, Planned};
use crate::planning::samples;

/// Where to plan a job for, when not for the fleet registered now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    /// Workers on this one machine, as `framefleet local --workers` starts them (0: the
    /// fleet).
    pub local_workers: u32,
    /// GPU type (empty: the fleet's, else `worker.gpu_type`).
    pub gpu_type: String,
}

/// A plan and where it was made for.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    /// The plan and the profile that made it.
    pub planned: Planned,
    /// Slots planned for.
    pub slots: u32,
    /// GPU type planned for.
    pub gpu_type: String,
    /// Jobs of this kind the model learned from.
    pub history_jobs: u32,
}

impl JobPlan {
    /// The dry run's answer: the what-if table and the choice.
    pub fn response(&self) -> PlanJobResponse {
        let plan = &self.planned.plan;
        PlanJobResponse {
            chosen: plan.chunks,
            rule: plan.rule.clone(),
            candidates: plan.candidates.clone(),
            kind: plan.kind.clone(),
            frames: plan.frames,
            duration_seconds: plan.duration_seconds,
            slots: self.slots,
            gpu_type: self.gpu_type.clone(),
            history_jobs: self.history_jobs,
        }
    }
}

/// Plans `job` over its probed `video` (the probe took `probe_seconds`) for `target`,
/// with `offer` the fleet's now. A history that cannot be read, or that measured no frame
/// size near the job's ([`CostModel::covers`]), is planned without, as a new one would be.
pub async fn plan_job(
    config: &Config,
    history: &CostHistory,
    offer: FleetOffer,
    target: &Target,
    job: &ValidJob,
    video: &VideoInfo,
    probe_seconds: f64,
) -> Result<JobPlan, PlanError> {
    let encoder = offer.encoder;
    let (mut capacity, gpu_type) = capacity(config, offer, target);
    if capacity.starting_slots > 0 {
        capacity.cold_start_seconds = match history.cold_starts(&gpu_type).await {
            Ok(measured) => typical_cold_start(&measured),
            Err(error) => {
                tracing::warn!(%error, "the cost history cannot be read; planning without cold starts");
                0.0
            }
        };
    }
    let kind = samples::kind(job, encoder, &gpu_type);
    let pixels = u64::from(video.width) * u64::from(video.height);
    let model = match history.history(&kind).await {
        Ok(samples) => CostModel::fit(samples).filter(|model| model.covers(pixels)),
        Err(error) => {
            tracing::warn!(%error, "the cost history cannot be read; planning without it");
            None
        }
    };
    let context = PlanContext {
        chunking: &job.chunking,
        frames: &job.frames,
        kind: &kind,
        model: model.as_ref(),
        capacity,
        probe_seconds,
    };
    let planned = planner::plan(video, &context, &config.planner)?;
    Ok(JobPlan {
        planned,
        slots: capacity.slots,
        gpu_type,
        history_jobs: model
            .as_ref()
            .map_or(0, |m| u32::try_from(m.jobs()).unwrap_or(u32::MAX)),
    })
}

/// The capacity to plan for and its GPU type: `target`'s local workers, else the fleet
/// registered now, raised to `planner.fleet_slots` (on `planner.fleet_hosts` machines)
/// when fewer slots are registered; the slots raised are workers still to start (their
/// cold start is the caller's to fill in).
pub fn capacity(config: &Config, offer: FleetOffer, target: &Target) -> (Capacity, String) {
    let gpu_type = [target.gpu_type.as_str(), offer.gpu_type.as_str()]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or(&config.worker.gpu_type)
        .to_string();
    let planner = &config.planner;
    let (slots, hosts, warm_slots, starting_slots) = if target.local_workers > 0 {
        (target.local_workers * config.worker.slots.max(1), 1, 0, 0)
    } else if offer.slots < planner.fleet_slots {
        let starting = planner.fleet_slots - offer.slots;
        let hosts = match planner.fleet_hosts {
            0 => offer.hosts + starting,
            hosts => hosts,
        };
        (planner.fleet_slots, hosts, offer.warm_slots, starting)
    } else {
        (offer.slots, offer.hosts, offer.warm_slots, 0)
    };
    let gpus_per_slot = if offer.slots > 0 && target.local_workers == 0 {
        offer.gpus_per_slot
    } else {
        f64::from(config.worker.gpus_held().max(1)) / f64::from(config.worker.slots.max(1))
    };
    let slots = if target.local_workers > 0 {
        slots
    } else {
        slots.min(offer.fair_slots)
    };
    let capacity = Capacity {
        slots: slots.max(1),
        hosts: hosts.max(1),
        warm_slots,
        starting_slots,
        cold_start_seconds: 0.0,
        gpus_per_slot,
        price_per_gpu_second: config.pricing.get(&gpu_type).copied().unwrap_or(0.0),
    };
    (capacity, gpu_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(slots: u32, hosts: u32) -> FleetOffer {
        FleetOffer {
            slots,
            hosts,
            warm_slots: 1,
            gpus_per_slot: 2.0,
            gpu_type: if slots > 0 {
                "L4".into()
            } else {
                String::new()
            },
            encoder: None,
            fair_slots: u32::MAX,
        }
    }

    #[test]
    fn capacity_comes_from_local_workers_the_fleet_or_its_configured_size() {
        let mut config = Config::default();
        let local = Target {
            local_workers: 3,
            gpu_type: String::new(),
        };
        let (c, gpu) = capacity(&config, offer(0, 0), &local);
        assert_eq!(
            (c.slots, c.hosts, c.warm_slots, gpu.as_str()),
            (3, 1, 0, "cpu")
        );
        let (c, gpu) = capacity(&config, offer(4, 2), &Target::default());
        assert_eq!(
            (c.slots, c.hosts, c.warm_slots, gpu.as_str()),
            (4, 2, 1, "L4")
        );
        assert_eq!(c.gpus_per_slot, 2.0);
        config.planner.fleet_slots = 8;
        let (c, _) = capacity(&config, offer(2, 1), &Target::default());
        assert_eq!((c.slots, c.hosts, c.starting_slots), (8, 7, 6));
        config.planner.fleet_hosts = 1;
        let (c, _) = capacity(&config, offer(0, 0), &Target::default());
        assert_eq!((c.slots, c.hosts), (8, 1));
        let (_, gpu) = capacity(
            &config,
            offer(4, 2),
            &Target {
                local_workers: 0,
                gpu_type: "T4".into(),
            },
        );
        assert_eq!(gpu, "T4");
        let busy = FleetOffer {
            fair_slots: 2,
            ..offer(8, 2)
        };
        let (c, _) = capacity(&Config::default(), busy, &Target::default());
        assert_eq!(c.slots, 2, "planned for its share of a busy fleet");
    }
}
