//! Commands against a running orchestrator: submit, watch, status, cancel, cost, costs,
//! list, workers.
//! Every command takes `--orchestrator URL`; `--json` prints machine-readable output.

use anyhow::Context as _;

use framefleet_common::proto::{
    CancelJobRequest, GetCostReportRequest, GetJobRequest, Job, JobState, ListJobsRequest,
    ListWorkersRequest, SubmitJobRequest, SummarizeCostsRequest,
};

use crate::client::{report_of, status_error, watch_stream, write_waterfall, Connection};
use crate::job_options::JobOptions;
use crate::outputs::outputs_in;
use crate::render;

/// `framefleet submit INPUT_URI OUTPUT_URI` or `framefleet submit INPUT_URI... OUTPUT_PREFIX/`.
#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// Input URIs (`s3://bucket/key`, `file:///path` or `https://` URLs), then the output:
    /// a URI for one input, else a prefix (`s3://bucket/dir/`) under which each input's
    /// output is named after it (`<stem>.mp4`, or `<stem>.jsonl` for infer). One input with
    /// an output ending in `/` is named the same way. An output that exists is replaced
    /// once the new one is complete.
    #[arg(num_args = 2.., required = true, value_name = "INPUT_URI... OUTPUT_URI")]
    pub uris: Vec<String>,
    /// Processing and encoding options.
    #[command(flatten)]
    pub job: JobOptions,
    /// Idempotency key: submitting again with it returns the same job.
    #[arg(long, default_value = "")]
    pub idempotency_key: String,
    /// Labels, `key=value`, repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Follow the job until it ends.
    #[arg(long)]
    pub wait: bool,
    /// The orchestrator to talk to.
    #[command(flatten)]
    pub connection: Connection,
}

/// A command about one job.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// The job id.
    pub job_id: String,
    /// The orchestrator to talk to.
    #[command(flatten)]
    pub connection: Connection,
}

/// `framefleet cost`.
#[derive(Debug, Clone, clap::Args)]
pub struct CostArgs {
    /// The job and the orchestrator.
    #[command(flatten)]
    pub job: JobArgs,
    /// Also write the report as a self-contained HTML timing waterfall to this file.
    #[arg(long)]
    pub html: Option<std::path::PathBuf>,
}

/// `framefleet costs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CostsArgs {
    /// Only jobs that ended within this long before now: `90m`, `24h`, `7d` (default:
    /// every job the orchestrator knows).
    #[arg(long, value_parser = parse_age)]
    pub since: Option<std::time::Duration>,
    /// Only jobs with this label, `key=value`, repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// One row per GPU type (`gpu`) or per tenant (`tenant`).
    #[arg(long, value_enum, default_value_t = render::Grouping::Gpu)]
    pub by: render::Grouping,
    /// The orchestrator to talk to.
    #[command(flatten)]
    pub connection: Connection,
}

/// `framefleet list` and `framefleet workers`: only the orchestrator to ask.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// The orchestrator to talk to.
    #[command(flatten)]
    pub connection: Connection,
}

/// A span of time such as `45s`, `90m`, `24h` or `7d`.
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(count) if seconds > 0 => Ok(std::time::Duration::from_secs(count * seconds)),
        _ => Err(format!(
            "`{text}` is not a span of time; write a number and s, m, h or d, e.g. 24h"
        )),
    }
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("label `{text}` must be key=value"))
}

/// Submits a job and prints its id (and follows it with `--wait`).
pub async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let mut client = args.connection.client().await?;
    let (output, inputs) = args
        .uris
        .split_last()
        .context("give the input and the output")?;
    let outputs = if inputs.len() == 1 && !output.ends_with('/') {
        vec![output.clone()]
    } else {
        outputs_in(inputs, output, args.job.output_extension())?
    };
    let spec = args.job.spec_of(
        inputs.iter().cloned().zip(outputs).collect(),
        args.labels.into_iter().collect(),
    )?;
    let reply = client
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: args.idempotency_key,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.connection.json {
        println!(
            "{}",
            serde_json::json!({"job_id": reply.job_id, "created": reply.created})
        );
    } else {
        println!("{}", reply.job_id);
    }
    if args.wait {
        let job = render::follow(
            watch_stream(&mut client, &reply.job_id).await?,
            &reply.job_id,
        )
        .await?;
        return finished(&job, args.connection.json);
    }
    Ok(())
}

/// Follows a job until it ends; fails when it did not succeed.
pub async fn watch(args: JobArgs) -> anyhow::Result<()> {
    let mut client = args.connection.client().await?;
    let job = render::follow(watch_stream(&mut client, &args.job_id).await?, &args.job_id).await?;
    finished(&job, args.connection.json)
}

/// Prints a job's state.
pub async fn status(args: JobArgs) -> anyhow::Result<()> {
    let mut client = args.connection.client().await?;
    let job = client
        .get_job(GetJobRequest {
            job_id: args.job_id,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print_job(&job, args.connection.json)
}

/// Cancels a job and prints its state.
pub async fn cancel(args: JobArgs) -> anyhow::Result<()> {
    let mut client = args.connection.client().await?;
    let job = client
        .cancel_job(CancelJobRequest {
            job_id: args.job_id,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print_job(&job, args.connection.json)
}

/// Prints a finished job's cost report (and writes its waterfall when asked).
pub async fn cost(args: CostArgs) -> anyhow::Result<()> {
    let connection = &args.job.connection;
    let mut client = connection.client().await?;
    let reply = client
        .get_cost_report(GetCostReportRequest {
            job_id: args.job.job_id.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let report = report_of(reply)?;
    if let Some(path) = &args.html {
        write_waterfall(path, &report)?;
    }
    if connection.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", render::cost_table(&report));
    }
    Ok(())
}

/// Prints what the jobs that ended in a span of time (and carry given labels) cost.
pub async fn costs(args: CostsArgs) -> anyhow::Result<()> {
    let mut client = args.connection.client().await?;
    let ended_after = match args.since {
        Some(age) => std::time::SystemTime::now()
            .checked_sub(age)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |t| t.as_secs_f64()),
        None => 0.0,
    };
    let summary = client
        .summarize_costs(SummarizeCostsRequest {
            ended_after,
            ended_before: 0.0,
            labels: args.labels.into_iter().collect(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .summary
        .context("the orchestrator's reply holds no cost summary; is it an older version?")?;
    if args.connection.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", render::cost_summary_table(&summary, args.by));
    }
    Ok(())
}

/// Lists jobs, oldest first, following the orchestrator's pages.
pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.connection.client().await?;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_jobs(ListJobsRequest {
                page_token,
                ..ListJobsRequest::default()
            })
            .await
            .map_err(status_error)?
            .into_inner();
        for job in &page.jobs {
            print_job(job, args.connection.json)?;
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

/// Lists the fleet's workers: a table, or with `--json` `{"workers": [...]}`.
pub async fn workers(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.connection.client().await?;
    let reply = client
        .list_workers(ListWorkersRequest::default())
        .await
        .map_err(status_error)?
        .into_inner();
    if args.connection.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{}", render::workers_table(&reply.workers));
    }
    Ok(())
}

fn print_job(job: &Job, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", job.to_json());
    } else {
        println!("{}", render::job_line(job));
    }
    Ok(())
}

fn finished(job: &Job, json: bool) -> anyhow::Result<()> {
    print_job(job, json)?;
    match job.state() {
        JobState::Succeeded => Ok(()),
        JobState::Cancelled => anyhow::bail!("job {} was cancelled", job.id),
        _ => anyhow::bail!("job {} failed: {}", job.id, job.error),
    }
}
