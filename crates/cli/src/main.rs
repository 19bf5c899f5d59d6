//! The `nimbus` binary: `serve` wires the store, control plane and HTTP front
//! door together; the other commands are a client of the same signed HTTP
//! API that boto3 and the aws CLI use. No business rule lives here.

mod bench;
mod bench_images;
mod bench_logs;
mod bench_queues;
mod bench_s3;
mod bench_schedules;
mod bench_tasks;
mod client;
mod commands;
mod serve;
mod service;
mod since;
mod task_cmd;
mod trigger;
mod usage;
mod zipdir;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "nimbus", version, about = "Self-hosted serverless compute, Lambda-compatible")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a client command finds the server and its keys.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArgs {
    /// Nimbus endpoint (default: AWS_ENDPOINT_URL, else http://127.0.0.1:9070).
    #[arg(long, global = true, env = "NIMBUS_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Region to sign requests for (default: AWS_REGION, else us-east-1).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Data directory of a local server, whose key file is used when no key
    /// is in the environment.
    #[arg(long, global = true, env = "NIMBUS_DATA_DIR", default_value = ".nimbus")]
    pub data_dir: PathBuf,
    /// Print JSON instead of tables and messages.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Nimbus server.
    Serve(serve::ServeArgs),
    /// Deploy and manage functions.
    Function {
        #[command(subcommand)]
        command: commands::FunctionCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Invoke a function and print its result.
    Invoke {
        #[command(flatten)]
        args: commands::InvokeArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a function's log lines.
    Logs {
        #[command(flatten)]
        args: commands::LogsArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Requests, GB-seconds and their cost at AWS's list prices, per function and day.
    Usage {
        #[command(flatten)]
        args: usage::UsageArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Measure this node: floors, cold and warm invokes, throughput,
    /// scale-out, idle memory and CPU (starts its own private server).
    Bench(bench::BenchArgs),
    /// Publish and manage layers.
    Layer {
        #[command(subcommand)]
        command: commands::LayerCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a one-time link that signs a browser in to the web console
    /// (valid once, for five minutes).
    Console {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List, stop and read the logs of ECS tasks.
    Task {
        #[command(subcommand)]
        command: task_cmd::TaskCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List ECS services (a convenience over the ECS API; `aws ecs` is the
    /// primary interface).
    Service {
        #[command(subcommand)]
        command: service::ServiceCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a shell completion script, e.g. `nimbus completions bash > /etc/bash_completion.d/nimbus`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
}

/// A sandbox's first stage (which forks the second), the factory that
/// clones first stages for the worker, and a command run inside a running
/// sandbox, run as fresh executions of this binary, before any thread or
/// runtime exists (see `nimbus_sandbox::namespaces` and `::factory`).
fn sandbox_stage(args: &[String]) -> Option<std::process::ExitCode> {
    use nimbus_sandbox::namespaces;
    use std::os::fd::AsFd;
    let ran = match args {
        [_, stage, json] if stage == "__sandbox-exec" => {
            serde_json::from_str(json).map_err(std::io::Error::other).and_then(|exec| namespaces::exec_in(&exec))
        }
        [_, stage, node] if stage == nimbus_sandbox::factory::COMMAND => node
            .parse()
            .map_err(std::io::Error::other)
            .and_then(|node| {
                let worker = std::env::var_os(nimbus_sandbox::factory::WORKER_VARIABLE)
                    .filter(|w| std::path::Path::new(w).is_absolute())
                    .ok_or_else(|| std::io::Error::other("the sandbox factory needs an absolute worker directory"))?;
                nimbus_sandbox::factory::serve(node, std::path::Path::new(&worker))
            })
            .map(|()| 0),
        [_, stage] if stage == "__sandbox" => std::env::var(namespaces::SPEC_VARIABLE)
            .map_err(std::io::Error::other)
            .and_then(|json| serde_json::from_str(&json).map_err(std::io::Error::other))
            .and_then(|spec| {
                let control = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
                namespaces::stage_one(&spec, control, None)
            }),
        _ => return None,
    };
    Some(match ran {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("nimbus sandbox ({}): {e}", args[1]);
            std::process::ExitCode::from(127)
        }
    })
}

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(code) = sandbox_stage(&argv) {
        return code;
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        nimbus_sandbox::close_inherited_on_exec();
    } else {
        end_quietly_on_a_closed_pipe();
    }
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "nimbus", &mut std::io::stdout());
        return std::process::ExitCode::SUCCESS;
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(serve::ServeArgs { worker_threads: Some(n), .. }) = &cli.command {
        runtime.worker_threads(usize::from(*n));
    }
    let result = runtime.enable_all().build().map_err(anyhow::Error::from).and_then(|runtime| {
        runtime.block_on(async {
            match cli.command {
                Command::Serve(args) => serve::run(args).await,
                Command::Function { command, client } => commands::function(command, client).await,
                Command::Layer { command, client } => commands::layer(command, client).await,
                Command::Invoke { args, client } => commands::invoke(args, client).await,
                Command::Logs { args, client } => commands::logs(args, client).await,
                Command::Console { client } => commands::console(client).await,
                Command::Usage { args, client } => usage::usage(args, client).await,
                Command::Bench(args) => bench::run(args).await,
                Command::Task { command, client } => task_cmd::task(command, client).await,
                Command::Service { command, client } => service::run(command, client).await,
                Command::Completions { .. } => Ok(()),
            }
        })
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Lets a client command whose reader has gone (`nimbus function list |
/// head -1`) end as other command-line tools do, by SIGPIPE, silently,
/// rather than panic in `println!` (Rust ignores SIGPIPE from the start, so
/// a write to a closed pipe fails). `serve` keeps ignoring it: a client
/// gone must cost it that client's write, never the node.
#[allow(unsafe_code)]
fn end_quietly_on_a_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: the default action installs no handler, so no code of this
    // process ever runs in the signal's context.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// An error and its causes on one line, each said once: many libraries'
/// errors repeat their source's text in their own, which `{:#}` would
/// print again for every level.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    /// Every command and argument says what it is in `--help`.
    #[test]
    fn every_command_and_argument_has_help() {
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && path.contains(' ') && !path.ends_with(" help") {
                missing.push(path.clone());
            }
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} <{}>", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                check(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        check(&<super::Cli as clap::CommandFactory>::command(), "", &mut missing);
        // The hidden sandbox stages are not clap commands.
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let inner = std::io::Error::other("unable to open database file");
        let e = anyhow::Error::new(inner).context("database: unable to open database file").context("opening /x/db");
        assert_eq!(super::describe(&e), "opening /x/db: database: unable to open database file");
    }
}
