//! Submission checks: a job is refused at the door, with a message naming what to fix,
//! rather than failing later. What passes becomes a [`ValidJob`], the typed job every
//! later stage reads: URIs parsed once, defaults filled (so equal requests compare equal
//! for idempotency), task, model, encoder, chunking and frame choice checked. A stored job
//! is checked again the same way when it resumes, under the configuration of the day.

use std::path::Path;

use framefleet_common::codec::{EncoderRequest, UnknownEncoder};
use framefleet_common::config::{Config, LimitsConfig};
use framefleet_common::proto::{EncoderSettings, JobSpec, Task};
use framefleet_common::storage::web::HostPolicy;
use framefleet_common::storage::{AccessPolicy, ObjectUri, StorageError};
use framefleet_common::text::{bounded, printable};

use crate::jobs::frames::FrameChoice;

pub use super::valid_job::{
    Chunking, Encoding, Goal, InputPair, JobTask, Priority, Processor, Profile, ValidJob,
};

/// Extensions of the containers a video job can write (the stitch's
/// `OutputContainer` knows what each holds).
pub const VIDEO_EXTENSIONS: [&str; 4] = ["mp4", "m4v", "mov", "mkv"];

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

/// What a spec is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A job that will run: every check.
    Run,
    /// A dry run, which writes nothing: its output may be left out and is not held
    /// against the storage policy.
    DryRun,
    /// A stored job that ended (or no longer passes [`Purpose::Run`]): only read back to
    /// be listed, never run again, so the configuration's limits and storage policy of
    /// the day are not held against it, and a profile since removed is read as the
    /// model's default.
    Ended,
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

/// Checks a submitted spec (or a stored one about to run again), fills its defaults
/// (lanczos at scale 1, x264 `medium` at crf 18) and types it into a [`ValidJob`].
pub fn check(spec: JobSpec, config: &Config) -> Result<ValidJob, InvalidSpec> {
    validate(spec, config, Purpose::Run)
}

/// Checks the spec of a dry run (`PlanJob`) as [`check`] does, except that it may leave
/// its output out (nothing is written): an output of the task's kind stands in for it,
/// and is not held against the storage policy.
pub fn check_dry_run(mut spec: JobSpec, config: &Config) -> Result<ValidJob, InvalidSpec> {
    let purpose = if spec.output_uri.is_empty() && spec.inputs.is_empty() {
        let extension = if spec.task() == Task::Infer {
            "jsonl"
        } else {
            "mp4"
        };
        spec.output_uri = format!("file:///dry-run/output.{extension}");
        Purpose::DryRun
    } else {
        Purpose::Run
    };
    validate(spec, config, purpose)
}

/// Types a stored job that will not run again (it ended, or it no longer passes
/// [`check`] under this configuration) so it can be listed: the same checks, without the
/// configuration's limits and storage policy.
pub fn check_ended(spec: JobSpec, config: &Config) -> Result<ValidJob, InvalidSpec> {
    validate(spec, config, Purpose::Ended)
}

/// Every check, in one pass: what passes is typed once and written back into the spec as
/// its defaults.
fn validate(mut spec: JobSpec, config: &Config, purpose: Purpose) -> Result<ValidJob, InvalidSpec> {
    let policy = (purpose != Purpose::Ended).then(|| AccessPolicy::new(&config.storage));
    let task = check_task(&spec)?;
    if purpose != Purpose::Ended {
        check_labels(&spec, &config.limits)?;
    }
    let inputs = check_inputs(&spec, task, config, policy.as_ref(), purpose)?;
    let scratch_root = scratch_root(&inputs, config, policy.as_ref())?;
    let (processor, encoding) = match task {
        JobTask::Infer => (check_infer(&spec, policy.as_ref())?, None),
        JobTask::Process => check_process(&spec, policy.as_ref())?,
    };
    let frames = FrameChoice::check(spec.frames.as_ref()).map_err(InvalidSpec)?;
    let chunking = check_chunking(&spec, &processor.model, config, purpose)?;
    let priority = check_priority(&spec)?;
    // An ended job sends nothing more: a setting changed since does not make it unreadable.
    let notify = match purpose {
        Purpose::Ended => check_notify(&spec, config).ok().flatten(),
        Purpose::Run | Purpose::DryRun => check_notify(&spec, config)?,
    };
    spec.processor = Some(processor.wire());
    spec.encoder = encoding.as_ref().map(|e| e.wire(None));
    Ok(ValidJob {
        batch: !spec.inputs.is_empty(),
        top_k: spec.top_k,
        skip_unreadable_inputs: spec.skip_unreadable_inputs,
        spec,
        inputs,
        task,
        processor,
        encoding,
        frames,
        priority,
        notify,
        chunking,
        scratch_root,
    })
}

