//! How the platform's own lines of an invocation read in its log: AWS's
//! text lines (`START`, `END`, `REPORT`, ...), or, when the function's
//! `LoggingConfig` says `JSON`, the `platform.*` records AWS writes to
//! CloudWatch instead, filtered by the `SystemLogLevel`. A text line ends
//! with a newline, as every line of a function's output does in its log
//! event; a JSON record does not.
//!
//! This module only words lines; the environment decides when they happen.

use nimbus_core::function::Logging;
use serde_json::{json, Value};

/// The figures of one invocation's `REPORT`.
pub(crate) struct Report<'a> {
    pub request_id: &'a str,
    pub duration_ms: f64,
    pub billed_ms: u64,
    pub memory_mb: u32,
    pub max_memory_mb: u64,
    pub init_ms: Option<f64>,
    /// `None` on success; else `error` or `timeout`.
    pub status: Option<&'static str>,
    pub error_type: Option<&'a str>,
}

/// The platform's voice in one function's log (by default AWS's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Platform {
    json: bool,
    /// `SystemLogLevel` WARN drops the INFO records (all of these).
    quiet: bool,
}

impl Platform {
    pub fn of(logging: &Logging) -> Self {
        let json = logging.log_format == "JSON";
        Self { json, quiet: json && logging.system_log_level.as_deref() == Some("WARN") }
    }

    fn record(&self, kind: &str, record: Value) -> Option<String> {
        if self.quiet {
            return None;
        }
        let time = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        Some(json!({ "time": time, "type": kind, "record": record }).to_string())
    }

    /// `INIT_START`, which opens an environment's log (as AWS's does: log
    /// readers count cold starts by it).
    pub fn init_start(
        &self,
        init_type: &str,
        runtime: &str,
        arn: &str,
        function: &str,
        version: &str,
    ) -> Option<String> {
        let name = nimbus_core::runtime::version_name(runtime);
        match self.json {
            true => self.record(
                "platform.initStart",
                json!({
                    "initializationType": init_type,
                    "phase": "init",
                    "runtimeVersion": name,
                    "runtimeVersionArn": arn,
                    "functionName": function,
                    "functionVersion": version,
                }),
            ),
            false => Some(format!("INIT_START Runtime Version: {name}\tRuntime Version ARN: {arn}\n")),
        }
    }

    pub fn start(&self, request_id: &str, version: &str) -> Option<String> {
        match self.json {
            true => self.record("platform.start", json!({ "requestId": request_id, "version": version })),
            false => Some(format!("START RequestId: {request_id} Version: {version}\n")),
        }
    }

    /// `END`, or `platform.runtimeDone` with what the runtime produced.
    pub fn end(&self, r: &Report<'_>, produced_bytes: usize) -> Option<String> {
        if !self.json {
            return Some(format!("END RequestId: {}\n", r.request_id));
        }
        let mut record = json!({
            "requestId": r.request_id,
            "status": r.status.unwrap_or("success"),
            "metrics": { "durationMs": round2(r.duration_ms), "producedBytes": produced_bytes },
        });
        if let Some(t) = r.error_type {
            record["errorType"] = t.into();
        }
        self.record("platform.runtimeDone", record)
    }

    pub fn report(&self, r: &Report<'_>) -> Option<String> {
        if self.json {
            let mut metrics = json!({
                "durationMs": round2(r.duration_ms),
                "billedDurationMs": r.billed_ms,
                "memorySizeMB": r.memory_mb,
                "maxMemoryUsedMB": r.max_memory_mb,
            });
            if let Some(i) = r.init_ms {
                metrics["initDurationMs"] = round2(i).into();
            }
            let mut record =
                json!({ "requestId": r.request_id, "metrics": metrics, "status": r.status.unwrap_or("success") });
            if let Some(t) = r.error_type {
                record["errorType"] = t.into();
            }
            return self.record("platform.report", record);
        }
        let mut line = format!(
            "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
            r.request_id, r.duration_ms, r.billed_ms, r.memory_mb, r.max_memory_mb
        );
        if let Some(i) = r.init_ms {
            line.push_str(&format!("Init Duration: {i:.2} ms\t"));
        }
        if let Some(s) = r.status {
            line.push_str(&format!("Status: {s}\t"));
        }
        if let Some(t) = r.error_type {
            line.push_str(&format!("Error Type: {t}\t"));
        }
        line.push('\n');
        Some(line)
    }

    /// The line a timed-out invocation leaves (text only: in JSON the
    /// records' `status` says it).
    pub fn timed_out(&self, request_id: &str, seconds: f64) -> Option<String> {
        (!self.json).then(|| {
            let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
            format!("{now} {request_id} Task timed out after {seconds:.2} seconds\n")
        })
    }

    /// The lines a runtime that exited mid-invoke (or was killed out of
    /// memory) leaves, as AWS writes them (text only: in JSON the records'
    /// `status` and `errorType` say it).
    pub fn exited(&self, request_id: &str, status: &str) -> Option<String> {
        (!self.json)
            .then(|| format!("RequestId: {request_id} Error: Runtime exited with error: {status}\nRuntime.ExitError\n"))
    }

