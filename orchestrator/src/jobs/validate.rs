//! Submission checks: a job is refused at the door, with a message naming what to fix,
//! rather than failing later. Also fills in defaults, so equal requests compare equal for
//! idempotency. What passes becomes a [`ValidJob`]: the spec with its URIs parsed, its task
//! and its scratch root, which the rest of the orchestrator uses without parsing again.

use std::path::Path;

use framefleet_common::codec::{EncoderRequest, UnknownEncoder};
use framefleet_common::config::{Config, LimitsConfig};
use framefleet_common::proto::{EncoderSettings, JobSpec, ProcessorSpec, Task};
use framefleet_common::storage::{AccessPolicy, ObjectUri, StorageError};

use crate::jobs::frames::FrameChoice;
use crate::stitch::VIDEO_EXTENSIONS;

/// x264 presets.
const PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// Longest idempotency key.
const MAX_KEY_CHARS: usize = 128;

/// Most values an infer job may keep per frame (`top_k`).
pub const MAX_TOP_K: u32 = 1000;

/// Longest model name or TorchScript path, in bytes.
const MAX_MODEL_BYTES: usize = 4096;

/// Longest job id a request may name (ids are `job-` and 32 hex digits).
pub const MAX_JOB_ID_BYTES: usize = 64;

/// Whether a spec is checked for a job that will run or for a dry run, which writes
/// nothing and so may leave its output out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Run,
    DryRun,
}

/// A job spec that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid job: {0}")]
pub struct InvalidSpec(pub String);

impl From<StorageError> for InvalidSpec {
    fn from(error: StorageError) -> Self {
        InvalidSpec(error.to_string())
    }
}

/// What a job produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobTask {
    /// A video: every frame processed, encoded, stitched with the input's other streams.
    Process,
    /// JSON Lines: one line of model output per frame.
    Infer,
}

/// One input of a job and where its output goes, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct InputPair {
    /// Where the input is read.
    pub input: ObjectUri,
    /// Where its output is written.
    pub output: ObjectUri,
}

/// A job spec that passed the checks, with what they parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob {
    /// The spec with its defaults filled in (what the job store keeps).
    pub spec: JobSpec,
    /// Every input with its output, in the order the spec names them: one for a job of
    /// `input_uri` and `output_uri`, one per entry of `inputs` otherwise.
    pub inputs: Vec<InputPair>,
    /// What the job produces.
    pub task: JobTask,
    /// The frames it runs on (infer jobs may choose; video jobs take every frame).
    pub frames: FrameChoice,
    /// What a video job asks to be encoded with (`None` for infer: nothing is encoded).
    pub encoder: Option<EncoderRequest>,
    /// Under which prefix the job's temporary objects go (see [`ValidJob::scratch`]).
    scratch_root: ObjectUri,
}

impl ValidJob {
    /// Parses a spec already checked once (read back from the job store): URIs, task and
    /// scratch root, without the access checks of a new submission.
    pub fn parse(spec: JobSpec, config: &Config) -> Result<Self, InvalidSpec> {
        let inputs = spec_pairs(&spec)?
            .into_iter()
            .map(|(input, output)| {
                Ok(InputPair {
                    input: input.parse()?,
                    output: output.parse()?,
                })
            })
            .collect::<Result<Vec<_>, InvalidSpec>>()?;
        let scratch_root = if config.orchestrator.scratch_uri.is_empty() {
            inputs[0].output.parent().join(".framefleet")?
        } else {
            config.orchestrator.scratch_uri.parse()?
        };
        let task = if spec.task() == Task::Infer {
            JobTask::Infer
        } else {
            JobTask::Process
        };
        let frames = FrameChoice::check(spec.frames.as_ref()).map_err(InvalidSpec)?;
        let encoder = match task {
            JobTask::Infer => None,
            JobTask::Process => Some(encoder_request(spec.encoder.as_ref())?),
        };
        Ok(Self {
            spec,
            inputs,
            task,
            frames,
            encoder,
            scratch_root,
        })
    }

