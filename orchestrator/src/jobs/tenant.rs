//! Who a job belongs to: its tenant, decided by the server from the token that submitted
//! it, never claimed by the client. A tenant's weight sets its share of the fleet's slots
//! against other tenants' (its jobs split it), and its caps bound what it may hold and
//! queue. With no tenants configured every job belongs to [`Tenant::DEFAULT`].

use std::collections::HashMap;
use std::sync::Arc;

use framefleet_common::config::Config;

/// A tenant's name and share, as the scheduler weighs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// Its name (`default` with no tenants configured).
    pub name: Arc<str>,
    /// Its weight against other tenants (1: an equal share).
    pub weight: f64,
    /// Most slots its chunks hold at once (0: no cap); at the cap it waits without
    /// holding anyone else up.
    pub max_slots: u32,
    /// Most of its jobs queued or running at once (0: no cap).
    pub max_queued_jobs: u32,
}

impl Tenant {
    /// The name of the tenant of every job when none is configured.
    pub const DEFAULT: &'static str = "default";

    /// The one tenant of an orchestrator without tenants: weight 1, no caps.
    pub fn default_tenant() -> Arc<Tenant> {
        Arc::new(Tenant {
            name: Arc::from(Self::DEFAULT),
            weight: 1.0,
            max_slots: 0,
            max_queued_jobs: 0,
        })
    }
}

/// The tenants an orchestrator knows, from its configuration.
#[derive(Debug, Clone)]
pub struct Tenants {
    by_name: HashMap<Arc<str>, Arc<Tenant>>,
}

impl Tenants {
    /// The tenants of `config` (`[tenants.NAME]`), and `default` beside them.
    pub fn from_config(config: &Config) -> Self {
        let mut by_name: HashMap<Arc<str>, Arc<Tenant>> = config
            .tenants
            .iter()
            .map(|(name, tenant)| {
                let tenant = Arc::new(Tenant {
                    name: Arc::from(name.as_str()),
                    weight: tenant.weight,
                    max_slots: tenant.max_slots,
                    max_queued_jobs: tenant.max_queued_jobs,
                });
                (tenant.name.clone(), tenant)
            })
            .collect();
        by_name
            .entry(Arc::from(Tenant::DEFAULT))
            .or_insert_with(Tenant::default_tenant);
        Self { by_name }
    }

    /// The tenant named `name`; one no longer configured (a job stored before the
    /// configuration changed) keeps its name with the default's share.
    pub fn get(&self, name: &str) -> Arc<Tenant> {
        match self.by_name.get(name) {
            Some(tenant) => tenant.clone(),
            None => Arc::new(Tenant {
                name: Arc::from(name),
                ..(*Tenant::default_tenant()).clone()
            }),
        }
    }

    /// The `default` tenant.
    pub fn default_tenant(&self) -> Arc<Tenant> {
        self.get(Tenant::DEFAULT)
    }
}