/// Under which prefix the job's temporary objects go: `orchestrator.scratch_uri`, else
/// `.framefleet/` beside the (first) output.
fn scratch_root(
    inputs: &[InputPair],
    config: &Config,
    policy: Option<&AccessPolicy>,
) -> Result<ObjectUri, InvalidSpec> {
    if config.orchestrator.scratch_uri.is_empty() {
        return Ok(inputs[0].output.parent().join(".framefleet")?);
    }
    let root: ObjectUri = config.orchestrator.scratch_uri.parse()?;
    if let Some(policy) = policy {
        policy.check(&root, "scratch root")?;
    }
    Ok(root)
}

/// A video job's processor and encoding, with their defaults.
fn check_process(
    spec: &JobSpec,
    policy: Option<&AccessPolicy>,
) -> Result<(Processor, Option<Encoding>), InvalidSpec> {
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
    let asked = spec.processor.clone().unwrap_or_default();
    let processor = Processor {
        model: if asked.model.is_empty() {
            "lanczos".into()
        } else {
            asked.model
        },
        scale: if asked.scale == 0.0 { 1.0 } else { asked.scale },
        deinterlace: asked.deinterlace,
    };
    if !(processor.scale.is_finite() && (0.05..=16.0).contains(&processor.scale)) {
        return Err(InvalidSpec(format!(
            "scale {} is outside 0.05-16",
            processor.scale
        )));
    }
    check_model_name(&processor.model)?;
    if let (Some(path), Some(policy)) = (torchscript_path(&processor.model), policy) {
        policy.check(&ObjectUri::File(path.into()), "model")?;
    }
    Ok((processor, Some(check_encoding(spec.encoder.as_ref())?)))
}

/// A video job's encoder settings, with their defaults (H.264, `medium`, crf 18).
fn check_encoding(settings: Option<&EncoderSettings>) -> Result<Encoding, InvalidSpec> {
    let asked = settings.cloned().unwrap_or_default();
    let request: EncoderRequest = asked
        .encoder
        .parse()
        .map_err(|e: UnknownEncoder| InvalidSpec(e.to_string()))?;
    let preset = if asked.preset.is_empty() {
        "medium".to_string()
    } else {
        asked.preset
    };
    if !PRESETS.contains(&preset.as_str()) {
        return Err(InvalidSpec(format!(
            "unknown preset `{}` (x264's names, mapped onto the job's encoder); use one of: {}",
            printable(&bounded(&preset, 64)),
            PRESETS.join(", ")
        )));
    }
    let crf = if asked.crf == 0 && !asked.lossless {
        18
    } else {
        asked.crf
    };
    if crf > 51 {
        return Err(InvalidSpec(format!("crf {crf} is above 51")));
    }
    Ok(Encoding {
        request,
        preset,
        crf,
        lossless: asked.lossless,
    })
}

