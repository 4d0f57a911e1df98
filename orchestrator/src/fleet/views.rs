//! What others read off the fleet: the [`FleetOffer`] the planner plans a job against,
//! the [`FleetLoad`] the scaler turns into replicas, and the slot counts the metrics show.

use std::collections::{HashMap, HashSet};

use framefleet_common::codec::{choose_encoder, EncoderRequest, VideoEncoder};

use crate::jobs::valid_job::Priority;

use super::worker::{host_of, Entry};
use super::Fleet;

/// What the registered workers offer a job now, as the cost model plans for it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetOffer {
    /// Slots free now (all slots when every one is busy: the job waits for them).
    pub slots: u32,
    /// Machines the workers are on (by the host part of their addresses).
    pub hosts: u32,
    /// Free slots of workers that have run the job's model.
    pub warm_slots: u32,
    /// GPUs per slot, on average.
    pub gpus_per_slot: f64,
    /// The workers' GPU type (the most common; empty with no worker).
    pub gpu_type: String,
    /// The encoder the job's chunks would be written with, chosen from the workers'
    /// (see [`choose_encoder`]); `None` for a job that encodes nothing.
    pub encoder: Option<VideoEncoder>,
    /// The slots the job can expect to hold while other jobs compete for them (its fair
    /// share, see [`Fleet::fair_slots`]); `u32::MAX` when none does.
    pub fair_slots: u32,
}

/// The chunks the fleet runs now, as seen from one GPU type and set of encoders (the
/// scaler's view).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetLoad {
    /// Chunks held by workers of the type (draining ones included).
    pub busy_here: u32,
    /// Chunks held by workers of other types, of the encoders counted.
    pub busy_elsewhere: u32,
    /// Workers of the type that hold a chunk and are not draining: a scale-in must not
    /// remove them while idle ones exist.
    pub busy_workers: u32,
}

impl Fleet {
    /// What the workers registered now offer a job of `model` that asks for `encoder`
    /// (`None`: it encodes nothing).
    pub fn offer(&self, model: &str, encoder: Option<EncoderRequest>) -> FleetOffer {
        let state = self.lock();
        let workers: Vec<&Entry> = state.workers.values().filter(|e| !e.draining).collect();
        let free_slots: u32 = workers.iter().map(|e| e.free()).sum();
        let all_slots: u32 = workers.iter().map(|e| e.info.slots).sum();
        let hosts: HashSet<&str> = workers.iter().map(|e| host_of(&e.info.address)).collect();
        let mut types: HashMap<&str, u32> = HashMap::new();
        for entry in &workers {
            *types.entry(entry.info.gpu_type.as_str()).or_default() += entry.info.slots;
        }
        let gpus: f64 = workers
            .iter()
            .map(|e| e.info.gpus_per_slot * f64::from(e.info.slots))
            .sum();
        let encoders: Vec<(VideoEncoder, u32)> = VideoEncoder::ALL
            .into_iter()
            .map(|encoder| {
                let slots = workers
                    .iter()
                    .filter(|e| e.encodes(Some(encoder)))
                    .map(|e| e.info.slots)
                    .sum();
                (encoder, slots)
            })
            .collect();
        FleetOffer {
            slots: if free_slots > 0 {
                free_slots
            } else {
                all_slots
            },
            hosts: u32::try_from(hosts.len()).unwrap_or(u32::MAX),
            warm_slots: workers
                .iter()
                .filter(|e| e.models.contains(model))
                .map(|e| e.free())
                .sum(),
            gpus_per_slot: if all_slots > 0 {
                gpus / f64::from(all_slots)
            } else {
                1.0
            },
            encoder: encoder.map(|request| choose_encoder(request, &encoders)),
            fair_slots: u32::MAX,
            gpu_type: types
                .into_iter()
                .max_by_key(|&(name, slots)| (slots, std::cmp::Reverse(name)))
                .map(|(name, _)| name.to_string())
                .unwrap_or_default(),
        }
    }

    /// The slots a new job at `priority` can expect to hold while the jobs holding slots
    /// or waiting at its level or a more urgent one compete for them: an equal share of
    /// the fleet's slots (at least one), as the policy gives it; `u32::MAX` when no job
    /// competes. The planner cuts no more chunks than this for a busy fleet, so a job that
    /// arrives behind others is not split into pieces that could only wait.
    pub fn fair_slots(&self, priority: Priority) -> u32 {
        let state = self.lock();
        let competing = state.queue.competing_jobs(priority.rank());
        if competing == 0 {
            return u32::MAX;
        }
        let slots: u32 = state
            .workers
            .values()
            .filter(|e| !e.draining)
            .map(|e| e.info.slots)
            .sum();
        let share = slots / u32::try_from(competing + 1).unwrap_or(u32::MAX);
        share.max(1)
    }

    /// The chunks running on workers of `gpu_type` (every type when `None`), and those
    /// elsewhere that `counted` takes by their encoder and their job's priority.
    pub fn load(
        &self,
        gpu_type: Option<&str>,
        counted: impl Fn(Option<VideoEncoder>, Priority) -> bool,
    ) -> FleetLoad {
        let state = self.lock();
        let mut load = FleetLoad::default();
        for entry in state.workers.values() {
            if gpu_type.is_none_or(|t| t == entry.info.gpu_type) {
                load.busy_here += entry.busy();
                load.busy_workers += u32::from(entry.busy() > 0 && !entry.draining);
            } else {
                let counted_here = entry
                    .running
                    .values()
                    .filter(|chunk| counted(chunk.encoder, chunk.ticket.priority))
                    .count();
                load.busy_elsewhere += u32::try_from(counted_here).unwrap_or(u32::MAX);
            }
        }
        load
    }

    /// Slots of the registered workers: (all of them, those holding a chunk), draining
    /// workers counting only their busy slots.
    pub fn slots(&self) -> (u32, u32) {
        let state = self.lock();
        state.workers.values().fold((0, 0), |(all, busy), entry| {
            let slots = if entry.draining {
                entry.busy()
            } else {
                entry.info.slots
            };
            (all + slots, busy + entry.busy())
        })
    }
}
