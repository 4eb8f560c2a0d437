//! `dae`: the command-line tool. Parses the command line and dispatches to one module per
//! command; all the work is done by the `dae` library.

#[macro_use]
mod stdout;
mod args;
mod checkpoint;
mod commands;
mod images;
mod progress;
mod report;

use args::{Cli, Command};
use clap::{CommandFactory, FromArgMatches};

/// The command line, where a negative number is a value (`--epochs -1` is then refused by the
/// option's own check, not taken for an unknown flag).
fn parse() -> Cli {
    fn negatives(c: clap::Command) -> clap::Command {
        c.allow_negative_numbers(true).mut_subcommands(negatives)
    }
    let matches = negatives(Cli::command()).try_get_matches().unwrap_or_else(|e| exit_clap(e));
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| exit_clap(e))
}

/// Prints clap's help, version or usage error and exits with its code. Help or a version that
/// cannot be written to standard output (a full disk) is an error, exit code 1; a reader that
/// closed the pipe had what it wanted.
fn exit_clap(e: clap::Error) -> ! {
    use std::io::Write;
    let written = e.print().and_then(|()| std::io::stdout().flush());
    if let Err(w) = written {
        if !e.use_stderr() && w.kind() != std::io::ErrorKind::BrokenPipe {
            errln!("error: {}", dae::Error::io("standard output", "writing", w));
            std::process::exit(1);
        }
    }
    std::process::exit(e.exit_code())
}

fn main() {
    let cli = parse();
    if let Some(run) = cli.command.run_opts() {
        dae::data::set_io_threads(run.threads);
    }
    let result = match cli.command {
        Command::Train(a) => commands::train::run(a),
        Command::Encode(a) => commands::apply::encode(a),
        Command::Reconstruct(a) => commands::apply::reconstruct(a),
        Command::Score(a) => commands::apply::score(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Demo(a) => commands::demo::run(a),
        Command::Pretrain(a) => commands::pretrain::run(a),
        Command::Finetune(a) => commands::finetune::run(a),
        Command::Predict(a) => commands::predict::predict(a),
        Command::Evaluate(a) => commands::predict::run_evaluate(a),
        Command::Viz(a) => commands::viz::run(a),
        Command::Report(a) => commands::viz::report(a),
    };
    let unwritten = stdout::finish();
    if let Err(e) = result {
        match e {
            dae::Error::Interrupted(_) => errln!("{e}"),
            _ => errln!("error: {e}"),
        }
        std::process::exit(e.exit_code());
    }
    if let Some(e) = unwritten {
        errln!("error: {}", dae::Error::io("standard output", "writing", e));
        std::process::exit(1);
    }
}