    /// A failure of the platform before the function ran (text only).
    pub fn failure(&self, error_type: &str, message: &str) -> Option<String> {
        (!self.json).then(|| format!("{error_type}: {message}\n"))
    }

    /// An init that failed (`Status: error` and the `error_type` the runtime
    /// reported, before the invocation's START) or overran its limit
    /// (`Status: timeout`, and is run again within the invoke).
    pub fn init_report(&self, init_type: &str, ms: f64, status: &str, error_type: Option<&str>) -> Option<String> {
        match self.json {
            true => {
                let mut record = json!({
                    "initializationType": init_type,
                    "phase": "init",
                    "status": status,
                    "metrics": { "durationMs": round2(ms) },
                });
                if let Some(t) = error_type {
                    record["errorType"] = t.into();
                }
                self.record("platform.initReport", record)
            }
            false => {
                let error = error_type.map(|t| format!("\tError Type: {t}")).unwrap_or_default();
                Some(format!("INIT_REPORT Init Duration: {ms:.2} ms\tPhase: init\tStatus: {status}{error}\n"))
            }
        }
    }
}

fn round2(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logging(format: &str, system: Option<&str>) -> Logging {
        Logging {
            log_format: format.into(),
            application_log_level: None,
            system_log_level: system.map(str::to_string),
            log_group: "/aws/lambda/f".into(),
        }
    }

    fn report(init_ms: Option<f64>) -> Report<'static> {
        Report {
            request_id: "r1",
            duration_ms: 1.234,
            billed_ms: 2,
            memory_mb: 128,
            max_memory_mb: 40,
            init_ms,
            status: None,
            error_type: None,
        }
    }

    #[test]
    fn text_lines_end_with_a_newline_and_report_has_a_trailing_tab() {
        let p = Platform::of(&logging("Text", None));
        assert_eq!(
            p.init_start("on-demand", "nodejs20.x", "arn:aws:lambda:us-east-1::runtime:ab", "f", "1").as_deref(),
            Some(
                "INIT_START Runtime Version: nodejs:20.v1\tRuntime Version ARN: arn:aws:lambda:us-east-1::runtime:ab\n"
            )
        );
        assert_eq!(p.start("r1", "$LATEST").as_deref(), Some("START RequestId: r1 Version: $LATEST\n"));
        assert_eq!(p.end(&report(None), 3).as_deref(), Some("END RequestId: r1\n"));
        assert_eq!(
            p.report(&report(Some(5.0))).as_deref(),
            Some("REPORT RequestId: r1\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 40 MB\tInit Duration: 5.00 ms\t\n")
        );
    }

    #[test]
    fn json_records_have_aws_shapes() {
        let p = Platform::of(&logging("JSON", Some("INFO")));
        let init: Value = serde_json::from_str(
            &p.init_start("on-demand", "python3.11", "arn:aws:lambda:us-east-1::runtime:ab", "f", "$LATEST")
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(init["type"], "platform.initStart");
        assert_eq!(
            init["record"],
            json!({ "initializationType": "on-demand", "phase": "init", "runtimeVersion": "python:3.11.v1",
                    "runtimeVersionArn": "arn:aws:lambda:us-east-1::runtime:ab", "functionName": "f", "functionVersion": "$LATEST" })
        );
        let start: Value = serde_json::from_str(&p.start("r1", "3").unwrap_or_default()).unwrap_or_default();
        assert_eq!(start["type"], "platform.start");
        assert_eq!(start["record"], json!({ "requestId": "r1", "version": "3" }));
        let done: Value = serde_json::from_str(&p.end(&report(None), 7).unwrap_or_default()).unwrap_or_default();
        assert_eq!(done["type"], "platform.runtimeDone");
        assert_eq!(done["record"]["metrics"], json!({ "durationMs": 1.23, "producedBytes": 7 }));
        let rep: Value = serde_json::from_str(&p.report(&report(Some(5.0))).unwrap_or_default()).unwrap_or_default();
        assert_eq!(rep["record"]["status"], "success");
        assert_eq!(
            rep["record"]["metrics"],
            json!({ "durationMs": 1.23, "billedDurationMs": 2, "memorySizeMB": 128, "maxMemoryUsedMB": 40, "initDurationMs": 5.0 })
        );
        assert!(p.timed_out("r1", 3.0).is_none());
        assert!(p.exited("r1", "exit status 3").is_none());
    }

    #[test]
    fn a_runtime_exit_is_worded_as_aws_words_it() {
        let p = Platform::of(&logging("Text", None));
        assert_eq!(
            p.exited("r1", "exit status 3").as_deref(),
            Some("RequestId: r1 Error: Runtime exited with error: exit status 3\nRuntime.ExitError\n")
        );
    }

    #[test]
    fn system_level_warn_drops_the_info_records() {
        let p = Platform::of(&logging("JSON", Some("WARN")));
        assert!(p.start("r1", "$LATEST").is_none() && p.report(&report(None)).is_none());
    }
}
