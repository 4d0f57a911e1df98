//! Running a job: the [`runner`] takes it, once [`admission`] lets it start, from its
//! [`probe`] through planning, dispatch, acceptance and the stitch to its cost report and
//! its samples for the cost history.

pub mod admission;
pub mod probe;
pub mod runner;
