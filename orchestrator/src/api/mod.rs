//! The orchestrator's front door: the gRPC [`service`]s (`Orchestrator` for users, each
//! call's tenant found from its token by [`callers`]; `Fleet` for workers), the [`server`] that puts them on one listener with health and reflection,
//! and KEDA's external [`scaler`] beside them. Requests are turned into typed values here
//! (a job spec into a [`ValidJob`](crate::jobs::validate::ValidJob), a registration into a
//! [`Registration`](crate::fleet::registration::Registration)) and handed to the
//! [`Orchestrator`](crate::Orchestrator).

pub mod callers;
pub mod scaler;
pub mod server;
pub mod service;