    /// Where job `job_id`'s temporary chunk objects go: `<scratch>/jobs/<job>/`, the
    /// scratch root being `orchestrator.scratch_uri` or `.framefleet/` beside the (first)
    /// output.
    pub fn scratch(&self, job_id: &str) -> Result<ObjectUri, StorageError> {
        self.scratch_root.join(&format!("jobs/{job_id}"))
    }

    /// True for jobs that write JSON Lines instead of video.
    pub fn is_infer(&self) -> bool {
        self.task == JobTask::Infer
    }

    /// True for a job of several inputs (`JobSpec.inputs`).
    pub fn is_batch(&self) -> bool {
        !self.spec.inputs.is_empty()
    }

    /// How much the output pictures are scaled (1 for infer jobs).
    pub fn scale(&self) -> f64 {
        match &self.spec.processor {
            Some(processor) if processor.scale > 0.0 => processor.scale,
            _ => 1.0,
        }
    }

    /// The processor's model (`lanczos`, a catalog name or a TorchScript path).
    pub fn model(&self) -> &str {
        self.spec
            .processor
            .as_ref()
            .map_or("", |p| p.model.as_str())
    }
}

/// Checks a submitted spec, fills its defaults (lanczos at scale 1, x264 `medium` at
/// crf 18) and parses it into a [`ValidJob`].
pub fn check(spec: JobSpec, config: &Config) -> Result<ValidJob, InvalidSpec> {
    ValidJob::parse(normalize(spec, config, Purpose::Run)?, config)
}

/// Checks the spec of a dry run (`PlanJob`) as [`check`] does, except that it may leave
/// its output out (nothing is written): an output of the task's kind stands in for it,
/// and is not held against the storage policy.
pub fn check_dry_run(mut spec: JobSpec, config: &Config) -> Result<ValidJob, InvalidSpec> {
    let purpose = if spec.output_uri.is_empty() && spec.inputs.is_empty() {
        let extension = if is_infer(&spec) { "jsonl" } else { "mp4" };
        spec.output_uri = format!("file:///dry-run/output.{extension}");
        Purpose::DryRun
    } else {
        Purpose::Run
    };
    ValidJob::parse(normalize(spec, config, purpose)?, config)
}

/// The (input, output) URIs a spec names: its one pair, or each of `inputs`.
fn spec_pairs(spec: &JobSpec) -> Result<Vec<(&str, &str)>, InvalidSpec> {
    if spec.inputs.is_empty() {
        return Ok(vec![(spec.input_uri.as_str(), spec.output_uri.as_str())]);
    }
    if !spec.input_uri.is_empty() || !spec.output_uri.is_empty() {
        return Err(InvalidSpec(
            "give either input_uri and output_uri or a list of inputs, not both".into(),
        ));
    }
    Ok(spec
        .inputs
        .iter()
        .map(|pair| (pair.input_uri.as_str(), pair.output_uri.as_str()))
        .collect())
}

