//! `cargo bench -p oxbow-runtime-real --bench log_append -- --data-dir DIR
//! [--batch-bytes 65536] [--duration-s 10] [--group-depth 16] [--report-dir bench-reports]`
//!
//! Raw O_DIRECT write+fdatasync bandwidth against the log's own append bandwidth (see
//! `oxbow_runtime_real::bench::log_append`). The same as `oxbow bench log`.

use oxbow_runtime_real::bench::{run_log_bench, LogBenchOptions};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut options = LogBenchOptions::new("./oxbow-bench-data");
    let mut args = std::env::args().skip(1);
    let mut reproduce = vec!["cargo bench -p oxbow-runtime-real --bench log_append --".to_string()];
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            let value = args.next();
            if value.is_none() {
                eprintln!("{name} needs a value");
            }
            value
        };
        let parsed = match arg.as_str() {
            "--data-dir" => value("--data-dir").map(|v| options.data_dir = v.into()).is_some(),
            "--report-dir" => value("--report-dir")
                .map(|v| options.report_dir = Some(v.into()))
                .is_some(),
            "--batch-bytes" => value("--batch-bytes")
                .and_then(|v| v.parse().ok())
                .map(|v| options.batch_bytes = v)
                .is_some(),
            "--duration-s" => value("--duration-s")
                .and_then(|v| v.parse().ok())
                .map(|v| options.duration_s = v)
                .is_some(),
            "--group-depth" => value("--group-depth")
                .and_then(|v| v.parse().ok())
                .map(|v| options.group_depth = v)
                .is_some(),
            // cargo passes --bench to harness-less bench targets.
            "--bench" => continue,
            other => {
                eprintln!("unknown argument {other}");
                false
            }
        };
        if !parsed {
            eprintln!("usage: log_append --data-dir DIR [--batch-bytes N] [--duration-s S] [--group-depth N] [--report-dir DIR]");
            return ExitCode::FAILURE;
        }
    }
    reproduce.push(format!(
        "--data-dir {} --batch-bytes {} --duration-s {} --group-depth {}",
        options.data_dir.display(),
        options.batch_bytes,
        options.duration_s,
        options.group_depth
    ));
    if let Some(dir) = &options.report_dir {
        reproduce.push(format!("--report-dir {}", dir.display()));
    }
    options.command = Some(reproduce.join(" "));
    match run_log_bench(&options) {
        Ok(report) => {
            println!("{}", report.markdown);
            for file in &report.files {
                println!("wrote {}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("log benchmark failed: {error}");
            ExitCode::FAILURE
        }
    }
}
