//! Generates the gRPC code and the reflection descriptor set from `proto/framefleet/v1`,
//! and KEDA's external scaler protocol from `proto/keda`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary may be reused for another checkout.
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let mut files: Vec<PathBuf> = ["types", "cost", "worker", "fleet", "orchestrator"]
        .iter()
        .map(|name| proto_root.join(format!("framefleet/v1/{name}.proto")))
        .collect();
    files.push(proto_root.join("keda/externalscaler.proto"));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptor = PathBuf::from(std::env::var("OUT_DIR")?).join("framefleet_descriptor.bin");
    // The cost messages (and the dry run's what-if table, and the fleet's listing) are also
    // JSON: serde on the generated types, every field defaulted so reports stored by older
    // versions still read.
    let json_messages = [
        "CostReport",
        "PlanSummary",
        "ChunkCost",
        "InputCost",
        "OrchestratorCost",
        "Totals",
        "CostSummary",
        "GpuTypeUse",
        "TenantUse",
        "PlanCandidate",
        "PredictionAccuracy",
        "PlanJobResponse",
        "ListWorkersResponse",
        "WorkerSummary",
        "RunningChunk",
    ];
    let mut builder = tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        .btree_map(".framefleet.v1.CostReport")
        .btree_map(".framefleet.v1.ChunkCost")
        .btree_map(".framefleet.v1.CostSummary");
    for message in json_messages {
        builder = builder.type_attribute(
            format!(".framefleet.v1.{message}"),
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        );
    }
    builder = builder.field_attribute(
        ".framefleet.v1.CostReport.notes",
        "#[serde(skip_serializing_if = \"Vec::is_empty\")]",
    );
    builder.compile_protos(&files, &[proto_root])?;
    Ok(())
}