fn normalize(mut spec: JobSpec, config: &Config, purpose: Purpose) -> Result<JobSpec, InvalidSpec> {
    let policy = AccessPolicy::new(&config.storage);
    check_task(&spec)?;
    check_labels(&spec, &config.limits)?;
    check_inputs(&spec, config, &policy, purpose)?;
    if !config.orchestrator.scratch_uri.is_empty() {
        policy.check(&config.orchestrator.scratch_uri.parse()?, "scratch root")?;
    }
    if is_infer(&spec) {
        return normalize_infer(spec, config, &policy);
    }
    if spec.frames.is_some() {
        return Err(InvalidSpec(
            "choosing frames is for infer jobs (--task infer): a video job processes every frame"
                .into(),
        ));
    }
    if spec.top_k != 0 {
        return Err(InvalidSpec(
            "top_k is for infer jobs (--task infer): a video job keeps every pixel".into(),
        ));
    }
    let processor = spec.processor.get_or_insert_with(ProcessorSpec::default);
    if processor.model.is_empty() {
        processor.model = "lanczos".into();
    }
    if processor.scale == 0.0 {
        processor.scale = 1.0;
    }
    if !(processor.scale.is_finite() && (0.05..=16.0).contains(&processor.scale)) {
        return Err(InvalidSpec(format!(
            "scale {} is outside 0.05-16",
            processor.scale
        )));
    }
    check_model_name(&processor.model)?;
    if let Some(path) = torchscript_path(&processor.model) {
        policy.check(&ObjectUri::File(path.into()), "model")?;
    }
    let encoder = spec.encoder.get_or_insert_with(EncoderSettings::default);
    if encoder.preset.is_empty() {
        encoder.preset = "medium".into();
    }
    encoder.encoder = match encoder_request(Some(encoder))? {
        EncoderRequest::Codec(codec) => codec.name().into(),
        EncoderRequest::Encoder(exact) => exact.name().into(),
    };
    if !PRESETS.contains(&encoder.preset.as_str()) {
        return Err(InvalidSpec(format!(
            "unknown preset `{}` (x264's names, mapped onto the job's encoder); use one of: {}",
            encoder.preset,
            PRESETS.join(", ")
        )));
    }
    if encoder.crf == 0 && !encoder.lossless {
        encoder.crf = 18;
    }
    if encoder.crf > 51 {
        return Err(InvalidSpec(format!("crf {} is above 51", encoder.crf)));
    }
    check_planning(&spec, config)?;
    Ok(spec)
}

/// What a spec's encoder settings ask to be encoded with (none given: H.264).
fn encoder_request(settings: Option<&EncoderSettings>) -> Result<EncoderRequest, InvalidSpec> {
    settings
        .map_or("", |s| s.encoder.as_str())
        .parse()
        .map_err(|e: UnknownEncoder| InvalidSpec(e.to_string()))
}

/// Every input and output a spec names: how many, each pair on its own, and no output
/// written twice or over another input.
fn check_inputs(
    spec: &JobSpec,
    config: &Config,
    policy: &AccessPolicy,
    purpose: Purpose,
) -> Result<(), InvalidSpec> {
    let pairs = spec_pairs(spec)?;
    let most = config.limits.max_inputs as usize;
    if pairs.len() > most {
        return Err(InvalidSpec(format!(
            "{} inputs named; this orchestrator takes at most {most} in one job (limits.max_inputs)",
            pairs.len()
        )));
    }
    if spec.skip_unreadable_inputs && spec.inputs.is_empty() {
        return Err(InvalidSpec(
            "skipping unreadable inputs is for jobs of several inputs; this one names one".into(),
        ));
    }
    let mut parsed = Vec::with_capacity(pairs.len());
    for (input, output) in pairs {
        let pair = (input.parse()?, output.parse()?);
        check_pair(&pair.0, &pair.1, is_infer(spec), policy)?;
        if purpose == Purpose::Run {
            policy.check(&pair.1, "output")?;
        }
        parsed.push(pair);
    }
    for (index, (_, output)) in parsed.iter().enumerate() {
        if parsed[..index].iter().any(|(_, earlier)| earlier == output) {
            return Err(InvalidSpec(format!(
                "two inputs would write the same output `{output}`; give each its own"
            )));
        }
        if parsed.iter().any(|(input, _)| input == output) {
            return Err(InvalidSpec(format!(
                "the output `{output}` would overwrite an input; choose another output"
            )));
        }
    }
    Ok(())
}