/// Every input and output a spec names, parsed: how many, each pair on its own, and no
/// output written twice or over another input.
fn check_inputs(
    spec: &JobSpec,
    task: JobTask,
    config: &Config,
    policy: Option<&AccessPolicy>,
    purpose: Purpose,
) -> Result<Vec<InputPair>, InvalidSpec> {
    let pairs = spec_pairs(spec)?;
    let most = config.limits.max_inputs as usize;
    if pairs.len() > most && purpose != Purpose::Ended {
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
    let mut parsed: Vec<InputPair> = Vec::with_capacity(pairs.len());
    for (input, output) in pairs {
        let pair = InputPair {
            input: input.parse()?,
            output: output.parse()?,
        };
        check_pair(&pair, task)?;
        if let Some(policy) = policy {
            policy.check(&pair.input, "input")?;
            if purpose == Purpose::Run {
                policy.check(&pair.output, "output")?;
            }
        }
        parsed.push(pair);
    }
    for (index, pair) in parsed.iter().enumerate() {
        let output = &pair.output;
        if parsed[..index]
            .iter()
            .any(|earlier| &earlier.output == output)
        {
            return Err(InvalidSpec(format!(
                "two inputs would write the same output `{output}`; give each its own"
            )));
        }
        if parsed.iter().any(|other| &other.input == output) {
            return Err(InvalidSpec(format!(
                "the output `{output}` would overwrite an input; choose another output"
            )));
        }
    }
    Ok(parsed)
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

/// One input and its output: an output of the task's kind that storage can write, not the
/// input itself.
fn check_pair(pair: &InputPair, task: JobTask) -> Result<(), InvalidSpec> {
    let output = &pair.output;
    if matches!(output, ObjectUri::Web(_)) {
        return Err(InvalidSpec(format!(
            "the output `{output}` is a web URL, which framefleet only reads; write to s3:// or file://"
        )));
    }
    if &pair.input == output {
        return Err(InvalidSpec(
            "the output would overwrite the input; choose another output".into(),
        ));
    }
    let extension = Path::new(output.file_name())
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match task {
        JobTask::Infer if extension != "jsonl" => Err(InvalidSpec(format!(
            "an infer job writes JSON Lines: the output `{output}` must end in .jsonl"
        ))),
        JobTask::Process if !VIDEO_EXTENSIONS.contains(&extension.as_str()) => {
            Err(InvalidSpec(format!(
                "the output `{output}` must end in one of: .{}",
                VIDEO_EXTENSIONS.join(", .")
            )))
        }
        _ => Ok(()),
    }
}

/// An infer job's processor: the absolute path of a TorchScript module, inside the
/// roots; `top_k` within its bound.
fn check_infer(spec: &JobSpec, policy: Option<&AccessPolicy>) -> Result<Processor, InvalidSpec> {
    let asked = spec.processor.clone().unwrap_or_default();
    check_model_name(&asked.model)?;
    let Some(path) = torchscript_path(&asked.model) else {
        return Err(InvalidSpec(format!(
            "an infer job needs the absolute path of a TorchScript module as its model, not `{}`",
            asked.model
        )));
    };
    if spec.top_k > MAX_TOP_K {
        return Err(InvalidSpec(format!(
            "top_k {} is more than {MAX_TOP_K}, the most values a job keeps per frame (a fixed \
             bound); give 0 to keep every value",
            spec.top_k
        )));
    }
    if let Some(policy) = policy {
        policy.check(&ObjectUri::File(path.into()), "model")?;
    }
    Ok(Processor {
        model: asked.model,
        scale: 1.0,
        deinterlace: asked.deinterlace,
    })
}

/// How the job asks to be cut: a chunk count within both bounds (`limits.max_chunks`, what
/// a job may ask; `planner.max_chunks`, the most the planner cuts), a configured profile,
/// or `auto` toward a deadline, a price cap or neither. The one place profiles are looked
/// up.
fn check_chunking(
    spec: &JobSpec,
    model: &str,
    config: &Config,
    purpose: Purpose,
) -> Result<Chunking, InvalidSpec> {
    let goal = check_goal(spec)?;
    if spec.chunks > 0 {
        if purpose != Purpose::Ended {
            check_chunk_count(spec.chunks, config)?;
        }
        return Ok(Chunking::Fixed(spec.chunks));
    }
    let fallback = profile(default_profile(model), config)?;
    if matches!(spec.profile.as_str(), "" | "auto") {
        return Ok(Chunking::Auto { goal, fallback });
    }
    match profile(&spec.profile, config) {
        Ok(named) => Ok(Chunking::Thresholds(named)),
        Err(_) if purpose == Purpose::Ended => Ok(Chunking::Thresholds(fallback)),
        Err(error) => Err(error),
    }
}

/// The threshold profile for a job that names none: `light` for lanczos, `neural` for
/// models.
fn default_profile(model: &str) -> &'static str {
    if model == "lanczos" {
        "light"
    } else {
        "neural"
    }
}

/// The configured profile `name`.
fn profile(name: &str, config: &Config) -> Result<Profile, InvalidSpec> {
    let profiles = &config.planner.profiles;
    match profiles.get(name) {
        Some(thresholds) => Ok(Profile {
            name: name.to_string(),
            thresholds: thresholds.clone(),
        }),
        None => Err(InvalidSpec(format!(
            "unknown planner profile `{}`; use auto or one configured: {}",
            printable(&bounded(name, 64)),
            profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The job's deadline or price cap: finite, not negative, not both.
fn check_goal(spec: &JobSpec) -> Result<Goal, InvalidSpec> {
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
    match (spec.deadline_seconds > 0.0, spec.max_cost_usd > 0.0) {
        (true, true) => Err(InvalidSpec(
            "give a deadline or a price cap, not both: the planner meets one of them".into(),
        )),
        (true, false) => Ok(Goal::Deadline(spec.deadline_seconds)),
        (false, true) => Ok(Goal::PriceCap(spec.max_cost_usd)),
        (false, false) => Ok(Goal::Efficient),
    }
}

/// A fixed chunk count within both bounds.
fn check_chunk_count(chunks: u32, config: &Config) -> Result<(), InvalidSpec> {
    for (most, key) in [
        (config.limits.max_chunks, "limits.max_chunks"),
        (config.planner.max_chunks, "planner.max_chunks"),
    ] {
        if chunks > most {
            return Err(InvalidSpec(format!(
                "{chunks} chunks asked; this orchestrator cuts a job into at most {most} ({key})"
            )));
        }
    }
    Ok(())
}

/// Longest notification URL.
const MAX_NOTIFY_URL_BYTES: usize = 2048;

/// A notification URL: `http(s)://`, at most 2 KiB, its host allowed by
/// `notify.allowed_hosts`, and a `notify.secret` to sign with.
fn check_notify(spec: &JobSpec, config: &Config) -> Result<Option<reqwest::Url>, InvalidSpec> {
    let given = spec.notify_url.as_str();
    if given.is_empty() {
        return Ok(None);
    }
    if given.len() > MAX_NOTIFY_URL_BYTES {
        return Err(InvalidSpec(format!(
            "notify_url is {} bytes; at most {MAX_NOTIFY_URL_BYTES} are accepted",
            given.len()
        )));
    }
    let shown = printable(&bounded(given, 200)).to_string();
    let url = reqwest::Url::parse(given)
        .map_err(|e| InvalidSpec(format!("notify_url `{shown}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(InvalidSpec(format!(
            "notify_url `{shown}` must be an http:// or https:// URL with a host"
        )));
    }
    HostPolicy::listing(&config.notify.allowed_hosts, "notify.allowed_hosts")
        .check(&url)
        .map_err(|reason| InvalidSpec(format!("notify_url: {reason}")))?;
    if config.notify.secret.is_empty() {
        return Err(InvalidSpec(
            "this orchestrator sends no notifications: notify.secret, which signs them, is not \
             set; ask the operator to set it, or leave notify_url out"
                .into(),
        ));
    }
    Ok(Some(url))
}

/// A priority level this orchestrator knows (unspecified: normal).
fn check_priority(spec: &JobSpec) -> Result<Priority, InvalidSpec> {
    use framefleet_common::proto::Priority as Wire;
    match Wire::try_from(spec.priority) {
        Ok(Wire::Interactive) => Ok(Priority::Interactive),
        Ok(Wire::Unspecified | Wire::Normal) => Ok(Priority::Normal),
        Ok(Wire::Batch) => Ok(Priority::Batch),
        Err(_) => Err(InvalidSpec(format!(
            "unknown priority {}; use PRIORITY_INTERACTIVE (1), PRIORITY_NORMAL (2, or 0 for \
             the default) or PRIORITY_BATCH (3)",
            spec.priority
        ))),
    }
}

/// A task this orchestrator knows (an unknown value is refused, not run as a video).
fn check_task(spec: &JobSpec) -> Result<JobTask, InvalidSpec> {
    match Task::try_from(spec.task) {
        Ok(Task::Infer) => Ok(JobTask::Infer),
        Ok(Task::Unspecified | Task::Process) => Ok(JobTask::Process),
        Err(_) => Err(InvalidSpec(format!(
            "unknown task {}; use TASK_PROCESS (1, or 0 for the default) or TASK_INFER (2)",
            spec.task
        ))),
    }
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
    use framefleet_common::proto::{JobInput, ProcessorSpec};

    fn normalize_run(spec: JobSpec, config: &Config) -> Result<JobSpec, InvalidSpec> {
        check(spec, config).map(|job| job.spec)
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
            job.encoder(),
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
                .map(|j| j.encoder())
                .ok(),
            Some(Some(EncoderRequest::Codec(VideoCodec::H264)))
        );
        let mut escape = spec("file:///tmp/../etc/out.mp4");
        escape.input_uri = "file:///tmp/in.mp4".into();
        assert!(normalize_run(escape, &config).is_err());
    }

    #[test]
    fn chunking_is_typed_once_with_its_profile_looked_up() {
        let config = Config::default();
        let auto = check(spec("s3://bucket/out.mp4"), &config).expect("auto");
        assert!(
            matches!(&auto.chunking, Chunking::Auto { goal: Goal::Efficient, fallback } if fallback.name == "light"),
            "{:?}",
            auto.chunking
        );
        let mut deadline = spec("s3://bucket/out.mp4");
        deadline.deadline_seconds = 30.0;
        deadline.processor = Some(ProcessorSpec {
            model: "realesr-animevideov3-x2".into(),
            ..ProcessorSpec::default()
        });
        let typed = check(deadline, &config).expect("deadline").chunking;
        assert!(
            matches!(&typed, Chunking::Auto { goal: Goal::Deadline(s), fallback } if *s == 30.0 && fallback.name == "neural"),
            "{typed:?}"
        );
        let mut named = spec("s3://bucket/out.mp4");
        named.profile = "neural".into();
        let typed = check(named.clone(), &config).expect("named").chunking;
        assert!(
            matches!(&typed, Chunking::Thresholds(p) if p.name == "neural" && p.thresholds == config.planner.profiles["neural"])
        );
        named.profile = "nope".into();
        let error = check(named.clone(), &config).expect_err("unknown profile");
        assert!(
            error
                .to_string()
                .contains("auto or one configured: light, neural"),
            "{error}"
        );
        let ended = check_ended(named, &config).expect("an ended job is still listed");
        assert!(matches!(ended.chunking, Chunking::Thresholds(p) if p.name == "light"));
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
                    prop_assert_eq!(valid.is_infer(), accepted.task() == Task::Infer);
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
