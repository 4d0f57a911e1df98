//! Who is calling the `Orchestrator` service. The bearer token is matched, in constant
//! time, against each tenant's token (`[tenants.NAME]`), `auth.client_token` (tenant
//! `default`) and `auth.operator_token`, and the [`Caller`] rides in the request's
//! extensions for the service to read: the server decides whose a job is, never the
//! client. Without any token configured every call is tenant `default`, as a single-user
//! orchestrator always was; once one is, a call without a known token is refused.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use framefleet_common::config::Config;

use crate::jobs::tenant::{Tenant, Tenants};

/// Who a call comes from.
#[derive(Clone, Debug)]
pub enum Caller {
    /// A tenant: it submits jobs as itself and sees its own.
    Tenant(Arc<Tenant>),
    /// An operator: sees, cancels and costs every tenant's jobs; its submissions are
    /// tenant `default`'s.
    Operator(Arc<Tenant>),
}

impl Caller {
    /// The tenant the caller's jobs belong to.
    pub fn tenant(&self) -> &Arc<Tenant> {
        match self {
            Caller::Tenant(tenant) | Caller::Operator(tenant) => tenant,
        }
    }

    /// Whether the caller may see and act on a job of `tenant`.
    pub fn may_see(&self, tenant: &str) -> bool {
        match self {
            Caller::Tenant(own) => &*own.name == tenant,
            Caller::Operator(_) => true,
        }
    }

    /// The caller of `request`, as [`Callers`] found it.
    pub fn of<T>(request: &Request<T>) -> Result<Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::internal("the call passed no caller check"))
    }
}

/// The interceptor that finds the [`Caller`] of each call.
#[derive(Clone)]
pub struct Callers {
    /// `Bearer <token>` and whom it names.
    tokens: Arc<[(Vec<u8>, Caller)]>,
    /// Whom a call with no token is (when no token is configured at all).
    open: Option<Caller>,
}

impl Callers {
    /// The callers `config` knows, its tenants resolved in `tenants`.
    pub fn from_config(config: &Config, tenants: &Tenants) -> Self {
        let default = tenants.default_tenant();
        let mut tokens: Vec<(&str, Caller)> = config
            .tenants
            .iter()
            .map(|(name, tenant)| (tenant.token.as_str(), Caller::Tenant(tenants.get(name))))
            .collect();
        tokens.push((&config.auth.client_token, Caller::Tenant(default.clone())));
        tokens.push((
            &config.auth.operator_token,
            Caller::Operator(default.clone()),
        ));
        tokens.retain(|(token, _)| !token.is_empty());
        let open = tokens.is_empty().then_some(Caller::Tenant(default));
        Self {
            tokens: tokens
                .into_iter()
                .map(|(token, caller)| (format!("Bearer {token}").into_bytes(), caller))
                .collect(),
            open,
        }
    }

    /// Whom `presented` (the `authorization` header) names.
    fn find(&self, presented: &[u8]) -> Option<Caller> {
        let mut found = None;
        for (token, caller) in self.tokens.iter() {
            if bool::from(presented.ct_eq(token)) {
                found = Some(caller.clone());
            }
        }
        found.or_else(|| self.open.clone())
    }
}

impl Interceptor for Callers {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .map(MetadataValue::as_bytes)
            .unwrap_or_default();
        let caller = self.find(presented).ok_or_else(|| {
            Status::unauthenticated(
                "missing or unknown bearer token: send `authorization: Bearer <token>` with \
                 your tenant's token (tenants.NAME.token), auth.client_token or \
                 auth.operator_token",
            )
        })?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}