/// One input and its output: an output of the task's kind, not the input itself, and an
/// input where storage may be read (the output's place is the caller's to check).
fn check_pair(
    input: &ObjectUri,
    output: &ObjectUri,
    infer: bool,
    policy: &AccessPolicy,
) -> Result<(), InvalidSpec> {
    if matches!(output, ObjectUri::Web(_)) {
        return Err(InvalidSpec(format!(
            "the output `{output}` is a web URL, which framefleet only reads; write to s3:// or file://"
        )));
    }
    if input == output {
        return Err(InvalidSpec(
            "the output would overwrite the input; choose another output".into(),
        ));
    }
    policy.check(input, "input")?;
    let extension = Path::new(output.file_name())
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if infer && extension != "jsonl" {
        return Err(InvalidSpec(format!(
            "an infer job writes JSON Lines: the output `{output}` must end in .jsonl"
        )));
    }
    if !infer && !VIDEO_EXTENSIONS.contains(&extension.as_str()) {
        return Err(InvalidSpec(format!(
            "the output `{output}` must end in one of: .{}",
            VIDEO_EXTENSIONS.join(", .")
        )));
    }
    Ok(())
}

fn is_infer(spec: &JobSpec) -> bool {
    spec.task() == Task::Infer
}

fn normalize_infer(
    mut spec: JobSpec,
    config: &Config,
    policy: &AccessPolicy,
) -> Result<JobSpec, InvalidSpec> {
    let model = spec
        .processor
        .as_ref()
        .map(|p| p.model.clone())
        .unwrap_or_default();
    check_model_name(&model)?;
    let path = model.strip_prefix("file://").unwrap_or(&model);
    if !path.starts_with('/') {
        return Err(InvalidSpec(format!(
            "an infer job needs the absolute path of a TorchScript module as its model, not `{model}`"
        )));
    }
    if spec.top_k > MAX_TOP_K {
        return Err(InvalidSpec(format!(
            "top_k {} is more than {MAX_TOP_K}, the most values a job keeps per frame (a fixed \
             bound); give 0 to keep every value",
            spec.top_k
        )));
    }
    policy.check(&ObjectUri::File(path.into()), "model")?;
    let deinterlace = spec.processor.as_ref().is_some_and(|p| p.deinterlace);
    spec.processor = Some(ProcessorSpec {
        model,
        scale: 1.0,
        deinterlace,
    });
    spec.encoder = None;
    check_planning(&spec, config)?;
    Ok(spec)
}

