//! Planning: how many chunks a job is cut into and where they are cut.
//!
//! - [`job_plan`]: planning one job with what this orchestrator knows (its kind's cost
//!   model, the fleet's offer or a dry run's target), shared by the runner and `PlanJob`;
//! - [`planner`]: the plan itself (a fixed count, a profile, or `auto` against a deadline
//!   or a price cap) and where the cuts fall;
//! - [`cost_model`]: what a job of a kind will take and cost per chunk count, fitted from
//!   the [`history`] of the [`samples`] each run leaves;
//! - [`selection`]: an infer job's chosen frames resolved against the probed video.

pub mod cost_model;
pub mod history;
pub mod job_plan;
pub mod planner;
pub mod samples;
pub mod selection;

pub use job_plan::{plan_job, JobPlan, Target};
