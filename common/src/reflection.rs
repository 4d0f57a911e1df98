//! gRPC reflection for framefleet's servers, so a client with no `.proto` files (grpcurl,
//! Evans, Postman, Python's `grpcio-reflection`) can discover and call them. Both versions
//! of the protocol are served: `grpc.reflection.v1` and `v1alpha`, which older clients
//! (Evans, grpcurl before 1.8.8, `grpcio-reflection`) speak exclusively. Each server lists
//! only the services it serves, and health checking.

use tonic::service::interceptor::InterceptedService;
use tonic::service::{Interceptor, Routes};
use tonic_reflection::server::{Builder, Error};

use crate::proto::FILE_DESCRIPTOR_SET;

/// Both reflection services for a server serving `services` (fully qualified names, like
/// `framefleet.v1.Orchestrator`), each behind `guard` (the interceptor that checks the
/// callers of those services).
pub fn routes<G>(services: &[&str], guard: G) -> Result<Routes, Error>
where
    G: Interceptor + Clone + Send + Sync + 'static,
{
    let builder = || {
        let builder = Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        services
            .iter()
            .fold(builder, |builder, name| builder.with_service_name(*name))
    };
    let v1 = builder().build_v1()?;
    let v1alpha = builder().build_v1alpha()?;
    Ok(Routes::new(InterceptedService::new(v1, guard.clone()))
        .add_service(InterceptedService::new(v1alpha, guard)))
}