/// The chunk count, profile and goal a job asks of the planner.
fn check_planning(spec: &JobSpec, config: &Config) -> Result<(), InvalidSpec> {
    let profiles = &config.planner.profiles;
    if !matches!(spec.profile.as_str(), "" | "auto") && !profiles.contains_key(&spec.profile) {
        return Err(InvalidSpec(format!(
            "unknown planner profile `{}`; use auto or one configured: {}",
            spec.profile,
            profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    for (value, name) in [
        (spec.deadline_seconds, "deadline_seconds"),
        (spec.max_cost_usd, "max_cost_usd"),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(InvalidSpec(format!(
                "{name} must be a positive number (0: none), not {value}"
            )));
        }
    }
    if spec.deadline_seconds > 0.0 && spec.max_cost_usd > 0.0 {
        return Err(InvalidSpec(
            "give a deadline or a price cap, not both: the planner meets one of them".into(),
        ));
    }
    check_chunks(spec, config)
}

/// A fixed chunk count within both bounds: the limit on what a job may ask
/// (`limits.max_chunks`) and the most the planner cuts (`planner.max_chunks`).
fn check_chunks(spec: &JobSpec, config: &Config) -> Result<(), InvalidSpec> {
    for (most, key) in [
        (config.limits.max_chunks, "limits.max_chunks"),
        (config.planner.max_chunks, "planner.max_chunks"),
    ] {
        if spec.chunks > most {
            return Err(InvalidSpec(format!(
                "{} chunks asked; this orchestrator cuts a job into at most {most} ({key})",
                spec.chunks
            )));
        }
    }
    Ok(())
}

/// A task this orchestrator knows (an unknown value is refused, not run as a video).
fn check_task(spec: &JobSpec) -> Result<(), InvalidSpec> {
    Task::try_from(spec.task).map(|_| ()).map_err(|_| {
        InvalidSpec(format!(
            "unknown task {}; use TASK_PROCESS (1, or 0 for the default) or TASK_INFER (2)",
            spec.task
        ))
    })
}

/// Labels within `limits.max_labels` and `limits.max_label_bytes`: keys of letters,
/// digits and `._/-`, values without control characters.
fn check_labels(spec: &JobSpec, limits: &LimitsConfig) -> Result<(), InvalidSpec> {
    let (most, longest) = (limits.max_labels as usize, limits.max_label_bytes as usize);
    if spec.labels.len() > most {
        return Err(InvalidSpec(format!(
            "the job carries {} labels; at most {most} are accepted (limits.max_labels)",
            spec.labels.len()
        )));
    }
    for (key, value) in &spec.labels {
        let shown = framefleet_common::text::bounded(key, 64);
        if key.is_empty() || key.len() > longest || value.len() > longest {
            return Err(InvalidSpec(format!(
                "label `{}` has a {}-byte key and a {}-byte value; each must be 1 to {longest} \
                 bytes (limits.max_label_bytes)",
                framefleet_common::text::printable(&shown),
                key.len(),
                value.len()
            )));
        }
        let key_chars = |c: char| c.is_ascii_alphanumeric() || "._/-".contains(c);
        if !key.chars().all(key_chars) || value.chars().any(char::is_control) {
            return Err(InvalidSpec(format!(
                "label `{}`: keys take letters, digits and . _ / -, values no control characters",
                framefleet_common::text::printable(&shown)
            )));
        }
    }
    Ok(())
}

/// A model name of a sane length without control characters.
fn check_model_name(model: &str) -> Result<(), InvalidSpec> {
    if model.len() > MAX_MODEL_BYTES || model.chars().any(char::is_control) {
        return Err(InvalidSpec(format!(
            "the model name is {} bytes or holds control characters; give a catalog name or \
             the path of a TorchScript module (at most {MAX_MODEL_BYTES} bytes)",
            model.len()
        )));
    }
    Ok(())
}

/// The file a model names, when it names one (an absolute path or a `file://` URI); the
/// workers load such a module, so it is held to the storage roots like an input.
fn torchscript_path(model: &str) -> Option<&str> {
    let path = model.strip_prefix("file://").unwrap_or(model);
    path.starts_with('/').then_some(path)
}

/// Checks an idempotency key: at most 128 printable ASCII characters (or empty).
pub fn idempotency_key(key: &str) -> Result<(), InvalidSpec> {
    if key.len() > MAX_KEY_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidSpec(format!(
            "the idempotency key must be at most {MAX_KEY_CHARS} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use framefleet_common::codec::{VideoCodec, VideoEncoder};
    use framefleet_common::proto::JobInput;

    fn normalize_run(spec: JobSpec, config: &Config) -> Result<JobSpec, InvalidSpec> {
        normalize(spec, config, Purpose::Run)
    }

    fn spec(output: &str) -> JobSpec {
        JobSpec {
            input_uri: "s3://bucket/in.mp4".into(),
            output_uri: output.into(),
            ..JobSpec::default()
        }
    }

    #[test]
    fn defaults_are_filled_and_bad_specs_name_the_problem() {
        let config = Config::default();
        let normal = normalize_run(spec("s3://bucket/out.mp4"), &config).expect("valid");
        assert_eq!(normal.processor.as_ref().map(|p| p.scale), Some(1.0));
        assert_eq!(normal.encoder.as_ref().map(|e| e.crf), Some(18));
        let error = normalize_run(spec("s3://bucket/out.avi"), &config).expect_err("avi");
        assert!(error.to_string().contains(".mp4"), "{error}");
        let error = normalize_run(spec("s3://bucket/in.mp4"), &config).expect_err("same");
        assert!(error.to_string().contains("overwrite"));
        let mut bad_preset = spec("s3://bucket/out.mp4");
        bad_preset.encoder = Some(EncoderSettings {
            preset: "warp".into(),
            ..Default::default()
        });
        assert!(normalize_run(bad_preset, &config).is_err());
        let mut nvenc = spec("s3://bucket/out.mp4");
        nvenc.encoder = Some(EncoderSettings {
            encoder: "hevc_nvenc".into(),
            ..Default::default()
        });
        let job = check(nvenc.clone(), &config).expect("an encoder by name");
        assert_eq!(
            job.encoder,
            Some(EncoderRequest::Encoder(VideoEncoder::HevcNvenc))
        );
        nvenc.encoder = Some(EncoderSettings {
            encoder: "h265".into(),
            ..Default::default()
        });
        let normal = normalize_run(nvenc.clone(), &config).expect("a codec");
        assert_eq!(
            normal.encoder.map(|e| e.encoder),
            Some("hevc".into()),
            "one spelling"
        );
        nvenc.encoder = Some(EncoderSettings {
            encoder: "vp9".into(),
            ..Default::default()
        });
        let error = normalize_run(nvenc, &config).expect_err("unknown encoder");
        assert!(error.to_string().contains("libx265"), "{error}");
        assert_eq!(
            check(spec("s3://bucket/out.mp4"), &config)
                .map(|j| j.encoder)
                .ok(),
            Some(Some(EncoderRequest::Codec(VideoCodec::H264)))
        );
        let mut escape = spec("file:///tmp/../etc/out.mp4");
        escape.input_uri = "file:///tmp/in.mp4".into();
        assert!(normalize_run(escape, &config).is_err());
    }

    #[test]
    fn limits_and_allowed_storage_are_enforced_at_submit() {
        let mut config = Config::default();
        config.limits.max_chunks = 4;
        config.storage.allowed_buckets = vec!["bucket".into()];
        config.storage.local_roots = vec!["/nonexistent-root".into()];
        let mut many = spec("s3://bucket/out.mp4");
        many.chunks = 5;
        let error = normalize_run(many, &config).expect_err("chunks");
        assert!(error.to_string().contains("limits.max_chunks"), "{error}");
        let error = normalize_run(spec("s3://other/out.mp4"), &config).expect_err("bucket");
        assert!(
            error.to_string().contains("storage.allowed_buckets"),
            "{error}"
        );
        let mut local = spec("s3://bucket/out.mp4");
        local.input_uri = "file:///etc/passwd".into();
        let error = normalize_run(local, &config).expect_err("outside roots");
        assert!(error.to_string().contains("storage.local_roots"), "{error}");
        assert!(idempotency_key("order-1234").is_ok());
        assert!(idempotency_key("").is_ok());
        assert!(idempotency_key("two words").is_err());
        assert!(idempotency_key(&"k".repeat(129)).is_err());
    }

    #[test]
    fn infer_jobs_need_jsonl_and_a_torchscript_path() {
        let config = Config::default();
        let mut infer = spec("s3://bucket/out.jsonl");
        infer.task = Task::Infer as i32;
        infer.processor = Some(ProcessorSpec {
            model: "/models/classify.pt".into(),
            scale: 0.0,
            ..ProcessorSpec::default()
        });
        assert!(normalize_run(infer.clone(), &config).is_ok());
        infer.output_uri = "s3://bucket/out.mp4".into();
        assert!(normalize_run(infer.clone(), &config)
            .expect_err("mp4")
            .to_string()
            .contains(".jsonl"));
        infer.output_uri = "s3://bucket/out.jsonl".into();
        infer.processor = Some(ProcessorSpec {
            model: "lanczos".into(),
            scale: 1.0,
            ..ProcessorSpec::default()
        });
        assert!(normalize_run(infer, &config).is_err());
    }

    #[test]
    fn a_list_of_inputs_is_checked_pair_by_pair_and_as_a_whole() {
        let pair = |input: &str, output: &str| JobInput {
            input_uri: input.into(),
            output_uri: output.into(),
        };
        let batch = |inputs: Vec<JobInput>| JobSpec {
            inputs,
            ..JobSpec::default()
        };
        let mut config = Config::default();
        let valid = check(
            batch(vec![
                pair("s3://bucket/a.mp4", "s3://bucket/out/a.mp4"),
                pair("https://cdn.example.com/b.mkv", "s3://bucket/out/b.mkv"),
            ]),
            &config,
        )
        .expect("valid");
        assert!(valid.is_batch());
        assert_eq!(valid.inputs.len(), 2);
        assert_eq!(valid.inputs[1].output.to_string(), "s3://bucket/out/b.mkv");
        let error = |spec: JobSpec, config: &Config| {
            normalize_run(spec, config)
                .expect_err("refused")
                .to_string()
        };
        let twice = batch(vec![
            pair("s3://bucket/a.mp4", "s3://bucket/out.mp4"),
            pair("s3://bucket/b.mp4", "s3://bucket/out.mp4"),
        ]);
        assert!(error(twice, &config).contains("same output"));
        let over = batch(vec![
            pair("s3://bucket/a.mp4", "s3://bucket/b.mp4"),
            pair("s3://bucket/b.mp4", "s3://bucket/c.mp4"),
        ]);
        assert!(error(over, &config).contains("overwrite an input"));
        let wrong_kind = batch(vec![
            pair("s3://bucket/a.mp4", "s3://bucket/a.mkv"),
            pair("s3://bucket/b.mp4", "s3://bucket/b.jsonl"),
        ]);
        assert!(error(wrong_kind, &config).contains("b.jsonl"));
        let mut both = batch(vec![pair("s3://bucket/a.mp4", "s3://bucket/x.mp4")]);
        both.input_uri = "s3://bucket/c.mp4".into();
        assert!(error(both, &config).contains("not both"));
        let mut lone_skip = spec("s3://bucket/out.mp4");
        lone_skip.skip_unreadable_inputs = true;
        assert!(error(lone_skip, &config).contains("several inputs"));
        config.limits.max_inputs = 1;
        let many = batch(vec![
            pair("s3://bucket/a.mp4", "s3://bucket/a.mkv"),
            pair("s3://bucket/b.mp4", "s3://bucket/b.mkv"),
        ]);
        assert!(error(many, &config).contains("limits.max_inputs"));
    }

    #[test]
    fn scratch_defaults_beside_the_output() {
        let config = Config::default();
        let job = check(spec("s3://bucket/exports/out.mp4"), &config).expect("valid");
        let prefix = job.scratch("job-1").expect("ok");
        assert_eq!(
            prefix.to_string(),
            "s3://bucket/exports/.framefleet/jobs/job-1"
        );
    }

    #[test]
    fn each_bound_is_refused_naming_the_field_and_the_setting() {
        let config = Config::default();
        let refusal = |change: &dyn Fn(&mut JobSpec)| {
            let mut job = spec("s3://bucket/out.mp4");
            change(&mut job);
            normalize_run(job, &config)
                .expect_err("refused")
                .to_string()
        };
        let many = refusal(&|job| {
            job.labels = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
        });
        assert!(
            many.contains("33 labels") && many.contains("limits.max_labels"),
            "{many}"
        );
        let long = refusal(&|job| {
            job.labels = [("team".to_string(), "v".repeat(300))].into();
        });
        assert!(
            long.contains("300-byte value") && long.contains("limits.max_label_bytes"),
            "{long}"
        );
        let forged = refusal(&|job| {
            job.labels = [("team".to_string(), "a\nb".to_string())].into();
        });
        assert!(forged.contains("control characters"), "{forged}");
        let task = refusal(&|job| job.task = 7);
        assert!(task.contains("unknown task 7"), "{task}");
        let chunks = refusal(&|job| job.chunks = 100);
        assert!(
            chunks.contains("at most 4 (planner.max_chunks)"),
            "{chunks}"
        );
        let top = refusal(&|job| job.top_k = 5);
        assert!(top.contains("top_k is for infer jobs"), "{top}");
        let mut infer = spec("s3://bucket/out.jsonl");
        infer.task = Task::Infer as i32;
        infer.processor = Some(ProcessorSpec {
            model: "/models/m.pt".into(),
            ..ProcessorSpec::default()
        });
        infer.top_k = u32::MAX;
        let top = normalize_run(infer, &config)
            .expect_err("refused")
            .to_string();
        assert!(top.contains("more than 1000"), "{top}");
    }

    #[test]
    fn a_dry_run_may_leave_its_output_out_but_a_submission_may_not() {
        let mut config = Config::default();
        let root = tempfile::tempdir().expect("root");
        config.storage.local_roots = vec![root.path().display().to_string()];
        let input = format!("file://{}/in.mp4", root.path().display());
        let without_output = JobSpec {
            input_uri: input.clone(),
            ..JobSpec::default()
        };
        let planned = check_dry_run(without_output.clone(), &config).expect("a dry run");
        assert_eq!(planned.inputs[0].input.to_string(), input);
        assert!(check(without_output, &config).is_err());
        let outside = JobSpec {
            input_uri: input,
            output_uri: "file:///elsewhere/out.mp4".into(),
            ..JobSpec::default()
        };
        let error = check_dry_run(outside, &config).expect_err("an output named is checked");
        assert!(error.to_string().contains("storage.local_roots"), "{error}");
    }

    mod fuzz {
        //! Request validation under arbitrary input: whatever a client sends, `normalize`
        //! returns a spec or an error without panicking, and an accepted spec keeps every
        //! promise the rest of the orchestrator relies on.

        use super::*;
        use proptest::prelude::*;

        fn uri() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "(s3|file|http)://[a-z./-]{0,12}(\\.\\.)?[a-z./-]{0,12}\\.(mp4|mkv|avi|jsonl)?",
                "s3://bucket/[ -~]{0,20}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn any_request_is_accepted_whole_or_refused_without_panic(
                input in uri(),
                output in uri(),
                model in prop_oneof![any::<String>(), Just("lanczos".to_string()), "/[a-z]{1,8}\\.pt"],
                scale in any::<f64>(),
                preset in prop_oneof![any::<String>(), Just("fast".to_string())],
                crf in any::<u32>(),
                chunks in any::<u32>(),
                task in any::<i32>(),
                key in any::<String>(),
            ) {
                let config = Config::default();
                let spec = JobSpec {
                    input_uri: input,
                    output_uri: output,
                    processor: Some(ProcessorSpec { model, scale, ..ProcessorSpec::default() }),
                    encoder: Some(EncoderSettings { crf, preset, ..EncoderSettings::default() }),
                    chunks,
                    task,
                    ..JobSpec::default()
                };
                let _ = idempotency_key(&key);
                if let Ok(valid) = check(spec, &config) {
                    let accepted = &valid.spec;
                    prop_assert_ne!(&valid.inputs[0].input, &valid.inputs[0].output);
                    prop_assert_eq!(valid.is_infer(), is_infer(accepted));
                    prop_assert!(accepted.chunks <= config.limits.max_chunks);
                    prop_assert!(!accepted.output_uri.contains(".."));
                    if !valid.is_infer() {
                        let scale = accepted.processor.as_ref().map_or(0.0, |p| p.scale);
                        prop_assert!((0.05..=16.0).contains(&scale));
                        let encoder = accepted.encoder.clone().unwrap_or_default();
                        prop_assert!(encoder.crf <= 51);
                        prop_assert!(PRESETS.contains(&encoder.preset.as_str()));
                    }
                }
            }
        }
    }
}
